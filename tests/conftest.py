"""Shared pytest fixtures (keep small)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Huge pages for PyTorch's large CPU tensors (as the Makefile exports for `make test` and `make demo`): far fewer page
# faults per [tokens x vocab] logits; read once, at torch's first allocation, so it is set before anything imports
# torch, and every process a test starts inherits it. It changes no result.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the suite on as many pytest-xdist workers as cores: one torch thread per worker (and per
    # process a test starts) keeps the workers from fighting over the cores.
    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, the modules with the most slow tests first, dealt round-robin to the workers, each
    module's tests kept together (its module fixtures are built once per worker). `--dist worksteal` hands each
    worker one contiguous share of the collection and lets an idle worker take queued tests from the END of
    another's share, so the run ends on short tests instead of one long test running alone while the other
    workers wait. One process keeps the collection order."""
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    if workers < 2:
        return
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    heavy = sorted(modules.values(), key=lambda m: -sum(1 for i in m if i.get_closest_marker("slow")))
    items[:] = [i for k in range(workers) for m in heavy[k::workers] for i in m]


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The demo data folder (``<cache>/demo``), fetched and built on first use (see ``eeve.demo.data``)."""
    from eeve.demo.data import ensure_demo_data

    return ensure_demo_data()


@pytest.fixture(scope="session")
def expanded_tokenizer(demo_data, tmp_path_factory) -> Path:
    """A real expanded tokenizer folder built from the demo data (the demo's settings, ~5 s), shared by the
    training tests."""
    from eeve.tokenizer.run import run_from_config

    out = tmp_path_factory.mktemp("expanded") / "tokenizer"
    run_from_config(
        {
            "base_tokenizer": str(demo_data / "base_tokenizer" / "tokenizer.model"),
            "corpus": {"paths": [str(demo_data / "ko" / "train.txt")]},
            "heldout": {"ko": str(demo_data / "ko" / "heldout.txt"), "en": str(demo_data / "en" / "heldout.txt")},
            "output_dir": str(out),
            "intermediate_vocab_size": 8000,
            "min_frequency": 8,
            "progress": False,
        }
    )
    return out


@pytest.fixture(scope="session")
def demo_language(demo_data):
    """``demo_language("ja")`` -> the folder ``<cache>/demo/ja`` (train.txt, heldout.txt, pairs/), built on first use
    by the demo data builder (``apt-get download libreoffice-help-ja``, as for Korean)."""
    import shutil

    from eeve.demo.data import ensure_demo_data

    def get(lang: str) -> Path:
        if not (demo_data / lang / "manifest.json").is_file() and shutil.which("apt-get") is None:
            pytest.skip(f"demo language {lang} needs apt-get (Debian's libreoffice-help-{lang} package)")
        return ensure_demo_data(lang=lang) / lang

    return get


@pytest.fixture(scope="session")
def packed_cache(tmp_path_factory) -> Path:
    """A packed-token cache folder shared by the training tests of a session (``paths.cache_dir``)."""
    return tmp_path_factory.mktemp("packed-cache")
