#!/usr/bin/env python3
"""lm-evaluation-harness against `mambaquant serve`, checked item by item.

Builds a loglikelihood task on a local file (lines of the bundled corpus's test split: a line as
context, the next as continuation; the task hubs are not reachable here), starts
`mambaquant serve` on the model, runs lm_eval's `local-completions` model against it (its remote
tokenizer reads the server's /tokenize, so no Hugging Face tokenizer is needed), then recomputes each
item's log-likelihood without the server: `mambaquant generate --tokens ... --logits-out` on the
same token ids and log-softmax in float64 here. Prints the largest difference and the task's
metric.

    pip install "lm_eval[api]"   # PyPI
    python3 scripts/reference/serve_lm_eval.py --binary .build/release/mambaquant --model models/bard-mamba
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
from safetensors.numpy import load_file


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def items_from(path, count):
    lines = [l for l in open(path, encoding="utf-8").read().split("\n") if len(l.strip()) > 8]
    out = []
    for i in range(0, 2 * count, 2):
        out.append({"context": lines[i] + "\n", "continuation": lines[i + 1]})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=".build/release/mambaquant")
    ap.add_argument("--model", default="models/bard-mamba")
    ap.add_argument("--text", default="calibration/shakespeare-test.txt")
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="mq-lmeval-")
    items = items_from(args.text, args.items)
    with open(os.path.join(work, "items.jsonl"), "w") as f:
        for it in items:
            f.write(json.dumps(it) + "\n")
    with open(os.path.join(work, "shakespeare_lines.yaml"), "w") as f:
        f.write(
            "task: shakespeare_lines\n"
            "dataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {os.path.join(work, 'items.jsonl')}\n"
            "test_split: test\n"
            "output_type: loglikelihood\n"
            'doc_to_text: "{{context}}"\n'
            'doc_to_target: "{{continuation}}"\n'
            "target_delimiter: \"\"\n"
            "metric_list:\n  - metric: acc\n"
        )

    port = free_port()
    name = os.path.basename(os.path.normpath(args.model))
    server = subprocess.Popen([args.binary, "serve", "--model", args.model, "--port", str(port), "--threads", str(args.threads)],
                              stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/health")
                break
            except OSError:
                time.sleep(0.1)
        out = os.path.join(work, "out")
        cmd = [sys.executable, "-m", "lm_eval", "--model", "local-completions",
               "--model_args", f"model={name},base_url={base}/v1/completions,num_concurrent=1,max_retries=1,tokenized_requests=True",
               "--include_path", work, "--tasks", "shakespeare_lines", "--log_samples", "--output_path", out]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        samples = [os.path.join(dp, f) for dp, _, fs in os.walk(out) for f in fs if f.startswith("samples_")]
        logged = [json.loads(l) for l in open(samples[0])]

        # The same token ids lm-eval sent (its encode_pair over the remote tokenizer), scored without the server.
        worst = 0.0
        for s in logged:
            ctx, cont = s["arguments"]["gen_args_0"]["arg_0"], s["arguments"]["gen_args_0"]["arg_1"]
            # lm-eval's encode_pair: the context's trailing whitespace moves to the continuation.
            spaces = len(ctx) - len(ctx.rstrip())
            if spaces:
                ctx, cont = ctx[:-spaces], ctx[-spaces:] + cont
            whole = post(base + "/tokenize", {"prompt": ctx + cont, "add_special_tokens": False})["tokens"]
            n_ctx = len(post(base + "/tokenize", {"prompt": ctx, "add_special_tokens": False})["tokens"])
            logits_path = os.path.join(work, "logits.safetensors")
            subprocess.run([args.binary, "generate", "--model", args.model, "--tokens", ",".join(map(str, whole)),
                            "--max-new-tokens", "0", "--logits-out", logits_path], check=True, capture_output=True)
            logits = load_file(logits_path)["logits"].astype(np.float64)
            logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
            ours = sum(logp[t - 1, whole[t]] for t in range(n_ctx, len(whole)))
            served = s["resps"][0][0][0]
            worst = max(worst, abs(ours - float(served)))
        print(f"{len(logged)} items: largest |served - generate --logits-out| log-likelihood difference {worst:.2e}")
        if worst > 1e-4:
            sys.exit("the served log-likelihoods differ from the model's by more than 1e-4")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
