#!/usr/bin/env python3
"""Train the bundled byte-level Mamba-1 reference model (vocab 256, id = byte value).

Plain-torch Mamba-1 with exactly the Hugging Face (MambaForCausalLM) parameter names and shapes and the
state-spaces / HF reference forward math:
  per block: xz = in_proj(RMSNorm(u)); x,z = split; x = SiLU(causal depthwise conv1d(x) + b);
  [dt_low|B|C] = x_proj(x) (split R,N,N); dt = softplus(dt_proj(dt_low)); A = -exp(A_log);
  h_t = exp(dt_t*A) h_{t-1} + dt_t*B_t*x_t; y_t = h_t.C_t + D*x_t; out_proj(y*SiLU(z)); residual add.
  norm_f, tied lm_head.
The selective scan is a two-level chunked scan (sequential inside chunks of T steps, vectorised over all
chunks; then a sequential carry over the L/T chunks; then a fix-up with in-chunk cumulative decays, which
are products of factors <= 1 so nothing overflows). Python steps per layer: T + L/T instead of L.

Usage:
  python3 scripts/train/train_byte_mamba.py --selftest
  python3 scripts/train/train_byte_mamba.py --bench 60             # tokens/s for 60 s, no output files
  python3 scripts/train/train_byte_mamba.py --minutes 70 --out models/bard-mamba
  python3 scripts/train/train_byte_mamba.py --hf-check models/bard-mamba
  python3 scripts/train/train_byte_mamba.py --finalize models/bard-mamba  # eval + sample + summary only

Evaluation protocol (same as the tool's): the split's bytes are cut into non-overlapping windows of
seq_len bytes (the last, shorter window included when it has >= 2 bytes), each window run from a fresh
state, every position but the first scored; bits per byte = sum(-log2 p) / positions scored.
"""
import argparse, json, math, os, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CAL = os.path.join(REPO, "calibration")


# ----------------------------------------------------------------------------------------------- model
def selective_scan_ref(x, dt, A, Bm, Cm):
    """Sequential reference. x, dt [B,L,E]; A [E,N]; Bm, Cm [B,L,N] -> y [B,L,E] (no D term)."""
    Bsz, L, E = x.shape
    h = x.new_zeros(Bsz, E, A.shape[1])
    ys = []
    for t in range(L):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1)


def selective_scan_chunked(x, dt, A, Bm, Cm, T=16):
    Bsz, L, E = x.shape
    N = A.shape[1]
    pad = (-L) % T
    if pad:  # dt = 0 -> decay 1 and no input: padded steps are inert (and dropped below)
        x = F.pad(x, (0, 0, 0, pad)); dt = F.pad(dt, (0, 0, 0, pad))
        Bm = F.pad(Bm, (0, 0, 0, pad)); Cm = F.pad(Cm, (0, 0, 0, pad))
    Lp = L + pad
    nc = Lp // T
    dA = (dt[..., None] * A).view(Bsz, nc, T, E, N)                                  # <= 0
    u = ((dt * x)[..., None] * Bm[:, :, None, :]).view(Bsz, nc, T, E, N)
    a = torch.exp(dA)
    h = u[:, :, 0]
    hs = [h]
    for t in range(1, T):
        h = a[:, :, t] * h + u[:, :, t]
        hs.append(h)
    hloc = torch.stack(hs, 2)                                                          # [B,nc,T,E,N]
    Cc = Cm.view(Bsz, nc, T, 1, N)
    y = (hloc * Cc).sum(-1)                                                            # [B,nc,T,E]
    if nc > 1:
        cumdec = torch.exp(torch.cumsum(dA, dim=2))                                   # in (0, 1]
        c = x.new_zeros(Bsz, E, N)
        carries = [c]
        for ci in range(nc - 1):
            c = cumdec[:, ci, T - 1] * c + hloc[:, ci, T - 1]
            carries.append(c)
        carry = torch.stack(carries, 1)                                                # [B,nc,E,N]
        y = y + (cumdec * carry[:, :, None] * Cc).sum(-1)
    return y.reshape(Bsz, Lp, E)[:, :L]


