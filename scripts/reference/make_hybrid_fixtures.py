#!/usr/bin/env python3
"""Regenerates the hybrid fixtures in Tests/Fixtures/models: tiny random Nemotron-H, Bamba,
Granite-4.0-H (dense and with experts) and Jamba checkpoints (Mamba-1 or Mamba-2, attention, MLP
and mixture-of-experts layers) with logits from an implementation nobody here wrote
(transformers' NemotronHForCausalLM, BambaForCausalLM, GraniteMoeHybridForCausalLM and
JambaForCausalLM on their torch paths: no mamba_ssm, no CUDA kernels).

    pip install -r scripts/requirements.txt   # torch 2.13.0+cpu comes from the machine's local wheel
    python3 scripts/reference/make_hybrid_fixtures.py

Deterministic (seeded draws, headers written by the safetensors library). The weights are drawn
as make_fixtures.py draws them (randomize), so every term of the forward matters.
"""
import json
import math
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import OUT, PROMPT_LEN, randomize, reference_outputs, round_to  # noqa: E402

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
    # Mixture-of-experts layers (Nemotron-3's "E"): 8 relu2 experts in 2 groups, top 2 within the
    # best group (sigmoid scores plus a correction bias), renormalized and scaled by 2.5, a shared
    # relu2 MLP; the hub's spelling, one expert per up_proj / down_proj.
    "tiny-nemotron-h-moe": (dict(vocab_size=96, hidden_size=32, layers_block_type=["mamba", "moe", "attention", "moe"],
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48,
                                 n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, norm_topk_prob=True,
                                 routed_scaling_factor=2.5, moe_intermediate_size=24, moe_shared_expert_intermediate_size=20,
                                 mamba_num_heads=4, mamba_head_dim=16, n_groups=1, ssm_state_size=16, conv_kernel=4, chunk_size=8,
                                 time_step_min=0.001, tie_word_embeddings=False, use_conv_bias=True, use_bias=False,
                                 mlp_hidden_act="relu2", layer_norm_epsilon=1e-5), "hub"),
}


