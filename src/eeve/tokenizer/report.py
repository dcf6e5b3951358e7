"""Compression of the expanded tokenizer against its base on held-out text: characters per token, byte-fallback
rate, and the identity check (text without target characters must encode exactly as with the base)."""

from __future__ import annotations

import unicodedata

from tokenizers import Tokenizer

from eeve.text.corpus import iter_documents
from eeve.text.scripts import TargetScripts
from eeve.tokenizer.kinds import TokenizerKind


def read_lines(path: str | None, base_dir) -> list[str]:
    if not path:
        return []
    return list(iter_documents([path], base_dir=base_dir))


def compression_report(
    base_tok: Tokenizer, target: Tokenizer, kind: TokenizerKind, texts: dict[str, list[str]], script: TargetScripts
) -> dict:
    """Characters per token and byte-fallback token rate, base vs target, and the share of new tokens in the
    expanded encoding, per held-out language; plus how many lines, with their target characters removed, encode
    differently (must be 0)."""
    out: dict = {}
    base_vocab = base_tok.get_vocab()
    new_ids = {i for t, i in target.get_vocab().items() if t not in base_vocab}
    for lang, lines in texts.items():
        if not lines:
            continue
        chars = sum(len(unicodedata.normalize("NFC", s)) for s in lines)
        row = {"lines": len(lines), "characters": chars}
        for name, tok in (("base", base_tok), ("expanded", target)):
            encs = tok.encode_batch_fast(lines, add_special_tokens=False)
            n = sum(len(e.ids) for e in encs)
            row[f"{name}_tokens"] = n
            row[f"{name}_chars_per_token"] = round(chars / max(n, 1), 4)
            byte_ids = {i for t, i in tok.get_vocab().items() if kind.is_byte_piece(t)}
            nb = sum(1 for e in encs for i in e.ids if i in byte_ids)
            row[f"{name}_byte_fallback_rate"] = round(nb / max(n, 1), 6)
        # encs and n are the expanded tokenizer's here (the loop's last pass)
        row["new_token_share"] = round(sum(1 for e in encs for i in e.ids if i in new_ids) / max(n, 1), 4)
        row["ratio"] = round(row["expanded_chars_per_token"] / max(row["base_chars_per_token"], 1e-9), 4)
        non_target = [s for s in map(script.strip_target, lines) if s.strip()]
        a = base_tok.encode_batch_fast(non_target, add_special_tokens=False)
        b = target.encode_batch_fast(non_target, add_special_tokens=False)
        row["non_target_lines_checked"] = len(non_target)
        row["non_target_mismatches"] = sum(x.ids != y.ids for x, y in zip(a, b))
        out[lang] = row
    return out