class SeqScan(torch.autograd.Function):
    """Selective scan h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t, y_t = C_t . h_t with a hand-written
    reverse-time backward: the state is small ([B,E,N]), so a per-step loop of a few fused ops beats
    materialising [B,L,E,N] intermediates for autograd."""
    @staticmethod
    def forward(ctx, x, dt, A, Bm, Cm):
        Bsz, L, E = x.shape
        N = A.shape[1]
        dtx = dt * x
        hs = x.new_empty(L, Bsz, E, N)
        y = x.new_empty(Bsz, L, E)
        h = x.new_zeros(Bsz, E, N)
        for t in range(L):
            dA = torch.exp(dt[:, t, :, None] * A)
            h = torch.addcmul(dA * h, dtx[:, t, :, None], Bm[:, t, None, :])
            hs[t] = h
            y[:, t] = torch.bmm(h, Cm[:, t, :, None]).squeeze(-1)
        ctx.save_for_backward(x, dt, A, Bm, Cm, hs)
        return y
    @staticmethod
    def backward(ctx, gy):
        x, dt, A, Bm, Cm, hs = ctx.saved_tensors
        Bsz, L, E = x.shape
        N = A.shape[1]
        dtx = dt * x
        gy = gy.contiguous()
        gh = x.new_zeros(Bsz, E, N)
        gdt = x.new_empty(Bsz, L, E); gdtx = x.new_empty(Bsz, L, E)
        gB = x.new_empty(Bsz, L, N); gC = x.new_empty(Bsz, L, N)
        gA = torch.zeros_like(A)
        zero = x.new_zeros(Bsz, E, N)
        for t in range(L - 1, -1, -1):
            gyt = gy[:, t]
            gC[:, t] = torch.bmm(gyt[:, None, :], hs[t]).squeeze(1)
            gh = torch.addcmul(gh, gyt[:, :, None], Cm[:, t, None, :])
            gdtx[:, t] = torch.bmm(gh, Bm[:, t, :, None]).squeeze(-1)
            gB[:, t] = torch.bmm(dtx[:, t, None, :], gh).squeeze(1)
            dA = torch.exp(dt[:, t, :, None] * A)
            hprev = hs[t - 1] if t > 0 else zero
            X = gh * hprev * dA                       # d loss / d (dt A) at step t
            gdt[:, t] = (X * A).sum(-1)
            gA += torch.einsum('be,ben->en', dt[:, t], X)
            gh = gh * dA
        gdt += gdtx * x
        gx = gdtx * dt
        return gx, gdt, gA, gB, gC


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class Mixer(nn.Module):
    def __init__(self, d, n_layer, N=16, expand=2, K=4, R=None, chunk=16):
        super().__init__()
        E = expand * d
        R = R or math.ceil(d / 16)
        self.E, self.N, self.R, self.K, self.chunk = E, N, R, K, chunk
        self.in_proj = nn.Linear(d, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, K, groups=E, padding=K - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1).contiguous())
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d, bias=False)
        # state-spaces init
        dt_init_std = R ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        dt = torch.exp(torch.rand(E) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            # prenorm residual rescale (GPT-2 style), as in mamba_ssm _init_weights
            nn.init.kaiming_uniform_(self.out_proj.weight, a=math.sqrt(5))
            self.out_proj.weight /= math.sqrt(n_layer)

    def forward(self, u, scan=None):
        Bsz, L, _ = u.shape
        xz = self.in_proj(u)
        x, z = xz[..., :self.E], xz[..., self.E:]
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :L].transpose(1, 2))
        dbc = self.x_proj(x)
        dtl, Bm, Cm = torch.split(dbc, [self.R, self.N, self.N], dim=-1)
        dt = F.softplus(self.dt_proj(dtl))
        A = -torch.exp(self.A_log)
        if scan is None:  # the hand-written backward: ~15x faster on 2 CPU cores than autograd through the chunked form
            y = SeqScan.apply(x, dt, A, Bm, Cm)
        else:
            y = scan(x, dt, A, Bm, Cm)
        y = y + x * self.D
        return self.out_proj(y * F.silu(z))


