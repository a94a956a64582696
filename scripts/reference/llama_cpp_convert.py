#!/usr/bin/env python3
"""Converts a Hugging Face checkpoint to GGUF with llama.cpp's own convert_hf_to_gguf.py, for the
README's side-by-side measurements against llama.cpp (bench_llama_cpp.sh, llama_cpp_kl.sh):

    python3 scripts/reference/llama_cpp_convert.py LLAMA_CPP_DIR CHECKPOINT OUT.gguf f32

The converter runs unchanged on a copy of the config; only what stops it on the checkpoints measured
here is mended, each a no-op where it does not apply:
- the config copy names its architecture where the file has none (the bundled models' configs),
  spells transformers 5's tagged infinity in time_step_limit as a number and Mamba-1's
  time_step_rank "auto" as its value (the converter reads only sizes from them);
- a tokenizer whose pre-tokenizer hash the converter does not know (the bundled models' 256-byte
  vocabulary) is labelled "gpt-2": the label names the vocabulary's pre-tokenizer, not a tensor;
- a BPE vocabulary without merges gets one merge of two control bytes never in the text, which
  llama.cpp's loader requires and which changes no tokenization;
- Nemotron-H without experts: transformers 5's NemotronHConfig always carries the experts' keys
  (num_experts_per_tok, n_routed_experts), which the converter takes for a mixture of experts
  (nemotron_h_moe), and its list form of the layer pattern names a dense MLP layer "mlp", which the
  converter does not count as a feed-forward layer; both are read as the pattern says;
- Granite-4.0-H: transformers 5 renames layer_types' "attention" and "mamba" to "full_attention"
  and "linear_attention" in the config it writes, and the converter looks for "attention" (it took
  every layer for Mamba); the copy has the hub's names.
"""
import json
import os
import runpy
import sys
import tempfile

ARCHITECTURES = {
    "mamba": "MambaForCausalLM", "mamba2": "Mamba2ForCausalLM", "falcon_mamba": "FalconMambaForCausalLM",
    "nemotron_h": "NemotronHForCausalLM", "bamba": "BambaForCausalLM", "jamba": "JambaForCausalLM",
    "granitemoehybrid": "GraniteMoeHybridForCausalLM", "falcon_h1": "FalconH1ForCausalLM",
}
EXPERT_KEYS = ("num_experts_per_tok", "n_routed_experts", "n_shared_experts", "n_group", "topk_group")


def config_copy(checkpoint, into):
    config = json.load(open(os.path.join(checkpoint, "config.json")))
    config.setdefault("architectures", [ARCHITECTURES[config["model_type"]]])
    if config.get("time_step_rank") == "auto":
        config["time_step_rank"] = -(-config["hidden_size"] // 16)
    if isinstance(config.get("time_step_limit"), list):
        config["time_step_limit"] = [v if isinstance(v, (int, float)) else 1e30 for v in config["time_step_limit"]]
    if config["model_type"] == "granitemoehybrid" and config.get("layer_types"):
        # The Mamba-2 converters read config.json itself, so the hub's names go into the copy.
        names = {"full_attention": "attention", "linear_attention": "mamba"}
        config["layer_types"] = [names.get(t, t) for t in config["layer_types"]]
    json.dump(config, open(os.path.join(into, "config.json"), "w"), indent=1)
    for name in os.listdir(checkpoint):
        if name != "config.json":
            os.symlink(os.path.abspath(os.path.join(checkpoint, name)), os.path.join(into, name))


def without_experts(pattern):
    return pattern is not None and "E" not in pattern and "moe" not in pattern


def patch_converter():
    import gguf
    import conversion.base as base
    import conversion.nemotron as nemotron

    known_pre = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return known_pre(self, tokenizer)
        except NotImplementedError:
            return "gpt-2"
    base.TextModel.get_vocab_base_pre = get_vocab_base_pre

    add_to_gguf = gguf.SpecialVocab.add_to_gguf

    def add_with_a_merge(self, writer, quiet=False):
        if not self.merges and self.load_merges:
            self.merges = ["\u0100 \u0101"]
        return add_to_gguf(self, writer, quiet=quiet)
    gguf.SpecialVocab.add_to_gguf = add_with_a_merge

    load_hparams = base.ModelBase.load_hparams

    def load_dense_hparams(*args, **kwargs):
        hparams = load_hparams(*args, **kwargs)
        if hparams.get("model_type") == "nemotron_h" and without_experts(
                hparams.get("hybrid_override_pattern") or hparams.get("layers_block_type")):
            for key in EXPERT_KEYS:
                hparams.pop(key, None)
        return hparams
    base.ModelBase.load_hparams = staticmethod(load_dense_hparams)
    nemotron.NemotronHModel._MLP_LAYER_TYPES = {"moe", "mlp"}


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: llama_cpp_convert.py LLAMA_CPP_DIR CHECKPOINT OUT.gguf OUTTYPE")
    llama_cpp, checkpoint, out, outtype = sys.argv[1:]
    sys.path[:0] = [llama_cpp, os.path.join(llama_cpp, "gguf-py")]
    patch_converter()
    with tempfile.TemporaryDirectory() as copy:
        config_copy(checkpoint, copy)
        sys.argv = ["convert_hf_to_gguf.py", copy, "--outtype", outtype, "--outfile", out]
        runpy.run_path(os.path.join(llama_cpp, "convert_hf_to_gguf.py"), run_name="__main__")


if __name__ == "__main__":
    main()
