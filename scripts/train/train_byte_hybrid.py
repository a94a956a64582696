#!/usr/bin/env python3
"""Train the bundled byte-level hybrid reference model (vocab 256, id = byte value): Nemotron-H's
layout, Mamba-2 ("M"), attention ("*") and MLP ("-") layers in one stack.

Plain torch with exactly the Hugging Face (NemotronHForCausalLM, transformers 5) parameter names and
forward math (models/nemotron_h/modeling_nemotron_h.py):
  every layer: h = h + mixer(RMSNorm(h));
  M: train_byte_mamba2.py's Mamba-2 mixer (in_proj rows [z | x, B, C | dt], SiLU conv, the SSD with dt
     clamped below at time_step_min as NemotronHMamba2Mixer does, the gated RMSNorm over E / G channels);
  *: q_proj, k_proj, v_proj, o_proj without biases, grouped-query heads, scores scaled by head_dim^-1/2,
     causal softmax, no positional encoding (Nemotron-H's attention has none: the Mamba layers carry order);
  -: down_proj(relu(up_proj(x))^2) (relu2).
  norm_f, an untied lm_head (transformers 5.23 leaves NemotronHForCausalLM's head untied on load).

Usage (the data, evaluation, sampling and training loop are train_byte_mamba.py's):
  python3 scripts/train/train_byte_hybrid.py --selftest
  python3 scripts/train/train_byte_hybrid.py --bench 60 --threads 1
  python3 scripts/train/train_byte_hybrid.py --minutes 70 --threads 1 --out models/bard-hybrid
  python3 scripts/train/train_byte_hybrid.py --hf-check models/bard-hybrid
"""
import argparse, json, math, os, sys, tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_byte_mamba as m1  # noqa: E402  (data, eval, sampling, tokenizer, the training loop)
import train_byte_mamba2 as m2  # noqa: E402  (the Mamba-2 mixer and its chunked SSD)

KINDS = {"M": "mamba", "*": "attention", "-": "mlp"}


