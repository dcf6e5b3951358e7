"""Writing files and folders atomically: a reader sees the old one or the complete new one, never a half-written one.

:func:`atomic_write` replaces a file (text, bytes, or whatever a writer callback puts at a temporary path),
:func:`atomic_dir` a folder; :func:`commit` is the rename step alone, for writers that must agree on the temporary
name themselves (every rank of a distributed checkpoint writes into the same folder)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator, Union

from eeve.errors import ConfigError

Content = Union[str, bytes, Callable[[Path], object]]
"""What :func:`atomic_write` writes: text (UTF-8), bytes, or a callback that writes the file at the path given."""


def temp_path(target: str | os.PathLike) -> Path:
    """A fresh hidden name beside ``target`` that keeps its suffix (savefig and numpy pick the format by it)."""
    target = Path(target)
    return target.with_name(f".{target.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{target.suffix}")


def atomic_write(target: str | os.PathLike, content: Content) -> Path:
    """Replace the file ``target`` by ``content`` in one rename: written to :func:`temp_path`, flushed to disk,
    renamed over ``target``. On an exception ``target`` is untouched and the temporary file removed. Parent
    folders are created. Returns ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        if isinstance(content, str):
            tmp.write_text(content, encoding="utf-8")
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            content(tmp)
        commit(tmp, target)
    except BaseException:
        remove(tmp)
        raise
    return target


def commit(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the complete file or folder ``tmp`` onto ``target``: its bytes flushed to disk, whatever was at
    ``target`` removed, one rename, the parent folder flushed (the rename survives a power cut)."""
    tmp, target = Path(tmp), Path(target)
    for f in [tmp] if tmp.is_file() else [f for f in tmp.rglob("*") if f.is_file()]:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if target.is_dir():
        remove(target)
    os.replace(tmp, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(p: str | os.PathLike) -> None:
    """Remove a file or a folder tree if it exists."""
    p = Path(p)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


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