class Block(nn.Module):
    def __init__(self, d, n_layer, **kw):
        super().__init__()
        self.norm = RMSNorm(d)
        self.mixer = Mixer(d, n_layer, **kw)

    def forward(self, h, scan=None):
        return h + self.mixer(self.norm(h), scan)


class Backbone(nn.Module):
    def __init__(self, d, n_layer, vocab, **kw):
        super().__init__()
        self.embeddings = nn.Embedding(vocab, d)
        nn.init.normal_(self.embeddings.weight, std=0.02)
        self.layers = nn.ModuleList([Block(d, n_layer, **kw) for _ in range(n_layer)])
        self.norm_f = RMSNorm(d)


class ByteMamba(nn.Module):
    def __init__(self, d=384, n_layer=6, vocab=256, N=16, expand=2, K=4, R=None, chunk=16):
        super().__init__()
        self.cfg = dict(d=d, n_layer=n_layer, vocab=vocab, N=N, expand=expand, K=K, R=R or math.ceil(d / 16))
        self.backbone = Backbone(d, n_layer, vocab, N=N, expand=expand, K=K, R=R, chunk=chunk)

    def forward(self, ids, scan=None):
        h = self.backbone.embeddings(ids)
        for layer in self.backbone.layers:
            h = layer(h, scan)
        h = self.backbone.norm_f(h)
        return h @ self.backbone.embeddings.weight.t()  # tied lm_head


# ------------------------------------------------------------------------------------------ HF export
def hf_config(cfg):
    from transformers import MambaConfig
    return MambaConfig(vocab_size=cfg["vocab"], hidden_size=cfg["d"], state_size=cfg["N"],
                       num_hidden_layers=cfg["n_layer"], layer_norm_epsilon=1e-5, expand=cfg["expand"],
                       conv_kernel=cfg["K"], use_bias=False, use_conv_bias=True, time_step_rank=cfg["R"],
                       residual_in_fp32=True, tie_word_embeddings=True, bos_token_id=None,
                       eos_token_id=None, pad_token_id=None)


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (openai/gpt-2 src/encoder.py), which ByteLevel uses."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def check_tokenizer(path):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(path)
    for text in ["ROMEO:\nBut soft! what light through yonder window breaks?",
                 "naïve café — Straße, 日本語, emoji 🎭🌹 and \t tabs\r\n  double  spaces \x00\x7f end",
                 " leading space", ""]:
        enc = tok.encode(text)
        assert enc.ids == list(text.encode("utf-8")), (text, enc.ids[:20])
        assert tok.decode(enc.ids) == text, (text, tok.decode(enc.ids))
    assert tok.get_vocab_size() == 256


def atomic_write(path, write_fn):
    tmp = path + ".tmp"
    write_fn(tmp)
    os.replace(tmp, path)


def save_hf(model, out, dtype=torch.float32, extra_meta=None, config=None):
    """Weights, config.json (`config`: a transformers config; default this model's) and tokenizer."""
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    sd = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt"}
    if extra_meta:
        meta.update({k: str(v) for k, v in extra_meta.items()})
    atomic_write(os.path.join(out, "model.safetensors"), lambda p: save_file(sd, p, metadata=meta))
    cfg = config or hf_config(model.cfg)
    atomic_write(os.path.join(out, "config.json"), lambda p: cfg.to_json_file(p))
    write_tokenizer(out)


def write_tokenizer(out):
    """tokenizer.json and tokenizer_config.json beside a checkpoint (once; both bundled models)."""
    tok_path = os.path.join(out, "tokenizer.json")
    if not os.path.exists(tok_path):
        atomic_write(tok_path, lambda p: build_tokenizer().save(p))
        check_tokenizer(tok_path)
        tc = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1000000000000000019884624838656,
              "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False}
        atomic_write(os.path.join(out, "tokenizer_config.json"),
                     lambda p: open(p, "w").write(json.dumps(tc, indent=2) + "\n"))


