#!/usr/bin/env python3
"""Writes a random hybrid checkpoint (transformers' own init, saved by save_pretrained) for speed
measurements of the hybrid float and int8 paths against transformers on the same weights:

    python3 scripts/reference/make_random_hybrid_checkpoint.py --shape bamba-600m --out /tmp/bamba-600m-random

bamba-600m is Bamba-like (Mamba-2 with attention every fourth layer, SwiGLU MLPs, RoPE on half of
each head), scaled down from Bamba-9B's config to finish in minutes on 2 cores, not a published
checkpoint. falcon-h1-0.5b is Falcon-H1-0.5B's shape as transformers' FalconH1 documentation tables
it (36 layers, D 1024, 8 attention heads on 2 key/value heads of 64, 24 Mamba-2 heads of 64, state
128); its MLP width 2048 and vocabulary 32784 are this script's assumption, and the μP multipliers
are left at 1 (they cost nothing to time). granite-4.0-h-1b is Granite-4.0-H-1B's published outline
(1.5 B parameters, 40 layers of which 4 attention, 12 query heads on 4 key/value heads, 48 Mamba-2
heads, state 128, NoPE, a dense shared SwiGLU MLP, tied embeddings): D 1536, MLP 4096, one group,
vocabulary 100352 and the attention layers' places (10, 20, 30, 40th) are this script's assumption,
as are multipliers of 1. Not committed (2.5 GB, 2.1 GB and 6.2 GB in F32). --tokenizer copies a
tokenizer.json beside the weights (llama.cpp's converter needs one; the weights are random, so any
tokenizer serves for timing).
"""
import shutil
import argparse

import torch
from transformers import (BambaConfig, BambaForCausalLM, FalconH1Config, FalconH1ForCausalLM, GraniteMoeHybridConfig,
                          GraniteMoeHybridForCausalLM)

FAMILIES = {"bamba-600m": (BambaConfig, BambaForCausalLM), "falcon-h1-0.5b": (FalconH1Config, FalconH1ForCausalLM),
            "granite-4.0-h-1b": (GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM)}
SHAPES = {
    # D 1536, 16 decoder layers (4 attention), 12 heads of 128 on 4 kv heads, MLP 4096, Mamba-2 with
    # 48 heads of 64, state 128, one group; vocab 32000, untied: about 0.64 B parameters.
    "bamba-600m": dict(hidden_size=1536, num_hidden_layers=16, attn_layer_indices=[3, 7, 11, 15], num_attention_heads=12,
                       num_key_value_heads=4, intermediate_size=4096, mamba_n_heads=48, mamba_d_head=64, mamba_n_groups=1,
                       mamba_d_state=128, vocab_size=32000, tie_word_embeddings=False),
    "falcon-h1-0.5b": dict(hidden_size=1024, num_hidden_layers=36, num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                           intermediate_size=2048, mamba_d_ssm=1536, mamba_n_heads=24, mamba_d_head=64, mamba_n_groups=1,
                           mamba_d_state=128, mamba_d_conv=4, mamba_chunk_size=128, vocab_size=32784, tie_word_embeddings=False),
    "granite-4.0-h-1b": dict(hidden_size=1536, num_hidden_layers=40, layer_types=["attention" if i % 10 == 9 else "mamba" for i in range(40)],
                             num_attention_heads=12, num_key_value_heads=4, num_local_experts=0, num_experts_per_tok=0, intermediate_size=4096, shared_intermediate_size=4096,
                             position_embedding_type="nope", mamba_n_heads=48, mamba_d_head=64, mamba_n_groups=1, mamba_d_state=128,
                             vocab_size=100352, tie_word_embeddings=True),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), default="bamba-600m")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer", help="a tokenizer.json to copy beside the weights")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    config, model_class = FAMILIES[a.shape]
    model = model_class(config(**SHAPES[a.shape])).float()
    model.save_pretrained(a.out, safe_serialization=True)
    if a.tokenizer:
        shutil.copy(a.tokenizer, f"{a.out}/tokenizer.json")
    print(f"wrote {a.out}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main()
