"""Cached downloads of the demo data (eeve.demo.fetch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eeve.demo import fetch
from eeve.demo.wheels import KONLPY_WHEEL, MISTRAL_WHEEL


def test_cached_downloads_not_refetched(tmp_path: Path, demo_data: Path, monkeypatch):
    downloads = demo_data.parent / "downloads"
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: pytest.fail(f"subprocess called: {a}"))
    assert fetch.fetch_wheel(MISTRAL_WHEEL, downloads).is_file()
    assert fetch.fetch_wheel(KONLPY_WHEEL, downloads).is_file()
    # a corrupt cached wheel is detected (sha256) and fetched again
    bad = tmp_path / "dl" / "wheels"
    bad.mkdir(parents=True)
    (bad / KONLPY_WHEEL.filename).write_bytes(b"corrupt")
    with pytest.raises(pytest.fail.Exception, match="subprocess called"):
        fetch.fetch_wheel(KONLPY_WHEEL, tmp_path / "dl")