def load_hf_into(out):
    from safetensors.torch import load_file
    with open(os.path.join(out, "config.json")) as f:
        c = json.load(f)
    m = ByteMamba(d=c["hidden_size"], n_layer=c["num_hidden_layers"], vocab=c["vocab_size"], N=c["state_size"],
                  expand=c["expand"], K=c["conv_kernel"], R=c["time_step_rank"])
    sd = {k: v.float() for k, v in load_file(os.path.join(out, "model.safetensors")).items()}
    m.load_state_dict(sd, strict=True)
    return m


def hf_check(out, model=None, n=300, hf_class=None, load=None):
    """Loads `out` with transformers (MambaForCausalLM, or `hf_class`) and compares its logits with
    the training code's on the first `n` bytes of valid: no missing or unexpected keys, max diff < 1e-3."""
    if hf_class is None:
        from transformers import MambaForCausalLM as hf_class
    if model is None:
        model = (load or load_hf_into)(out)
    hf, info = hf_class.from_pretrained(out, output_loading_info=True, dtype=torch.float32)
    hf.eval()
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    assert not bad, bad
    text = open(os.path.join(CAL, "shakespeare-valid.txt"), "rb").read()[:n]
    ids = torch.tensor([list(text)], dtype=torch.long)
    model.eval()
    with torch.no_grad():
        a = model(ids)
        b = hf(ids, use_cache=False).logits
    d = (a - b).abs().max().item()
    print(f"hf-check {out}: no missing/unexpected keys; max |logit diff| over {n} bytes = {d:.3g} "
          f"(logit scale {b.abs().max().item():.3g})", flush=True)
    assert d < 1e-3, d
    return d


# ------------------------------------------------------------------------------------------ data/eval
def load_split(name):
    with open(os.path.join(CAL, "manifest.json")) as f:
        man = json.load(f)
    return b"".join(open(os.path.join(CAL, fn), "rb").read() for fn in man["splits"][name])


def load_split_files(name):
    with open(os.path.join(CAL, "manifest.json")) as f:
        man = json.load(f)
    return [open(os.path.join(CAL, fn), "rb").read() for fn in man["splits"][name]]


@torch.no_grad()
def eval_bpb(model, name, seq_len, batch=16):
    """Non-overlapping windows of seq_len, fresh state each, all positions but the first scored,
    windows never cross a file; the last, shorter window of a file is included if it has >= 2 bytes."""
    model.eval()
    total_nats, scored = 0.0, 0
    windows = []
    for data in load_split_files(name):
        arr = np.frombuffer(data, dtype=np.uint8)
        for s in range(0, len(arr), seq_len):
            w = arr[s:s + seq_len]
            if len(w) >= 2:
                windows.append(w)
    full = [w for w in windows if len(w) == seq_len]
    rest = [w for w in windows if len(w) != seq_len]
    for i in range(0, len(full), batch):
        ids = torch.from_numpy(np.stack(full[i:i + batch]).astype(np.int64))
        logits = model(ids)
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
        total_nats += nll.item(); scored += ids[:, 1:].numel()
    for w in rest:
        ids = torch.from_numpy(w.astype(np.int64))[None]
        logits = model(ids)
        total_nats += F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
        scored += ids.shape[1] - 1
    model.train()
    return total_nats / scored / math.log(2), scored, len(windows)


@torch.no_grad()
def sample(model, prompt=b"ROMEO:", n=400, temperature=0.8, top_k=40, seed=0, ctx=512):
    model.eval()
    g = torch.Generator().manual_seed(seed)
    ids = list(prompt)
    for _ in range(n):
        x = torch.tensor([ids[-ctx:]], dtype=torch.long)
        logits = model(x)[0, -1]
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            v, ix = torch.topk(logits, top_k)
            p = torch.softmax(v, -1)
            nxt = int(ix[torch.multinomial(p, 1, generator=g)])
        ids.append(nxt)
    model.train()
    return bytes(ids).decode("utf-8", errors="replace")