# name -> (config kwargs, the config.json spelling, the weights' dtype). A Bamba or Granite decoder
# layer is two sub-blocks (a Mamba-2 or attention mixer, then an MLP), each behind its own norm.
BAMBA = {
    # transformers 5's spelling: rope_parameters (RoPE on half of each head, Bamba's fixed
    # partial_rotary_factor), grouped-query 4 on 2, Mamba-2 with 2 groups, an untied head, F32.
    "tiny-bamba": (dict(vocab_size=96, hidden_size=32, num_hidden_layers=4, attn_layer_indices=[1, 3],
                        num_attention_heads=4, num_key_value_heads=2, intermediate_size=40, mamba_n_heads=4, mamba_d_head=16,
                        mamba_n_groups=2, mamba_d_state=16, mamba_d_conv=4, mamba_chunk_size=8, tie_word_embeddings=False,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000.0, "partial_rotary_factor": 0.5},
                        rms_norm_eps=1e-5), "transformers5", torch.float32),
    # The hub's spelling (rope_theta at the top level, no rope_parameters), biases on every
    # projection, a tied head, one key/value head, BF16 weights.
    "tiny-bamba-hub": (dict(vocab_size=80, hidden_size=24, num_hidden_layers=3, attn_layer_indices=[2],
                            num_attention_heads=2, num_key_value_heads=1, intermediate_size=48, mamba_n_heads=3, mamba_d_head=16,
                            mamba_n_groups=1, mamba_d_state=8, mamba_d_conv=3, mamba_chunk_size=16, tie_word_embeddings=True,
                            attention_bias=True, mlp_bias=True, mamba_proj_bias=True, rms_norm_eps=1e-6,
                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}),
                       "hub", torch.bfloat16),
}
GRANITE = {
    # Granite-4.0-H Micro's shape: dense (no experts, the shared MLP only), no positional encoding,
    # its four multipliers, a tied head, transformers 5's layer_types, F16 weights.
    "tiny-granite-4.0-h": (dict(vocab_size=96, hidden_size=32, num_hidden_layers=4,
                                layer_types=["linear_attention", "full_attention", "linear_attention", "linear_attention"],
                                num_attention_heads=4, num_key_value_heads=2, shared_intermediate_size=40, num_local_experts=0,
                                mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=16, mamba_d_conv=4,
                                mamba_chunk_size=8, position_embedding_type="nope", tie_word_embeddings=True,
                                embedding_multiplier=6.0, residual_multiplier=0.4, attention_multiplier=0.3, logits_scaling=2.5,
                                rms_norm_eps=1e-5), "transformers5", torch.float16),
    # The hub's spelling of layer_types ("mamba" / "attention"), RoPE on whole heads, an untied head,
    # attention at the first layer.
    "tiny-granite-4.0-h-rope": (dict(vocab_size=80, hidden_size=24, num_hidden_layers=3,
                                     layer_types=["full_attention", "linear_attention", "linear_attention"],
                                     num_attention_heads=3, num_key_value_heads=3, shared_intermediate_size=32, num_local_experts=0,
                                     mamba_n_heads=3, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=8, mamba_d_conv=4,
                                     mamba_chunk_size=8, position_embedding_type="rope", tie_word_embeddings=False,
                                     rope_parameters={"rope_type": "default", "rope_theta": 500.0},
                                     embedding_multiplier=2.0, residual_multiplier=0.7, attention_multiplier=0.125, logits_scaling=1.5,
                                     rms_norm_eps=1e-6), "hub", torch.float32),
    # Granite-4.0-H Tiny's shape: a mixture of 4 experts, top 2 (softmax over the two), beside the
    # shared MLP in every decoder layer; experts stacked in block_sparse_moe.input_linear /
    # output_linear as the hub keeps them; BF16 weights, a tied head.
    "tiny-granite-4.0-h-moe": (dict(vocab_size=96, hidden_size=32, num_hidden_layers=3,
                                    layer_types=["mamba", "attention", "mamba"],
                                    num_attention_heads=4, num_key_value_heads=2, shared_intermediate_size=24, intermediate_size=20,
                                    num_local_experts=4, num_experts_per_tok=2,
                                    mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=16, mamba_d_conv=4,
                                    mamba_chunk_size=8, position_embedding_type="nope", tie_word_embeddings=True,
                                    embedding_multiplier=3.0, residual_multiplier=0.5, attention_multiplier=0.25, logits_scaling=2.0,
                                    rms_norm_eps=1e-5), "hub", torch.bfloat16),
}
# Jamba: Mamba-1 layers (RMSNorms with weights on dt, B and C) and attention without positional
# encoding, each followed by a SwiGLU MLP or a mixture of experts (top k of the softmax over all,
# unnormalized), one expert per gate_proj / up_proj / down_proj as the hub keeps them.
JAMBA = {
    # Attention at layer 2 of 4, experts (4, top 2) at layers 1 and 3, an untied head, F32.
    "tiny-jamba": (dict(vocab_size=96, hidden_size=32, num_hidden_layers=4, intermediate_size=40,
                        num_attention_heads=4, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
                        attn_layer_period=4, attn_layer_offset=2, expert_layer_period=2, expert_layer_offset=1,
                        mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=4, rms_norm_eps=1e-6,
                        tie_word_embeddings=False), "hub", torch.float32),
    # Experts everywhere (3, top 1), attention first, biases on the Mamba projections, a tied head,
    # F16. (dt rank 8: "auto" would give 2 here, and an RMSNorm over 2 values turns 8-bit noise in
    # a small pair into a different direction; real Jamba's rank is 256.)
    "tiny-jamba-f16": (dict(vocab_size=80, hidden_size=24, num_hidden_layers=3, intermediate_size=32,
                            num_attention_heads=3, num_key_value_heads=1, num_experts=3, num_experts_per_tok=1,
                            attn_layer_period=3, attn_layer_offset=0, expert_layer_period=1, expert_layer_offset=0,
                            mamba_d_state=8, mamba_d_conv=3, mamba_expand=2, mamba_dt_rank=8, mamba_proj_bias=True,
                            rms_norm_eps=1e-5, tie_word_embeddings=True), "hub", torch.float16),
}

# Falcon-H1: a Mamba-2 mixer and attention in parallel in every decoder layer, then a SwiGLU MLP,
# with μP multipliers everywhere (all different from 1 here, so that each one is checked).
MULTIPLIERS = dict(embedding_multiplier=2.5, lm_head_multiplier=0.75, attention_in_multiplier=0.8, attention_out_multiplier=1.3,
                   key_multiplier=0.6, ssm_in_multiplier=1.2, ssm_out_multiplier=0.7, ssm_multipliers=[0.9, 1.1, 0.8, 1.25, 0.5],
                   mlp_multipliers=[1.4, 0.6])
