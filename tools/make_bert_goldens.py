#!/usr/bin/env python3
"""Writes the golden files DistilBERT's C++ tests compare against, from
Hugging Face's own implementations (the tests need no Python):

  tests/golden/wordpiece_fortunes.json  token ids from the `tokenizers`
      library (all-MiniLM-L6-v2's tokenizer.json, no truncation or padding) for
      the first 2,000 training fortunes, every fortune with non-ASCII text, and
      hand-written Unicode cases (accents, CJK, punctuation, control
      characters, long words, special tokens);
  tests/golden/minilm_hidden.safetensors  `transformers`' BertModel last
      hidden states (float32, eval mode) for a few sentences padded into one
      batch, with their ids and attention mask.

Run it with the teacher that tools/setup.sh installs:
  python3 -m venv /tmp/golden-venv
  /tmp/golden-venv/bin/pip install torch==2.11.0 transformers tokenizers safetensors numpy
  /tmp/golden-venv/bin/python tools/make_bert_goldens.py \
      --model_dir third_party/minilm_root/model
The corpus is read here independently of data/text_corpus.cc, with the same
rules (see ReadFortunes in data/text_corpus.h).
"""
import argparse
import json
import os

FORTUNE_DIR = "/usr/share/games/fortunes"
HELD_OUT_EVERY = 10

HAND_CASES = [
    "Hello, World!",
    "  leading and trailing   spaces\t\ttabs\nnewlines\r\n",
    "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve co\u00f6perate, \u00c5ngstr\u00f6m \u212b",
    "\u00dcber-Stra\u00dfe \u0130stanbul \u0391\u0398\u0397\u039d\u0391 \u039f\u0394\u039f\u03a3 \u0416\u0443\u0440\u043d\u0430\u043b",
    "\u4e2d\u6587\u5b57\u7b26 mixed with English \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4",
    "quotes \u201csmart\u201d \u2018single\u2019 \u00abguillemets\u00bb \u2014 dashes \u2013 and\u2026 ellipses",
    "symbols $5 + 3 = 8 < 9 > 7 ^ ` | ~ @ # % & * ( ) [ ] { } \\ / _",
    "control\x00chars\x07and\x1b[0mescapes\ufeffzero\u200bwidth\u00adsoft",
    "overstrike: _\bu_\bn_\bd_\be_\br_\bl_\bi_\bn_\be_\bd and b\bbo\bol\bld\bd",
    "no\u00a0break\u2003em\u3000ideographic space",
    "a" * 99 + " " + "b" * 100 + " " + "c" * 101,
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "[CLS] already [SEP] special [MASK] tokens [UNK] [PAD] and [mask] lowercase",
    "emoji \U0001f600\U0001f44d\U0001f3fd flags \U0001f1fa\U0001f1f8 math \U0001d400\U0001d401",
    "ligatures \ufb01 \ufb02 fullwidth \uff21\uff22\uff23 roman \u2160\u2161 circled \u2460",
    "combining e\u0301 a\u0308 o\u0302\u0323 and precomposed \u1ec7",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea \u0939\u093f\u0928\u094d\u0926\u0940 \u0e44\u0e17\u0e22",
    "numbers 3.14159 1,000,000 2nd 21st 1990s 10:30am",
    "",
    "x",
]


def read_fortunes(directory):
    names = sorted(
        n for n in os.listdir(directory)
        if "." not in n and n != "ascii-art"
        and os.path.isfile(os.path.join(directory, n))
        and os.path.isfile(os.path.join(directory, n + ".dat")))
    train, held_out = [], []
    index = 0
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        fortunes, current = [], []
        for line in data.split(b"\n"):
            if line.endswith(b"\r"):
                line = line[:-1]
            if line == b"%":
                fortunes.append(b"\n".join(current))
                current = []
            else:
                current.append(line)
        fortunes.append(b"\n".join(current))
        for raw in fortunes:
            text = raw.strip(b" \t\n\r\x0b\x0c")
            if not text:
                continue
            text = text.decode("utf-8", errors="replace")
            (held_out if index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else train).append(text)
            index += 1
    return train, held_out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", default="third_party/minilm_root/model")
    parser.add_argument("--out_dir", default="tests/golden")
    parser.add_argument("--fortune_dir", default=FORTUNE_DIR)
    args = parser.parse_args()

    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    train, held_out = read_fortunes(args.fortune_dir)
    texts = train[:2000]
    texts += [t for t in train[2000:] + held_out if any(ord(c) > 127 for c in t)]
    texts += HAND_CASES
    cases = [{"text": t, "ids": tok.encode(t).ids} for t in texts]
    golden = {
        "source": "tokenizers " + __import__("tokenizers").__version__ +
                  ", all-MiniLM-L6-v2 tokenizer.json, no truncation or padding",
        "num_train": len(train),
        "num_held_out": len(held_out),
        "num_corpus_cases": len(texts) - len(HAND_CASES),
        "cases": cases,
    }
    path = os.path.join(args.out_dir, "wordpiece_fortunes.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
    os.replace(path + ".tmp", path)
    print(f"{path}: {len(cases)} texts ({len(train)} train / {len(held_out)} held-out fortunes)")

    import torch
    from safetensors.torch import save_file
    from transformers import BertModel, BertTokenizer
    sentences = [
        "The quick brown fox jumps over the lazy dog.",
        "A fortune a day keeps the doctor away.",
        "Pipelines keep every device busy; teachers only run forward.",
        "Short one.",
    ]
    bert_tok = BertTokenizer.from_pretrained(args.model_dir)
    enc = bert_tok(sentences, padding=True, return_tensors="pt")
    model = BertModel.from_pretrained(args.model_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        hidden = model(input_ids=enc["input_ids"],
                       attention_mask=enc["attention_mask"]).last_hidden_state
    path = os.path.join(args.out_dir, "minilm_hidden.safetensors")
    save_file({"input_ids": enc["input_ids"].contiguous(),
               "attention_mask": enc["attention_mask"].contiguous(),
               "last_hidden_state": hidden.float().contiguous()},
              path + ".tmp",
              metadata={"source": "transformers " + __import__("transformers").__version__ +
                        " BertModel (eager attention, eval) on all-MiniLM-L6-v2"})
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)
    print(f"{path}: hidden states {tuple(hidden.shape)}")


if __name__ == "__main__":
    main()
