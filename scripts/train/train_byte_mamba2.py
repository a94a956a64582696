#!/usr/bin/env python3
"""Train the bundled byte-level Mamba-2 reference model (vocab 256, id = byte value).

Plain-torch Mamba-2 with exactly the Hugging Face (Mamba2ForCausalLM) parameter names and shapes and its
forward math (transformers' torch path, which follows mamba_ssm's Mamba2 with norm_before_gate=False):
  per block: zxbcdt = in_proj(RMSNorm(u)), rows [z (E) | x, B, C (E + 2GN) | dt (H)];
  xBC = SiLU(causal depthwise conv1d(xBC) + b); x, B, C = split (E, GN, GN);
  dt = softplus(dt + dt_bias) (time_step_limit (0, inf): no clamp); A = -exp(A_log) (one scalar per head);
  per head h (head_dim P, reading B/C group h // (H/G)):
    s_t = exp(dt_t A) s_{t-1} + dt_t x_t B_t^T  (s: [P, N]);  y_t = s_t C_t + D x_t;
  y = RMSNorm over groups of E/G channels of (y * SiLU(z)), times norm.weight; out_proj; residual add.
  norm_f, tied lm_head.
Training uses the chunked SSD (matmul) form: within chunks of T positions the output is a masked
"attention" (C B^T weighted by exp of segment sums of dt A), chunk end states are B^T (decayed x dt), and
a short sequential recurrence over the L/T chunks carries the state; every exponent is <= 0. --selftest
checks it (values and gradients) against the sequential recurrence, and a tiny saved model against
transformers.

Usage:
  python3 scripts/train/train_byte_mamba2.py --selftest
  python3 scripts/train/train_byte_mamba2.py --bench 60             # tokens/s for 60 s, no output files
  python3 scripts/train/train_byte_mamba2.py --minutes 70 --out models/bard-mamba2
  python3 scripts/train/train_byte_mamba2.py --hf-check models/bard-mamba2
  python3 scripts/train/train_byte_mamba2.py --finalize models/bard-mamba2  # eval + sample + summary only

Evaluation protocol (same as the tool's and train_byte_mamba.py's): the split's bytes are cut into
non-overlapping windows of seq_len bytes (the last, shorter window included when it has >= 2 bytes), each
window run from a fresh state, every position but the first scored; bits per byte = sum(-log2 p) /
positions scored.
"""
import argparse, json, math, os, sys, tempfile, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_byte_mamba as m1  # noqa: E402  (data, eval, sampling, tokenizer, atomic writes, optimizer groups)

REPO = m1.REPO
CAL = m1.CAL


# ----------------------------------------------------------------------------------------------- model
def ssd_ref(x, dt, A, Bm, Cm):
    """Sequential reference. x [b,L,H,P]; dt [b,L,H] (after softplus); A [H]; Bm, Cm [b,L,G,N]
    -> y [b,L,H,P] (no D term). Head h reads group h // (H/G)."""
    b, L, H, P = x.shape
    G, N = Bm.shape[2:]
    Bh = Bm.repeat_interleave(H // G, dim=2)
    Ch = Cm.repeat_interleave(H // G, dim=2)
    s = x.new_zeros(b, H, P, N)
    ys = []
    for t in range(L):
        s = torch.exp(dt[:, t] * A)[:, :, None, None] * s + \
            (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append((s * Ch[:, t, :, None, :]).sum(-1))
    return torch.stack(ys, 1)


def segsum(a):
    """a [..., T] -> [..., T, T]: out[..., l, s] = sum_{s < k <= l} a_k for l >= s, -inf above the diagonal.
    Masked cumulative sum (no differences of large cumulative sums), as transformers' segment_sum."""
    T = a.size(-1)
    a = a[..., None].expand(*a.shape, T)                                   # [..., k, s] = a_k
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), -1)
    a = a.masked_fill(~strict, 0)
    ss = torch.cumsum(a, dim=-2)
    lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), 0)
    return ss.masked_fill(~lower, -torch.inf)