FALCON_H1 = {
    # transformers 5's spelling (rope_parameters), a Mamba width (mamba_d_ssm 48) that is not
    # expand x hidden, no gated norm (the published models' mamba_rms_norm false), one group,
    # grouped-query 4 on 2, an untied head, F32.
    "tiny-falcon-h1": (dict(vocab_size=96, hidden_size=32, num_hidden_layers=3, intermediate_size=40,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=8, mamba_d_ssm=48, mamba_n_heads=3,
                            mamba_d_head=16, mamba_n_groups=1, mamba_d_state=8, mamba_d_conv=4, mamba_chunk_size=8,
                            rope_parameters={"rope_type": "default", "rope_theta": 1000.0}, rms_norm_eps=1e-5,
                            tie_word_embeddings=False, **MULTIPLIERS), "transformers5", torch.float32),
    # The hub's spelling (rope_theta at the top level), the gated norm after the gate over 3 groups,
    # mamba_d_ssm null (expand x hidden), biases on the Mamba projections, out_proj and the MLP, a
    # tied head, BF16.
    "tiny-falcon-h1-hub": (dict(vocab_size=80, hidden_size=24, num_hidden_layers=2, intermediate_size=32,
                                num_attention_heads=3, num_key_value_heads=1, head_dim=8, mamba_d_ssm=None, mamba_expand=2,
                                mamba_n_heads=3, mamba_d_head="auto", mamba_n_groups=3, mamba_d_state=8, mamba_d_conv=3,
                                mamba_chunk_size=16, mamba_rms_norm=True, mamba_norm_before_gate=False, mamba_proj_bias=True,
                                projectors_bias=True, mlp_bias=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                                rms_norm_eps=1e-6, tie_word_embeddings=True, **MULTIPLIERS), "hub", torch.bfloat16),
}


def hub_state_dict(model, dtype):
    """The state dict under the names the hub's checkpoints use (what save_pretrained writes):
    Granite's experts as block_sparse_moe.input_linear / output_linear and router.layer, Jamba's as
    one gate_proj / up_proj / down_proj per expert."""
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().to(dtype).contiguous()
        if k.endswith("block_sparse_moe.experts.gate_up_proj"):
            sd[k.replace("experts.gate_up_proj", "input_linear.weight")] = v
        elif k.endswith("block_sparse_moe.experts.down_proj"):
            sd[k.replace("experts.down_proj", "output_linear.weight")] = v
        elif k.endswith("block_sparse_moe.router.weight"):
            sd[k.replace("router.weight", "router.layer.weight")] = v
        elif k.endswith("feed_forward.experts.gate_up_proj"):
            width = v.shape[1] // 2
            for e in range(v.shape[0]):
                sd[k.replace("experts.gate_up_proj", f"experts.{e}.gate_proj.weight")] = v[e, :width].contiguous()
                sd[k.replace("experts.gate_up_proj", f"experts.{e}.up_proj.weight")] = v[e, width:].contiguous()
        elif k.endswith("mixer.experts.up_proj") or k.endswith("mixer.experts.down_proj"):
            module = k.rsplit(".", 1)[1]
            for e in range(v.shape[0]):
                sd[k.replace(f"experts.{module}", f"experts.{e}.{module}.weight")] = v[e].contiguous()
        elif k.endswith("feed_forward.experts.down_proj"):
            for e in range(v.shape[0]):
                sd[k.replace("experts.down_proj", f"experts.{e}.down_proj.weight")] = v[e].contiguous()
        else:
            sd[k] = v
    return sd


def randomize_experts(model, seed):
    """randomize() takes a 3-D tensor's last two dimensions as its fan-in: draw the stacked experts
    [E, out, in] as E matrices instead. Routers are drawn 4x wider than a linear's init, so that
    their top-k choices have margins (a trained router's are rarely as close as a random one's)
    and 8-bit noise upstream flips few of them: a flip swaps one expert's whole output."""
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 3 and p.shape[1] != 1:            # not a conv's [C, 1, K]
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
            elif name.endswith("router.weight") or name.endswith("mixer.gate.weight"):
                p.copy_(4 * torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):         # Nemotron-H's router: zeros at init
                b.copy_(0.1 * torch.randn(b.shape, generator=g))


def cached_decode(model, ids, prefix):
    """Logits of ids[prefix:], each from one step through the cache (KV cache and recurrent states)
    that a prefill of ids[:prefix] filled."""
    with torch.no_grad():
        out = model(ids[None, :prefix], use_cache=True)
        cache, rows = out.past_key_values, []
        for t in range(prefix, len(ids)):
            # position_ids given: BambaModel counts positions from 0 in every call otherwise.
            out = model(ids[None, t:t + 1], past_key_values=cache, use_cache=True, position_ids=torch.tensor([[t]]))
            cache = out.past_key_values
            rows.append(out.logits[0, -1].float())
    return torch.stack(rows)


