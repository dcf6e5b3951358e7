"""The expanded tokenizer as a SentencePiece model (`tokenizer.model`), for SentencePiece-style bases.

SentencePiece BPE merges the adjacent pair whose concatenation is a piece with the highest *score* (leftmost on
ties); `tokenizers` BPE merges the listed pair with the lowest *rank*. The base's `tokenizer.json` lists every split
of every piece ordered by the piece's score (:func:`eeve.tokenizer.base.sentencepiece_to_tokenizer_json`), so rank
order is score order. The expansion appends its merges after every base merge, so the new pieces get scores below
every base piece's (the base's lowest is -1e9, ``▁▁``), decreasing in the order of the first merge that forms each:
consecutive float32 values, as the proto stores scores as float32.

This matches `tokenizer.json` when the merges SentencePiece can also take (other splits of a new piece) never win
where `tokenizers` would not take them, and a piece formed by two merges is formed where `tokenizers` forms it
(:data:`SCORE_ORDERS`); :func:`write_sentencepiece_model` checks it with `sentencepiece` itself on the
held-out text and every new token, and writes no model when one line differs.

Normalisation: the proto keeps the base's normalizer (identity, ``add_dummy_prefix``); `tokenizer.json` applies NFC
first. Feed `sentencepiece` NFC text (``unicodedata.normalize("NFC", s)``); the two agree on NFC text.
Byte-level bases (GPT-2 style) have no SentencePiece form: no `tokenizer.model` is written for them.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb
from tokenizers import Tokenizer

from eeve.errors import TokenizerBuildError
from eeve.tokenizer.base import BaseTokenizer

NORMAL, CONTROL, USER_DEFINED = 1, 3, 4  # SentencePiece piece types
SCORE_ORDERS = ("first", "last")
"""A piece formed by two merges at different ranks (the builder's repair appends a second one) has one score: the
first merge's rank, or, when that encodes differently, the last one's (the repair's, which is what forms the piece
from its own text)."""


def read_model(path: str | Path) -> pb.ModelProto:
    proto = pb.ModelProto()
    proto.ParseFromString(Path(path).read_bytes())
    return proto


def new_piece_scores(
    lowest_base_score: float, pieces: list[str], merges: list[tuple[str, str]], by: str = "first"
) -> dict[str, float]:
    """Scores for ``pieces`` (new, not in the base): below ``lowest_base_score``, decreasing in the order of the
    ``by`` (first or last) merge in ``merges`` (the full rank-ordered list) that forms each; pieces no merge forms
    (characters) first."""
    rank: dict[str, int] = {}
    for r, (a, b) in enumerate(merges):
        if by == "last" or a + b not in rank:
            rank[a + b] = r
    order = sorted(range(len(pieces)), key=lambda i: (rank.get(pieces[i], -1), i))
    score, out = np.float32(lowest_base_score), {}
    for i in order:
        score = np.nextafter(score, np.float32(-np.inf), dtype=np.float32)
        out[pieces[i]] = float(score)
    return out


def extend_model(base: pb.ModelProto, tj: dict, by: str = "first") -> pb.ModelProto:
    """The base proto plus the pieces of ``tj`` (an expanded `tokenizer.json` dict) it lacks, ids kept; ``by``: see
    :func:`new_piece_scores`."""
    vocab = tj["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    by_id.update({t["id"]: t["content"] for t in tj.get("added_tokens", [])})
    for i, p in enumerate(base.pieces):
        if by_id.get(i) != p.piece:
            raise TokenizerBuildError(
                f"the base tokenizer.model has {p.piece!r} at id {i} but tokenizer.json has {by_id.get(i)!r}: "
                "give a base folder whose tokenizer.model and tokenizer.json agree"
            )
    ids = sorted(i for i in by_id if i >= len(base.pieces))
    if ids != list(range(len(base.pieces), len(base.pieces) + len(ids))):
        raise TokenizerBuildError("the expanded vocabulary's ids are not contiguous after the base's: rebuild it")
    special = {t["id"]: t.get("special", True) for t in tj.get("added_tokens", [])}
    new = [by_id[i] for i in ids if i not in special]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in tj["model"]["merges"]]
    lowest = min(p.score for p in base.pieces if p.type == NORMAL)
    scores = new_piece_scores(lowest, new, merges, by)
    out = pb.ModelProto()
    out.CopyFrom(base)
    for i in ids:
        piece = out.pieces.add()
        piece.piece = by_id[i]
        piece.score = scores.get(by_id[i], 0.0)
        piece.type = NORMAL if i not in special else (CONTROL if special[i] else USER_DEFINED)
    out.trainer_spec.vocab_size = len(out.pieces)
    return out


def encoding_mismatches(proto: pb.ModelProto, tokenizer: Tokenizer, lines: list[str]) -> list[str]:
    """The lines (NFC-normalised first) that `sentencepiece` and ``tokenizer`` encode to different ids."""
    sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    texts = [unicodedata.normalize("NFC", s) for s in lines]
    ref = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [s for s, a, b in zip(texts, sp.encode(texts), ref) if a != b]


def check_lines(tj: dict, texts: dict[str, list[str]]) -> list[str]:
    """Held-out lines plus every new token's text, less lines holding a special token's text (`tokenizers` matches
    those in raw text, `sentencepiece` never does)."""
    specials = [t["content"] for t in tj.get("added_tokens", []) if t.get("special", True)]
    lines = [s for rows in texts.values() for s in rows] + [t.replace("▁", " ") for t in tj["model"]["vocab"]]
    return [s for s in lines if s and not any(x in s for x in specials)]


def write_sentencepiece_model(base: BaseTokenizer, tj: dict, folder: Path, texts: dict[str, list[str]]) -> dict:
    """Write ``folder/tokenizer.model`` for a SentencePiece-style base when `sentencepiece` encodes the held-out
    ``texts`` and every token exactly as ``tj``; returns the record for expansion.json (why not, when not)."""
    if base.kind.name != "sentencepiece_bpe":
        return {"written": False, "reason": f"a {base.kind.name} base has no SentencePiece form"}
    if not base.sp_model_path:
        return {"written": False, "reason": "the base folder has no tokenizer.model to extend"}
    base_proto, lines, tok = read_model(base.sp_model_path), check_lines(tj, texts), Tokenizer.from_str(json.dumps(tj))
    for by in SCORE_ORDERS:
        proto = extend_model(base_proto, tj, by)
        bad = encoding_mismatches(proto, tok, lines)
        if not bad:
            break
    if bad:
        return {
            "written": False,
            "reason": f"sentencepiece encodes {len(bad)} of {len(lines)} checked lines differently from "
            f"tokenizer.json (e.g. {bad[0][:60]!r})",
        }
    (folder / "tokenizer.model").write_bytes(proto.SerializeToString())
    return {
        "written": True,
        "pieces": len(proto.pieces),
        "scores_by": f"{by} merge",
        "checked_lines": len(lines),
        "mismatches": 0,
        "normalizer": "identity (the base's): apply NFC before sentencepiece; tokenizer.json applies NFC itself",
    }