def ssd_chunked(x, dt, A, Bm, Cm, T=64):
    """Chunked SSD: same result as ssd_ref for any chunk length T. Works head-major ([.., G, Hg, T, P]) so
    that every contraction is a batched matmul."""
    b, L, H, P = x.shape
    G, N = Bm.shape[2:]
    Hg = H // G
    pad = (-L) % T
    if pad:  # dt = 0 -> decay 1 and no input: padded steps are inert (and dropped below)
        x = F.pad(x, (0, 0, 0, 0, 0, pad)); dt = F.pad(dt, (0, 0, 0, pad))
        Bm = F.pad(Bm, (0, 0, 0, 0, 0, pad)); Cm = F.pad(Cm, (0, 0, 0, 0, 0, pad))
    nc = (L + pad) // T
    dA = (dt * A).view(b, nc, T, G, Hg).permute(0, 1, 3, 4, 2)                 # [b,c,G,Hg,T], <= 0
    cs = torch.cumsum(dA, dim=-1)                                              # non-increasing in T
    xc = (x * dt[..., None]).view(b, nc, T, G, Hg, P).permute(0, 1, 3, 4, 2, 5)  # [b,c,G,Hg,T,P]
    Bc = Bm.view(b, nc, T, G, N).transpose(2, 3)[:, :, :, None]               # [b,c,G,1,T,N]
    Cc = Cm.view(b, nc, T, G, N).transpose(2, 3)[:, :, :, None]
    # 1. within chunks: y_l = sum_{s<=l} (C_l . B_s) exp(cs_l - cs_s) dt_s x_s
    CB = Cc @ Bc.transpose(-1, -2)                                             # [b,c,G,1,T,T]
    y = (CB * torch.exp(segsum(dA))) @ xc                                      # [b,c,G,Hg,T,P]
    if nc > 1:
        # 2. each chunk's end state from its own inputs: sum_s exp(cs_last - cs_s) dt_s x_s B_s^T
        decay_to_end = torch.exp(cs[..., -1:] - cs)                            # in (0, 1]
        states = (xc * decay_to_end[..., None]).transpose(-1, -2) @ Bc         # [b,c,G,Hg,P,N]
        # 3. carry across chunks: start state of chunk c
        chunk_decay = torch.exp(cs[..., -1])[..., None, None]                  # [b,c,G,Hg,1,1]
        S = states.new_zeros(b, G, Hg, P, N)
        starts = [S]
        for c in range(nc - 1):
            S = chunk_decay[:, c] * S + states[:, c]
            starts.append(S)
        S0 = torch.stack(starts, 1)                                            # [b,c,G,Hg,P,N]
        # 4. contribution of the start state: exp(cs_l) C_l . S0
        y = y + (Cc @ S0.transpose(-1, -2)) * torch.exp(cs)[..., None]
    return y.permute(0, 1, 4, 2, 3, 5).reshape(b, nc * T, H, P)[:, :L]


RMSNorm = m1.RMSNorm


