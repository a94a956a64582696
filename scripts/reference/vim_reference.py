#!/usr/bin/env python3
"""A plain-torch transcription of Vision Mamba (hustvl/Vim, vim/models_mamba.py VisionMamba, with the
mixer of its mamba-1p1p1/mamba_ssm/modules/mamba_simple.py), and the writer of the Vim fixtures in
Tests/Fixtures/models/tiny-vim*: tiny random checkpoints in Vim's own state-dict names with the
logits of this transcription on a few random images.

Vim's code needs CUDA kernels (causal_conv1d, selective_scan_cuda, the fused add+RMSNorm); their
definitions are the reference functions of its mamba_ssm/ops/selective_scan_interface.py
(mamba_inner_ref, selective_scan_ref), transcribed here in float64 so that the fixtures hold the
exact answer and the tool's float32 forward is checked to its own rounding:

- the "v2" bidirectional mixer: one in_proj to x and z; a forward branch (conv1d, x_proj, dt_proj,
  A_log, D) over the sequence and a backward branch (conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b)
  over it flipped, each gated by SiLU(z) of its own order (mamba_inner_fn_no_out_proj); the backward
  output flipped back and added, halved when if_divide_out, then out_proj. bimamba_type "none" is
  the plain Mamba mixer (mamba_inner_fn).
- blocks in Vim's add-then-norm order: residual = residual + hidden; hidden = mixer(norm(residual)),
  which is the pre-norm residual stream u += mixer(norm(u)); norm_f on the last residual.
- tokens: the patch embedding (a Conv2d of kernel patch_size and stride `stride`, flattened row by
  row), the cls token in the middle (at M // 2), at the head or absent, the absolute position
  embedding added; the cls token's row, or the mean / last row / max of the head over all rows
  (final_pool_type) without one.

    python3 scripts/reference/vim_reference.py            # rewrites the fixtures
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Fixtures", "models")

# The keyword arguments of VisionMamba that a config.json carries (beside "model_type": "vim").
VARIANTS = {
    # Vim-T's flags: middle cls token, divided output, RMSNorm, absolute position embedding.
    "tiny-vim": dict(img_size=16, patch_size=4, stride=4, depth=3, embed_dim=24, d_state=8, channels=3, num_classes=10,
                     rms_norm=True, norm_epsilon=1e-5, residual_in_fp32=True, fused_add_norm=True, final_pool_type="mean",
                     if_abs_pos_embed=True, if_rope=False, if_rope_residual=False, bimamba_type="v2", if_cls_token=True,
                     if_divide_out=True, use_middle_cls_token=True, if_bidirectional=False, use_double_cls_token=False),
    # Overlapping patches (stride 2 < patch 4) on a non-square one-channel image, the cls token at
    # the head, the two directions summed, a dt rank and conv width of its own.
    "tiny-vim-headcls": dict(img_size=[10, 14], patch_size=4, stride=2, depth=2, embed_dim=32, d_state=4, channels=1, num_classes=7,
                             rms_norm=True, norm_epsilon=1e-6, residual_in_fp32=True, fused_add_norm=True, final_pool_type="none",
                             if_abs_pos_embed=True, bimamba_type="v2", if_cls_token=True, if_divide_out=False,
                             use_middle_cls_token=False, ssm_cfg=dict(dt_rank=3, d_conv=3)),
    # No cls token: the mean of the last rows; the plain (one-direction) Mamba mixer; no position
    # embedding.
    "tiny-vim-mean": dict(img_size=12, patch_size=3, stride=3, depth=2, embed_dim=16, d_state=8, channels=3, num_classes=5,
                          rms_norm=True, norm_epsilon=1e-5, final_pool_type="mean", if_abs_pos_embed=False, bimamba_type="none",
                          if_cls_token=False, if_divide_out=True),
    # No cls token: the largest of the head's outputs over all rows.
    "tiny-vim-max": dict(img_size=8, patch_size=2, stride=2, depth=2, embed_dim=16, d_state=4, channels=2, num_classes=6,
                         rms_norm=True, final_pool_type="max", if_abs_pos_embed=True, bimamba_type="v2", if_cls_token=False,
                         if_divide_out=True),
}

DEFAULTS = dict(img_size=224, patch_size=16, stride=16, depth=24, embed_dim=192, d_state=16, channels=3, num_classes=1000,
                norm_epsilon=1e-5, rms_norm=True, final_pool_type="none", if_abs_pos_embed=True, bimamba_type="v2",
                if_cls_token=True, if_divide_out=True, use_middle_cls_token=True, ssm_cfg=None)


def settings(kw):
    s = dict(DEFAULTS)
    s.update(kw)
    ssm = s["ssm_cfg"] or {}
    size = s["img_size"]
    s["hw"] = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    s["d_conv"] = ssm.get("d_conv", 4)
    s["expand"] = ssm.get("expand", 2)
    rank = ssm.get("dt_rank", "auto")
    s["dt_rank"] = math.ceil(s["embed_dim"] / 16) if rank == "auto" else rank
    s["grid"] = tuple((n - s["patch_size"]) // s["stride"] + 1 for n in s["hw"])
    return s


def random_state_dict(s, gen):
    """Vim's state dict with a trained model's value ranges (Mamba's own initializations, widened by
    noise so that every term of the forward matters)."""
    d, e, n, r, k = s["embed_dim"], s["expand"] * s["embed_dim"], s["d_state"], s["dt_rank"], s["d_conv"]
    p, c = s["patch_size"], s["channels"]
    tokens = s["grid"][0] * s["grid"][1] + (1 if s["if_cls_token"] else 0)

    def normal(*shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std + mean

    def direction(suffix):
        dt = torch.exp(torch.rand(e, generator=gen, dtype=torch.float64) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        return {
            f"conv1d{suffix}.weight": normal(e, 1, k, std=0.5),
            f"conv1d{suffix}.bias": normal(e, std=0.1),
            f"x_proj{suffix}.weight": normal(r + 2 * n, e, std=e ** -0.5),
            f"dt_proj{suffix}.weight": normal(e, r, std=r ** -0.5),
            f"dt_proj{suffix}.bias": dt + torch.log(-torch.expm1(-dt)),
            f"A{suffix}_log": torch.log(torch.arange(1, n + 1, dtype=torch.float64)).repeat(e, 1) + normal(e, n, std=0.1),
            f"D{suffix}": normal(e, std=0.2, mean=1.0),
        }

    sd = {"patch_embed.proj.weight": normal(d, c, p, p, std=(c * p * p) ** -0.5), "patch_embed.proj.bias": normal(d, std=0.1)}
    if s["if_cls_token"]:
        sd["cls_token"] = normal(1, 1, d, std=0.5)
    if s["if_abs_pos_embed"]:
        sd["pos_embed"] = normal(1, tokens, d, std=0.2)
    for i in range(s["depth"]):
        layer = {"in_proj.weight": normal(2 * e, d, std=d ** -0.5), "out_proj.weight": normal(d, e, std=e ** -0.5)}
        layer.update(direction(""))
        if s["bimamba_type"] == "v2":
            layer.update(direction("_b"))
        sd.update({f"layers.{i}.mixer.{key}": v for key, v in layer.items()})
        sd[f"layers.{i}.norm.weight"] = normal(d, std=0.2, mean=1.0)
    sd["norm_f.weight"] = normal(d, std=0.2, mean=1.0)
    sd["head.weight"] = normal(s["num_classes"], d, std=d ** -0.5)
    sd["head.bias"] = normal(s["num_classes"], std=0.1)
    return sd


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def selective_scan_ref(u, delta, A, B, C, D, z, delta_bias):
    """selective_scan_ref with variable B and C, delta_softplus=True: u, delta, z (b, e, l); B, C (b, n, l)."""
    delta = F.softplus(delta + delta_bias[..., None])
    x = torch.zeros(u.shape[0], A.shape[0], A.shape[1], dtype=u.dtype)
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    ys = []
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    y = torch.stack(ys, dim=2) + u * D[:, None]
    return y * F.silu(z)


def inner_no_out_proj(xz, m, suffix, s):
    """mamba_inner_ref without its out_proj (mamba_inner_fn_no_out_proj): xz (b, 2e, l) -> (b, e, l)."""
    length = xz.shape[-1]
    r, n = s["dt_rank"], s["d_state"]
    x, z = xz.chunk(2, dim=1)
    w = m[f"conv1d{suffix}.weight"]
    x = F.silu(F.conv1d(x, w, m[f"conv1d{suffix}.bias"], padding=w.shape[-1] - 1, groups=w.shape[0])[..., :length])
    x_dbl = F.linear(x.transpose(1, 2).reshape(-1, x.shape[1]), m[f"x_proj{suffix}.weight"])     # (b l, r + 2n)
    delta = (m[f"dt_proj{suffix}.weight"] @ x_dbl[:, :r].t()).reshape(-1, xz.shape[0], length).transpose(0, 1)
    B = x_dbl[:, r:r + n].reshape(xz.shape[0], length, n).transpose(1, 2)
    C = x_dbl[:, -n:].reshape(xz.shape[0], length, n).transpose(1, 2)
    A = -torch.exp(m[f"A{suffix}_log"])
    return selective_scan_ref(x, delta, A, B, C, m[f"D{suffix}"], z, m[f"dt_proj{suffix}.bias"])


def mixer(h, m, s):
    """Mamba.forward's fast path (use_fast_path, no inference cache): h (b, l, d) -> (b, l, d)."""
    xz = (m["in_proj.weight"] @ h.reshape(-1, h.shape[-1]).t()).reshape(-1, h.shape[0], h.shape[1]).transpose(0, 1)   # (b, 2e, l)
    out = inner_no_out_proj(xz, m, "", s)
    if s["bimamba_type"] == "v2":
        out = out + inner_no_out_proj(xz.flip([-1]), m, "_b", s).flip([-1])
        if s["if_divide_out"]:
            out = out / 2
    return F.linear(out.transpose(1, 2), m["out_proj.weight"])


