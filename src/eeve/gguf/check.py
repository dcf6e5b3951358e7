"""Does llama.cpp tokenize like the HF export? Compared with llama.cpp itself (the ``llama_cpp`` binding built from
the pinned sdist, see docs/gguf.md), never with a re-implementation.

Both sides add their special tokens as configured (HF ``tokenizer(text).input_ids``; llama.cpp ``tokenize(...,
add_bos=True)``, which adds BOS/EOS only where the GGUF says so), so the BOS convention is checked as well. Text
is NFC-normalised first: the expanded tokenizer normalises to NFC and llama.cpp does not normalise (see
docs/gguf.md).
"""

from __future__ import annotations

import contextlib
import io
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from eeve.errors import ExportError

# short lines that exercise what pre-tokenizers disagree on: spaces, digits, punctuation, emoji, mixed scripts
SAMPLE = [
    "Hello world! It's 2024, isn't it?",
    "  leading and   multiple   spaces\tand a tab",
    "숫자 12345와 영어 words를 섞은 한국어 문장입니다.",
    "대한민국의 수도는 서울이다. 한국어 토크나이저 확장 😀 ✅",
    "line one\nline two\n\nthree",
    "3.14159 ... !!! ??? ------ ====== 'quoted' \"double\"",
]


@dataclass
class TokenCheck:
    lines: int
    tokens: int
    mismatches: list[tuple[str, list[int], list[int]]]  # (line, hf ids, llama.cpp ids)

    def summary(self) -> str:
        return f"{self.lines - len(self.mismatches)}/{self.lines} lines ({self.tokens} HF tokens) identical"


def heldout_files(export_dir: Path) -> list[Path]:
    """The held-out text files the tokenizer build recorded in ``expansion.json`` (those that still exist)."""
    meta = export_dir / "expansion.json"
    if not meta.is_file():
        return []
    heldout = (json.loads(meta.read_text(encoding="utf-8")).get("config") or {}).get("heldout") or {}
    return [Path(p) for p in heldout.values() if Path(p).is_file()]


def read_lines(files: Iterable[Path]) -> list[str]:
    out = list(SAMPLE)
    for f in files:
        try:
            text = Path(f).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ExportError(f"check text {f} unreadable ({type(e).__name__}): give a UTF-8 text file") from None
        out += [x for x in text.split("\n") if x.strip()]
    return [unicodedata.normalize("NFC", x) for x in out]


def load_llama_vocab(gguf_path: Path):
    try:
        import llama_cpp
    except ImportError:
        raise ExportError(
            "checking the GGUF needs llama.cpp's Python binding: install it with `make gguf` (builds the pinned "
            "llama-cpp-python), or pass --no-check to skip the check"
        ) from None
    # llama-cpp-python maps this ggml version's WARN level to ERROR, so a vocabulary-only load prints a context-size
    # warning even with verbose=False; the command's output stays its one line
    with contextlib.redirect_stderr(io.StringIO()):
        return llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)


def compare_tokenizers(gguf_path: Path, export_dir: Path, lines: list[str]) -> TokenCheck:
    from transformers import AutoTokenizer

    llm = load_llama_vocab(gguf_path)
    tok = AutoTokenizer.from_pretrained(export_dir)
    bad, n = [], 0
    for line in lines:
        hf = tok(line).input_ids
        cpp = llm.tokenize(line.encode("utf-8"), add_bos=True, special=False)
        n += len(hf)
        if hf != cpp:
            bad.append((line, hf, cpp))
    llm.close()  # frees the vocabulary now (before the file may be deleted), not at interpreter exit
    return TokenCheck(len(lines), n, bad)