class GatedRMSNorm(nn.Module):
    """transformers' MambaRMSNormGated (norm_before_gate=False): RMSNorm over groups of `group` channels
    of x * SiLU(z), times weight."""
    def __init__(self, d, group, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.group, self.eps = group, eps

    def forward(self, x, z):
        x = x * F.silu(z)
        xs = x.view(*x.shape[:-1], x.shape[-1] // self.group, self.group)
        xs = xs * torch.rsqrt(xs.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xs.view(x.shape)


class Mixer(nn.Module):
    def __init__(self, d, n_layer, N=128, expand=2, K=4, P=64, G=1, chunk=64, eps=1e-5,
                 dt_limit=(0.0, math.inf)):
        super().__init__()
        E = expand * d
        assert E % P == 0, (E, P)
        H = E // P
        assert H % G == 0, (H, G)
        self.E, self.N, self.K, self.P, self.H, self.G, self.chunk = E, N, K, P, H, G, chunk
        self.dt_limit = tuple(float(v) for v in dt_limit)
        conv_dim = E + 2 * G * N
        self.in_proj = nn.Linear(d, E + conv_dim + H, bias=False)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, K, groups=conv_dim, padding=K - 1, bias=True)
        # mamba_ssm Mamba2 init: dt in [1e-3, 0.1] log-uniform (floor 1e-4) through dt_bias = softplus^-1(dt),
        # A uniform in [1, 16], D = 1
        dt = torch.exp(torch.rand(H) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(H))
        self.norm = GatedRMSNorm(E, E // G, eps)
        self.out_proj = nn.Linear(E, d, bias=False)
        with torch.no_grad():
            # prenorm residual rescale (GPT-2 style), as in mamba_ssm _init_weights
            nn.init.kaiming_uniform_(self.out_proj.weight, a=math.sqrt(5))
            self.out_proj.weight /= math.sqrt(n_layer)

    def forward(self, u, scan=None):
        b, L, _ = u.shape
        E, G, N, H, P = self.E, self.G, self.N, self.H, self.P
        z, xBC, dt = torch.split(self.in_proj(u), [E, E + 2 * G * N, H], dim=-1)
        xBC = F.silu(self.conv1d(xBC.transpose(1, 2))[..., :L].transpose(1, 2))
        x, Bm, Cm = torch.split(xBC, [E, G * N, G * N], dim=-1)
        dt = F.softplus(dt + self.dt_bias)
        if self.dt_limit != (0.0, math.inf):
            dt = dt.clamp(self.dt_limit[0], self.dt_limit[1])
        A = -torch.exp(self.A_log)
        x = x.reshape(b, L, H, P)
        Bm, Cm = Bm.reshape(b, L, G, N), Cm.reshape(b, L, G, N)
        if scan is None:
            y = ssd_chunked(x, dt, A, Bm, Cm, self.chunk)
        else:
            y = scan(x, dt, A, Bm, Cm)
        y = (y + x * self.D[:, None]).reshape(b, L, E)
        return self.out_proj(self.norm(y, z))


class Block(nn.Module):
    def __init__(self, d, n_layer, eps=1e-5, **kw):
        super().__init__()
        self.norm = RMSNorm(d, eps)
        self.mixer = Mixer(d, n_layer, eps=eps, **kw)

    def forward(self, h, scan=None):
        return h + self.mixer(self.norm(h), scan)


class Backbone(nn.Module):
    def __init__(self, d, n_layer, vocab, eps=1e-5, **kw):
        super().__init__()
        self.embeddings = nn.Embedding(vocab, d)
        nn.init.normal_(self.embeddings.weight, std=0.02)
        self.layers = nn.ModuleList([Block(d, n_layer, eps=eps, **kw) for _ in range(n_layer)])
        self.norm_f = RMSNorm(d, eps)


class ByteMamba2(nn.Module):
    def __init__(self, d=384, n_layer=6, vocab=256, N=128, expand=2, K=4, P=64, G=1, chunk=64,
                 dt_limit=(0.0, math.inf)):
        super().__init__()
        self.cfg = dict(d=d, n_layer=n_layer, vocab=vocab, N=N, expand=expand, K=K, P=P, H=expand * d // P, G=G,
                        chunk=chunk)
        self.dt_limit = dt_limit
        self.backbone = Backbone(d, n_layer, vocab, N=N, expand=expand, K=K, P=P, G=G, chunk=chunk,
                                 dt_limit=dt_limit)

    def forward(self, ids, scan=None):
        h = self.backbone.embeddings(ids)
        for layer in self.backbone.layers:
            h = layer(h, scan)
        h = self.backbone.norm_f(h)
        return h @ self.backbone.embeddings.weight.t()  # tied lm_head


# ------------------------------------------------------------------------------------------ HF export
def hf_config(cfg, dt_limit=(0.0, math.inf)):
    from transformers import Mamba2Config
    return Mamba2Config(vocab_size=cfg["vocab"], hidden_size=cfg["d"], state_size=cfg["N"],
                        num_hidden_layers=cfg["n_layer"], layer_norm_epsilon=1e-5, expand=cfg["expand"],
                        conv_kernel=cfg["K"], n_groups=cfg["G"], num_heads=cfg["H"], head_dim=cfg["P"],
                        use_bias=False, use_conv_bias=True, residual_in_fp32=True, chunk_size=cfg["chunk"],
                        time_step_limit=tuple(float(v) for v in dt_limit), tie_word_embeddings=True,
                        bos_token_id=None, eos_token_id=None, pad_token_id=None)


def save_hf(model, out, dtype=torch.float32, extra_meta=None):
    """train_byte_mamba.save_hf with this model's Mamba2Config."""
    m1.save_hf(model, out, dtype, extra_meta, config=hf_config(model.cfg, model.dt_limit))


def _json_float(v):
    if isinstance(v, dict) and "__float__" in v:  # transformers' tagged non-finite float
        return float(v["__float__"])
    return float(v)


def load_hf_into(out):
    from safetensors.torch import load_file
    with open(os.path.join(out, "config.json")) as f:
        c = json.load(f)
    E = int(c["expand"] * c["hidden_size"])
    assert c.get("num_heads", E // c["head_dim"]) * c["head_dim"] == E, c
    m = ByteMamba2(d=c["hidden_size"], n_layer=c["num_hidden_layers"], vocab=c["vocab_size"], N=c["state_size"],
                   expand=c["expand"], K=c["conv_kernel"], P=c["head_dim"], G=c["n_groups"],
                   chunk=c.get("chunk_size", 256),
                   dt_limit=tuple(_json_float(v) for v in c.get("time_step_limit", (0.0, math.inf))))
    sd = {k: v.float() for k, v in load_file(os.path.join(out, "model.safetensors")).items()}
    m.load_state_dict(sd, strict=True)
    return m


def hf_check(out, model=None, n=300):
    """The Mamba-1 script's check (train_byte_mamba.hf_check) through Mamba2ForCausalLM."""
    from transformers import Mamba2ForCausalLM
    return m1.hf_check(out, model, n, hf_class=Mamba2ForCausalLM, load=load_hf_into)


# ------------------------------------------------------------------------------------------ selftest
def selftest():
    torch.manual_seed(0)
    for (b, L, H, P, G, N, T) in [(2, 37, 4, 8, 1, 16, 8), (3, 64, 6, 4, 2, 8, 16), (1, 5, 2, 4, 1, 16, 16),
                                  (2, 100, 4, 8, 4, 16, 32), (2, 256, 4, 16, 1, 32, 64), (1, 256, 2, 8, 1, 64, 256)]:
        x = torch.randn(b, L, H, P, dtype=torch.float64)
        dt = F.softplus(torch.randn(b, L, H, dtype=torch.float64) * 2 - 1)
        A = -torch.empty(H, dtype=torch.float64).uniform_(1, 16)
        Bm = torch.randn(b, L, G, N, dtype=torch.float64); Cm = torch.randn(b, L, G, N, dtype=torch.float64)
        for dtype in (torch.float64, torch.float32):
            args = [t.to(dtype).requires_grad_(True) for t in (x, dt, A, Bm, Cm)]
            y1 = ssd_ref(*args)
            g = torch.randn_like(y1)
            gr1 = torch.autograd.grad((y1 * g).sum(), args)
            y2 = ssd_chunked(*args, T=T)
            gr2 = torch.autograd.grad((y2 * g).sum(), args)
            d = ((y1 - y2).abs().max() / (y1.abs().max() + 1e-6)).item()
            dg = max(((a - c).abs().max() / (a.abs().max() + 1e-6)).item() for a, c in zip(gr1, gr2))
            print(f"chunked SSD b{b} L{L} H{H} P{P} G{G} N{N} T{T} {dtype}: max rel|dy| {d:.2e}  "
                  f"max rel|dgrad| {dg:.2e}")
            assert d < 1e-5 and dg < 1e-4
    # whole model: chunked (two chunk lengths) vs sequential recurrence
    m = ByteMamba2(d=64, n_layer=2, N=16, P=16, G=2, chunk=16)
    ids = torch.randint(0, 256, (2, 50))
    with torch.no_grad():
        ref = m(ids, scan=ssd_ref)
        d = (m(ids) - ref).abs().max().item()
        d2 = (m(ids, scan=lambda *a: ssd_chunked(*a, T=64)) - ref).abs().max().item()
    print(f"model chunked (T 16 / 64) vs sequential recurrence: {d:.2e} / {d2:.2e}"); assert d < 1e-4 and d2 < 1e-4
    # save -> transformers round trip on a tiny model (n_groups 2, chunk shorter than the text)
    with tempfile.TemporaryDirectory() as tmp:
        save_hf(m, tmp)
        cfg = json.load(open(os.path.join(tmp, "config.json")))
        assert cfg["model_type"] == "mamba2" and cfg["tie_word_embeddings"] is True
        assert cfg["time_step_limit"] == [0.0, {"__float__": "Infinity"}], cfg["time_step_limit"]
        from safetensors import safe_open
        with safe_open(os.path.join(tmp, "model.safetensors"), "pt") as f:
            keys = set(f.keys())
        assert "lm_head.weight" not in keys and "backbone.layers.0.mixer.dt_bias" in keys
        d = hf_check(tmp, load_hf_into(tmp), n=100)
        assert d < 1e-4
    print("selftest OK")


# ------------------------------------------------------------------------------------------ training
def finalize(model, a, out, log, stats):
    """The Mamba-1 script's end-of-training step (train_byte_mamba.finalize) for this model."""
    m1.finalize(model, a, out, log, stats, load=load_hf_into, check=hf_check, family="Mamba-2", script="train_byte_mamba2.py",
                hf_class="Mamba2ForCausalLM",
                config_line=lambda c: f"hidden_size {c['d']}, {c['n_layer']} layers, intermediate {c['expand'] * c['d']} = {c['H']} heads x "
                                      f"head_dim {c['P']}, n_groups {c['G']}, state_size {c['N']}, conv_kernel {c['K']}, "
                                      f"chunk_size {c['chunk']}, time_step_limit (0, inf), tied embeddings")


def train(a):
    """The Mamba-1 script's loop (train_byte_mamba.train) with this model, saver and finalizer."""
    m1.train(a, make_model=lambda a: ByteMamba2(d=a.d_model, n_layer=a.layers, N=a.state_size, expand=a.expand, K=a.conv_kernel,
                                                 P=a.head_dim, G=a.n_groups, chunk=a.chunk),
             save=save_hf, finish=finalize)


def main():
    ap = argparse.ArgumentParser()
    m1.add_common_arguments(ap, "models/bard-mamba2")
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--state-size", type=int, default=128)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--n-groups", type=int, default=1)
    ap.add_argument("--conv-kernel", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=64, help="SSD chunk length (also config chunk_size)")
    m1.run(ap.parse_args(), selftest, hf_check, finalize, train)


if __name__ == "__main__":
    main()
