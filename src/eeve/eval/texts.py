"""The held-out text every model is measured on: a fixed number of UTF-8 bytes per language, the same for all.

Token counts differ between tokenizers, so a fixed number of token sequences would be different text for the base
and for the expanded model. Instead, per language of ``data.validation``, whole documents are taken in file order
(NFC-normalised, read as :mod:`eeve.text.corpus` reads any validation source) while the running total stays
within ``eval.bytes``.
"""

from __future__ import annotations

from pathlib import Path

from eeve.errors import CorpusError
from eeve.text.corpus import iter_documents


def take_bytes(documents, nbytes: int) -> list[str]:
    """Whole documents from the start of ``documents`` while their UTF-8 size stays <= ``nbytes``."""
    out, total = [], 0
    for doc in documents:
        size = len(doc.encode("utf-8"))
        if total + size > nbytes:
            break
        out.append(doc)
        total += size
    return out


def heldout_texts(validation: dict, nbytes: int, base_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Language -> documents, for every entry of ``data.validation`` (name = language, e.g. ``ko``, ``en``)."""
    out = {}
    for lang, entry in validation.items():
        docs = take_bytes(iter_documents(entry, base_dir=base_dir), int(nbytes))
        if not docs:
            raise CorpusError(
                f"data.validation.{lang}: no document fits in eval.bytes={nbytes} (the first one is "
                "larger, or the files are empty): raise eval.bytes or give other held-out files"
            )
        out[lang] = docs
    return out
