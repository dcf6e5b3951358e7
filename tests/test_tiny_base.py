"""The demo's English-centric base: pre-training runs, lowers English bits per byte, and saves a standard HF
folder (model + its own base tokenizer) that `model=tiny_pretrained` style loading accepts."""

from __future__ import annotations

import re

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer


@pytest.mark.slow
def test_tiny_base_trains_and_saves_loadable_model(demo_data, tmp_path, capsys):
    from eeve.demo.tiny_base import main
    from eeve.model.load import load_base_model

    out = main(["--steps", "12", "--batch", "4", "--seq-len", "64", "--out", str(tmp_path / "base")])
    text = capsys.readouterr().out
    en = re.search(r"en (\d+\.\d+) -> (\d+\.\d+)", text)
    assert en and float(en.group(2)) < float(en.group(1)), text
    assert re.search(r"tiny base: step 12/12 \(100%\) loss \d+\.\d+ elapsed \d+:\d\d:\d\d eta 0:00:00", text), text
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == len(tok) == 32000 and tok("Hello").input_ids[0] == tok.bos_token_id
    assert load_base_model({"name_or_path": str(out), "dtype": "float32"}).config.vocab_size == 32000
    assert not list(tmp_path.glob(".tmp-*"))
    # Idempotent: an existing base is kept, not rebuilt.
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    main(["--steps", "12", "--out", str(out)])
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