# ------------------------------------------------------------------------------------------ selftest
def selftest():
    torch.manual_seed(0)
    for (Bsz, L, E, N, T) in [(2, 37, 8, 4, 8), (3, 64, 16, 16, 16), (1, 5, 4, 16, 16), (2, 256, 32, 16, 16)]:
        x = torch.randn(Bsz, L, E, dtype=torch.float64)
        dt = F.softplus(torch.randn(Bsz, L, E, dtype=torch.float64) * 2 - 1)
        A = -torch.exp(torch.log(torch.arange(1, N + 1, dtype=torch.float64)).repeat(E, 1) + 0.3 * torch.randn(E, N, dtype=torch.float64))
        Bm = torch.randn(Bsz, L, N, dtype=torch.float64); Cm = torch.randn(Bsz, L, N, dtype=torch.float64)
        for dtype in (torch.float64, torch.float32):
            args = [t.to(dtype).requires_grad_(True) for t in (x, dt, A, Bm, Cm)]
            y1 = selective_scan_ref(*args)
            g = torch.randn_like(y1)
            gr1 = torch.autograd.grad((y1 * g).sum(), args)
            for name, y2 in (("chunked", selective_scan_chunked(*args, T=T)), ("SeqScan", SeqScan.apply(*args))):
                gr2 = torch.autograd.grad((y2 * g).sum(), args)
                d = (y1 - y2).abs().max().item()
                dg = max(((a - b).abs().max() / (a.abs().max() + 1e-6)).item() for a, b in zip(gr1, gr2))
                print(f"{name} scan B{Bsz} L{L} E{E} N{N} T{T} {dtype}: max|dy| {d:.2e}  max rel|dgrad| {dg:.2e}")
                assert d < 1e-4 and dg < 1e-4
    # whole model: chunked vs sequential scan
    m = ByteMamba(d=64, n_layer=2)
    ids = torch.randint(0, 256, (2, 50))
    with torch.no_grad():
        d = (m(ids) - m(ids, scan=selective_scan_ref)).abs().max().item()
    print(f"model SeqScan vs sequential reference: {d:.2e}"); assert d < 1e-4
    print("selftest OK")