class Attention(nn.Module):
    def __init__(self, d, heads, kv_heads, head_dim, n_layer):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(d, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(d, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(d, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, d, bias=False)
        with torch.no_grad():
            self.o_proj.weight /= math.sqrt(n_layer)

    def forward(self, u, scan=None):
        b, L, _ = u.shape
        q = self.q_proj(u).view(b, L, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(u).view(b, L, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(u).view(b, L, self.kv_heads, self.head_dim).transpose(1, 2)
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.head_dim ** -0.5)
        return self.o_proj(y.transpose(1, 2).reshape(b, L, -1))


class MLP(nn.Module):
    def __init__(self, d, intermediate, n_layer):
        super().__init__()
        self.up_proj = nn.Linear(d, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, d, bias=False)
        with torch.no_grad():
            self.down_proj.weight /= math.sqrt(n_layer)

    def forward(self, u, scan=None):
        return self.down_proj(torch.relu(self.up_proj(u)).square())


class Block(nn.Module):
    def __init__(self, kind, d, n_layer, c, eps=1e-5):
        super().__init__()
        self.norm = m1.RMSNorm(d, eps)
        if kind == "M":
            self.mixer = m2.Mixer(d, n_layer, N=c["N"], expand=c["expand"], K=c["K"], P=c["P"], G=c["G"], chunk=c["chunk"], eps=eps,
                                  dt_limit=(c["dt_min"], math.inf))
        elif kind == "*":
            self.mixer = Attention(d, c["heads"], c["kv_heads"], c["head_dim"], n_layer)
        else:
            self.mixer = MLP(d, c["intermediate"], n_layer)

    def forward(self, h, scan=None):
        return h + self.mixer(self.norm(h), scan)


class Backbone(nn.Module):
    def __init__(self, c, eps=1e-5):
        super().__init__()
        self.embeddings = nn.Embedding(c["vocab"], c["d"])
        nn.init.normal_(self.embeddings.weight, std=0.02)
        self.layers = nn.ModuleList([Block(k, c["d"], len(c["pattern"]), c, eps) for k in c["pattern"]])
        self.norm_f = m1.RMSNorm(c["d"], eps)


class ByteHybrid(nn.Module):
    def __init__(self, d=256, pattern="M-M*M-M*M-", vocab=256, N=64, expand=2, K=4, P=64, G=1, chunk=64, dt_min=1e-3,
                 heads=8, kv_heads=2, intermediate=1024):
        super().__init__()
        assert set(pattern) <= set(KINDS), pattern
        self.cfg = dict(d=d, pattern=pattern, n_layer=len(pattern), vocab=vocab, N=N, expand=expand, K=K, P=P, H=expand * d // P, G=G,
                        chunk=chunk, dt_min=dt_min, heads=heads, kv_heads=kv_heads, head_dim=d // heads, intermediate=intermediate)
        self.backbone = Backbone(self.cfg)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        nn.init.normal_(self.lm_head.weight, std=0.02)

    def forward(self, ids, scan=None):
        h = self.backbone.embeddings(ids)
        for layer in self.backbone.layers:
            h = layer(h, scan)
        return self.lm_head(self.backbone.norm_f(h))


# ------------------------------------------------------------------------------------------ HF export
def hf_config(c):
    from transformers import NemotronHConfig
    return NemotronHConfig(vocab_size=c["vocab"], hidden_size=c["d"], layers_block_type=[KINDS[k] for k in c["pattern"]],
                           num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"], head_dim=c["head_dim"],
                           intermediate_size=c["intermediate"], mlp_hidden_act="relu2", mlp_bias=False, attention_bias=False,
                           mamba_num_heads=c["H"], mamba_head_dim=c["P"], n_groups=c["G"], ssm_state_size=c["N"], expand=c["expand"],
                           conv_kernel=c["K"], chunk_size=c["chunk"], time_step_min=c["dt_min"], use_conv_bias=True, use_bias=False,
                           layer_norm_epsilon=1e-5, residual_in_fp32=False, tie_word_embeddings=False,
                           bos_token_id=None, eos_token_id=None, pad_token_id=None)


def save_hf(model, out, dtype=torch.float32, extra_meta=None):
    """train_byte_mamba.save_hf with the Nemotron-H config, tensors in transformers 5's names
    (model.* for backbone.*: what NemotronHForCausalLM.save_pretrained writes)."""
    renamed = _Renamed(model)
    m1.save_hf(renamed, out, dtype, extra_meta, config=hf_config(model.cfg))


class _Renamed(nn.Module):
    """The model's state dict under transformers 5's prefix (model.* for backbone.*)."""
    def __init__(self, model):
        super().__init__()
        self.inner, self.cfg = model, model.cfg

    def state_dict(self, *a, **k):
        return {("model." + n[len("backbone."):] if n.startswith("backbone.") else n): v for n, v in self.inner.state_dict().items()}


def load_hf_into(out):
    from safetensors.torch import load_file
    c = json.load(open(os.path.join(out, "config.json")))
    kinds = {"mamba": "M", "linear_attention": "M", "attention": "*", "full_attention": "*", "mlp": "-"}
    m = ByteHybrid(d=c["hidden_size"], pattern="".join(kinds[t] for t in c["layers_block_type"]), vocab=c["vocab_size"],
                   N=c["ssm_state_size"], expand=c["mamba_num_heads"] * c["mamba_head_dim"] // c["hidden_size"], K=c["conv_kernel"],
                   P=c["mamba_head_dim"], G=c["n_groups"], chunk=c["chunk_size"], dt_min=c["time_step_min"],
                   heads=c["num_attention_heads"], kv_heads=c["num_key_value_heads"], intermediate=c["intermediate_size"])
    assert m.cfg["head_dim"] == c["head_dim"], (m.cfg, c["head_dim"])
    sd = {("backbone." + k[len("model."):] if k.startswith("model.") else k): v.float()
          for k, v in load_file(os.path.join(out, "model.safetensors")).items()}
    m.load_state_dict(sd, strict=True)
    return m


def hf_check(out, model=None, n=300):
    """The Mamba-1 script's check (train_byte_mamba.hf_check) through NemotronHForCausalLM."""
    from transformers import NemotronHForCausalLM
    return m1.hf_check(out, model, n, hf_class=NemotronHForCausalLM, load=load_hf_into)


# ------------------------------------------------------------------------------------------ selftest
def selftest():
    torch.manual_seed(0)
    m = ByteHybrid(d=64, pattern="M*-M-*", N=16, P=16, G=2, chunk=16, heads=4, kv_heads=2, intermediate=96)
    ids = torch.randint(0, 256, (2, 50))
    with torch.no_grad():
        d = (m(ids) - m(ids, scan=m2.ssd_ref)).abs().max().item()
    print(f"chunked SSD vs recurrence in the hybrid: {d:.2e}"); assert d < 1e-4
    with tempfile.TemporaryDirectory() as tmp:
        save_hf(m, tmp)
        cfg = json.load(open(os.path.join(tmp, "config.json")))
        assert cfg["model_type"] == "nemotron_h" and cfg["tie_word_embeddings"] is False
        d = hf_check(tmp, load_hf_into(tmp), n=100)
        assert d < 1e-4
    print("selftest OK")


# ------------------------------------------------------------------------------------------ training
def finalize(model, a, out, log, stats):
    m1.finalize(model, a, out, log, stats, load=load_hf_into, check=hf_check, family="hybrid (Nemotron-H layout)",
                script="train_byte_hybrid.py", hf_class="NemotronHForCausalLM",
                config_line=lambda c: f"hidden_size {c['d']}, {c['n_layer']} layers \"{c['pattern']}\" (M Mamba-2, * attention, - MLP); "
                                      f"Mamba-2: {c['H']} heads x head_dim {c['P']}, n_groups {c['G']}, state_size {c['N']}, "
                                      f"conv_kernel {c['K']}, chunk_size {c['chunk']}, time_step_min {c['dt_min']}; attention: "
                                      f"{c['heads']} heads of {c['head_dim']}, {c['kv_heads']} key/value heads, no positional "
                                      f"encoding; MLP: relu2, intermediate {c['intermediate']}; untied lm_head")


def train(a):
    m1.train(a, make_model=lambda a: ByteHybrid(d=a.d_model, pattern=a.pattern, N=a.state_size, expand=a.expand, K=a.conv_kernel,
                                                 P=a.head_dim, G=a.n_groups, chunk=a.chunk, heads=a.heads, kv_heads=a.kv_heads,
                                                 intermediate=a.intermediate),
             save=save_hf, finish=finalize)


def main():
    ap = argparse.ArgumentParser()
    m1.add_common_arguments(ap, "models/bard-hybrid")
    ap.set_defaults(d_model=256)
    ap.add_argument("--pattern", default="M-M*M-M*M-", help="layer kinds: M Mamba-2, * attention, - MLP")
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--state-size", type=int, default=64)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--n-groups", type=int, default=1)
    ap.add_argument("--conv-kernel", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=1024)
    m1.run(ap.parse_args(), selftest, hf_check, finalize, train)


if __name__ == "__main__":
    main()
