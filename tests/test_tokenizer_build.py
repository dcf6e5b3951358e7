"""The expanded tokenizer's guarantees, on the real demo data (one build per module, shared by the tests)."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from eeve.demo.byte_level import train_byte_level_base
from eeve.text.scripts import hangul
from eeve.tokenizer.base import bpe_pieces, load_base
from eeve.tokenizer.counting import count_tokens, merge_counts
from eeve.tokenizer.run import run_from_config

KO = hangul()
HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def lines(path: Path) -> list[str]:
    return [x for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]


@pytest.fixture(scope="module")
def built(expanded_tokenizer):
    """The session's demo expansion (tests/conftest.py: intermediate_vocab_size=8000, min_frequency=8)."""
    out = expanded_tokenizer
    report = json.loads((out / "expansion.json").read_text(encoding="utf-8"))
    return {
        "dir": out,
        "report": report,
        "target": Tokenizer.from_file(str(out / "tokenizer.json")),
        "base": Tokenizer.from_file(str(out / "base_tokenizer" / "tokenizer.json")),
    }


def enc(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def test_layout_and_ids(built):
    r, t = built["report"], built["target"]
    assert r["base_vocab_size"] == 32000 and r["base_kind"] == "sentencepiece_bpe"
    assert r["vocab_size"] == t.get_vocab_size() and r["vocab_size"] % 64 == 0
    ids = [x["id"] for x in r["new_tokens"]]
    assert ids == list(range(32000, r["vocab_size"]))  # contiguous from the base size
    vocab = t.get_vocab()
    assert all(vocab[x["token"]] == x["id"] for x in r["new_tokens"])
    assert len(r["new_tokens"]) > 1000 and all(KO.has_target(x["token"]) for x in r["new_tokens"])
    base_vocab = built["base"].get_vocab()
    assert all(vocab[k] == v for k, v in base_vocab.items())  # base ids unchanged
    assert r["iterations"] and r["compression"]["ko"]["ratio"] >= 2.0
    assert r["config"]["min_frequency"] == 8


def test_every_new_token_reachable(built):
    t = built["target"]
    bad = [x["token"] for x in built["report"]["new_tokens"] if bpe_pieces(t, x["token"]) != [x["token"]]]
    assert bad == []


def test_new_merges_after_base_merges(built):
    tj = json.loads((built["dir"] / "tokenizer.json").read_text(encoding="utf-8"))
    bj = json.loads((built["dir"] / "base_tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))
    n = len(bj["model"]["merges"])
    assert tj["model"]["merges"][:n] == bj["model"]["merges"]
    assert all(KO.has_target(a + b) for a, b in tj["model"]["merges"][n:])


def test_min_frequency_respected(built):
    r = built["report"]
    m = r["config"]["min_frequency"]
    rare = [x for x in r["new_tokens"] if x["frequency"] < m and len(x["token"]) > 1]
    # rare multi-character tokens survive only as merge ancestors of kept tokens
    tokens = {x["token"] for x in r["new_tokens"]}
    for x in rare[:50]:
        assert any(x["token"] in y and y != x["token"] for y in tokens), x


def test_non_hangul_text_exactly_as_base(built, demo_data):
    texts = lines(demo_data / "en" / "heldout.txt") + lines(demo_data / "en" / "train.txt")[:4000]
    texts += [KO.strip_target(s) for s in lines(demo_data / "ko" / "heldout.txt")]
    texts = [s for s in texts if s.strip()]
    assert enc(built["target"], texts) == enc(built["base"], texts)


def test_roundtrip_mixed_scripts(built):
    t = built["target"]
    samples = [
        "한국어 텍스트와 English text, 숫자 12345 그리고 emoji 😀👍🏽!",
        "  leading and   multiple   spaces\t\ttabs\nnewlines\n\n",
        "혼합: 漢字 ひらがな Кириллица العربية עברית ไทย",
        "   ",
        "끝.",
        "\u200b zero width \ufeff bom",
    ]
    for s in samples:
        assert t.decode(t.encode(s, add_special_tokens=False).ids) == s


def test_nfd_korean_is_normalised(built, demo_data):
    t, b = built["target"], built["base"]
    ko = lines(demo_data / "ko" / "heldout.txt")[:300]
    nfd = [unicodedata.normalize("NFD", s) for s in ko]
    assert enc(t, nfd) == enc(t, ko)
    assert sum(map(len, enc(t, nfd))) * 2 < sum(map(len, enc(b, nfd)))  # the base explodes NFD into jamo/bytes


def test_autotokenizer_loads_and_adds_bos(built):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(str(built["dir"]))
    b = AutoTokenizer.from_pretrained(str(built["dir"] / "base_tokenizer"))
    s = "데이터베이스 함수를 사용합니다. Use the function."
    ids, bids = t(s).input_ids, b(s).input_ids
    assert ids[0] == bids[0] == 1 and len(t) == built["report"]["vocab_size"]
    assert len(ids) < len(bids)
    assert t.decode(ids, skip_special_tokens=True) == s
    assert t.bos_token == "<s>" and t.eos_token == "</s>"


# ------------------------------------------------------------------------------------------- property tests
HANGUL = st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3)
JAMO = st.characters(min_codepoint=0x1100, max_codepoint=0x11FF)
# U+2581 "▁" is left out, of the special characters and of the random ones: SentencePiece-style tokenizers (the base
# included) map it to a space, so it decodes as " " (test_literal_metaspace_like_base pins that down).
SPECIAL = list(" \t\n\r.,!?0123456789😀👍🏽\u200d\u0301\u3000漢字") + ["\u1112\u1161\u11ab"]  # NFD 한
ANY = st.characters(codec="utf-8", exclude_characters="\u2581")
MIXED = st.lists(st.one_of(HANGUL, HANGUL, JAMO, st.sampled_from(SPECIAL), ANY), max_size=60).map("".join)
NON_HANGUL = st.text(st.characters(codec="utf-8").filter(lambda c: not KO.is_target_char(c)), max_size=60)


def test_literal_metaspace_like_base(built):
    for x in ("a▁b", "▁", "한▁글"):
        t, b = built["target"], built["base"]
        assert t.decode(t.encode(x).ids) == b.decode(b.encode(x).ids) == x.replace("▁", " ")


@HYP
@given(MIXED)
def test_property_roundtrip_is_nfc(built, x):
    t = built["target"]
    assert t.decode(t.encode(x, add_special_tokens=False).ids) == unicodedata.normalize("NFC", x)


@HYP
@given(NON_HANGUL)
def test_property_non_hangul_as_base(built, x):
    y = unicodedata.normalize("NFC", x)
    if any(KO.is_target_char(c) for c in y):  # NFC never creates Hangul from non-Hangul, but be explicit
        return
    assert (
        built["target"].encode(x, add_special_tokens=False).ids == built["base"].encode(y, add_special_tokens=False).ids
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 400), min_size=0, max_size=4), st.integers(64, 4096))
def test_property_shard_counts_equal_single_pass(built, demo_data, cuts, batch_bytes):
    docs = lines(demo_data / "ko" / "heldout.txt")[:400]
    t = built["target"]
    edges = [0, *sorted(cuts), len(docs)]
    parts = [count_tokens(t, docs[a:b], batch_bytes=batch_bytes, count_chars=True) for a, b in zip(edges, edges[1:])]
    whole = count_tokens(t, docs, count_chars=True)
    merged = merge_counts(parts)
    assert np.array_equal(merged.tokens, whole.tokens) and np.array_equal(merged.chars, whole.chars)
    assert merged.tokens.sum() == sum(map(len, enc(t, docs)))


