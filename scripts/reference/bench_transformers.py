#!/usr/bin/env python3
"""transformers' MambaForCausalLM or Mamba2ForCausalLM (by config.json) on the CPU, timed the way
`mambaquant bench --model` times the Swift float32 path: prefill of --tokens ids from a fresh state with logits at every position, and
single-token decode steps with the cache; medians of --runs. The comparison point of issue 2.

    python3 scripts/reference/bench_transformers.py --model /tmp/mamba-130m-random --threads 2
"""
import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, a.tokens), generator=g)
    prefill, decode = [], []
    with torch.inference_mode():
        model(ids[:, :16], use_cache=False)                                   # warm-up
        for _ in range(a.runs):
            t = time.perf_counter()
            model(ids, use_cache=False)                                       # logits [1, L, V]
            prefill.append(a.tokens / (time.perf_counter() - t))
            out = model(ids[:, :8], use_cache=True)
            # Mamba keeps its state in cache_params, Mamba-2 (transformers 5) in past_key_values.
            key = "cache_params" if getattr(out, "cache_params", None) is not None else "past_key_values"
            cache = getattr(out, key)
            steps = ids[0, 8:8 + a.decode_steps]
            t = time.perf_counter()
            for i, tok in enumerate(steps):
                pos = torch.tensor([8 + i])
                out = model(tok.view(1, 1), **{key: cache}, use_cache=True, cache_position=pos)
                cache = getattr(out, key)
            decode.append(len(steps) / (time.perf_counter() - t))
    r = dict(model=a.model, threads=a.threads, torch=torch.__version__, prefill_tokens=a.tokens,
             prefill_tokens_per_s=statistics.median(prefill), decode_tokens_per_s=statistics.median(decode),
             prefill_runs=prefill, decode_runs=decode)
    print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
