"""Reading a Debian package (.deb) without dpkg: its ar container and the data tarball inside."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from eeve.errors import DemoDataError


def read_ar_members(data: bytes):
    """Yield (name, payload) of each member of an ar archive (a .deb's container)."""
    if not data.startswith(b"!<arch>\n"):
        raise DemoDataError("not a .deb (ar) archive")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        yield name, data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)


def iter_deb_files(deb: Path, prefix: str, suffix: str = ".html"):
    """Yield (path inside the package without leading './', bytes) for files under ``prefix``.

    Reads the data tarball with the standard library; falls back to ``dpkg-deb -x`` for compressions that
    ``tarfile`` cannot read (e.g. zstd).
    """
    data_member = None
    for name, payload in read_ar_members(deb.read_bytes()):
        if name.startswith("data.tar"):
            data_member = payload
            break
    if data_member is None:
        raise DemoDataError(f"{deb.name}: no data.tar member")
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data_member), mode="r:*")
    except tarfile.TarError:
        tf = None
    if tf is not None:
        with tf:
            for member in tf:
                path = member.name[2:] if member.name.startswith("./") else member.name.lstrip("/")
                if member.isfile() and path.startswith(prefix) and path.endswith(suffix):
                    yield path, tf.extractfile(member).read()
        return
    exe = shutil.which("dpkg-deb") or shutil.which("dpkg")
    if exe is None:
        raise DemoDataError(f"{deb.name}: cannot read data tarball and no dpkg-deb found")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([exe, "-x", str(deb), tmp], check=True, capture_output=True)
        base = Path(tmp)
        for path in sorted((base / prefix).rglob(f"*{suffix}")):
            yield path.relative_to(base).as_posix(), path.read_bytes()
