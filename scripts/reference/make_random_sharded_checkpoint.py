#!/usr/bin/env python3
"""Writes a random float checkpoint of a published model's shape, BF16 by default, sharded like
Hugging Face's (model-0000k-of-0000n.safetensors + model.safetensors.index.json), tensor by tensor:
each shard's header is written first (the shapes are known) and every tensor is drawn, written
and dropped, so a 7B checkpoint needs one tensor's memory, not the model's (transformers' own
init builds the whole model first). For the memory and speed measurements of the big-model
pipeline; never commit one (mamba-2.8b is 5.5 GB, falcon-mamba-7b 14.5 GB, nemotron-h-8b-like 16.2 GB
in BF16).

    python3 scripts/reference/make_random_sharded_checkpoint.py --preset falcon-mamba-7b --out /tmp/fm7b

Values have a trained model's ranges (the same as MambaWeights.random in Swift): A_log = log(1..N)
plus noise, dt_proj.bias the inverse softplus of dt in [1e-3, 1e-1], norms near 1, D near 1,
weights with std 1/sqrt(fan_in). Copies tokenizer.json from --tokenizer when given.
"""
import argparse
import json
import math
import os
import shutil
import struct

import torch

# Shapes of the published checkpoints' config.json (Sources/MambaModel/Presets.swift mirrors them).
PRESETS = {
    "mamba-130m": dict(model_type="mamba", hidden_size=768, num_hidden_layers=24, vocab_size=50280),
    "mamba-1.4b": dict(model_type="mamba", hidden_size=2048, num_hidden_layers=48, vocab_size=50280),
    "mamba-2.8b": dict(model_type="mamba", hidden_size=2560, num_hidden_layers=64, vocab_size=50280),
    "falcon-mamba-7b": dict(model_type="falcon_mamba", hidden_size=4096, num_hidden_layers=64, vocab_size=65024,
                            time_step_rank=256, mixer_rms_eps=1e-6),
    # state-spaces/mamba2-*: head_dim 64, one group, state 128 (Presets.swift).
    "mamba2-130m": dict(model_type="mamba2", hidden_size=768, num_hidden_layers=24, vocab_size=50288),
    "mamba2-1.3b": dict(model_type="mamba2", hidden_size=2048, num_hidden_layers=48, vocab_size=50288),
    "mamba2-2.7b": dict(model_type="mamba2", hidden_size=2560, num_hidden_layers=64, vocab_size=50288),
    # An 8B-class Nemotron-H: Nemotron-H-8B's sizes (D 4096, Mamba-2 with 128 heads of 64, 8 groups,
    # state 128; attention 32 heads on 8 of 128; relu2 MLP 21504; vocabulary 131072, untied) over
    # 52 layers of which 24 Mamba-2, 4 attention and 24 MLP, in a pattern of this script's (not
    # the published one). 8.1 B parameters, 16.2 GB in BF16: the hybrids' big-model memory check.
    "nemotron-h-8b-like": dict(model_type="nemotron_h", hidden_size=4096, num_hidden_layers=52, vocab_size=131072,
                               hybrid_override_pattern="M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-",
                               mamba_num_heads=128, mamba_head_dim=64, n_groups=8, ssm_state_size=128, num_attention_heads=32,
                               num_key_value_heads=8, head_dim=128, intermediate_size=21504),
}
DTYPES = {"bf16": (torch.bfloat16, "BF16"), "f16": (torch.float16, "F16"), "f32": (torch.float32, "F32")}


