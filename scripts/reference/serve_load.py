#!/usr/bin/env python3
"""Load on `mambaquant serve`: latency, throughput, memory, overload, and streams against one.

Starts the server (release binary) on a model, then:
  load:       --clients concurrent clients send completions back to back for --seconds; prints
              requests, failures, p50/p99 latency, requests/s and tokens/s, and the server's RSS
              (after warm-up and at the end; sampled every second);
  overload:   4 x (max-concurrency + max-queue) requests at once; prints how many got 429/503, how
              fast those answers came, and that /health still answers;
  throughput: 1 stream, then --streams concurrent streams of --tokens greedy tokens each; prints
              the aggregate decode tokens/s of each.
Only the Python standard library; the numbers go to stdout and, with --json, to a file.

    python3 scripts/reference/serve_load.py --model models/bard-mamba --clients 16 --seconds 120
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def completion(port, body, timeout=600):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, time.perf_counter() - start, data


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=".build/release/mambaquant")
    ap.add_argument("--model", default="models/bard-mamba")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-concurrency", type=int, default=4)
    ap.add_argument("--max-queue", type=int, default=16)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", default=None, help="prompt as token ids (a model without a text tokenizer of its own)")
    ap.add_argument("--skip", default="", help="comma-separated phases to skip: load, overload, throughput")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    port = free_port()
    server = subprocess.Popen([args.binary, "serve", "--model", args.model, "--port", str(port), "--threads", str(args.threads),
                               "--max-concurrency", str(args.max_concurrency), "--max-queue", str(args.max_queue)],
                              stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health")
            break
        except OSError:
            time.sleep(0.1)
    prompt = [int(t) for t in args.prompt_tokens.split(",")] if args.prompt_tokens else "ROMEO: But soft, what light"
    report = {"model": args.model, "threads": args.threads}
    try:
        if "load" not in skip:
            results, lock, stop = [], threading.Lock(), time.perf_counter() + args.seconds
            rss = []

            def client(i):
                n = 0
                while time.perf_counter() < stop:
                    body = {"prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0.8, "seed": i * 100000 + n}
                    try:
                        status, seconds, data = completion(port, body)
                        tokens = json.loads(data)["usage"]["completion_tokens"] if status == 200 else 0
                    except Exception as e:  # a failed request is counted, never hidden
                        status, seconds, tokens = repr(e), 0.0, 0
                    with lock:
                        results.append((status, seconds, tokens))
                    n += 1

            def sampler():
                while time.perf_counter() < stop:
                    rss.append((time.perf_counter(), rss_mb(server.pid)))
                    time.sleep(1)

            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)] + [threading.Thread(target=sampler)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            ok = [r for r in results if r[0] == 200]
            lat = [r[1] for r in ok]
            warm = [m for t, m in rss if t - t0 > min(10, args.seconds / 4)]
            load = {
                "clients": args.clients, "seconds": round(wall, 1), "requests": len(results), "failed": len(results) - len(ok),
                "p50_s": round(statistics.median(lat), 3) if lat else None, "p99_s": round(percentile(lat, 99), 3),
                "requests_per_s": round(len(ok) / wall, 2), "tokens_per_s": round(sum(r[2] for r in ok) / wall, 1),
                "rss_mb_after_warmup": round(warm[0], 1) if warm else None, "rss_mb_end": round(rss[-1][1], 1) if rss else None,
                "rss_mb_max_after_warmup": round(max(warm), 1) if warm else None,
                "statuses": sorted({str(r[0]) for r in results}),
            }
            report["load"] = load
            print("load:", json.dumps(load), flush=True)

        if "overload" not in skip:
            burst = 4 * (args.max_concurrency + args.max_queue)
            out, lock = [], threading.Lock()

            def one():
                r = completion(port, {"prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0})
                with lock:
                    out.append(r[:2])

            threads = [threading.Thread(target=one) for _ in range(burst)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            refused = [s for st, s in out if st in (429, 503)]
            health = urllib.request.urlopen(f"http://127.0.0.1:{port}/health").status
            overload = {
                "burst": burst, "ok": sum(1 for st, _ in out if st == 200), "refused": len(refused),
                "other": sorted({st for st, _ in out if st not in (200, 429, 503)}),
                "refusal_max_s": round(max(refused), 3) if refused else None, "health_after": health,
            }
            report["overload"] = overload
            print("overload:", json.dumps(overload), flush=True)

        if "throughput" not in skip:
            def aggregate(n):
                done = []

                def run():
                    st, _, data = completion(port, {"prompt": prompt, "max_tokens": args.tokens, "temperature": 0, "stop": []})
                    done.append(json.loads(data)["usage"]["completion_tokens"] if st == 200 else 0)

                threads = [threading.Thread(target=run) for _ in range(n)]
                t0 = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                return sum(done) / (time.perf_counter() - t0)

            aggregate(1)  # warm-up
            one = statistics.median(aggregate(1) for _ in range(3))
            many = statistics.median(aggregate(args.streams) for _ in range(3))
            report["throughput"] = {"streams": args.streams, "tokens_per_request": args.tokens,
                                    "one_stream_tok_s": round(one, 1), "aggregate_tok_s": round(many, 1), "ratio": round(many / one, 2)}
            print("throughput:", json.dumps(report["throughput"]), flush=True)
    finally:
        server.terminate()
        code = server.wait(timeout=60)
        report["exit_code_after_sigterm"] = code
        print("server exit code after SIGTERM:", code)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
