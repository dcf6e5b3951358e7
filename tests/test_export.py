"""eeve.model.export: HF round trip from a split model and from a split-format full state dict; atomic replacement."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from eeve.errors import ExportError
from eeve.model.export import export_hf
from eeve.model.load import load_base_model
from eeve.model.split import merge_split_state_dict, split_vocab
from eeve.training.groups import set_trainable

NEW = ["▁반갑", "국어를", "▁곰", "▁한국인"]


def _base_tokenizer():
    from test_expansion import make_base_tokenizer  # tests/ is on sys.path under pytest's default import mode

    return make_base_tokenizer()


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """An expanded tokenizer folder in the layout tokenize.py writes (new tokens added as extra entries here;
    how they are added does not matter for export)."""
    from transformers import PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tok")
    base = _base_tokenizer()
    kw = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    PreTrainedTokenizerFast(tokenizer_object=base, **kw).save_pretrained(d / "base_tokenizer")
    exp = _base_tokenizer()
    exp.add_tokens(NEW)
    PreTrainedTokenizerFast(tokenizer_object=exp, **kw).save_pretrained(d)
    (d / "special_tokens_map.json").write_text(json.dumps(kw))
    (d / "expansion.json").write_text(
        json.dumps(
            {
                "base_vocab_size": 330,
                "vocab_size": 334,
                "base_kind": "sentencepiece_bpe",
                "new_tokens": [{"id": 330 + i, "token": t, "frequency": 1} for i, t in enumerate(NEW)],
            }
        )
    )
    return d


def expanded_split_model(tok_dir):
    from test_expansion import tiny_cfg

    from eeve.model.expand import expand_model, read_expansion

    model = load_base_model(tiny_cfg(330), seed=0)
    meta = read_expansion(tok_dir)
    expand_model(model, tok_dir / "base_tokenizer", meta["new_tokens"], meta["base_vocab_size"])
    split_vocab(model, 330)
    set_trainable(model, ["new_input", "new_output"])
    with torch.no_grad():  # pretend training happened
        model.model.embed_tokens.new.weight.add_(0.5)
        model.lm_head.new.weight.sub_(0.25)
    return model


def check_export(out: Path, merged: dict, tok_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert m.config.vocab_size == len(tok) == 334
    assert m.config.tie_word_embeddings is False
    sd = m.state_dict()
    assert set(sd) == set(merged)
    for k, v in merged.items():
        assert torch.equal(sd[k], v), k
    for f in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "expansion.json",
        "metrics.json",
        "config.json",
        "model.safetensors",
    ):
        assert (out / f).exists(), f
    assert (out / "base_tokenizer" / "tokenizer.json").exists()
    assert tok("국어를").input_ids  # loads and encodes
    with torch.no_grad():
        assert m(torch.tensor([[1, 330, 333]])).logits.shape == (1, 3, 334)


def test_export_from_split_model(tok_dir, tmp_path):
    model = expanded_split_model(tok_dir)
    merged = merge_split_state_dict(model.state_dict())
    out = export_hf(model, None, tok_dir, tmp_path / "hf", {"stage": 3, "ppl": torch.tensor(1.5)})
    check_export(out, merged, tok_dir)
    assert json.loads((out / "metrics.json").read_text()) == {"stage": 3, "ppl": 1.5}
    # the model passed in is still split and trainable as before
    assert model.model.embed_tokens.new.weight.requires_grad and not model.model.embed_tokens.old.weight.requires_grad


def test_export_from_config_and_prefixed_split_state_dict(tok_dir, tmp_path):
    """FSDP / Lightning path: config + full split state dict with a LightningModule 'model.' prefix, bf16."""
    model = expanded_split_model(tok_dir).to(torch.bfloat16)
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    merged = merge_split_state_dict(model.state_dict())
    out = export_hf(model.config, sd, tok_dir, tmp_path / "hf")
    check_export(out, merged, tok_dir)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_export_atomic(tok_dir, tmp_path):
    model = expanded_split_model(tok_dir)
    out = export_hf(model, None, tok_dir, tmp_path / "hf", {"v": 1})
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with torch.no_grad():
        model.lm_head.new.weight.add_(1.0)
    # fails after the weights were written (metrics not serialisable): old export must be intact
    with pytest.raises(TypeError):
        export_hf(model, None, tok_dir, tmp_path / "hf", {"v": object()})
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(os.listdir(tmp_path)) == ["hf"]  # no temp folders left
    # a vocab mismatch is refused before anything is written
    small = load_base_model(__import__("test_expansion").tiny_cfg(330), seed=0)
    with pytest.raises(ExportError, match="330"):
        export_hf(small, None, tok_dir, tmp_path / "hf2")
    assert not (tmp_path / "hf2").exists()
    # a successful re-export replaces it
    export_hf(model, None, tok_dir, tmp_path / "hf", {"v": 2})
    assert json.loads((out / "metrics.json").read_text()) == {"v": 2}
    assert sorted(os.listdir(tmp_path)) == ["hf"]


def test_export_loads_back_through_load_base_model(tok_dir, tmp_path):
    """The local-folder path of load_base_model (safetensors, no remote code) reads an export back exactly."""
    model = expanded_split_model(tok_dir)
    merged = merge_split_state_dict(model.state_dict())
    out = export_hf(model, None, tok_dir, tmp_path / "hf")
    back = load_base_model({"name_or_path": str(out), "dtype": "bfloat16"})
    assert back.dtype == torch.bfloat16 and back.config.vocab_size == 334
    for k, v in back.state_dict().items():
        assert torch.equal(v, merged[k].to(torch.bfloat16)), k
