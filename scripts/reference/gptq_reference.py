#!/usr/bin/env python3
"""Reference GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers"): Algorithm 1 with the paper's lazy-batch block updates and act-order,
written from the algorithm in plain numpy float64, to pin down the Swift implementation.

    python3 scripts/reference/gptq_reference.py   # writes Tests/Fixtures/gptq/gptq-reference.json

Read by Tests/MambaQuantizationTests/GPTQTests.swift. Deterministic (numpy default_rng(1234)):
re-running leaves git clean unless numpy's generator or LAPACK changes the numbers.

Conventions (the Swift side must match them exactly):
- W is [n, k] (row = output channel), H = X^T X (not divided by m, not doubled).
- Symmetric integer grid [-qmax, qmax], qmax = 2^(bits-1) - 1; rounding is half away from zero.
- Scales are static: fixed from the original W before the algorithm runs, per row (group 0) or per
  row and per contiguous group of `group` input columns in the ORIGINAL column order. Static groups
  are a must here because the run-time kernels read one scale per contiguous group of the stored
  (original-order) weight; GPTQ's "dynamic" groups under act-order would not be contiguous.
"""
import json
import os

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO, "Tests", "Fixtures", "gptq", "gptq-reference.json")
DAMP = 0.01


def static_scales(W, bits, group):
    """[n, groups] scales: max|W| over each row (group 0) or row x contiguous column group / qmax."""
    qmax = 2 ** (bits - 1) - 1
    n, k = W.shape
    g = group if group > 0 else k
    s = np.stack([np.abs(W[:, a:a + g]).max(axis=1) for a in range(0, k, g)], axis=1) / qmax
    return np.where(s == 0, 1.0, s)  # an all-zero group would divide by zero: use scale 1


def column_scale(scales, group, j):
    """The [n] scales of ORIGINAL column j."""
    return scales[:, 0] if group == 0 else scales[:, j // group]


def quantize(w, s, qmax):
    v = w / s
    q = np.sign(v) * np.floor(np.abs(v) + 0.5)  # round half away from zero (not numpy's half-even)
    return np.clip(q, -qmax, qmax)


def rtn(W, scales, bits, group):
    qmax = 2 ** (bits - 1) - 1
    return np.stack([quantize(W[:, j], column_scale(scales, group, j), qmax)
                     for j in range(W.shape[1])], axis=1).astype(np.int64)


def gptq(W, H, scales, bits, group, act_order, block):
    """Integer Q [n, k] in original column order; also the smallest distance of any GPTQ rounding
    decision from a .5 tie (how close a reimplementation is to flipping an integer)."""
    qmax = 2 ** (bits - 1) - 1
    W, H = W.copy(), H.copy()
    n, k = W.shape
    # 1. Dead inputs (never active in calibration): no information, so the column is zeroed and the
    #    Hessian diagonal set to 1 to keep H invertible.
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    # 2. Act-order: quantize the columns with the largest H[j, j] first. Stable sort so ties keep
    #    their original order. order[p] = original column at position p (its scale follows it).
    order = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(k)
    W, H = W[:, order], H[np.ix_(order, order)]
    # 3. Dampening, relative to the mean diagonal (after the dead fix; permutation doesn't change it).
    H[np.diag_indices(k)] += DAMP * np.mean(np.diag(H))
    # 4. U = upper Cholesky factor of H^-1 (H^-1 = U^T U): row p of U holds the (scaled) OBS updates
    #    of the not-yet-quantized columns after column p is quantized.
    L = np.linalg.cholesky(H)
    Linv = np.linalg.inv(L)
    Hinv = Linv.T @ Linv
    U = np.linalg.cholesky(Hinv).T
    # 5. Lazy batches: exact updates inside a block, one deferred matrix update for the rest.
    Q = np.zeros((n, k), dtype=np.int64)
    margin = np.inf
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        W1, Err1 = W[:, i1:i2].copy(), np.zeros((n, i2 - i1))
        for i in range(i2 - i1):
            p = i1 + i
            w, d, s = W1[:, i], U[p, p], column_scale(scales, group, order[p])
            q = quantize(w, s, qmax)
            inside = np.abs(w / s) < qmax  # clamped values are not near a rounding tie
            if inside.any():
                margin = min(margin, np.min(np.abs(np.abs(w / s)[inside] % 1.0 - 0.5)))
            Q[:, p] = q
            err = (w - q * s) / d
            W1[:, i:] -= np.outer(err, U[p, p:i2])
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    # 6. Back to the original column order.
    Qo = np.zeros_like(Q)
    Qo[:, order] = Q
    return Qo, margin


def dequantize(Q, scales, group):
    S = np.stack([column_scale(scales, group, j) for j in range(Q.shape[1])], axis=1)
    return Q * S


def output_error(W, Q, scales, group, X):
    """||W X^T - (Q*s) X^T||_F^2, against the ORIGINAL W."""
    return float(np.sum(((W - dequantize(Q, scales, group)) @ X.T) ** 2))


def make_case(rng, name, n, k, m, bits, group, act_order, block):
    W = rng.standard_normal((n, k))
    A = rng.standard_normal((k, k)) / np.sqrt(k) + np.eye(k)  # mixing: correlated inputs
    X = rng.standard_normal((m, k)) @ A
    cols = rng.permutation(k)
    X[:, cols[:3]] *= rng.uniform(5.0, 10.0, size=3)  # a few outlier input channels
    X[:, cols[3]] = 0.0  # one dead input channel
    # X on a 1/16 grid: H = X^T X is then exact in float64 and short in JSON.
    X = np.round(X * 16.0) / 16.0
    H = X.T @ X
    scales = static_scales(W, bits, group)  # from W as given (before the dead-column fix)
    q, margin = gptq(W, H, scales, bits, group, act_order, block)
    Wz = W.copy()
    Wz[:, np.diag(H) == 0] = 0.0  # RTN zeroes dead columns too
    q_rtn = rtn(Wz, scales, bits, group)
    e_gptq, e_rtn = output_error(W, q, scales, group, X), output_error(W, q_rtn, scales, group, X)
    assert e_gptq < e_rtn, f"{name}: GPTQ {e_gptq} not below RTN {e_rtn}"
    print(f"{name:28s} gptq/rtn = {e_gptq / e_rtn:.4f}   min tie margin {margin:.2e}")
    return {"name": name, "n": n, "k": k, "bits": bits, "group": group, "act_order": act_order,
            "block": block, "W": W.ravel().tolist(), "H": H.ravel().tolist(),
            "scales": scales.ravel().tolist(), "q": q.ravel().tolist(),
            "q_rtn": q_rtn.ravel().tolist(), "error_gptq": e_gptq, "error_rtn": e_rtn}


CASES = [  # name, n, k, m, bits, group, act_order, block
    ("w4-perrow", 7, 37, 150, 4, 0, False, 8),
    ("w4-g16", 9, 45, 200, 4, 16, False, 16),
    ("w4-perrow-actorder", 7, 37, 150, 4, 0, True, 8),
    ("w4-g16-actorder", 9, 45, 200, 4, 16, True, 8),
    ("w8-perrow", 5, 24, 100, 8, 0, False, 8),
]

if __name__ == "__main__":
    rng = np.random.default_rng(1234)
    cases = [make_case(rng, *c) for c in CASES]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"generator": "scripts/reference/gptq_reference.py", "damp": DAMP, "cases": cases},
                  f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.relpath(OUT, REPO)} ({os.path.getsize(OUT)} bytes)")
