"""tokenizer.model of an expanded SentencePiece-style tokenizer: `sentencepiece` encodes NFC text exactly as
tokenizer.json does; wrong scores are caught; AutoTokenizer (use_fast=False too) agrees; byte-level bases get none."""

from __future__ import annotations

import json
import unicodedata

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer

from eeve.tokenizer.sentencepiece_model import encoding_mismatches, extend_model, read_model


def lines(path) -> list[str]:
    return [unicodedata.normalize("NFC", x) for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]


def test_sentencepiece_encodes_like_tokenizer_json(expanded_tokenizer, demo_data):
    report = json.loads((expanded_tokenizer / "expansion.json").read_text(encoding="utf-8"))
    assert report["sentencepiece_model"]["written"] and report["sentencepiece_model"]["mismatches"] == 0
    sp = spm.SentencePieceProcessor(model_file=str(expanded_tokenizer / "tokenizer.model"))
    tok = Tokenizer.from_file(str(expanded_tokenizer / "tokenizer.json"))
    assert sp.get_piece_size() == tok.get_vocab_size() == report["vocab_size"]
    assert all(sp.id_to_piece(x["id"]) == x["token"] for x in report["new_tokens"])
    for name in ("ko/heldout.txt", "en/heldout.txt", "ko/train.txt"):
        texts = lines(demo_data / name)
        ref = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
        assert sp.encode(texts) == ref, name
        assert sum(map(len, ref)) > 10_000
    for s in ["한국어 텍스트  두 칸", " 앞 공백", "끝 공백 ", "ㅋㅋㅋ 뷁 똠방각하 😀", "Use the 함수 in Calc"]:
        assert sp.encode(s) == tok.encode(s, add_special_tokens=False).ids, s
        assert sp.decode(sp.encode(s)) == s


def test_wrong_scores_are_caught(expanded_tokenizer, demo_data):
    """The check can fail: new pieces scored above the base's, or in reverse merge order, encode differently."""
    tj = json.loads((expanded_tokenizer / "tokenizer.json").read_text(encoding="utf-8"))
    tok = Tokenizer.from_file(str(expanded_tokenizer / "tokenizer.json"))
    base = read_model(demo_data / "base_tokenizer" / "tokenizer.model")
    texts = lines(demo_data / "ko" / "heldout.txt")
    good = extend_model(base, tj)
    assert encoding_mismatches(good, tok, texts) == []
    n = len(base.pieces)
    above, reverse = type(good)(), type(good)()
    above.CopyFrom(good)
    reverse.CopyFrom(good)
    for p in above.pieces[n:]:
        p.score = 0.0  # above every base merge
    scores = [p.score for p in good.pieces[n:]]
    for p, s in zip(reverse.pieces[n:], reversed(scores)):
        p.score = s
    assert len(encoding_mismatches(above, tok, texts)) > 50
    assert len(encoding_mismatches(reverse, tok, texts)) > 50


def test_auto_tokenizer_slow_equals_fast(expanded_tokenizer, demo_data):
    from transformers import AutoTokenizer

    fast = AutoTokenizer.from_pretrained(str(expanded_tokenizer))
    slow = AutoTokenizer.from_pretrained(str(expanded_tokenizer), use_fast=False)
    sp = spm.SentencePieceProcessor(model_file=str(expanded_tokenizer / "tokenizer.model"))
    texts = lines(demo_data / "ko" / "heldout.txt")[:300] + lines(demo_data / "en" / "heldout.txt")[:300]
    ids = fast(texts)["input_ids"]
    assert slow(texts)["input_ids"] == ids
    assert [[fast.bos_token_id] + x for x in sp.encode(texts)] == ids  # add_bos_token: <s> first, as sentencepiece
    cfg = json.loads((expanded_tokenizer / "tokenizer_config.json").read_text(encoding="utf-8"))
    # transformers 5's LlamaTokenizer rebuilds the pipeline from vocab + merges (and encodes "  x" differently):
    # the folder keeps the class that loads tokenizer.json as written
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"


@pytest.mark.parametrize("nfd", ["한글 텍스트", "가\u0301 é"])
def test_nfc_is_the_callers_job(expanded_tokenizer, nfd):
    """tokenizer.json normalises to NFC itself; the SentencePiece model keeps the base's identity normalizer."""
    sp = spm.SentencePieceProcessor(model_file=str(expanded_tokenizer / "tokenizer.model"))
    tok = Tokenizer.from_file(str(expanded_tokenizer / "tokenizer.json"))
    decomposed = unicodedata.normalize("NFD", nfd)
    assert tok.encode(decomposed, add_special_tokens=False).ids == sp.encode(unicodedata.normalize("NFC", decomposed))
    assert read_model(expanded_tokenizer / "tokenizer.model").normalizer_spec.name == "identity"