def fresh_model(name, Config, Model, kwargs, seed):
    """An empty fixture directory and the seeded, randomized float model of `kwargs`."""
    d = os.path.join(OUT, "models", name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    torch.manual_seed(seed)
    cfg = Config(bos_token_id=0, eos_token_id=0, pad_token_id=0, **kwargs)
    model = Model(cfg).float().eval()
    randomize(model, seed)
    return d, cfg, model


def write_reference(d, name, model, vocab_size, seed):
    """reference.safetensors: the prompt's logits, greedy ids and transformers' cached decode."""
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, vocab_size, (PROMPT_LEN,), generator=g)
    ref, logits, gids = reference_outputs(model, ids)
    ref["cached_logits"] = cached_decode(model, ids, CACHED_PREFIX).contiguous()
    err = (ref["cached_logits"] - logits[CACHED_PREFIX:]).abs().max() / logits.abs().max()
    save_file(ref, os.path.join(d, "reference.safetensors"), metadata={"source": f"transformers {type(model).__name__} (torch path)"})
    print(f"{name}: max|logit| {logits.abs().max():.3f} greedy {gids} cached decode vs prefill {err:.2e}")


def write_family(name, family, kwargs, spelling, dtype, seed):
    if family == "bamba":
        from transformers import BambaConfig as Config, BambaForCausalLM as Model
    elif family == "jamba":
        from transformers import JambaConfig as Config, JambaForCausalLM as Model
    elif family == "falcon_h1":
        from transformers import FalconH1Config as Config, FalconH1ForCausalLM as Model
    else:
        from transformers import GraniteMoeHybridConfig as Config, GraniteMoeHybridForCausalLM as Model
    d, cfg, model = fresh_model(name, Config, Model, kwargs, seed)
    randomize_experts(model, seed)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    round_to(model, dtype)
    cfg.to_json_file(os.path.join(d, "config.json"))
    if spelling == "hub":
        j = json.load(open(os.path.join(d, "config.json")))
        rope = j.pop("rope_parameters", None) or {}
        if "rope_theta" in rope:
            j["rope_theta"] = rope["rope_theta"]
        if family == "granite":
            j["layer_types"] = [{"linear_attention": "mamba", "full_attention": "attention"}[t] for t in j["layer_types"]]
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(j, f, indent=2, sort_keys=True)
    sd = hub_state_dict(model, dtype)
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    write_reference(d, name, model, kwargs["vocab_size"], seed)


# The cached decode's prompt: a prefill of this many tokens, then one token at a time.
CACHED_PREFIX = 21


def write(name, kwargs, spelling, seed):
    from transformers import NemotronHConfig, NemotronHForCausalLM
    d, cfg, model = fresh_model(name, NemotronHConfig, NemotronHForCausalLM, kwargs, seed)
    randomize_experts(model, seed)
    if cfg.tie_word_embeddings:
        # tie_weights() leaves NemotronHForCausalLM's head its own matrix (transformers 5.23): share it.
        model.lm_head.weight = model.model.embeddings.weight
    cfg.to_json_file(os.path.join(d, "config.json"))
    if spelling == "hub":
        j = json.load(open(os.path.join(d, "config.json")))
        j["hybrid_override_pattern"] = "".join({"mamba": "M", "attention": "*", "mlp": "-", "moe": "E"}[t] for t in kwargs["layers_block_type"])
        del j["layers_block_type"]
        j["attention_head_dim"] = j.pop("head_dim")
        j["mamba_n_groups"] = j.pop("n_groups")
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(j, f, indent=2, sort_keys=True)
    sd = hub_state_dict(model, torch.float32)
    if spelling == "hub":
        sd = {("backbone." + k[len("model."):] if k.startswith("model.") else k): v for k, v in sd.items()}
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    write_reference(d, name, model, kwargs["vocab_size"], seed)


if __name__ == "__main__":
    only = set(sys.argv[1:])
    for i, (name, (kwargs, spelling)) in enumerate(MODELS.items()):
        if not only or name in only:
            write(name, kwargs, spelling, 100 + i)
    for family, table, base in [("bamba", BAMBA, 200), ("granite", GRANITE, 300), ("jamba", JAMBA, 400), ("falcon_h1", FALCON_H1, 500)]:
        for i, (name, (kwargs, spelling, dtype)) in enumerate(table.items()):
            if not only or name in only:
                write_family(name, family, kwargs, spelling, dtype, base + i)
