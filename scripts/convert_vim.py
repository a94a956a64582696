#!/usr/bin/env python3
"""Converts a published Vision Mamba checkpoint (hustvl/Vim's .pth files: Vim-tiny, -small, -base with
the middle cls token, 224 px, and the stride-8 variants) into what mambaquant reads: model.safetensors in
Vim's own state-dict names (F32) and a config.json with "model_type": "vim" and the keyword arguments of
VisionMamba's constructor that the architecture was registered with (vim/models_mamba.py).

    python3 scripts/convert_vim.py --checkpoint vim_t_midclstok_76p1acc.pth --arch vim_t --out models/vim-t
    python3 scripts/convert_vim.py --selftest       # a fixture saved as .pth and converted back, bit for bit

The .pth is loaded with torch.load(weights_only=True) (tensors only, no code runs); its "model" entry is
the state dict where there is one (the training script saves {"model", "optimizer", ...}). Every
tensor must be one the architecture has, and every tensor it has must be there.
"""
import argparse
import json
import os
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

COMMON = dict(rms_norm=True, residual_in_fp32=True, fused_add_norm=True, final_pool_type="mean", if_abs_pos_embed=True, if_rope=False,
              if_rope_residual=False, bimamba_type="v2", if_cls_token=True, if_divide_out=True, use_middle_cls_token=True,
              img_size=224, channels=3, num_classes=1000, d_state=16, depth=24)
# The registered architectures (vim/models_mamba.py) by short name.
ARCHS = {
    "vim_t": dict(patch_size=16, stride=16, embed_dim=192),
    "vim_t_stride8": dict(patch_size=16, stride=8, embed_dim=192),
    "vim_s": dict(patch_size=16, stride=16, embed_dim=384),
    "vim_s_stride8": dict(patch_size=16, stride=8, embed_dim=384),
    "vim_b": dict(patch_size=16, stride=16, embed_dim=768),
}


def expected_names(config):
    """The state dict's names for a config (bimamba v2, cls token, position embedding, conv bias)."""
    names = {"patch_embed.proj.weight", "patch_embed.proj.bias", "norm_f.weight", "head.weight", "head.bias"}
    if config["if_cls_token"]:
        names.add("cls_token")
    if config["if_abs_pos_embed"]:
        names.add("pos_embed")
    for i in range(config["depth"]):
        for key in ["in_proj.weight", "out_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
                    "A_log", "D", "conv1d_b.weight", "conv1d_b.bias", "x_proj_b.weight", "dt_proj_b.weight", "dt_proj_b.bias", "A_b_log", "D_b"]:
            names.add(f"layers.{i}.mixer.{key}")
        names.add(f"layers.{i}.norm.weight")
    return names


def convert(checkpoint, config, out):
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    want = expected_names(config)
    missing, extra = sorted(want - state.keys()), sorted(state.keys() - want)
    if missing or extra:
        sys.exit(f"{checkpoint}: " + (f"lacks {missing[0]} (and {len(missing) - 1} more)" if missing else f"has {extra[0]} (and {len(extra) - 1} more), which the architecture does not"))
    config = dict(config, num_classes=state["head.weight"].shape[0])
    os.makedirs(out, exist_ok=True)
    save_file({k: v.to(torch.float32).contiguous() for k, v in state.items()}, os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"model_type": "vim", "architectures": ["VisionMamba"], **config,
                   "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "eval_crop_ratio": 0.875}, f, indent=2)
        f.write("\n")
    print(f"{out}: {sum(v.numel() for v in state.values()):,} parameters, {config['num_classes']} classes")


def selftest():
    fixture = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "models", "tiny-vim")
    config = json.load(open(os.path.join(fixture, "config.json")))
    config = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    state = load_file(os.path.join(fixture, "model.safetensors"))
    with tempfile.TemporaryDirectory() as d:
        torch.save({"model": state, "epoch": 3}, os.path.join(d, "x.pth"))
        convert(os.path.join(d, "x.pth"), config, os.path.join(d, "out"))
        back = load_file(os.path.join(d, "out", "model.safetensors"))
        assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    print("selftest: ok")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint")
    p.add_argument("--arch", choices=sorted(ARCHS))
    p.add_argument("--out")
    p.add_argument("--selftest", action="store_true")
    a = p.parse_args()
    if a.selftest:
        return selftest()
    if not (a.checkpoint and a.arch and a.out):
        p.error("give --checkpoint, --arch and --out (or --selftest)")
    convert(a.checkpoint, dict(COMMON, **ARCHS[a.arch]), a.out)


if __name__ == "__main__":
    main()
