"""The base tokenizer as a tokenizer folder with no new tokens (``recipe=no_expansion``).

Continued pretraining without expansion runs through the same stages, data, evaluation and tables as an expanded
run: its tokenizer folder has the layout ``tokenize.py`` writes (``tokenizer.json``, ``base_tokenizer/``,
``expansion.json``) with ``new_tokens: []`` and ``vocab_size == base_vocab_size``, so the split model has empty
new-row groups and every byte is read with the base's own pieces.
"""

from __future__ import annotations

import json
from pathlib import Path

from eeve.io import atomic_dir
from eeve.tokenizer.base import load_base, write_hf_folder
from eeve.tokenizer.build import base_vocab_size


def write_identity_tokenizer(base_path: str | Path, out: Path) -> Path:
    """Write the base tokenizer at ``base_path`` (a .model, tokenizer.json or HF folder) to ``out`` as an
    expansion with no new tokens; kept as it is when ``out`` already holds the same base."""
    base = load_base(base_path)
    manifest = out / "expansion.json"
    if manifest.is_file() and json.loads(manifest.read_text(encoding="utf-8")).get("base_tokenizer") == base.source:
        return out
    size = base_vocab_size(base)
    with atomic_dir(out, setting="tokenizer.path") as tmp:
        write_hf_folder(base.tokenizer_json, base.config, tmp)
        write_hf_folder(base.tokenizer_json, base.config, tmp / "base_tokenizer")
        report = {
            "base_vocab_size": size,
            "vocab_size": size,
            "base_kind": base.kind.name,
            "base_tokenizer": base.source,
            "num_new_tokens": 0,
            "new_tokens": [],
            "identity": True,
        }
        (tmp / "expansion.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return out