def tensors(cfg):
    """(name, shape, init) in checkpoint order; init draws the values from a generator."""
    d, n_layers, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    e, n, k = 2 * d, 16, 4
    r = cfg.get("time_step_rank", math.ceil(d / 16))

    def normal(std, mean=0.0):
        return lambda shape, g: mean + std * torch.randn(shape, generator=g)

    def a_log(shape, g):
        return torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(e, 1) + 0.1 * torch.randn(shape, generator=g)

    def dt_bias(shape, g):
        dt = torch.exp(math.log(1e-3) + torch.rand(shape, generator=g) * (math.log(1e-1) - math.log(1e-3)))
        return dt + torch.log(-torch.expm1(-dt))

    def mamba2_mixer(p, d, e, x, h):
        """A Mamba-2 mixer's tensors (E inner, X conv channels, H heads) under layer prefix p."""
        return [
            (p + "mixer.in_proj.weight", [e + x + h, d], normal(1 / math.sqrt(d))),
            (p + "mixer.conv1d.weight", [x, 1, k], normal(0.5)),
            (p + "mixer.conv1d.bias", [x], normal(0.1)),
            (p + "mixer.dt_bias", [h], dt_bias),
            (p + "mixer.A_log", [h], lambda shape, g: torch.log(torch.linspace(1, 16, shape[0])) + 0.1 * torch.randn(shape, generator=g)),
            (p + "mixer.D", [h], normal(0.2, 1.0)),
            (p + "mixer.norm.weight", [e], normal(0.1, 1.0)),
            (p + "mixer.out_proj.weight", [d, e], normal(1 / math.sqrt(e))),
        ]

    out = [("backbone.embeddings.weight", [v, d], normal(1.0))]
    if cfg["model_type"] == "nemotron_h":
        h, hp, g, n2 = cfg["mamba_num_heads"], cfg["mamba_head_dim"], cfg["n_groups"], cfg["ssm_state_size"]
        e = h * hp
        x = e + 2 * g * n2
        q, kv, w = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"], cfg["intermediate_size"]
        for i, kind in enumerate(cfg["hybrid_override_pattern"]):
            p = f"backbone.layers.{i}."
            out.append((p + "norm.weight", [d], normal(0.1, 1.0)))
            if kind == "M":
                out += mamba2_mixer(p, d, e, x, h)
            elif kind == "*":
                out += [(p + "mixer.q_proj.weight", [q, d], normal(1 / math.sqrt(d))), (p + "mixer.k_proj.weight", [kv, d], normal(1 / math.sqrt(d))),
                        (p + "mixer.v_proj.weight", [kv, d], normal(1 / math.sqrt(d))), (p + "mixer.o_proj.weight", [d, q], normal(1 / math.sqrt(q)))]
            else:
                out += [(p + "mixer.up_proj.weight", [w, d], normal(1 / math.sqrt(d))), (p + "mixer.down_proj.weight", [d, w], normal(1 / math.sqrt(w)))]
        out += [("backbone.norm_f.weight", [d], normal(0.1, 1.0)), ("lm_head.weight", [v, d], normal(1 / math.sqrt(d)))]
        return out
    if cfg["model_type"] == "mamba2":
        h, n2 = e // 64, 128
        x = e + 2 * n2
        for i in range(n_layers):
            p = f"backbone.layers.{i}."
            out += [(p + "norm.weight", [d], normal(0.1, 1.0))] + mamba2_mixer(p, d, e, x, h)
        out.append(("backbone.norm_f.weight", [d], normal(0.1, 1.0)))
        return out
    for i in range(n_layers):
        p = f"backbone.layers.{i}."
        out += [
            (p + "norm.weight", [d], normal(0.1, 1.0)),
            (p + "mixer.in_proj.weight", [2 * e, d], normal(1 / math.sqrt(d))),
            (p + "mixer.conv1d.weight", [e, 1, k], normal(0.5)),
            (p + "mixer.conv1d.bias", [e], normal(0.1)),
            (p + "mixer.x_proj.weight", [r + 2 * n, e], normal(1 / math.sqrt(e))),
            (p + "mixer.dt_proj.weight", [e, r], normal(1 / math.sqrt(r))),
            (p + "mixer.dt_proj.bias", [e], dt_bias),
            (p + "mixer.A_log", [e, n], a_log),
            (p + "mixer.D", [e], normal(0.2, 1.0)),
            (p + "mixer.out_proj.weight", [d, e], normal(1 / math.sqrt(e))),
        ]
    out.append(("backbone.norm_f.weight", [d], normal(0.1, 1.0)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--shard-gb", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer", help="tokenizer.json to copy beside the weights")
    a = ap.parse_args()
    cfg = PRESETS[a.preset]
    torch_dtype, st_dtype = DTYPES[a.dtype]
    size = torch.tensor([], dtype=torch_dtype).element_size()
    items = tensors(cfg)

    shards, current, used = [], [], 0
    for name, shape, init in items:
        nbytes = math.prod(shape) * size
        if current and used + nbytes > a.shard_gb * 1e9:
            shards.append(current)
            current, used = [], 0
        current.append((name, shape, init))
        used += nbytes
    shards.append(current)

    os.makedirs(a.out, exist_ok=True)
    g = torch.Generator().manual_seed(a.seed)
    weight_map, total = {}, 0
    for s, shard in enumerate(shards):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{s + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, _ in shard:
            nbytes = math.prod(shape) * size
            header[name] = {"dtype": st_dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = fname
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        with open(os.path.join(a.out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            for name, shape, init in shard:
                t = init(shape, g).to(torch_dtype).contiguous()
                f.write(t.view(torch.uint8).numpy().tobytes() if torch_dtype == torch.bfloat16 else t.numpy().tobytes())
        total += offset
        print(f"{fname}: {len(shard)} tensors, {offset / 1e9:.2f} GB", flush=True)
    if len(shards) > 1:
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    config = {k: v for k, v in cfg.items()}
    config.update(state_size=16, expand=2, conv_kernel=4, use_bias=False, use_conv_bias=True, tie_word_embeddings=True,
                  layer_norm_epsilon=1e-5, residual_in_fp32=True, pad_vocab_size_multiple=8,
                  architectures=["FalconMambaForCausalLM" if cfg["model_type"] == "falcon_mamba" else "MambaForCausalLM"])
    config.setdefault("time_step_rank", "auto")
    if cfg["model_type"] == "mamba2":
        e = 2 * cfg["hidden_size"]
        config.update(state_size=128, num_heads=e // 64, head_dim=64, n_groups=1, chunk_size=256,
                      time_step_limit=[0.0, {"__float__": "Infinity"}], architectures=["Mamba2ForCausalLM"])
    if cfg["model_type"] == "nemotron_h":
        config = dict(cfg, conv_kernel=4, use_conv_bias=True, use_bias=False, tie_word_embeddings=False, layer_norm_epsilon=1e-5,
                      mlp_hidden_act="relu2", architectures=["NemotronHForCausalLM"])
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if a.tokenizer:
        shutil.copy(a.tokenizer, os.path.join(a.out, "tokenizer.json"))
    print(f"wrote {a.out}: {a.preset}, {total / 1e9:.2f} GB in {len(shards)} file(s)")


if __name__ == "__main__":
    main()
