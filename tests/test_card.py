"""eeve.card: a stage export's README.md is a model card (ModelCard.load parses it) with the run's metadata and
sections; python -m eeve.evaluate's table goes into an existing card."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard

from eeve.card import card_data, update_card_evaluation, write_stage_card

SECTIONS = ["## Vocabulary expansion", "## Training data", "## Training stages", "## Evaluation", "## Reproduce"]


@pytest.fixture(scope="module")
def stage1(expanded_tokenizer, tmp_path_factory):
    from test_train import compose_cfg

    from eeve.eval.training_run import StageEvaluation
    from eeve.training.stages import run_stage

    run_dir = tmp_path_factory.mktemp("card-run")
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("- stage=1\n- data.seq_len=64\n")  # as Hydra writes it
    cfg = compose_cfg(run_dir, expanded_tokenizer, tmp_path_factory.mktemp("card-cache"), "stage=1")
    run_stage(cfg, 1, evaluation=StageEvaluation)
    write_stage_card(cfg, 1)
    return cfg, run_dir / "stage1"


@pytest.mark.slow
def test_stage_export_has_a_model_card(stage1):
    cfg, out = stage1
    card = ModelCard.load(out / "README.md")
    d = card.data.to_dict()
    assert d["library_name"] == "transformers" and {"eeve", "vocabulary-expansion"} <= set(d["tags"])
    assert d["language"] == ["en", "ko"]  # en-ko (the pairs) is no ISO code
    assert "base_model" not in d and "license" not in d and "datasets" not in d  # random init, local files
    text = card.text
    assert [s for s in SECTIONS if s not in text] == []
    assert "| 0 (base) |" in text and "\n| 1 |" in text  # the evaluation table against the base
    assert "python train.py stage=1 data.seq_len=64" in text and "corpus 1 files" in text
    assert "included, checked against tokenizer.json" in text and (out / "tokenizer.model").is_file()
    assert "new_input" in text.split("## Training stages")[1].split("##")[0]


@pytest.mark.slow
def test_evaluate_table_goes_into_the_card(stage1):
    _, out = stage1
    table = "| stage | ko BPB |\n|---|---|\n| stage1 | 1.234 |"
    for _ in range(2):  # a second run replaces the first table
        assert update_card_evaluation(out, table, f"python -m eeve.evaluate model={out}")
    text = ModelCard.load(out / "README.md").text
    assert text.count("| stage1 | 1.234 |") == 1 and "## Vocabulary expansion" in text
    assert update_card_evaluation(out.parent, table, "x") is None  # no card there


def test_metadata_from_the_config(tmp_path):
    from hydra import compose, initialize_config_dir
    from test_real_runs import ROOT

    from eeve.config import register_configs, to_train_config

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        c = compose(
            "config",
            overrides=[
                f"paths.root={ROOT}",
                f"paths.run_dir={tmp_path}",
                "model=solar",
                "data.sources.ko_web.format=hub",
                "data.sources.ko_web.paths=[org/ko-corpus]",
            ],
        )
    cfg = to_train_config(c)
    d = card_data(cfg).to_dict()
    assert d["base_model"] == "upstage/SOLAR-10.7B-v1.0" and d["datasets"] == ["org/ko-corpus"]
    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a base\n")
    cfg.model.name_or_path = str(base)
    d = card_data(cfg).to_dict()
    assert "base_model" not in d and d["license"] == "apache-2.0"


@pytest.mark.slow
def test_python_m_eeve_evaluate_updates_the_card(stage1, demo_data):
    from eeve.evaluate import main

    _, out = stage1
    main(
        [
            f"model={out}",
            f"validation.ko.paths=[{demo_data / 'ko' / 'heldout.txt'}]",
            f"validation.en.paths=[{demo_data / 'en' / 'heldout.txt'}]",
            "eval.bytes=1024",
            "eval.samples.max_new_tokens=2",
        ]
    )
    text = ModelCard.load(out / "README.md").text
    block = text.split("<!-- eeve:evaluate -->")[1].split("<!-- /eeve:evaluate -->")[0]
    assert f"python -m eeve.evaluate model={out}" in block and "| stage1 |" in block and "ko BPB" in block
