"""Convert a stage export (an HF folder) to GGUF with llama.cpp's own converter, then check the result with llama.cpp.

``convert_to_gguf(export_dir, out, outtype)`` runs the pinned ``convert_hf_to_gguf.py`` (through
``converter_main.py``, in a subprocess) into a temporary file beside ``out``, compares llama.cpp's tokenization of
the check text with the HF tokenizer's, and renames the file into place only when every line agrees. A file that
tokenizes differently is deleted and the call raises a one-line :class:`ExportError`; an existing ``out`` is only
replaced by a checked file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Sequence

from eeve.errors import ExportError
from eeve.gguf.check import TokenCheck, compare_tokenizers, heldout_files, read_lines
from eeve.gguf.source import llama_cpp_dir

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
CONVERTER = Path(__file__).with_name("converter_main.py")


def default_out(export_dir: Path, outtype: str) -> Path:
    """``outputs/<run>/stage7`` -> ``outputs/<run>/stage7-f32.gguf``."""
    return export_dir.parent / f"{export_dir.name}-{outtype}.gguf"


def check_export_folder(export_dir: Path) -> None:
    if not (export_dir / "config.json").is_file():
        raise ExportError(f"{export_dir} has no config.json: give a stage export folder, e.g. outputs/<run>/stage7")
    if not any(export_dir.glob("*.safetensors")):
        raise ExportError(f"{export_dir} has no *.safetensors weights: give a complete stage export folder")
    if not (export_dir / "tokenizer.json").is_file() and not (export_dir / "tokenizer.model").is_file():
        raise ExportError(f"{export_dir} has neither tokenizer.json nor tokenizer.model: give a stage export folder")


def run_converter(export_dir: Path, tmp: Path, outtype: str, llama_cpp: Path) -> None:
    """llama.cpp's converter into ``tmp``. Its output is kept (as ``<export>-gguf-convert.log``) only when it fails
    unexpectedly; a one-line refusal from converter_main becomes the ExportError."""
    cmd = [sys.executable, str(CONVERTER), str(llama_cpp), str(export_dir), "--outtype", outtype, "--outfile", str(tmp)]
    log = tmp.with_name(tmp.name + ".log")
    with open(log, "w", encoding="utf-8") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True)
    lines = [x for x in log.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
    if r.returncode == 0 and tmp.is_file():
        log.unlink()
        return
    said = next((x for x in lines if x.startswith("error: ")), None)
    if said:  # converter_main's one-line refusal: the log adds nothing
        log.unlink()
        raise ExportError(said[len("error: ") :])
    kept = log.rename(tmp.parent / f"{export_dir.name}-gguf-convert.log")
    last = lines[-1] if lines else "no output"
    raise ExportError(f"llama.cpp's converter failed on {export_dir} ({last}); its log: {kept}")


def mismatch_message(check: TokenCheck) -> str:
    line, hf, cpp = check.mismatches[0]
    k = next((i for i, (a, b) in enumerate(zip(hf, cpp)) if a != b), min(len(hf), len(cpp)))
    return (
        f"llama.cpp tokenizes {len(check.mismatches)} of {check.lines} check lines differently from the HF tokenizer "
        f"(first: {line[:40]!r}, from token {k}: HF {hf[k : k + 4]}, llama.cpp {cpp[k : k + 4]}); no GGUF written "
        "(see docs/gguf.md)"
    )


def convert_to_gguf(
    export_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    outtype: str = "f32",
    check_files: Sequence[str | os.PathLike] | None = None,
    check: bool = True,
    llama_cpp: str | os.PathLike | None = None,
) -> tuple[Path, TokenCheck | None]:
    """Write ``out`` (default ``<export>-<outtype>.gguf`` beside the export); returns it and the tokenizer check.

    ``check_files``: text files whose lines llama.cpp must tokenize as the HF tokenizer does (default: the held-out
    files recorded in ``expansion.json``, plus a few built-in lines). ``check=False`` skips the check (no llama.cpp
    binding needed). ``llama_cpp``: a llama.cpp tree to convert with instead of the pinned one."""
    export_dir = Path(export_dir)
    if outtype not in OUTTYPES:
        raise ExportError(f"--outtype {outtype} is not supported: choose one of {', '.join(OUTTYPES)}")
    check_export_folder(export_dir)
    out = Path(out) if out is not None else default_out(export_dir, outtype)
    files = [Path(f) for f in check_files] if check_files is not None else heldout_files(export_dir)
    lines = read_lines(files) if check else []
    tree = Path(llama_cpp) if llama_cpp is not None else llama_cpp_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        run_converter(export_dir, tmp, outtype, tree)
        result = compare_tokenizers(tmp, export_dir, lines) if check else None
        if result is not None and result.mismatches:
            raise ExportError(mismatch_message(result))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out, result
