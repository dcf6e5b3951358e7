"""Reading a .deb without dpkg (eeve.demo.archive): the ar container and the data tarball."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from eeve.demo.archive import iter_deb_files, read_ar_members
from eeve.errors import DemoDataError


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode("ascii")
        assert len(header) == 60
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return out


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_ar_members_with_odd_sizes_are_padded():
    data = _ar([("debian-binary", b"2.0\n"), ("odd", b"abc"), ("last", b"xy")])
    assert list(read_ar_members(data)) == [("debian-binary", b"2.0\n"), ("odd", b"abc"), ("last", b"xy")]
    with pytest.raises(DemoDataError, match="not a .deb"):
        list(read_ar_members(b"PK\x03\x04"))


def test_deb_files_under_a_prefix(tmp_path: Path):
    tar = _tar({"./usr/share/help/a.html": b"<p>a</p>", "./usr/share/help/b.txt": b"b", "./etc/c.html": b"c"})
    deb = tmp_path / "x.deb"
    deb.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.gz", _tar({})), ("data.tar.gz", tar)]))
    assert list(iter_deb_files(deb, "usr/share/help/")) == [("usr/share/help/a.html", b"<p>a</p>")]
    deb.write_bytes(_ar([("debian-binary", b"2.0\n")]))
    with pytest.raises(DemoDataError, match="no data.tar"):
        list(iter_deb_files(deb, "usr/"))
