"""What the data side needs from a tokenizer folder (``tokenizer.json`` plus the HF configs and, for an expanded
one, ``expansion.json``): the tokenizer, its special ids, batch encoding with BOS/EOS, and the bytes of each id.
Used by packing, the bits-per-byte evaluation, the guard, the initialisation and the demo's base model."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from eeve.errors import ConfigError
from eeve.tokenizer.kinds import detect_kind


class TokenizerInfo:
    """What the data side needs from an expanded tokenizer folder."""

    def __init__(self, tokenizer_dir: Path):
        self.dir = Path(tokenizer_dir)
        tj = self.dir / "tokenizer.json"
        if not tj.is_file():
            raise ConfigError(f"tokenizer folder {str(self.dir)!r} has no tokenizer.json: run tokenize.py first")
        self.json_bytes = tj.read_bytes()
        self.hash = hashlib.sha256(self.json_bytes).hexdigest()
        self.tok = Tokenizer.from_str(self.json_bytes.decode("utf-8"))
        self.spec = json.loads(self.json_bytes)
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        exp_path = self.dir / "expansion.json"
        self.expansion = json.loads(exp_path.read_text()) if exp_path.is_file() else {}
        self.base_vocab_size = int(self.expansion.get("base_vocab_size", self.vocab_size))
        self.padded_vocab_size = max(self.vocab_size, int(self.expansion.get("vocab_size", 0) or 0))
        self.dtype = np.uint16 if self.padded_vocab_size <= 1 << 16 else np.uint32

        cfg = {}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            p = self.dir / name
            if p.is_file():
                for k, v in json.loads(p.read_text()).items():
                    cfg.setdefault(k, v)

        def tid(key: str) -> int | None:
            v = cfg.get(key)
            if isinstance(v, dict):
                v = v.get("content")
            return self.tok.token_to_id(v) if isinstance(v, str) else None

        self.bos_id, self.eos_id = tid("bos_token"), tid("eos_token")
        probe = self.tok.encode("a", add_special_tokens=True).ids
        plain = self.tok.encode("a", add_special_tokens=False).ids
        # Only add BOS/EOS where the post-processor did not already.
        self.add_bos = self.bos_id is not None and probe[:1] != [self.bos_id]
        self.add_eos = self.eos_id is not None and probe[-1:] != [self.eos_id]
        self.post_adds = len(probe) - len(plain)

    def encode_flat(self, docs: list[str]) -> np.ndarray:
        """BOS + ids + EOS of every document, concatenated (int64). ``encode_batch_fast``: no offsets computed."""
        ids = [e.ids for e in self.tok.encode_batch_fast(docs, add_special_tokens=True)]
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lens.sum()))
        extra = int(self.add_bos) + int(self.add_eos)
        if not extra:
            return flat
        # BOS/EOS slots placed with array arithmetic: no per-document list copies
        out = np.empty(len(flat) + extra * len(ids), dtype=np.int64)
        starts = np.cumsum(lens + extra) - (lens + extra)  # where each document's slot run begins in `out`
        is_text = np.ones(len(out), dtype=bool)
        if self.add_bos:
            out[starts], is_text[starts] = self.bos_id, False
        if self.add_eos:
            ends = starts + extra - 1 + lens
            out[ends], is_text[ends] = self.eos_id, False
        out[is_text] = flat
        return out

    def encode_docs(self, docs: list[str]) -> list[list[int]]:
        """BOS + ids + EOS for each document."""
        out = []
        pre = [self.bos_id] if self.add_bos else []
        post = [self.eos_id] if self.add_eos else []
        for enc in self.tok.encode_batch(docs, add_special_tokens=True):
            out.append(pre + enc.ids + post)
        return out

    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes each id decodes to (length ``padded_vocab_size``; special and padding ids 0)."""
        out = np.zeros(self.padded_vocab_size, dtype=np.int64)
        kind = detect_kind(self.spec, str(self.dir))
        special = {t["id"] for t in self.spec.get("added_tokens", []) if t.get("special")}
        for piece, i in self.spec["model"]["vocab"].items():
            if i < len(out) and i not in special:
                out[i] = len(kind.token_bytes(piece))
        for t in self.spec.get("added_tokens", []):
            if t["id"] < len(out):
                out[t["id"]] = 0 if t.get("special") else len(t["content"].encode("utf-8"))
        return out


_FILES = ("tokenizer.json", "expansion.json", "tokenizer_config.json", "special_tokens_map.json")
_SHARED: OrderedDict[tuple, TokenizerInfo] = OrderedDict()


def tokenizer_info(tokenizer_dir) -> TokenizerInfo:
    """``TokenizerInfo(tokenizer_dir)``, shared within the process while the folder's files stay the same: a stage
    reads its tokenizers for the data, the evaluations, the guard and the init, and each build parses the whole
    tokenizer.json (0.1-0.2 s for 35k tokens, seconds for 262k). Keyed by the path as given and the files' bytes;
    the last 8 folders are kept. The object is shared: read it, do not change it."""
    d = Path(tokenizer_dir)
    key = (str(d), *(hashlib.sha256((d / n).read_bytes()).digest() if (d / n).is_file() else None for n in _FILES))
    info = _SHARED.pop(key, None) or TokenizerInfo(d)
    _SHARED[key] = info
    while len(_SHARED) > 8:
        _SHARED.popitem(last=False)
    return info
