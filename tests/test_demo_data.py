"""Demo data: real fetch through the session fixture, split hygiene, atomic builds, fallback path."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import pytest

from eeve.demo import build, help_html, split, wheels
from eeve.demo import data as dd
from eeve.demo.fetch import sha256_file
from eeve.demo.languages import LANGUAGES
from eeve.errors import DemoDataError

KOREAN = LANGUAGES["ko"].target()
TEXT_FILES = ("ko/train.txt", "ko/heldout.txt", "en/train.txt", "en/heldout.txt")
PAIR_FILES = ("pairs/train.jsonl", "pairs/heldout.jsonl")


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def manifest(demo_data: Path) -> dict:
    return json.loads((demo_data / "manifest.json").read_text(encoding="utf-8"))


def _with_apt(manifest: dict) -> bool:
    return manifest["fallback"] is None


def test_layout_and_manifest_counts(demo_data: Path, manifest: dict):
    for rel in TEXT_FILES + PAIR_FILES + ("base_tokenizer/tokenizer.model",):
        path = demo_data / rel
        assert path.is_file(), rel
        entry = manifest["files"][rel]
        assert entry["bytes"] == path.stat().st_size
        if "lines" in entry:
            assert entry["lines"] == len(path.read_bytes().splitlines())
        if "sha256" in entry:  # caches built before per-file digests were recorded lack it
            assert entry["sha256"] == sha256_file(path)
    pkgs = {s["package"]: s for s in manifest["sources"]}
    assert pkgs["mistral-common"]["version"] == "1.13.1"
    assert pkgs["konlpy"]["version"] == "0.6.0"
    assert all(len(s["sha256"]) == 64 for s in manifest["sources"])
    assert "heldout" in manifest["heldout_rule"]


def test_sizes(demo_data: Path, manifest: dict):
    f = manifest["files"]
    for rel in TEXT_FILES:
        assert f[rel]["lines"] > 0, rel
    if _with_apt(manifest):
        assert f["ko/train.txt"]["bytes"] >= 1_500_000
        assert f["en/train.txt"]["bytes"] >= 1_500_000
        assert f["pairs/train.jsonl"]["lines"] >= 10_000
        assert f["pairs/heldout.jsonl"]["lines"] > 0
        assert {"libreoffice-help-ko", "libreoffice-help-en-us"} <= {s["package"] for s in manifest["sources"]}
    else:
        assert f["ko/train.txt"]["bytes"] >= 50_000


def test_text_lines_are_clean(demo_data: Path):
    for rel in TEXT_FILES:
        for line in _lines(demo_data / rel):
            assert line and line == line.strip() and "\t" not in line, (rel, line)
            assert unicodedata.is_normalized("NFC", line), (rel, line)
            if rel.startswith("ko/"):
                assert KOREAN.has_target(line), (rel, line)


def test_pairs_well_formed(demo_data: Path):
    for rel in PAIR_FILES:
        for n, raw in enumerate(_lines(demo_data / rel)):
            rec = json.loads(raw)
            assert set(rec) == {"text", "en", "ko"}, (rel, n)
            assert rec["text"] == rec["en"] + "\n" + rec["ko"]
            assert rec["en"] and rec["ko"] and rec["en"] != rec["ko"]
            assert "\n" not in rec["en"] and "\n" not in rec["ko"]
            assert KOREAN.has_target(rec["ko"])
            assert unicodedata.is_normalized("NFC", rec["text"])


def test_base_tokenizer(demo_data: Path, manifest: dict):
    import sentencepiece as spm

    path = demo_data / "base_tokenizer/tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert sp.get_piece_size() == 32000
    assert sp.id_to_piece(0) == "<unk>" and sp.bos_id() == 1 and sp.eos_id() == 2
    assert wheels.verify_tokenizer(path) == {"pieces": 32000, "model_type": "BPE", "byte_fallback": True}
    assert sha256_file(path) == manifest["base_tokenizer"]["sha256"] == wheels.TOKENIZER_SHA256
    # byte fallback: Hangul decodes back exactly
    assert sp.decode(sp.encode("대한민국 헌법")) == "대한민국 헌법"


def test_heldout_disjoint_from_train(demo_data: Path):
    for lang in ("ko", "en"):
        train = set(_lines(demo_data / f"{lang}/train.txt"))
        held = set(_lines(demo_data / f"{lang}/heldout.txt"))
        assert held and not (train & held), lang
        assert len(train) == len(_lines(demo_data / f"{lang}/train.txt"))  # deduplicated
    ptrain = set(_lines(demo_data / "pairs/train.jsonl"))
    pheld = set(_lines(demo_data / "pairs/heldout.jsonl"))
    assert not (ptrain & pheld)


def test_no_help_page_on_both_sides(demo_data: Path, manifest: dict):
    if not _with_apt(manifest):
        pytest.skip("apt fallback: no help pages")
    held = manifest["help_pages"]["heldout_pages"]
    assert 0 < len(held) < 0.15 * manifest["help_pages"]["pages"]
    assert all(split.is_heldout_page(r) for r in held)
    # Re-read the Korean help pages from the cached .deb: each page's paragraphs lie on exactly one side.
    ko_src = next(s for s in manifest["sources"] if s["package"] == "libreoffice-help-ko")
    pages = help_html.read_help_tree(demo_data.parent / "downloads" / "debs" / ko_src["file"], "libreoffice-help-ko")
    assert sorted(r for r in pages if split.is_heldout_page(r)) == held
    train = set(_lines(demo_data / "ko/train.txt"))
    heldout = set(_lines(demo_data / "ko/heldout.txt"))
    contributing = 0
    for rel, paras in pages.items():
        lines = {t for t in paras.values() if KOREAN.has_target(t)}
        if rel in held:
            # held-out page: its lines are held out, except exact duplicates of train lines (dropped there)
            assert lines <= heldout | train, rel
            contributing += bool(lines & heldout)
        else:
            assert lines <= train and not (lines & heldout), rel
    assert contributing > 0.5 * len(held)


def test_ensure_returns_existing_without_rebuild(demo_data: Path, monkeypatch):
    monkeypatch.setattr(dd, "build_language", lambda *a, **k: pytest.fail("rebuilt"))
    assert dd.ensure_demo_data(demo_data.parent) == demo_data


def _tmp_root_sharing_downloads(tmp_path: Path, demo_data: Path) -> Path:
    root = tmp_path / "cache"
    root.mkdir()
    os.symlink(demo_data.parent / "downloads", root / "downloads")
    return root


def test_failed_build_leaves_no_folder(tmp_path: Path, demo_data: Path, monkeypatch):
    root = _tmp_root_sharing_downloads(tmp_path, demo_data)

    def boom(*a, **k):
        raise RuntimeError("simulated failure mid-build")

    # the tokenizer is already written into the temporary folder when this raises
    monkeypatch.setattr(build, "read_help_tree", boom)
    monkeypatch.setattr(build, "english_fallback_documents", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        dd.ensure_demo_data(root)
    assert not (root / "demo").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".demo-")]

    # a forced rebuild that fails keeps the previous complete folder
    monkeypatch.undo()
    monkeypatch.setattr(build, "fetch_deb", lambda *a, **k: None)  # fast PyPI-only build
    demo = dd.ensure_demo_data(root)
    before = (demo / "manifest.json").read_text()
    monkeypatch.setattr(build, "konlpy_documents", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        dd.build_demo_data(root, force=True)
    assert (demo / "manifest.json").read_text() == before
    assert not [p for p in root.iterdir() if p.name.startswith(".demo-")]


def test_pypi_only_fallback(tmp_path: Path, demo_data: Path, monkeypatch, capsys):
    root = _tmp_root_sharing_downloads(tmp_path, demo_data)
    monkeypatch.setattr(build, "fetch_deb", lambda *a, **k: None)
    demo = dd.ensure_demo_data(root)
    m = json.loads((demo / "manifest.json").read_text(encoding="utf-8"))
    assert m["fallback"] and "konlpy" in m["fallback"]
    assert "FALLBACK" in capsys.readouterr().out
    assert {s["package"] for s in m["sources"]} == {"mistral-common", "konlpy"}
    f = m["files"]
    assert f["ko/train.txt"]["lines"] > 100 and f["ko/heldout.txt"]["lines"] > 0
    assert f["en/train.txt"]["lines"] > 10 and f["en/heldout.txt"]["lines"] > 0
    assert f["pairs/train.jsonl"]["lines"] == 0
    for line in _lines(demo / "ko/train.txt"):
        assert KOREAN.has_target(line)
    assert not set(_lines(demo / "ko/train.txt")) & set(_lines(demo / "ko/heldout.txt"))


# ------------------------------------------------------------------------------------------- other languages
@pytest.mark.parametrize("lang", ["ja", "hi", "ru"])
def test_language_folder(demo_language, manifest, lang):
    folder = demo_language(lang)
    m = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert m["lang"] == lang and m["target"]["scripts"] == list(LANGUAGES[lang].scripts)
    for rel, entry in m["files"].items():
        path = folder / rel
        assert entry["bytes"] == path.stat().st_size and entry["sha256"] == sha256_file(path)
        assert entry["lines"] == len(path.read_bytes().splitlines()) > 0, rel
    assert {s["package"] for s in m["sources"]} == {f"libreoffice-help-{lang}", "libreoffice-help-en-us"}
    if _with_apt(manifest):  # the same pages are held out for every language (and for English)
        assert m["help_pages"]["heldout_pages"] == manifest["help_pages"]["heldout_pages"]
    target = LANGUAGES[lang].target()
    train, held = _lines(folder / "train.txt"), _lines(folder / "heldout.txt")
    assert all(target.has_target(x) and unicodedata.is_normalized("NFC", x) for x in train + held)
    assert not set(train) & set(held) and len(set(train)) == len(train)
    for raw in _lines(folder / "pairs" / "heldout.jsonl"):
        rec = json.loads(raw)
        assert set(rec) == {"text", "en", lang} and rec["text"] == rec["en"] + "\n" + rec[lang]
        assert target.has_target(rec[lang]) and rec[lang] != rec["en"]


def test_unknown_language_is_one_line(capsys):
    assert dd.main(["lang=jp"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: demo language 'jp' is unknown") and "ja" in err and "\n" not in err
    assert dd.main(["ja"]) == 2 and "write lang=LANG" in capsys.readouterr().err


def test_language_without_apt_is_one_line(tmp_path: Path, demo_data: Path, monkeypatch):
    root = _tmp_root_sharing_downloads(tmp_path, demo_data)
    monkeypatch.setattr(build, "fetch_deb", lambda *a, **k: None)
    with pytest.raises(DemoDataError, match="languages other than Korean need Debian's help packages"):
        dd.ensure_demo_data(root, lang="el")
    assert not (root / "demo" / "el").exists()


def test_korean_rebuild_keeps_other_languages(tmp_path: Path, demo_data: Path, monkeypatch):
    root = _tmp_root_sharing_downloads(tmp_path, demo_data)
    monkeypatch.setattr(build, "fetch_deb", lambda *a, **k: None)  # fast PyPI-only build
    demo = dd.ensure_demo_data(root)
    (demo / "ja").mkdir()
    (demo / "ja" / "manifest.json").write_text("{}")
    (demo / "ko" / "stale.txt").write_text("x")
    dd.build_demo_data(root, force=True)
    assert (demo / "ja" / "manifest.json").read_text() == "{}" and (demo / "ko" / "train.txt").is_file()
    assert not (demo / "ko" / "stale.txt").exists()  # what the build writes is replaced whole
