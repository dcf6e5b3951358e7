"""Splitting the demo text into train and held-out, by help page, and writing the two sides deduplicated."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from eeve.text.scripts import TargetScripts

HELDOUT_SALT = "eeve-demo-heldout-v1:"
HELDOUT_PERCENT = 5

Split = dict[str, list[list]]
"""{"train": [...], "heldout": [...]}: per side, the documents (each a list of lines or of pairs)."""


def empty_split() -> Split:
    return {"train": [], "heldout": []}


def is_heldout_page(relpath: str) -> bool:
    digest = hashlib.sha256((HELDOUT_SALT + relpath).encode("utf-8")).hexdigest()
    return int(digest[:8], 16) % 100 < HELDOUT_PERCENT


class _Dedup:
    def __init__(self) -> None:
        self.seen: set = set()

    def take(self, items):
        for item in items:
            if item not in self.seen:
                self.seen.add(item)
                yield item


def write_lines(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def write_pairs(path: Path, pairs, lang: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for en, xx in pairs:
            f.write(json.dumps({"text": en + "\n" + xx, "en": en, lang: xx}, ensure_ascii=False) + "\n")


def write_split(out: Path, rel_dir: str, split: Split, write=write_lines, ext: str = "txt") -> None:
    """``<rel_dir>/{train,heldout}.<ext>``, deduplicated with train first: a line (or pair) seen in train never
    reappears in held-out."""
    dedup = _Dedup()
    for side in ("train", "heldout"):
        write(out / f"{rel_dir}/{side}.{ext}", dedup.take(x for doc in split[side] for x in doc))


def split_help_pages(pages: dict[str, dict[str, str]], en_pages: dict[str, dict[str, str]], target: TargetScripts):
    """Per side (train / heldout, by page): the language's paragraphs holding a target character, every English
    paragraph, and the (English, translation) pairs by element id; plus the page summary for the manifest."""
    xx_split, en_split, pair_split = empty_split(), empty_split(), empty_split()
    all_pages = sorted(set(pages) | set(en_pages))
    for rel in all_pages:
        side = "heldout" if is_heldout_page(rel) else "train"
        xx = pages.get(rel, {})
        en = en_pages.get(rel, {})
        xx_split[side].append([t for t in xx.values() if target.has_target(t)])
        en_split[side].append(list(en.values()))
        pair_split[side].append([(en[i], xx[i]) for i in en if i in xx and target.has_target(xx[i]) and xx[i] != en[i]])
    held = [r for r in all_pages if is_heldout_page(r)]
    help_pages = {"pages": len(all_pages), "train_pages": len(all_pages) - len(held), "heldout_pages": held}
    return xx_split, en_split, pair_split, help_pages
