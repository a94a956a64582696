#!/usr/bin/env python3
"""Writes the first images of a safetensors image file (images [n, C, H, W] normalized as
(x / 255 - mean) / std, labels [n]) back to 8-bit PNG files with a labels.csv: the folder layout
`mambaquant classify --images DIR` reads. The bundled calibration/mnist-test-png was made with

    python3 scripts/images_to_png.py calibration/mnist-test.safetensors calibration/mnist-test-png \
        --mean 0.1307 --std 0.3081 --count 20
"""
import argparse
import os

import numpy as np
from PIL import Image
from safetensors.numpy import load_file


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images")
    p.add_argument("out")
    p.add_argument("--mean", type=float, nargs="+", required=True)
    p.add_argument("--std", type=float, nargs="+", required=True)
    p.add_argument("--count", type=int, default=20)
    a = p.parse_args()
    t = load_file(a.images)
    images, labels = t["images"].astype(np.float64)[: a.count], t.get("labels")
    c = images.shape[1]
    mean = np.asarray(a.mean if len(a.mean) == c else a.mean * c)[:, None, None]
    std = np.asarray(a.std if len(a.std) == c else a.std * c)[:, None, None]
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for i, x in enumerate(images):
        pixels = np.clip(np.rint((x * std + mean) * 255), 0, 255).astype(np.uint8)
        name = f"{i:05d}.png"
        Image.fromarray(pixels[0] if c == 1 else pixels.transpose(1, 2, 0)).save(os.path.join(a.out, name))
        rows.append(f"{name},{int(labels[i])}" if labels is not None else None)
    if labels is not None:
        with open(os.path.join(a.out, "labels.csv"), "w") as f:
            f.write("file,label\n" + "\n".join(rows) + "\n")
    print(f"{a.out}: {len(images)} PNG files" + (" and labels.csv" if labels is not None else ""))


if __name__ == "__main__":
    main()