# ------------------------------------------------------------------------------------------- byte-level base
@pytest.fixture(scope="module")
def byte_level(demo_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("bl")
    en = lines(demo_data / "en" / "train.txt")[:3000]
    ko = lines(demo_data / "ko" / "train.txt")[:300]
    base_dir = train_byte_level_base(en + ko, root / "base")
    out = root / "expanded"
    run_from_config(
        {
            "base_tokenizer": str(base_dir),
            "corpus": {"paths": [str(demo_data / "ko" / "train.txt")]},
            "heldout": {"ko": str(demo_data / "ko" / "heldout.txt"), "en": str(demo_data / "en" / "heldout.txt")},
            "output_dir": str(out),
            "intermediate_vocab_size": 4000,
            "min_frequency": 5,
            "progress": False,
        }
    )
    return {
        "dir": out,
        "report": json.loads((out / "expansion.json").read_text(encoding="utf-8")),
        "target": Tokenizer.from_file(str(out / "tokenizer.json")),
        "base": Tokenizer.from_file(str(base_dir / "tokenizer.json")),
    }


def test_byte_level_base(byte_level, demo_data):
    r, t, b = byte_level["report"], byte_level["target"], byte_level["base"]
    assert r["base_kind"] == "byte_level_bpe" and r["vocab_size"] % 64 == 0 and len(r["new_tokens"]) > 500
    assert [x["id"] for x in r["new_tokens"]] == list(range(r["base_vocab_size"], r["vocab_size"]))
    assert [x["token"] for x in r["new_tokens"] if bpe_pieces(t, x["token"]) != [x["token"]]] == []
    en = lines(demo_data / "en" / "heldout.txt")
    stripped = [KO.strip_target(s) for s in lines(demo_data / "ko" / "heldout.txt")]
    assert enc(t, en + stripped) == enc(b, en + stripped)
    assert r["compression"]["ko"]["ratio"] > 1.3
    # no SentencePiece form: no tokenizer.model, and nothing claims one
    assert not (byte_level["dir"] / "tokenizer.model").exists() and not r["sentencepiece_model"]["written"]
    cfg = (byte_level["dir"] / "tokenizer_config.json").read_text(encoding="utf-8")
    assert "LlamaTokenizer" not in cfg and "vocab_file" not in cfg and "tokenizer.model" not in cfg
    for s in ["한국어 텍스트 hello 😀  x", "ㅋㅋㅋ 뷁 똠방각하", unicodedata.normalize("NFD", "한글")]:
        assert t.decode(t.encode(s).ids) == unicodedata.normalize("NFC", s)


def test_base_kinds(byte_level, built):
    assert load_base(byte_level["dir"]).kind.name == "byte_level_bpe"
    assert load_base(built["dir"] / "base_tokenizer").kind.name == "sentencepiece_bpe"


def test_packed_counting_equals_per_document(built, demo_data):
    from eeve.text.corpus import iter_documents
    from eeve.tokenizer.counting import pack_separator_id

    t = built["target"]
    assert pack_separator_id(t) is not None and pack_separator_id(Tokenizer.from_str(t.to_str())) == t.token_to_id(
        "<0x0A>"
    )
    docs = list(iter_documents([demo_data / "pairs" / "heldout.jsonl"]))[:300]  # documents with inner newlines
    docs += lines(demo_data / "ko" / "heldout.txt")[:300] + ["  lead", "trail  ", "\n", " \n x", "a\n\n", "끝\n"]
    packed = count_tokens(t, docs, batch_bytes=2000, pack=7)
    single = count_tokens(t, docs, pack=0)
    assert np.array_equal(packed.tokens, single.tokens)
    assert single.tokens.sum() == sum(map(len, enc(t, docs)))


def test_hub_style_sentencepiece_json_base(demo_data, tmp_path):
    """A HF tokenizer.json of a SentencePiece BPE in the newer (legacy=False) layout: Metaspace pre-tokenizer, no
    normalizer. Loaded as sentencepiece_bpe, expanded, and still exact on non-Hangul text."""
    base = load_base(demo_data / "base_tokenizer" / "tokenizer.model")
    tj = json.loads(json.dumps(base.tokenizer_json))
    tj["normalizer"] = None
    tj["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    ko = lines(demo_data / "ko" / "train.txt")[:3000]
    (tmp_path / "ko.txt").write_text("\n".join(ko) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    run_from_config(
        {
            "base_tokenizer": str(tmp_path / "hub"),
            "corpus": {"paths": [str(tmp_path / "ko.txt")]},
            "heldout": {"ko": None, "en": str(demo_data / "en" / "heldout.txt")},
            "output_dir": str(out),
            "intermediate_vocab_size": 3000,
            "min_frequency": 3,
            "progress": False,
        }
    )
    r = json.loads((out / "expansion.json").read_text(encoding="utf-8"))
    t = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert r["base_kind"] == "sentencepiece_bpe" and r["vocab_size"] % 64 == 0 and r["num_new_tokens"] > 200
    assert r["compression"]["en"]["non_target_mismatches"] == 0 and "ko" not in r["compression"]
    assert [x["token"] for x in r["new_tokens"] if bpe_pieces(t, x["token"]) != [x["token"]]] == []
    s = "데이터베이스 함수 hello  world"
    assert t.decode(t.encode(s).ids) == s and len(t.encode(s).ids) < len(base.tokenizer().encode(s).ids)
