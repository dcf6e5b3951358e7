"""Loading the base tokenizer as a `tokenizer.json` dict, whatever form it comes in.

The kinds are in :mod:`eeve.tokenizer.kinds` (everything else fails with a one-line `TokenizerBuildError`):
  - ``sentencepiece_bpe``: SentencePiece BPE with byte fallback (Mistral/SOLAR, Llama-2), given as a `.model` file,
    a folder holding `tokenizer.model`, or a HF folder / `tokenizer.json` whose BPE model has `byte_fallback`.
  - ``byte_level_bpe``: GPT-2 style byte-level BPE `tokenizer.json` (Llama-3, Qwen, SmolLM): a ByteLevel
    pre-tokenizer, every byte an alphabet symbol.

A SentencePiece `.model` is converted here, not through `LlamaTokenizer(vocab_file=...)` (transformers 5 silently
builds a 3-token tokenizer from it). SentencePiece BPE merges the adjacent pair whose *concatenation* is a piece with
the highest score, so the HF merges are every split ``a + b = piece`` of every piece, ordered by the piece's score.
`tests/test_tokenizer_base.py` checks the conversion against `sentencepiece` itself, line by line.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer

from eeve.errors import TokenizerBuildError
from eeve.tokenizer.kinds import KINDS, TokenizerKind, detect_kind


@dataclass
class BaseTokenizer:
    """The base as a `tokenizer.json` dict plus what the HF folder around it needs."""

    tokenizer_json: dict
    kind: TokenizerKind
    source: str
    config: dict = field(default_factory=dict)  # tokenizer_config.json of the output folders
    sp_model_path: str | None = None  # the SentencePiece file, when there is one (for verification)

    @property
    def vocab(self) -> dict[str, int]:
        return self.tokenizer_json["model"]["vocab"]

    @property
    def merges(self) -> list[tuple[str, str]]:
        return [
            tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in self.tokenizer_json["model"]["merges"]
        ]

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_str(json.dumps(self.tokenizer_json))


def sentencepiece_to_tokenizer_json(model_path: str | os.PathLike) -> tuple[dict, dict]:
    """Convert a SentencePiece BPE model to (tokenizer.json dict, tokenizer_config dict)."""
    proto = _read_sentencepiece_bpe(model_path)
    ts, ns = proto.trainer_spec, proto.normalizer_spec
    unk = proto.pieces[ts.unk_id].piece
    bos = proto.pieces[ts.bos_id].piece if ts.bos_id >= 0 else None
    eos = proto.pieces[ts.eos_id].piece if ts.eos_id >= 0 else None
    normalizer = [{"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]
    if ns.add_dummy_prefix:
        normalizer.insert(0, {"type": "Prepend", "prepend": "▁"})
    decoder = [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
    ]
    if ns.add_dummy_prefix:
        decoder.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _special_pieces(proto),
        "normalizer": {"type": "Sequence", "normalizers": normalizer},
        "pre_tokenizer": None,
        "post_processor": _bos_template(bos, ts.bos_id) if bos is not None else None,
        "decoder": {"type": "Sequence", "decoders": decoder},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": unk,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": {p.piece: i for i, p in enumerate(proto.pieces)},
            "merges": _sentencepiece_merges(proto),
        },
    }
    cfg = {
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": unk,
        "add_bos_token": bos is not None,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000_000_000_000_019_884_624_838_656,
    }
    return tj, cfg


def _read_sentencepiece_bpe(model_path: str | os.PathLike):
    """The model's protobuf; a one-line TokenizerBuildError unless it is a byte-fallback BPE with the identity
    normalizer."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    try:
        proto.ParseFromString(Path(model_path).read_bytes())
    except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError
        raise TokenizerBuildError(
            f"base_tokenizer {str(model_path)!r} is not a SentencePiece model ({type(e).__name__}): give a .model file or a HF folder with tokenizer.json"  # noqa: E501
        ) from None
    ts, ns = proto.trainer_spec, proto.normalizer_spec
    if ts.model_type != 2:  # 1 unigram, 2 bpe, 3 word, 4 char
        kind = {1: "Unigram", 3: "word", 4: "char"}.get(ts.model_type, str(ts.model_type))
        raise TokenizerBuildError(
            f"base_tokenizer {str(model_path)!r} is a SentencePiece {kind} model: only BPE bases (Mistral/SOLAR, Llama-2) or byte-level BPE tokenizer.json are supported"  # noqa: E501
        )
    if not ts.byte_fallback:
        raise TokenizerBuildError(
            f"base_tokenizer {str(model_path)!r} has no byte_fallback: EEVE needs a byte-fallback SentencePiece BPE (Mistral/SOLAR, Llama-2)"  # noqa: E501
        )
    if ns.name not in ("identity", "") or ns.precompiled_charsmap:
        raise TokenizerBuildError(
            f"base_tokenizer {str(model_path)!r} uses SentencePiece normalizer {ns.name!r}: only the identity normalizer (Mistral/SOLAR, Llama-2) is supported"  # noqa: E501
        )
    return proto


