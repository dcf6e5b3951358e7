"""Fail fast (eeve.preflight): bad input paths, a tokenizer built for another model, an unwritable output folder and a
folder without a model stop with one line naming the key the user typed, before any model is loaded or evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train import compose_cfg, run_cli

from eeve.errors import EEVEError
from eeve.preflight import check_train

ROOT = Path(__file__).resolve().parents[1]


def fake_tokenizer(tmp_path: Path, base: int = 32000, total: int = 32064) -> Path:
    """A tokenizer folder as far as the vocabulary check reads it: expansion.json (written by tokenize.py)."""
    d = tmp_path / "tok"
    d.mkdir()
    (d / "expansion.json").write_text(json.dumps({"base_vocab_size": base, "vocab_size": total, "new_tokens": []}))
    return d


def check(tmp_path: Path, *overrides: str, tok: Path | None = None) -> str:
    cfg = compose_cfg(tmp_path / "run", tok or fake_tokenizer(tmp_path), tmp_path / "cache", *overrides)
    with pytest.raises(EEVEError) as e:
        check_train(cfg, cfg.stage.number)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.sources.ko_web.paths=[.cache/demo/ko/trian.txt]", "data.sources.ko_web.paths"),
        ("data.sources.multilingual.paths=[.cache/demo/en/*.zzz]", "data.sources.multilingual.paths"),
        ("data.validation.en.paths=[.cache/demo/en/heldot.txt]", "data.validation.en.paths"),
    ],
)
def test_a_misspelt_data_path_names_the_key_typed(demo_data, tmp_path, override, key):
    msg = check(tmp_path, override)
    assert msg.endswith(f"in {key}") or f"fix {key} " in msg, msg
    assert "corpus.paths" not in msg


def test_a_tokenizer_for_another_base_vocabulary_stops(demo_data, tmp_path):
    msg = check(tmp_path, "model.config.vocab_size=32064")
    assert "tokenizer.path=" in msg and "32000" in msg and "32064" in msg, msg


def test_a_start_export_of_another_vocabulary_stops(demo_data, tmp_path):
    start = tmp_path / "other_export"
    start.mkdir()
    (start / "config.json").write_text(json.dumps({"vocab_size": 40000}))
    msg = check(tmp_path, f"init_from={start}")
    assert f"init_from={start}" in msg and "40000" in msg and "32064" in msg, msg


def test_missing_tokenizer_and_unwritable_output_folder(demo_data, tmp_path):
    assert "tokenizer.path=FOLDER" in check(tmp_path, tok=tmp_path / "no_tokenizer")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = compose_cfg(blocker / "run", fake_tokenizer(tmp_path), tmp_path / "cache")
    with pytest.raises(EEVEError, match="hydra.run.dir"):
        check_train(cfg, 1)


def test_a_good_config_passes(demo_data, tmp_path):
    cfg = compose_cfg(tmp_path / "run", fake_tokenizer(tmp_path), tmp_path / "cache")
    check_train(cfg, 1)
    assert (tmp_path / "run").is_dir()


def test_evaluate_says_the_folder_holds_no_model_before_the_base(demo_data, tmp_path, capsys):
    """A base folder that cannot be evaluated (a config.json, no weights, no tokenizer): scoring it first would fail
    on it; the model folder is checked before."""
    from eeve.evaluate import main

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    run = tmp_path / "outputs" / "demo"
    (run / "stage1").mkdir(parents=True)
    for folder, needle in [
        (run / "stage9", "does not exist"),
        (run, "holds no model (no config.json) (it holds stage1)"),
    ]:
        with pytest.raises(SystemExit) as e:
            main([f"model={folder}", f"base={base}"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: model={folder} ") and needle in err, err


@pytest.mark.slow
def test_train_cli_misspelt_path_fails_before_any_model(tmp_path):
    """The issue's case: a misspelt training path under a new run name spent 99 s on the base's evaluation."""
    r = run_cli("stage=1", "data.sources.ko_web.paths=[.cache/demo/ko/trian.txt]", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr[-2000:]
    assert "fix data.sources.ko_web.paths" in r.stderr
    assert not (tmp_path / "stage0").exists()  # stopped before the base's evaluation (no timed assertion: a loaded
    # machine may take a minute just to import torch and transformers)
