#!/usr/bin/env python3
"""Writes a Hugging Face Mamba checkpoint of a real model's shape with random weights (transformers'
own init), for speed measurements: python3 scripts/reference/make_random_checkpoint.py --preset
mamba-130m --out /tmp/mamba-130m-random. Not committed (about 0.5 GB in F32)."""
import argparse
import torch
from transformers import MambaConfig, MambaForCausalLM

PRESETS = {  # state-spaces/mamba-*-hf shapes
    "mamba-130m": dict(hidden_size=768, num_hidden_layers=24),
    "mamba-370m": dict(hidden_size=1024, num_hidden_layers=48),
    "mamba-790m": dict(hidden_size=1536, num_hidden_layers=48),
    "mamba-1.4b": dict(hidden_size=2048, num_hidden_layers=48),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), default="mamba-130m")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    cfg = MambaConfig(vocab_size=50280, state_size=16, expand=2, conv_kernel=4, time_step_rank="auto",
                      use_bias=False, use_conv_bias=True, tie_word_embeddings=True, **PRESETS[a.preset])
    model = MambaForCausalLM(cfg).float()
    model.save_pretrained(a.out, safe_serialization=True)
    print(f"wrote {a.out}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main()
