"""Base tokenizer loading: the SentencePiece -> tokenizer.json conversion must encode exactly as sentencepiece."""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from eeve.errors import TokenizerBuildError
from eeve.tokenizer.base import load_base, write_hf_folder


def demo_lines(demo_data) -> list[str]:
    out = []
    for f in ("ko/train.txt", "ko/heldout.txt", "en/train.txt", "en/heldout.txt"):
        out += [x for x in (demo_data / f).read_text(encoding="utf-8").split("\n") if x]
    return out


# "<s>" in raw text is deliberately left out: HF (like the hub Mistral tokenizer.json) matches special tokens in text.
EDGE = [
    "",
    " ",
    "  ",
    "a  b",
    "   x",
    "x   ",
    "\t\ttab",
    "\n\nabc\n",
    "한\t\t국어  입니다    .",
    "123456 1.5e10",
    "😀👍🏽 漢字 ひらがな",
    "e\u0301",
    "\u1112\u1161\u11ab",
    "▁▁literal▁",
    "\x00\x01 control",
]


def test_sentencepiece_conversion_matches_every_demo_line(demo_data):
    base = load_base(demo_data / "base_tokenizer" / "tokenizer.model")
    assert base.kind.name == "sentencepiece_bpe" and len(base.vocab) == 32000
    sp = spm.SentencePieceProcessor(model_file=str(demo_data / "base_tokenizer" / "tokenizer.model"))
    texts = demo_lines(demo_data) + EDGE
    hf = [e.ids for e in base.tokenizer().encode_batch(texts, add_special_tokens=False)]
    ref = sp.encode(texts)
    bad = [t for t, a, b in zip(texts, hf, ref) if a != b]
    assert len(texts) > 10000 and bad == []


def test_converted_folder_loads_with_autotokenizer_and_adds_bos(demo_data, tmp_path):
    from transformers import AutoTokenizer

    base = load_base(demo_data / "base_tokenizer" / "tokenizer.model")
    write_hf_folder(base.tokenizer_json, base.config, tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    sp = spm.SentencePieceProcessor(model_file=str(demo_data / "base_tokenizer" / "tokenizer.model"))
    for s in demo_lines(demo_data)[:200] + ["hello  world"]:
        assert tok(s).input_ids == sp.encode(s, add_bos=True)
    assert tok.decode(tok("데이터 data").input_ids, skip_special_tokens=True) == "데이터 data"
    # the folder round-trips through load_base
    assert load_base(tmp_path).tokenizer_json["model"]["merges"] == base.tokenizer_json["model"]["merges"]


def _save(tok: Tokenizer, folder):
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_unsupported_bases_fail_with_one_line(tmp_path):
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.Whitespace()
    wp.train_from_iterator(
        ["hello world"] * 5, trainers.WordPieceTrainer(vocab_size=50, special_tokens=["[UNK]"], show_progress=False)
    )
    uni = Tokenizer(models.Unigram())
    uni.train_from_iterator(["hello world"] * 5, trainers.UnigramTrainer(vocab_size=20, show_progress=False))
    plain = Tokenizer(models.BPE())
    plain.train_from_iterator(["hello world"] * 5, trainers.BpeTrainer(vocab_size=30, show_progress=False))
    for name, tok, word in (("wp", wp, "WordPiece"), ("uni", uni, "Unigram"), ("plain", plain, "byte fallback")):
        with pytest.raises(TokenizerBuildError) as e:
            load_base(_save(tok, tmp_path / name))
        assert word in str(e.value) and "\n" not in str(e.value)
    for bad, word in ((tmp_path / "missing", "does not exist"), (tmp_path, "neither tokenizer.json")):
        with pytest.raises(TokenizerBuildError, match=word):
            load_base(bad)
    (tmp_path / "x.json").write_text(json.dumps({"not": "a tokenizer"}))
    with pytest.raises(TokenizerBuildError, match="not a HF tokenizer.json"):
        load_base(tmp_path / "x.json")
