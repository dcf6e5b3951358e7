"""The demo's train / held-out rule (eeve.demo.split)."""

from __future__ import annotations

from eeve.demo.split import is_heldout_page


def test_heldout_rule_deterministic():
    paths = [f"text/shared/page{i}.html" for i in range(2000)]
    held = [p for p in paths if is_heldout_page(p)]
    assert held == [p for p in paths if is_heldout_page(p)]
    assert 0.02 < len(held) / len(paths) < 0.08