# ------------------------------------------------------------------------------------------ training
def param_groups(model, wd):
    decay, no = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() == 2 and not n.endswith("A_log") else no).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no, "weight_decay": 0.0}]


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def finalize(model, a, out, log, stats, load=None, check=None, family="Mamba-1", script="train_byte_mamba.py",
             hf_class="MambaForCausalLM", config_line=None):
    """Evaluate best checkpoint on valid/test/ood-test, sample, HF check, write summary + README.
    train_byte_mamba2.py passes its own loader, check, names and config line."""
    load, check = load or load_hf_into, check or hf_check
    config_line = config_line or (lambda c: f"hidden_size {c['d']}, {c['n_layer']} layers, d_inner {c['expand'] * c['d']}, "
                                            f"state_size {c['N']}, dt_rank {c['R']}, conv_kernel {c['K']}, tied embeddings")
    best = load(out)
    res = {}
    for split in ["valid", "test", "ood-test"]:
        bpb, scored, nw = eval_bpb(best, split, a.seq_len)
        res[split] = {"bpb": round(bpb, 5), "positions_scored": scored, "windows": nw}
        log(f"final {split}: bpb {bpb:.4f} ({scored} positions, {nw} windows)")
    s_temp = sample(best, b"ROMEO:", n=400, temperature=0.8, top_k=40, seed=0)
    s_greedy = sample(best, b"ROMEO:", n=200, temperature=0)
    diff = check(out, best)
    summary = dict(model=os.path.basename(os.path.normpath(out)), config=best.cfg, parameters=count_params(best),
                   seq_len=a.seq_len, batch=a.batch, lr=a.lr, weight_decay=a.wd, dtype_stored=stats.get("dtype", "F32"),
                   **{k: v for k, v in stats.items() if k != "dtype"},
                   eval=res, eval_protocol="non-overlapping windows of seq_len bytes, fresh state each, all positions "
                   "but the first scored, last shorter window of a file included if >= 2 bytes; bits per byte",
                   sample_prompt="ROMEO:", sample_temperature_0_8_topk_40_seed_0=s_temp, sample_greedy=s_greedy,
                   hf_max_abs_logit_diff=diff)
    atomic_write(os.path.join(out, "training_summary.json"),
                 lambda p: open(p, "w").write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n"))
    c = best.cfg
    readme = f"""# {summary['model']}: byte-level {family} reference model

A small {family} language model over bytes (vocab 256, token id = byte value), trained from scratch on the
`train` split of `calibration/` (Shakespeare plays, see calibration/README.md) by
`scripts/train/{script}`. Hugging Face layout: loads with `transformers.{hf_class}`
(checked: no missing/unexpected keys, max |logit diff| vs the training code {diff:.2g}).

- {config_line(c)}
- parameters: {summary['parameters']:,}; weights stored {summary['dtype_stored']}
- training: {stats.get('train_wall_s', 0) / 60:.1f} min wall on {stats.get('threads', 2)} CPU core(s), {stats.get('steps')} steps,
  {stats.get('tokens_seen'):,} tokens seen (~{stats.get('epochs', 0):.2f} passes), seq_len {a.seq_len}, batch {a.batch},
  AdamW lr {a.lr} (warmup, cosine decay by wall clock), wd {a.wd} on matrices, grad clip 1.0, fp32;
  best-valid checkpoint kept (step {stats.get('best_step')}).
- bits per byte (seq_len {a.seq_len}, non-overlapping windows, fresh state, first position unscored):
  valid {res['valid']['bpb']:.4f}, test {res['test']['bpb']:.4f}, ood-test (Python docs) {res['ood-test']['bpb']:.4f}
- tokenizer.json: `tokenizers` BPE, 256 GPT-2 byte-level characters with id = byte value, no merges, no
  normalizer, ByteLevel pre-tokenizer (no prefix space, no regex) and decoder.

Sample (prompt "ROMEO:", temperature 0.8, top-k 40, seed 0, 400 bytes):

```
{s_temp}
```

Greedy (200 bytes):

```
{s_greedy}
```

Files: config.json, model.safetensors, tokenizer.json, tokenizer_config.json, train_log.txt,
training_summary.json. Licence of the training text: see calibration/README.md.
"""
    atomic_write(os.path.join(out, "README.md"), lambda p: open(p, "w").write(readme))
    log("finalize done")


def train(a, make_model=None, save=None, finish=None):
    """The training loop of both bundled models (train_byte_mamba2.py passes its own model, saver
    and end-of-training step): AdamW, warmup then cosine decay by wall clock, best-valid checkpoint."""
    make_model = make_model or (lambda a: ByteMamba(d=a.d_model, n_layer=a.layers, R=a.dt_rank, chunk=a.chunk))
    save = save or save_hf
    finish = finish or finalize
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    out = os.path.join(REPO, a.out) if not os.path.isabs(a.out) else a.out
    bench = a.bench > 0
    if not bench:
        os.makedirs(out, exist_ok=True)
    logf = None if bench else open(os.path.join(out, "train_log.txt"), "a")

    def log(s):
        s = f"[{time.strftime('%H:%M:%S')}] {s}"
        print(s, flush=True)
        if logf:
            logf.write(s + "\n"); logf.flush()

    model = make_model(a)
    nparam = count_params(model)
    train_data = torch.from_numpy(np.frombuffer(load_split("train"), dtype=np.uint8).astype(np.int64))
    opt = torch.optim.AdamW(param_groups(model, a.wd), lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    log(f"model {model.cfg} params {nparam:,}; train bytes {len(train_data):,}; seq {a.seq_len} batch {a.batch} "
        f"lr {a.lr} minutes {a.minutes} threads {torch.get_num_threads()}")
    budget = (a.bench if bench else a.minutes * 60.0)
    t0 = time.time()
    eval_time = 0.0
    best, best_step, step, tokens = float("inf"), -1, 0, 0
    last_eval = t0
    tok_window, tw0 = 0, time.time()
    loss_ema = None
    dtype = torch.float32 if nparam * 4 <= 30e6 else torch.float16
    while True:
        el = time.time() - t0
        frac = min(el / budget, 1.0)
        if el >= budget or (a.max_steps and step >= a.max_steps):
            break
        warm = min(1.0, (step + 1) / a.warmup)
        lr = a.lr * warm * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))
        for gp in opt.param_groups:
            gp["lr"] = lr
        ix = torch.randint(0, len(train_data) - a.seq_len - 1, (a.batch,))
        batch = torch.stack([train_data[i:i + a.seq_len + 1] for i in ix.tolist()])
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += a.batch * a.seq_len
        tok_window += a.batch * a.seq_len
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        if step % a.log_every == 0 or bench:
            now = time.time()
            tps = tok_window / (now - tw0)
            tok_window, tw0 = 0, now
            log(f"step {step} loss {loss.item():.4f} (ema {loss_ema / math.log(2):.4f} bits) gnorm {gn:.2f} "
                f"lr {lr:.2e} tok/s {tps:.0f} tokens {tokens:,} elapsed {time.time() - t0:.0f}s")
        if not bench and (time.time() - last_eval >= a.eval_every_min * 60 or (a.max_steps and step == a.max_steps)):
            te = time.time()
            vb, _, _ = eval_bpb(model, "valid", a.seq_len)
            eval_time += time.time() - te
            msg = f"eval step {step} valid_bpb {vb:.4f} (eval {time.time() - te:.0f}s) elapsed {time.time() - t0:.0f}s"
            if vb < best:
                best, best_step = vb, step
                save(model, out, dtype, {"step": step, "valid_bpb": f"{vb:.5f}"})
                msg += " [saved best]"
            log(msg)
            last_eval = time.time()
            tok_window, tw0 = 0, time.time()
    wall = time.time() - t0
    if bench:
        log(f"bench: {tokens / wall:.0f} tokens/s average over {wall:.0f}s ({step} steps)")
        return
    te = time.time()
    vb, _, _ = eval_bpb(model, "valid", a.seq_len)
    log(f"eval step {step} (end) valid_bpb {vb:.4f}")
    if vb < best:
        best, best_step = vb, step
        save(model, out, dtype, {"step": step, "valid_bpb": f"{vb:.5f}"})
        log("saved best (end)")
    stats = dict(train_wall_s=round(wall, 1), eval_time_during_training_s=round(eval_time, 1), steps=step,
                 tokens_seen=tokens, epochs=round(tokens / len(train_data), 3), best_step=best_step,
                 best_valid_bpb=round(best, 5), train_bytes=len(train_data),
                 dtype="F32" if dtype == torch.float32 else "F16",
                 threads=torch.get_num_threads(), seed=a.seed)
    with open(os.path.join(out, ".train_stats.json"), "w") as f:
        json.dump(dict(stats=stats, args=vars(a)), f)
    finish(model, a, out, log, stats)


