"""Shared pytest fixtures (keep small)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The demo data folder (``<cache>/demo``), fetched and built on first use (see ``eeve.demo_data``)."""
    from eeve.demo_data import ensure_demo_data

    return ensure_demo_data()
