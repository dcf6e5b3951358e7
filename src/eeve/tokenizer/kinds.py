"""Tokenizer kinds: everything that differs between SentencePiece-style byte-fallback BPE and byte-level BPE.

One class per kind. The builder, the counting, the reports, the data side (bytes per token) and the model's
subword initialisation ask the kind instead of branching on it. Adding a kind (e.g. a tiktoken-style tokenizer)
means one new class here, registered in :data:`KINDS`, and its tests.
"""

from __future__ import annotations

import json
import re
from typing import ClassVar

from eeve.errors import TokenizerBuildError
from eeve.text.scripts import TargetScripts

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


class TokenizerKind:
    """The conventions of one family of BPE tokenizers (see subclasses)."""

    name: ClassVar[str]
    space_marker: ClassVar[str]
    """The vocabulary symbol a word-initial space becomes (e.g. ``▁`` or ``Ġ``)."""

    @classmethod
    def matches(cls, tj: dict) -> bool:
        """Whether a ``tokenizer.json`` dict (a BPE model) is of this kind."""
        raise NotImplementedError

    def token_bytes(self, token: str) -> bytes:
        """The UTF-8 bytes a vocabulary entry stands for."""
        raise NotImplementedError

    def token_text(self, token: str) -> str | None:
        """The text of a vocabulary entry, or None if its bytes are not complete UTF-8."""
        try:
            return self.token_bytes(token).decode("utf-8")
        except UnicodeDecodeError:
            return None

    def is_byte_piece(self, token: str) -> bool:
        """A byte-fallback piece (``<0xNN>``): one byte of a character missing from the vocabulary."""
        return False

    def char_token(self, c: str) -> str:
        """The vocabulary entry of a single character."""
        raise NotImplementedError

    def is_single_char(self, token: str) -> bool:
        text = self.token_text(token)
        return text is not None and len(text) == 1

    def is_target_token(self, token: str, script: TargetScripts) -> bool:
        """Whether a vocabulary entry can only ever be formed inside text that contains a target character."""
        return script.bytes_imply_target(self.token_bytes(token))

    def is_candidate(self, token: str, script: TargetScripts) -> bool:
        """An intermediate-tokenizer token worth adding: optional leading space, then characters of the target's
        scripts, at least one a target character (``script.is_candidate_text``)."""
        text = self.token_text(token)
        if text is None:
            return False
        return script.is_candidate_text(text[1:] if text.startswith(" ") else text)

    def initial_symbols(self, token: str, vocab: dict[str, int]) -> list[str]:
        """The symbols BPE starts from for ``token``'s text, before any merge."""
        return list(token)

    def intermediate_json(self, base_tj: dict) -> dict:
        """An empty BPE ``tokenizer.json`` with the base's conventions, ready for ``BpeTrainer``."""
        raise NotImplementedError

    def trainer_kwargs(self) -> dict:
        """Extra ``BpeTrainer`` arguments for the intermediate tokenizer."""
        return {}


class SentencePieceBPE(TokenizerKind):
    """SentencePiece-style BPE with byte fallback (Mistral/SOLAR, Llama-2): ``▁`` metaspace, ``<0xNN>`` pieces for
    characters missing from the vocabulary."""

    name = "sentencepiece_bpe"
    space_marker = "▁"

    @classmethod
    def matches(cls, tj):
        return bool((tj.get("model") or {}).get("byte_fallback"))

    def token_bytes(self, token):
        if _BYTE_PIECE.match(token):
            return bytes([int(token[3:5], 16)])
        return token.replace("▁", " ").encode("utf-8")

    def is_byte_piece(self, token):
        return bool(_BYTE_PIECE.match(token))

    def char_token(self, c):
        return c

    def is_single_char(self, token):
        return len(token) == 1

    def is_target_token(self, token, script):
        return any(script.is_target_char(c) for c in token)

    def initial_symbols(self, token, vocab):
        out = []
        for c in token:
            out.extend([c] if c in vocab else [f"<0x{x:02X}>" for x in c.encode("utf-8")])
        return out

    def intermediate_json(self, base_tj):
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [],
            "normalizer": {"type": "NFC"},
            "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
            "post_processor": None,
            "decoder": None,
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": {},
                "merges": [],
            },
        }


class ByteLevelBPE(TokenizerKind):
    """GPT-2 style byte-level BPE (Llama-3, Qwen, SmolLM): a ByteLevel pre-tokenizer, every byte an alphabet symbol."""

    name = "byte_level_bpe"
    space_marker = "Ġ"

    @classmethod
    def matches(cls, tj):
        return _has_byte_level(tj.get("pre_tokenizer"))

    def token_bytes(self, token):
        _, dec = byte_level_alphabet()
        return bytes(dec[c] for c in token if c in dec)

    def char_token(self, c):
        enc, _ = byte_level_alphabet()
        return "".join(enc[b] for b in c.encode("utf-8"))

    def intermediate_json(self, base_tj):
        tj = json.loads(json.dumps(base_tj))
        tj.update(added_tokens=[], post_processor=None, decoder=None, truncation=None, padding=None)
        tj["normalizer"] = {"type": "NFC"}
        tj["model"].update(vocab={}, merges=[], ignore_merges=False, byte_fallback=False)
        return tj

    def trainer_kwargs(self):
        return {"initial_alphabet": sorted(byte_level_alphabet()[1])}


KINDS: dict[str, TokenizerKind] = {k.name: k() for k in (ByteLevelBPE, SentencePieceBPE)}
"""Checked in this order: a byte-level pre-tokenizer wins over a byte-fallback flag."""


def detect_kind(tj: dict, where: str) -> TokenizerKind:
    """The kind of a ``tokenizer.json`` dict, or a one-line TokenizerBuildError naming what it is and the fix."""
    model = tj.get("model") or {}
    mtype = model.get("type")
    if mtype != "BPE":
        raise TokenizerBuildError(
            f"base_tokenizer {where!r} is a {mtype or 'unknown'} tokenizer: EEVE expansion needs a BPE base "
            "(SentencePiece BPE with byte fallback, or byte-level BPE tokenizer.json)"
        )
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise TokenizerBuildError(
            f"base_tokenizer {where!r} uses subword prefixes/suffixes: only SentencePiece-style "
            "or byte-level BPE is supported"
        )
    for kind in KINDS.values():
        if kind.matches(tj):
            return kind
    raise TokenizerBuildError(
        f"base_tokenizer {where!r} is a BPE without byte fallback or ByteLevel pre-tokenizer: characters missing "
        "from its vocabulary would become <unk>; use a byte-fallback or byte-level BPE base"
    )


def kind_of_tokenizer(tok) -> TokenizerKind:
    """The kind of a ``tokenizers.Tokenizer`` (detected from its JSON)."""
    return detect_kind(json.loads(tok.to_str()), "tokenizer")


def _has_byte_level(node) -> bool:
    if not node:
        return False
    if node.get("type") == "ByteLevel":
        return True
    return any(_has_byte_level(p) for p in node.get("pretokenizers", []) or [])


_BYTES_TO_UNICODE: dict[int, str] | None = None


def byte_level_alphabet() -> tuple[dict[int, str], dict[str, int]]:
    """GPT-2's bytes <-> printable-characters table."""
    global _BYTES_TO_UNICODE
    if _BYTES_TO_UNICODE is None:
        bs = (
            list(range(ord("!"), ord("~") + 1))
            + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1))
        )
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        _BYTES_TO_UNICODE = dict(zip(bs, map(chr, cs)))
    return _BYTES_TO_UNICODE, {v: k for k, v in _BYTES_TO_UNICODE.items()}