def add_common_arguments(ap, out):
    """The options both bundled models' scripts take (train_byte_mamba2.py adds its own shapes)."""
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--hf-check", metavar="DIR")
    ap.add_argument("--finalize", metavar="DIR", help="re-run the end-of-training step on a saved run")
    ap.add_argument("--bench", type=float, default=0, help="measure tokens/s for this many seconds")
    ap.add_argument("--out", default=out)
    ap.add_argument("--minutes", type=float, default=70)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--d-model", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2.5e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--eval-every-min", type=float, default=10)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)


def run(a, selftest, hf_check, finalize, train):
    """Dispatches the parsed options of either script."""
    torch.set_num_threads(a.threads)
    if a.selftest:
        return selftest()
    if a.hf_check:
        return hf_check(a.hf_check)
    if a.finalize:
        out = a.finalize
        st = json.load(open(os.path.join(out, ".train_stats.json")))
        for k, v in st["args"].items():  # the run's settings (seq_len etc.); its own "finalize" was None
            if k not in ("finalize", "threads"):
                setattr(a, k, v)
        logf = open(os.path.join(out, "train_log.txt"), "a")
        def log(s):
            s = f"[{time.strftime('%H:%M:%S')}] {s}"; print(s, flush=True); logf.write(s + "\n"); logf.flush()
        return finalize(None, a, out, log, st["stats"])
    train(a)


def main():
    ap = argparse.ArgumentParser()
    add_common_arguments(ap, "models/bard-mamba")
    ap.add_argument("--dt-rank", type=int, default=None)
    ap.add_argument("--chunk", type=int, default=16)
    run(ap.parse_args(), selftest, hf_check, finalize, train)


if __name__ == "__main__":
    main()
