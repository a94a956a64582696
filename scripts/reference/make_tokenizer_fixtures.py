#!/usr/bin/env python3
"""Writes the tokenizer fixtures of the hybrids' tokenizer families (Tests/Fixtures/tokenizers/):
tokenizer.json files trained here with the `tokenizers` library on the calibration corpus, in the
pipelines those checkpoints ship, and cases.json, the ids and decoded strings `tokenizers` gives for
varied texts (Unicode, whitespace runs, digits, emoji, code, added tokens).

- llama3-style: byte-level BPE whose pre-tokenizer is a Split on Llama-3's regex (isolated) then
  ByteLevel without its own regex, ignore_merges (Bamba, Granite-4.0-H, Nemotron-H, Falcon-H1 ship
  this shape);
- sentencepiece-style: BPE on characters with byte fallback (<0x..> tokens), the normalizer
  Prepend("▁") + Replace(" ", "▁") and Metaspace's decoder (Llama-2 / Jamba shape).

    python3 scripts/reference/make_tokenizer_fixtures.py

Deterministic for a given tokenizers version (the trainer is).
"""
import json
import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "Tests", "Fixtures", "tokenizers")
CORPUS = [os.path.join(REPO, "calibration", f) for f in ("shakespeare-train.txt", "python-docs-ood-test.txt")]

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")

TEXTS = [
    "Hello world",
    "ROMEO:\nBut soft! what light through yonder window breaks?\n\n",
    "def f(x):\n    return x**2  # square\n\n\tif x != 0:\n        pass",
    "runs of spaces:  two   three    four         nine",
    "don't won't I'm you're we've they'll she'd DON'T SHE'LL It'S",
    "numbers 1234567 3.14159 -42 1e-5 2026-12-02 000123",
    "naïve café, Straße, Ελληνικά, русский, 日本語のテキスト, 한국어, עברית, العربية",
    "emoji 🎭🚀 👩‍👩‍👧 ✨ and ZWJ",
    "e\u0301 combining, ﬁ ligature, ½ fraction, Ⅻ numeral",
    "tabs\tand\r\nwindows line\r\nendings\r\n",
    "<|begin_of_text|>after the start<|end_of_text|>  <|end_of_text|>",
    "trailing spaces   ",
    "   leading spaces",
    "\n\n\n",
    "x",
    "",
    "{\"json\": [1, 2, 3], 'key': None}  // comment /* block */",
    "a\u00a0non-breaking\u2003em space\u3000ideographic",
    "<|im_start|>user\nhi there<|im_start|> again <|im_start|>",
]


def corpus():
    for path in CORPUS:
        with open(path, encoding="utf-8") as f:
            yield f.read()


def write(name, tok, source_note):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"), pretty=True)
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    cases = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                      "ids_with_special_tokens": tok.encode(text).ids})
    with open(os.path.join(d, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"source": "tokenizers " + __import__("tokenizers").__version__, "note": source_note, "cases": cases},
                  f, indent=1, ensure_ascii=False)
    print(f"{name}: {tok.get_vocab_size()} ids, {len(cases)} cases")


def llama3_style():
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|begin_of_text|>", "<|end_of_text|>"])
    tok.train_from_iterator(corpus(), trainer)
    # Llama-3's post-processor: <|begin_of_text|> before the text, beside ByteLevel's offset trim.
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))]),
    ])
    write("llama3-style", tok, "byte-level BPE, Split(Llama-3 regex, isolated) + ByteLevel(use_regex false), ignore_merges")


def sentencepiece_style():
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Trained on words split before each "▁" (a trainer on whole lines would take hours), then saved
    # without a pre-tokenizer as SentencePiece conversions are: each text is one word at encode.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=1500, min_frequency=2, show_progress=False, special_tokens=specials,
                                  limit_alphabet=120)
    tok.train_from_iterator(corpus(), trainer)
    # The byte tokens are ordinary vocabulary entries in SentencePiece conversions, not added tokens.
    d = json.loads(tok.to_str())
    d["pre_tokenizer"] = None
    d["added_tokens"] = [a for a in d["added_tokens"] if not a["content"].startswith("<0x")]
    tok = Tokenizer.from_str(json.dumps(d))
    tok.add_special_tokens([AddedToken("<|im_start|>", special=True, normalized=False)])
    # A SentencePiece conversion's post-processor: <s> before the text, </s> after it here too.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")),
                                                                                           ("</s>", tok.token_to_id("</s>"))])
    write("sentencepiece-style", tok, "character BPE with byte fallback, Prepend + Replace normalizer, Metaspace-style decoder")


if __name__ == "__main__":
    import sys
    only = set(sys.argv[1:])
    for name, make in [("llama3-style", llama3_style), ("sentencepiece-style", sentencepiece_style)]:
        if not only or name in only:
            make()
