"""Exports for other tools, from a finished stage export (an HF folder).

    python -m eeve.export gguf outputs/<run>/stage7 [--outtype f32|f16|bf16|q8_0] [--out FILE]
                               [--check-text FILE ...] [--no-check] [--llama-cpp DIR]

``gguf``: a llama.cpp GGUF made by llama.cpp's own converter (pinned, see docs/gguf.md), written only when llama.cpp
tokenizes the check text exactly as the HF tokenizer does; otherwise one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse

from eeve.cli import fail
from eeve.errors import EEVEError
from eeve.gguf.convert import OUTTYPES, convert_to_gguf
from eeve.gguf.source import LLAMA_CPP_PYTHON


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eeve.export", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="format", required=True)
    g = sub.add_parser("gguf", help=f"GGUF via llama.cpp's converter (llama-cpp-python {LLAMA_CPP_PYTHON})")
    g.add_argument("export", help="a stage export folder, e.g. outputs/demo/stage7")
    g.add_argument("--outtype", choices=OUTTYPES, default="f32", help="tensor type (default f32)")
    g.add_argument("--out", help="output file (default <export>-<outtype>.gguf beside the export)")
    g.add_argument(
        "--check-text",
        action="append",
        metavar="FILE",
        help="text whose lines llama.cpp must tokenize as HF does (repeatable; default: the held-out files "
        "recorded in expansion.json)",
    )
    g.add_argument("--no-check", action="store_true", help="skip the tokenizer check (no llama.cpp binding needed)")
    g.add_argument("--llama-cpp", metavar="DIR", help="a llama.cpp tree to convert with instead of the pinned one")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        out, check = convert_to_gguf(
            args.export, args.out, args.outtype, args.check_text, not args.no_check, args.llama_cpp
        )
    except EEVEError as e:
        fail(str(e))
    size = out.stat().st_size / 2**20
    said = f"llama.cpp tokenizes {check.summary()}" if check else "tokenizer not checked (--no-check)"
    print(f"wrote {out} ({args.outtype}, {size:.1f} MiB); {said}")


if __name__ == "__main__":
    main()
