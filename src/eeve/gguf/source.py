"""The pinned llama.cpp source: the ``llama-cpp-python`` sdist from PyPI, which vendors the whole llama.cpp tree
(``vendor/llama.cpp``: ``convert_hf_to_gguf.py``, ``conversion/``, ``gguf-py/``). The same sdist, installed with
pip, builds the ``llama_cpp`` binding that checks the converted file, so converter and runtime are one version.

``llama_cpp_dir()`` downloads it once (``pip download``) into ``<cache>/llama_cpp/``, checks its SHA-256 and unpacks
what the converter reads there (``CONVERTER_PARTS``: 3 MB of the tree's 217 MB); later calls reuse the tree.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from eeve.demo.data import default_root
from eeve.errors import ExportError

LLAMA_CPP_PYTHON = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
CONVERTER_PARTS = ("conversion/", "gguf-py/", "models/templates/", "licenses/")
"""What ``convert_hf_to_gguf.py`` reads beside the tree's top-level files (its model modules, gguf-py, the chat
templates some models embed); the C++ sources, docs and test vocabularies stay packed."""


def cache_dir() -> Path:
    return default_root() / "llama_cpp"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_sdist(root: Path) -> Path:
    """The pinned sdist in ``root`` (downloaded with pip if absent; its hash checked)."""
    sdist = root / SDIST
    if not sdist.is_file():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:  # another process may be at it too
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", tmp]
            r = subprocess.run([*cmd, f"llama-cpp-python=={LLAMA_CPP_PYTHON}"], capture_output=True, text=True)
            if r.returncode != 0 or not (Path(tmp) / SDIST).is_file():
                last = (r.stderr.strip().splitlines() or ["no output"])[-1]
                raise ExportError(
                    f"could not download llama-cpp-python=={LLAMA_CPP_PYTHON} from PyPI ({last}); put {SDIST} into "
                    f"{root} or pass --llama-cpp DIR (a llama.cpp checkout)"
                )
            os.replace(Path(tmp) / SDIST, sdist)  # whole or absent
    if _sha256(sdist) != SDIST_SHA256:
        raise ExportError(f"{sdist} does not have the pinned SHA-256 {SDIST_SHA256}: delete it and run again")
    return sdist


def llama_cpp_dir(root: str | os.PathLike | None = None) -> Path:
    """The pinned llama.cpp tree (``.../vendor/llama.cpp``), downloaded and unpacked on first use."""
    root = Path(root) if root is not None else cache_dir()
    tree = root / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
    if (tree / "convert_hf_to_gguf.py").is_file():
        return tree
    sdist = download_sdist(root)
    top = f"{tree.parents[1].name}/vendor/llama.cpp/"
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=root) as tmp:
        with tarfile.open(sdist) as tar:
            wanted = [m for m in tar.getmembers() if _converter_part(m.name, top)]
            tar.extractall(tmp, members=wanted, filter="data")
        try:
            (Path(tmp) / tree.parents[1].name).rename(tree.parents[1])  # complete or absent, never half-unpacked
        except OSError:
            if not (tree / "convert_hf_to_gguf.py").is_file():
                raise
            # another process unpacked it first (its rename is as complete as ours would have been)
    return tree


def _converter_part(name: str, top: str) -> bool:
    """A top-level file of the vendored llama.cpp, or a file under one of ``CONVERTER_PARTS``."""
    if not name.startswith(top):
        return False
    rest = name[len(top) :]
    return "/" not in rest or rest.startswith(CONVERTER_PARTS)
