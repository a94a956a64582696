#!/usr/bin/env python3
"""Writes Tests/Fixtures/images: a small folder of PNG and JPEG files (gray, RGB, RGBA, palette,
16-bit; shapes that shrink, grow and crop unevenly) with a labels.csv, and
expected.safetensors holding what Vim's eval transform makes of them, computed by Pillow.

Vim's main.py evaluates through DeiT's datasets.py build_transform(is_train=False):
    transforms.Resize(int(input_size / eval_crop_ratio), interpolation=3)   # bicubic
    transforms.CenterCrop(input_size)
    transforms.ToTensor()
    transforms.Normalize(mean, std)
on images loaded by torchvision's ImageFolder (Pillow, convert("RGB")). torchvision is not
installed here, so each step is transcribed from torchvision/transforms/functional.py onto Pillow
and numpy: Resize of the shorter side (the longer one int(size * long / short)) is Pillow's
Image.resize with BICUBIC; CenterCrop pads with zeros where the image is smaller, then takes the
offsets int(round((size - crop) / 2)); ToTensor divides by 255 in float32; Normalize subtracts and
divides in float32. mambaquant's ImageFolder (Sources/MambaModel/ImageFolder.swift) must give the
same floats (Tests/MambaModelTests/ImageFolderTests.swift).

Usage: python3 scripts/reference/image_folder_reference.py
"""
import io
import os

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "Fixtures", "images")

# (file, mode, width, height, label, extra save arguments)
IMAGES = [
    ("gray.png", "L", 19, 13, 3, {}),
    ("rgb.png", "RGB", 23, 31, 1, {}),
    ("rgba.png", "RGBA", 17, 17, 0, {}),
    ("palette.png", "P", 15, 20, 2, {}),
    ("gray16.png", "I;16", 9, 12, 4, {}),
    ("wide.png", "RGB", 30, 11, 5, {}),
    ("photo.jpg", "RGB", 40, 27, 6, {"quality": 90}),
    ("gray.jpg", "L", 21, 33, 7, {"quality": 85}),
    ("tiny.png", "RGB", 5, 4, 8, {}),
]

# The transforms the test checks: (tensor name, channels, height, width, crop ratio, mean, std).
CASES = [
    ("rgb_16x16", 3, 16, 16, 0.875, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ("gray_12x10", 1, 12, 10, 1.0, [0.5], [0.25]),
    ("rgb_8x8_pad", 3, 8, 8, 1.5, [0.5, 0.4, 0.3], [0.2, 0.3, 0.4]),
]


def make_image(mode, w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    smooth = [np.sin(x / (2 + c) + y / (3 + c) + c) for c in range(4)]
    planes = [np.clip(127.5 + 100 * s + rng.normal(0, 25, (h, w)), 0, 255).astype(np.uint8) for s in smooth]
    if mode == "L":
        return Image.fromarray(planes[0], "L")
    if mode == "RGB":
        return Image.fromarray(np.stack(planes[:3], -1), "RGB")
    if mode == "RGBA":
        return Image.fromarray(np.stack(planes, -1), "RGBA")
    if mode == "P":
        return Image.fromarray(np.stack(planes[:3], -1), "RGB").quantize(colors=16)
    if mode == "I;16":
        wide = (planes[0].astype(np.uint16) << 8) | planes[1].astype(np.uint16)
        return Image.fromarray(wide)  # uint16: mode I;16
    raise ValueError(mode)


def load_as_pillow_would(path, channels):
    """The image as the eval transform sees it: torchvision's loader converts to RGB; a 1-channel
    model reads it converted to L. 16-bit PNGs are read at their high byte, as libpng's strip_16."""
    img = Image.open(path)
    if img.mode in ("I;16", "I;16B", "I"):
        img = Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8))
    return img.convert("RGB" if channels == 3 else "L")


def transform(img, height, width, ratio, mean, std):
    size = int(max(height, width) / ratio)
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), Image.BICUBIC)
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    ih, iw = a.shape[:2]
    if width > iw or height > ih:
        left = (width - iw) // 2 if width > iw else 0
        top = (height - ih) // 2 if height > ih else 0
        right = (width - iw + 1) // 2 if width > iw else 0
        bottom = (height - ih + 1) // 2 if height > ih else 0
        a = np.pad(a, ((top, bottom), (left, right), (0, 0)))
        ih, iw = a.shape[:2]
    top, left = int(round((ih - height) / 2.0)), int(round((iw - width) / 2.0))
    a = a[top:top + height, left:left + width]
    t = a.astype(np.float32).transpose(2, 0, 1) / np.float32(255)
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    return (t - m) / s


def main():
    os.makedirs(OUT, exist_ok=True)
    for i, (name, mode, w, h, _, extra) in enumerate(IMAGES):
        img = make_image(mode, w, h, seed=100 + i)
        buf = io.BytesIO()
        img.save(buf, format="PNG" if name.endswith(".png") else "JPEG", **extra)
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(buf.getvalue())
    with open(os.path.join(OUT, "labels.csv"), "w") as f:
        f.write("file,label\n")
        for e in IMAGES:
            f.write(f"{e[0]},{e[4]}\n")
    tensors = {}
    for case, channels, height, width, ratio, mean, std in CASES:
        # ascontiguousarray: np.stack keeps the transposed layout, and save_file writes raw memory.
        tensors[case] = np.ascontiguousarray(np.stack([transform(load_as_pillow_would(os.path.join(OUT, e[0]), channels), height, width, ratio, mean, std)
                                  for e in IMAGES]).astype(np.float32))
    tensors["labels"] = np.asarray([e[4] for e in IMAGES], np.int64)
    save_file(tensors, os.path.join(OUT, "expected.safetensors"),
              metadata={"script": "scripts/reference/image_folder_reference.py",
                        "cases": ";".join(f"{c[0]}:ratio={c[4]},mean={c[5]},std={c[6]}" for c in CASES)})
    print(f"{OUT}: {len(IMAGES)} images, cases {', '.join(c[0] for c in CASES)}")


if __name__ == "__main__":
    main()
