"""Writing folders atomically: a reader sees the old folder or the complete new one, never a half-written one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from eeve.errors import ConfigError


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, *, keep_existing: bool = False, setting: str | None = None) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; when the block ends without an exception, it replaces
    ``target`` (the previous one, if any, stays in place until the new one is complete). On an exception the
    temporary folder is removed and ``target`` is untouched.

    ``keep_existing=True`` is for caches written by several processes at once: if ``target`` appeared while
    this one was being built (another process won the race), the new copy is discarded and ``target`` kept.
    Parent folders are created as needed. If they cannot be, ``setting`` (the config key that chose ``target``)
    turns the ``OSError`` into a one-line :class:`ConfigError` naming that key."""
    target = Path(target)
    created = []  # parents made here, removed again if the build fails: a failed run leaves nothing behind
    p = target.parent
    while not p.exists():
        created.append(p)
        p = p.parent
    try:
        for d in reversed(created):
            d.mkdir()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as e:
        _remove_empty(created)
        if setting is None:
            raise
        raise ConfigError(
            f"{setting} {str(target)!r} is not writable ({e.strerror or e}): choose another {setting}"
        ) from None
    try:
        yield tmp
        if keep_existing:
            try:
                os.replace(tmp, target)  # fails if another process put a (non-empty) target there first
            except OSError:
                if not target.exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
            return
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise


def _remove_empty(folders: list[Path]) -> None:
    for d in folders:  # deepest first
        try:
            d.rmdir()
        except OSError:
            pass


def _swap_in(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
