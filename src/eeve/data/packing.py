"""Packing: a source's documents tokenized with the expanded tokenizer into fixed-length sequences, cached on disk
as memory-mapped token ids (see eeve.data.datamodule's docstring for the layout and the cache key)."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eeve.errors import ConfigError, CorpusError
from eeve.io import atomic_dir
from eeve.text.corpus import CorpusStats, iter_batches, iter_documents, resolve_paths

FORMAT_VERSION = 1
"""Bump when the packed-cache layout or the packing rule changes (invalidates every cache)."""

ENCODE_BATCH_BYTES = 1 << 20
"""Characters of text per ``encode_batch`` call while packing (bounds memory)."""


class TokenizerInfo:
    """What the data side needs from an expanded tokenizer folder."""

    def __init__(self, tokenizer_dir: Path):
        from tokenizers import Tokenizer

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
        from eeve.tokenizer.kinds import detect_kind

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


@dataclass
class Packed:
    """An opened packed cache."""

    name: str
    path: Path
    tokens: np.memmap  # [n, seq_len]
    new_counts: np.ndarray  # [n] uint32 (memmap)
    meta: dict

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])


def cache_key(tok: TokenizerInfo, files: list[Path], seq_len: int, text_field: str) -> str:
    h = hashlib.sha256()
    h.update(f"eeve-packed-v{FORMAT_VERSION}\0{tok.hash}\0{int(seq_len)}\0{text_field}\0".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:24]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64] or "source"


def pack_source(
    name: str,
    paths: list[str],
    text_field: str,
    tok: TokenizerInfo,
    seq_len: int,
    cache_dir: Path,
    base_dir: Path | None,
    progress: bool = False,
) -> tuple[Path, bool]:
    """Tokenize and pack one source into its cache folder unless present. Returns (folder, built_now)."""
    files = resolve_paths(paths, base_dir)
    key = cache_key(tok, files, seq_len, text_field)
    final = Path(cache_dir) / "packed" / f"{_slug(name)}-{key}"
    if (final / "meta.json").is_file():
        return final, False
    t0 = time.time()
    with atomic_dir(final, keep_existing=True) as tmp:  # several ranks may pack at once: the first rename wins
        stats = CorpusStats()
        buf = np.empty(0, dtype=np.int64)
        n_seq = n_tokens = n_new = 0
        base = tok.base_vocab_size
        with open(tmp / "tokens.bin", "wb") as ft, open(tmp / "new_counts.bin", "wb") as fn:
            docs = iter_documents(files, text_field=text_field, stats=stats, progress=progress)
            for batch in iter_batches(docs, ENCODE_BATCH_BYTES):
                ids = tok.encode_docs(batch)
                flat = np.fromiter((t for d in ids for t in d), dtype=np.int64, count=sum(len(d) for d in ids))
                n_tokens += len(flat)
                buf = np.concatenate([buf, flat]) if len(buf) else flat
                k = len(buf) // seq_len
                if k:
                    seqs = buf[: k * seq_len].reshape(k, seq_len)
                    counts = (seqs >= base).sum(axis=1).astype(np.uint32)
                    ft.write(seqs.astype(tok.dtype).tobytes())
                    fn.write(counts.tobytes())
                    n_seq += k
                    n_new += int(counts.sum())
                    buf = buf[k * seq_len :].copy()
        if stats.documents == 0:
            raise CorpusError(f"data source {name!r} has no documents in {[str(f) for f in files]}: give non-empty files")
        if n_seq == 0:
            raise CorpusError(
                f"data source {name!r} yields {n_tokens} tokens, fewer than one sequence of seq_len={seq_len}: "
                "give more text or lower data.seq_len"
            )
        meta = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "key": key,
            "n_sequences": n_seq,
            "seq_len": int(seq_len),
            "dtype": np.dtype(tok.dtype).name,
            "documents": stats.documents,
            "text_bytes": stats.text_bytes,
            "tokens_total": n_tokens,
            "tokens_dropped_tail": n_tokens - n_seq * seq_len,
            "new_tokens": n_new,
            "base_vocab_size": base,
            "tokenizer_sha256": tok.hash,
            "text_field": text_field,
            "files": [{"path": str(p.resolve()), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files],
            "invalid_utf8_lines": stats.invalid_utf8_lines,
            "seconds": round(time.time() - t0, 3),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return final, True


def open_packed(folder: Path) -> Packed:
    meta = json.loads((folder / "meta.json").read_text())
    n, t = int(meta["n_sequences"]), int(meta["seq_len"])
    tokens = np.memmap(folder / "tokens.bin", dtype=np.dtype(meta["dtype"]), mode="r", shape=(n, t))
    counts = np.memmap(folder / "new_counts.bin", dtype=np.uint32, mode="r", shape=(n,))
    return Packed(meta["name"], folder, tokens, counts, meta)
