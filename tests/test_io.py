"""The one atomic writer (eeve.io): a reader sees the old file or the complete new one, never a half-written one,
and a failed write leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest

from eeve.io import atomic_write, commit


def test_atomic_write_text_bytes_and_callback(tmp_path):
    target = tmp_path / "sub" / "a.json"
    assert atomic_write(target, '{"x": 1}') == target and target.read_text() == '{"x": 1}'
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    counts = tmp_path / "counts.npz"  # the callback gets a path with the target's suffix: numpy adds none
    atomic_write(counts, lambda p: np.savez(p, a=np.arange(3)))
    assert np.load(counts)["a"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "counts.npz", "sub"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write(target, "old")

    def half(path):
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_commit_replaces_a_folder(tmp_path):
    old, new = tmp_path / "ckpt", tmp_path / ".tmp-ckpt"
    old.mkdir()
    (old / "stale").write_text("x")
    new.mkdir()
    (new / "shard0").write_text("y")
    commit(new, old)
    assert [p.name for p in old.iterdir()] == ["shard0"] and not new.exists()
