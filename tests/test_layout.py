"""The run layout (eeve.layout): stage order from the composed config, the stage before, where a stage starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import initialize_config_dir

from eeve.cli import CONF_DIR, compose_stage_numbers, stage_names
from eeve.config import register_configs, to_train_config
from eeve.errors import ConfigError, StageError
from eeve.layout import previous_stage, stage_dir, stage_order, stage_source

SOURCES = {"data": {"sources": {"x": {"paths": ["a.txt"], "ratio": 1}}}, "stage": {"max_regression": None}}


def cfg(tmp_path: Path, stages: list[str], numbers: dict | None = None, **extra):
    return to_train_config(
        {**SOURCES, "stages": stages, "stage_numbers": numbers or {}, "paths": {"run_dir": str(tmp_path)}, **extra}
    )


def test_every_stage_config_composes_to_its_number():
    """The numbers come from composing conf/stage/<name>.yaml (a variant inherits its stage's number), and a plain
    name is its own number: what eeve.layout assumes for a config composed without train.py."""
    names = [n for n in stage_names() if n != "all"]
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        numbers = compose_stage_numbers(names)
    assert {n: v for n, v in numbers.items() if n.isdigit()} == {str(i): i for i in range(1, 8)}
    assert numbers["6_lora"] == numbers["6_lowlr"] == 6 and numbers["7_lora"] == 7


def test_previous_stage_follows_the_schedule_with_variants(tmp_path):
    c = cfg(tmp_path, ["1", "3", "6_lora", "7"], {"6_lora": 6})
    assert stage_order(c) == [1, 3, 6, 7]
    assert [previous_stage(c, n) for n in (1, 3, 6, 7)] == [None, 1, 3, 6]
    assert previous_stage(c, 5) == 3  # a stage not listed follows the lower numbers
    with pytest.raises(ConfigError, match=r"stage '6_lora' has no known number.*\+stage_numbers.6_lora=N"):
        stage_order(cfg(tmp_path, ["1", "6_lora"]))


def test_stage_source_is_the_previous_export_or_init_from(tmp_path):
    c = cfg(tmp_path, ["1", "2"])
    assert stage_source(c, 1) is None
    with pytest.raises(StageError, match=r"stage 2 starts from .*stage1, which holds no exported model: run"):
        stage_source(c, 2)
    assert stage_source(c, 2, check=False) == stage_dir(c, 1) == tmp_path / "stage1"
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1" / "config.json").write_text("{}")
    assert stage_source(c, 2) == tmp_path / "stage1"
    other = cfg(tmp_path, ["1", "2"], init_from="elsewhere", paths={"root": "/r", "run_dir": str(tmp_path)})
    assert stage_source(other, 1, check=False) == Path("/r/elsewhere")