def forward(images, sd, s):
    """VisionMamba.forward (eval mode: no dropout or drop path) on images (b, c, h, w) -> logits."""
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=s["stride"])
    x = x.flatten(2).transpose(1, 2)                                      # (b, M, d)
    batch, count = x.shape[0], x.shape[1]
    position = None
    if s["if_cls_token"]:
        cls = sd["cls_token"].expand(batch, -1, -1)
        position = count // 2 if s["use_middle_cls_token"] else 0
        x = torch.cat((x[:, :position], cls, x[:, position:]), dim=1)
    if s["if_abs_pos_embed"]:
        x = x + sd["pos_embed"]
    residual, hidden = None, x
    for i in range(s["depth"]):
        residual = hidden if residual is None else residual + hidden
        m = {key[len(f"layers.{i}.mixer."):]: v for key, v in sd.items() if key.startswith(f"layers.{i}.mixer.")}
        hidden = mixer(rms_norm(residual, sd[f"layers.{i}.norm.weight"], s["norm_epsilon"]), m, s)
    hidden = rms_norm(residual + hidden, sd["norm_f.weight"], s["norm_epsilon"])
    if position is not None:
        features = hidden[:, position]
    elif s["final_pool_type"] == "none":
        features = hidden[:, -1]
    elif s["final_pool_type"] == "mean":
        features = hidden.mean(dim=1)
    else:   # "max": the head on every row, then the largest per class
        return F.linear(hidden, sd["head.weight"], sd["head.bias"]).max(dim=1)[0]
    return F.linear(features, sd["head.weight"], sd["head.bias"])


