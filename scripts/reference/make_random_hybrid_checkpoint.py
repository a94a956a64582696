#!/usr/bin/env python3
"""Writes a random hybrid checkpoint (transformers' own init, saved by save_pretrained) for speed
measurements of the hybrid float and int8 paths against transformers on the same weights:

    python3 scripts/reference/make_random_hybrid_checkpoint.py --shape bamba-600m --out /tmp/bamba-600m-random

The shapes are Bamba-like (Mamba-2 with attention every fourth layer, SwiGLU MLPs, RoPE on half of
each head), scaled down from Bamba-9B's config to finish in minutes on 2 cores; they are not
published checkpoints. Not committed (about 2.5 GB in F32).
"""
import argparse

import torch
from transformers import BambaConfig, BambaForCausalLM

SHAPES = {
    # D 1536, 16 decoder layers (4 attention), 12 heads of 128 on 4 kv heads, MLP 4096, Mamba-2 with
    # 48 heads of 64, state 128, one group; vocab 32000, untied: about 0.64 B parameters.
    "bamba-600m": dict(hidden_size=1536, num_hidden_layers=16, attn_layer_indices=[3, 7, 11, 15], num_attention_heads=12,
                       num_key_value_heads=4, intermediate_size=4096, mamba_n_heads=48, mamba_d_head=64, mamba_n_groups=1,
                       mamba_d_state=128, vocab_size=32000, tie_word_embeddings=False),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), default="bamba-600m")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    model = BambaForCausalLM(BambaConfig(**SHAPES[a.shape])).float()
    model.save_pretrained(a.out, safe_serialization=True)
    print(f"wrote {a.out}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main()
