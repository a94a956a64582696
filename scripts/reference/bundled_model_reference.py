#!/usr/bin/env python3
"""Reference outputs of a bundled model from transformers' MambaForCausalLM, Mamba2ForCausalLM or
NemotronHForCausalLM (by its config.json; an implementation nobody here wrote), for Tests/MambaEvaluationTests/BundledModelTests.swift:

- the logits of the first window of calibration/shakespeare-valid.txt (first 48 positions), and
- bits per byte over the first 4 windows of 256 bytes of that file, by the protocol of
  scripts/train/train_byte_mamba.py and `mambaquant evaluate` (non-overlapping windows, fresh
  state, every position but the first scored).

    python3 scripts/reference/bundled_model_reference.py [--model models/bard-mamba]
    python3 scripts/reference/bundled_model_reference.py --model models/bard-mamba2   # -> bard-mamba2-reference.safetensors
    python3 scripts/reference/bundled_model_reference.py --model models/bard-hybrid   # -> bard-hybrid-reference.safetensors
"""
import argparse
import math
import os

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SEQ_LEN = 256
WINDOWS = 4
LOGIT_POSITIONS = 48


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(REPO, "models", "bard-mamba"))
    ap.add_argument("--out", help="default: Tests/Fixtures/bundled/NAME-reference.safetensors")
    args = ap.parse_args()
    name = os.path.basename(os.path.normpath(args.model))
    args.out = args.out or os.path.join(REPO, "Tests", "Fixtures", "bundled", name + "-reference.safetensors")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    with open(os.path.join(REPO, "calibration", "shakespeare-valid.txt"), "rb") as f:
        data = f.read(SEQ_LEN * WINDOWS)
    ids = torch.tensor(list(data), dtype=torch.int64)
    nll, scored, first = 0.0, 0, None
    with torch.no_grad():
        for w in range(WINDOWS):
            x = ids[w * SEQ_LEN:(w + 1) * SEQ_LEN].unsqueeze(0)
            logits = model(input_ids=x, use_cache=False).logits[0].double()
            if first is None:
                first = logits[:LOGIT_POSITIONS].float()
            logp = torch.log_softmax(logits[:-1], dim=-1)
            nll -= logp.gather(1, x[0, 1:].unsqueeze(1)).sum().item()
            scored += SEQ_LEN - 1
    bpb = nll / scored / math.log(2)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_file({"input_ids": ids[:LOGIT_POSITIONS].clone(), "logits": first.contiguous(),
               "bits_per_byte": torch.tensor([bpb], dtype=torch.float64)},
              args.out, metadata={"seq_len": str(SEQ_LEN), "windows": str(WINDOWS), "scored": str(scored),
                                  "source": "transformers MambaForCausalLM"})
    print(f"{args.out}: bits per byte {bpb:.6f} over {scored} positions")


if __name__ == "__main__":
    main()