def check_against_transformers(s, sd):
    """The one-direction mixer of this transcription against transformers' MambaMixer (its torch
    path) on the same weights: an implementation nobody here wrote."""
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer
    config = MambaConfig(hidden_size=s["embed_dim"], state_size=s["d_state"], expand=s["expand"], conv_kernel=s["d_conv"],
                         time_step_rank=s["dt_rank"], use_bias=False, use_conv_bias=True)
    m = MambaMixer(config, layer_idx=0).double()
    keys = ["in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight"]
    m.load_state_dict({k: sd["layers.0.mixer." + k] for k in keys})
    h = torch.randn(2, 9, s["embed_dim"], dtype=torch.float64)
    ours = mixer(h, {k: sd["layers.0.mixer." + k] for k in keys}, dict(s, bimamba_type="none"))
    with torch.no_grad():
        theirs = m.torch_forward(h) if hasattr(m, "torch_forward") else m.forward(h)
    # Its reference kernels (selective_scan_ref) compute in float32, hence the tolerance.
    assert (ours - theirs).abs().max() < 1e-6 * theirs.abs().max(), (ours - theirs).abs().max()


def main():
    for name, kwargs in VARIANTS.items():
        s = settings(kwargs)
        gen = torch.Generator().manual_seed(sum(map(ord, name)))
        sd = random_state_dict(s, gen)
        check_against_transformers(s, sd)
        sd32 = {k: v.to(torch.float32).contiguous() for k, v in sd.items()}
        images = torch.randn(4, s["channels"], *s["hw"], generator=gen, dtype=torch.float64).to(torch.float32)
        # The float32 weights and images, widened: the fixture's logits are exact for what is stored.
        logits = forward(images.double(), {k: v.double() for k, v in sd32.items()}, s)
        labels = logits.argmax(-1)
        labels[0] = (labels[0] + 1) % s["num_classes"]     # one wrong label: accuracy 3 of 4
        directory = os.path.join(OUT, name)
        os.makedirs(directory, exist_ok=True)
        save_file(sd32, os.path.join(directory, "model.safetensors"))
        config = {"model_type": "vim", "architectures": ["VisionMamba"], **kwargs}
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        save_file({"images": images.contiguous(), "labels": labels.to(torch.int64), "logits": logits.to(torch.float32)},
                  os.path.join(directory, "reference.safetensors"))
        print(f"{name}: {sum(v.numel() for v in sd32.values())} parameters, {s['grid']} patches, logits absmax {logits.abs().max():.3f}")


if __name__ == "__main__":
    main()