def _sentencepiece_merges(proto) -> list[list[str]]:
    """Every split of every normal piece into two normal pieces, by the piece's score (higher first)."""
    normal = {p.piece for p in proto.pieces if p.type == 1}
    ranked = []
    for i, p in enumerate(proto.pieces):
        if p.type != 1 or len(p.piece) < 2:
            continue
        for k in range(1, len(p.piece)):
            a, b = p.piece[:k], p.piece[k:]
            if a in normal and b in normal:
                ranked.append((-p.score, i, k, a, b))
    ranked.sort()
    return [[a, b] for *_, a, b in ranked]


def _special_pieces(proto) -> list[dict]:
    """The unknown and control pieces as added tokens."""
    return [
        {
            "id": i,
            "content": p.piece,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, p in enumerate(proto.pieces)
        if p.type in (2, 3)  # unknown, control
    ]


def _bos_template(bos: str, bos_id: int) -> dict:
    """The post-processor that puts BOS before each sequence."""
    return {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": bos, "type_id": 1}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }


def _read_config(folder: Path) -> dict:
    cfg: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        p = folder / name
        if p.is_file():
            try:
                d = json.loads(p.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise TokenizerBuildError(f"{p} is not valid JSON ({e.msg}): fix or remove it") from None
            for k, v in d.items():
                if k in ("added_tokens_decoder", "auto_map", "tokenizer_file", "name_or_path"):
                    continue
                cfg[k] = v.get("content") if isinstance(v, dict) and "content" in v else v
    return cfg


def load_base(path: str | os.PathLike) -> BaseTokenizer:
    """Load a base tokenizer from a `.model`, a `tokenizer.json`, or a folder holding either."""
    p = Path(os.path.expanduser(str(path)))
    fix = "set base_tokenizer to a SentencePiece .model or a HF tokenizer folder with tokenizer.json"
    if not p.exists():
        raise TokenizerBuildError(f"base_tokenizer {str(path)!r} does not exist: {fix}")
    folder = p if p.is_dir() else p.parent
    if p.is_dir():
        if (p / "tokenizer.json").is_file():
            p = p / "tokenizer.json"
        elif (p / "tokenizer.model").is_file():
            p = p / "tokenizer.model"
        else:
            raise TokenizerBuildError(
                f"base_tokenizer folder {str(path)!r} has neither tokenizer.json nor tokenizer.model: {fix}"
            )
    if p.suffix == ".json":
        try:
            tj = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TokenizerBuildError(f"base_tokenizer {str(p)!r} is not valid JSON ({e}): {fix}") from None
        if not isinstance(tj, dict) or "model" not in tj:
            raise TokenizerBuildError(f"base_tokenizer {str(p)!r} is not a HF tokenizer.json (no 'model'): {fix}")
        kind = detect_kind(tj, str(p))
        try:
            Tokenizer.from_str(json.dumps(tj))
        except Exception as e:  # noqa: BLE001
            raise TokenizerBuildError(
                f"base_tokenizer {str(p)!r} does not load with tokenizers ({str(e).splitlines()[0]}): {fix}"
            ) from None
        cfg = _read_config(folder) if p.parent == folder else {}
        sp = folder / "tokenizer.model"
        return BaseTokenizer(
            tj, kind, str(p), cfg, str(sp) if kind is KINDS["sentencepiece_bpe"] and sp.is_file() else None
        )
    tj, cfg = sentencepiece_to_tokenizer_json(p)
    if p.parent == folder and p.name == "tokenizer.model":
        cfg.update({k: v for k, v in _read_config(folder).items() if k not in cfg})
    return BaseTokenizer(tj, KINDS["sentencepiece_bpe"], str(p), cfg, str(p))


def write_hf_folder(tj: dict, cfg: dict, folder: Path) -> None:
    """Write tokenizer.json + tokenizer_config.json + special_tokens_map.json (loads with AutoTokenizer)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    cfg = copy.deepcopy(cfg)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    specials = {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if cfg.get(k)}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps(specials, ensure_ascii=False, indent=2), encoding="utf-8"
    )


def bpe_pieces(tokenizer: Tokenizer, token: str) -> list[str]:
    """What the BPE model alone (no normalizer / pre-tokenizer) turns the token's own symbols into."""
    return [t.value for t in tokenizer.model.tokenize(token)]
