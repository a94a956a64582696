#!/usr/bin/env python3
"""Writes a random hybrid checkpoint (transformers' own init, saved by save_pretrained) for speed
measurements of the hybrid float and int8 paths against transformers on the same weights:

    python3 scripts/reference/make_random_hybrid_checkpoint.py --shape bamba-600m --out /tmp/bamba-600m-random

bamba-600m is Bamba-like (Mamba-2 with attention every fourth layer, SwiGLU MLPs, RoPE on half of
each head), scaled down from Bamba-9B's config to finish in minutes on 2 cores, not a published
checkpoint. falcon-h1-0.5b is Falcon-H1-0.5B's shape as transformers' FalconH1 documentation tables
it (36 layers, D 1024, 8 attention heads on 2 key/value heads of 64, 24 Mamba-2 heads of 64, state
128); its MLP width 2048 and vocabulary 32784 are this script's assumption, and the μP multipliers
are left at 1 (they cost nothing to time). Not committed (2.5 GB and 2.1 GB in F32).
"""
import argparse

import torch
from transformers import BambaConfig, BambaForCausalLM, FalconH1Config, FalconH1ForCausalLM

FAMILIES = {"bamba-600m": (BambaConfig, BambaForCausalLM), "falcon-h1-0.5b": (FalconH1Config, FalconH1ForCausalLM)}
SHAPES = {
    # D 1536, 16 decoder layers (4 attention), 12 heads of 128 on 4 kv heads, MLP 4096, Mamba-2 with
    # 48 heads of 64, state 128, one group; vocab 32000, untied: about 0.64 B parameters.
    "bamba-600m": dict(hidden_size=1536, num_hidden_layers=16, attn_layer_indices=[3, 7, 11, 15], num_attention_heads=12,
                       num_key_value_heads=4, intermediate_size=4096, mamba_n_heads=48, mamba_d_head=64, mamba_n_groups=1,
                       mamba_d_state=128, vocab_size=32000, tie_word_embeddings=False),
    "falcon-h1-0.5b": dict(hidden_size=1024, num_hidden_layers=36, num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                           intermediate_size=2048, mamba_d_ssm=1536, mamba_n_heads=24, mamba_d_head=64, mamba_n_groups=1,
                           mamba_d_state=128, mamba_d_conv=4, mamba_chunk_size=128, vocab_size=32784, tie_word_embeddings=False),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), default="bamba-600m")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    config, model_class = FAMILIES[a.shape]
    model = model_class(config(**SHAPES[a.shape])).float()
    model.save_pretrained(a.out, safe_serialization=True)
    print(f"wrote {a.out}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main()
