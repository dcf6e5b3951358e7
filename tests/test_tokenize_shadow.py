"""`tokenize.py` at the repository root shadows the standard library's `tokenize` whenever the root is on
sys.path. The three ways it gets imported or run must all work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_script_help():
    r = sh("tokenize.py", "--help")
    assert r.returncode == 0, r.stderr
    assert "intermediate_vocab_size" in r.stdout and "Traceback" not in r.stderr


def test_import_from_repo_root_gives_stdlib():
    r = sh(
        "-c",
        "import tokenize, inspect, linecache; tokenize.open; tokenize.generate_tokens; "
        "assert inspect.getsource(inspect.getsource); print(tokenize.__file__)",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("tokenize.py") and str(ROOT) not in r.stdout


def test_pytest_collection_from_repo_root():
    # `python -m pytest` puts the root on sys.path; pytest, hypothesis and inspect all import `tokenize`
    r = sh(
        "-m",
        "pytest",
        "--collect-only",
        "-qq",
        "-p",
        "no:cacheprovider",
        "tests/test_tokenize_shadow.py",
        "tests/test_tokenizer_build.py",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test_tokenize_shadow.py: 3" in r.stdout and "Error" not in r.stdout
