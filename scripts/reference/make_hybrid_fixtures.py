#!/usr/bin/env python3
"""Regenerates the hybrid fixtures in Tests/Fixtures/models: tiny random Nemotron-H checkpoints
(Mamba-2, attention and MLP layers) with logits from an implementation nobody here wrote
(transformers' NemotronHForCausalLM on its torch path: no mamba_ssm, no CUDA kernels).

    pip install -r scripts/requirements.txt   # torch 2.13.0+cpu comes from the machine's local wheel
    python3 scripts/reference/make_hybrid_fixtures.py

Deterministic (seeded draws, headers written by the safetensors library). The weights are drawn
as make_fixtures.py draws them (randomize), so every term of the forward matters.
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import OUT, PROMPT_LEN, randomize, reference_outputs  # noqa: E402

# name -> (config kwargs, the config.json spelling). The first is saved as transformers 5 saves it
# (layers_block_type); the second with the hub's hybrid_override_pattern and its older key names.
MODELS = {
    # All three kinds, attention twice (its cache across two layers), grouped-query 4 query heads on
    # 2 key/value heads, Mamba-2 with 2 groups, an untied head, dt clamped below at 0.01.
    "tiny-nemotron-h": (dict(vocab_size=96, hidden_size=32, layers_block_type=["mamba", "attention", "mlp", "mamba", "attention", "mlp"],
                             num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48,
                             mamba_num_heads=4, mamba_head_dim=16, n_groups=2, ssm_state_size=16, conv_kernel=4, chunk_size=8,
                             time_step_min=0.01, tie_word_embeddings=False, use_conv_bias=True, use_bias=False,
                             mlp_hidden_act="relu2", layer_norm_epsilon=1e-5), "transformers5"),
    # The hub's spelling: hybrid_override_pattern, attention_head_dim, mamba_n_groups and "backbone."
    # tensor names; biases on the Mamba and MLP projections (NemotronHAttention has none); a tied
    # head; one key/value head (multi-query).
    "tiny-nemotron-h-hub": (dict(vocab_size=80, hidden_size=24, layers_block_type=["mamba", "mlp", "attention", "mamba"],
                                 num_attention_heads=3, num_key_value_heads=1, head_dim=8, intermediate_size=40,
                                 mamba_num_heads=3, mamba_head_dim=16, n_groups=1, ssm_state_size=8, conv_kernel=3, chunk_size=16,
                                 time_step_min=0.001, tie_word_embeddings=True, use_conv_bias=True, use_bias=True,
                                 mlp_bias=True, mlp_hidden_act="relu2", layer_norm_epsilon=1e-6), "hub"),
}


def write(name, kwargs, spelling, seed):
    from transformers import NemotronHConfig, NemotronHForCausalLM
    d = os.path.join(OUT, "models", name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    torch.manual_seed(seed)
    cfg = NemotronHConfig(bos_token_id=0, eos_token_id=0, pad_token_id=0, **kwargs)
    model = NemotronHForCausalLM(cfg).float().eval()
    randomize(model, seed)
    if cfg.tie_word_embeddings:
        # tie_weights() leaves NemotronHForCausalLM's head its own matrix (transformers 5.23): share it.
        model.lm_head.weight = model.model.embeddings.weight
    cfg.to_json_file(os.path.join(d, "config.json"))
    if spelling == "hub":
        j = json.load(open(os.path.join(d, "config.json")))
        j["hybrid_override_pattern"] = "".join({"mamba": "M", "attention": "*", "mlp": "-"}[t] for t in kwargs["layers_block_type"])
        del j["layers_block_type"]
        j["attention_head_dim"] = j.pop("head_dim")
        j["mamba_n_groups"] = j.pop("n_groups")
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(j, f, indent=2, sort_keys=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if spelling == "hub":
        sd = {("backbone." + k[len("model."):] if k.startswith("model.") else k): v for k, v in sd.items()}
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, kwargs["vocab_size"], (PROMPT_LEN,), generator=g)
    ref, logits, gids = reference_outputs(model, ids)
    save_file(ref, os.path.join(d, "reference.safetensors"), metadata={"source": f"transformers {type(model).__name__} (torch path)"})
    print(f"{name}: max|logit| {logits.abs().max():.3f} greedy {gids}")


if __name__ == "__main__":
    for i, (name, (kwargs, spelling)) in enumerate(MODELS.items()):
        write(name, kwargs, spelling, 100 + i)
