"""Safe reruns: a finished stage is reused only by the configuration that produced it (its fingerprint), and the
default output folder follows the model, so `python train.py stage=3 model=solar` never lands in the demo's run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eeve.errors import StageError

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "stage.max_steps=2",
    "stage.warmup_steps=1",
    "data.seq_len=64",
    "data.micro_batch_size=4",
    "data.validation.ko.max_sequences=4",
    "data.validation.en.max_sequences=4",
    "trainer.val_every_n_steps=100",
    "trainer.checkpoint_every_n_steps=100",
    "eval.bytes=2048",
    "eval.tasks=[]",
    "eval.samples.max_new_tokens=4",
]


def compose(*overrides: str, hydra: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from eeve.config import register_configs

    register_configs()
    overrides = tuple(f"stage='{o[6:]}'" if o.startswith("stage=") else o for o in overrides)
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra)


def train_cfg(run_dir: Path, tok: Path, cache: Path, *overrides: str):
    from eeve.config import to_train_config

    return to_train_config(
        compose(
            f"paths.root={ROOT}",
            f"paths.run_dir={run_dir}",
            f"paths.cache_dir={cache}",
            f"tokenizer.path={tok}",
            *FAST,
            *overrides,
        )
    )


def test_default_run_folder_follows_the_model():
    """The design card's commands: each model's stages (and tokenizer) have their own folder."""
    for overrides, run, tok in [
        (["model=solar"], "outputs/solar", "outputs/tokenize/solar/tokenizer"),
        (["model=tiny_pretrained"], "outputs/demo", "outputs/tokenize/demo/tokenizer"),
        ([], "outputs/demo", "outputs/tokenize/demo/tokenizer"),
        (["experiment=eeve_solar"], "outputs/eeve_solar", "outputs/tokenize/solar/tokenizer"),
        (["experiment=eeve_solar", "recipe=full"], "outputs/solar-full", "outputs/tokenize/solar/tokenizer"),
        # one name: `tokenize.py run_name=X` writes where `train.py run_name=X` reads, whatever the model
        (["model=solar", "run_name=mine"], "outputs/mine", "outputs/tokenize/mine/tokenizer"),
        (["run_name=ja"], "outputs/ja", "outputs/tokenize/ja/tokenizer"),
        # a recipe changes the folder only: its run reads the tokenizer of the run it is a recipe of
        (["recipe=full"], "outputs/demo-full", "outputs/tokenize/demo/tokenizer"),
        (["recipe=eeve_paper", "run_name=ja"], "outputs/ja-eeve_paper", "outputs/tokenize/ja/tokenizer"),
        (["recipe=no_expansion"], "outputs/demo-no_expansion", "outputs/demo-no_expansion/tokenizer"),
    ]:
        c = compose(*overrides, hydra=True)
        c.paths.run_dir = c.hydra.run.dir  # ${hydra:runtime.output_dir} is set by a real run
        assert (c.hydra.run.dir, c.tokenizer.path) == (run, tok), overrides
        assert c.hydra.sweep.dir == f"{run}/multirun", overrides


def test_mismatched_rerun_is_refused_with_the_fix(expanded_tokenizer, tmp_path):
    from eeve.training.stages import run_stage

    cache = tmp_path / "cache"
    cfg = train_cfg(tmp_path / "run", expanded_tokenizer, cache)
    first = run_stage(cfg, 1)
    fp = json.loads((tmp_path / "run" / "stage1" / "metrics.json").read_text())["fingerprint"]
    assert fp == first["fingerprint"] and fp["init"] == cfg.init and fp["stage"]["lr"] == cfg.stage.lr
    assert len(fp["tokenizer_sha256"]) == 64 and fp["starts_from"] == "expanded base"

    # same configuration: skipped, on other hardware knobs too (micro-batch size, trainer)
    mtime = (tmp_path / "run" / "stage1" / "model.safetensors").stat().st_mtime_ns
    again = run_stage(
        train_cfg(
            tmp_path / "run", expanded_tokenizer, cache, "data.micro_batch_size=2", "trainer.log_every_n_steps=1"
        ),
        1,
    )
    assert again == first and (tmp_path / "run" / "stage1" / "model.safetensors").stat().st_mtime_ns == mtime

    cases = {
        ("stage.lr=7e-3",): f"stage config (stage.lr: {cfg.stage.lr} -> 0.007)",
        ("init=random",): f"init ('{cfg.init}' -> 'random')",
        ("model.config.hidden_size=32", "model.config.intermediate_size=96"): "base model (model.config.hidden_size",
        ("data.new_token_bias=0",): "data (data.new_token_bias: 2.0 -> 0.0)",
        ("data.sources.ko_web.paths=[.cache/demo/ko/heldout.txt]",): "data (data.sources.ko_web.paths",
    }
    for overrides, expected in cases.items():
        with pytest.raises(StageError) as e:
            run_stage(train_cfg(tmp_path / "run", expanded_tokenizer, cache, *overrides), 1)
        msg = str(e.value)
        assert "\n" not in msg and expected in msg, msg
        assert "hydra.run.dir=outputs/NAME" in msg and "overwrite=true" in msg, msg
    assert (tmp_path / "run" / "stage1" / "model.safetensors").stat().st_mtime_ns == mtime  # untouched


def test_a_stage_is_tied_to_the_stage_it_started_from(tmp_path):
    """Stage N's fingerprint holds stage N-1's: retraining stage 1 differently makes a finished stage 2 stale."""
    from eeve.config import to_train_config
    from eeve.training.fingerprint import differences, stage_fingerprint

    cfg = to_train_config(compose(f"paths.root={ROOT}", f"paths.run_dir={tmp_path}", "stage=2"))
    prev = tmp_path / "stage1"
    prev.mkdir()
    fps = []
    for lr in (1e-3, 5e-4):
        (prev / "metrics.json").write_text(json.dumps({"fingerprint": {"stage": {"lr": lr}}}))
        fps.append(stage_fingerprint(cfg, 2, tmp_path / "tok", prev))
    assert differences(fps[0], fps[1]) == ["starting weights (init_from, or the previous stage's export)"]
    assert differences(fps[0], fps[0]) == []


def test_stage_without_fingerprint_is_not_silently_reused(tmp_path):
    from eeve.training.fingerprint import finished_stage

    (tmp_path / "stage3").mkdir()
    (tmp_path / "stage3" / "metrics.json").write_text(json.dumps({"stage": 3, "steps": 60}))
    with pytest.raises(StageError, match="records no fingerprint.*overwrite=true"):
        finished_stage(tmp_path / "stage3", {"init": "mean"}, overwrite=False, number=3)
    assert finished_stage(tmp_path / "stage3", {"init": "mean"}, overwrite=True, number=3) is None


def test_a_budgeted_first_stage_is_found_again_on_a_rerun(expanded_tokenizer, tmp_path):
    """Under budget.flops the default init is paid first: the first stage's share is set with the init's planned
    passes before it runs, and it records what the init really spent. Rerunning the same command (after an
    interruption in a later stage) must compute the same share and skip the finished stage, not refuse it as
    another configuration's."""
    from eeve.model.expand import read_expansion
    from eeve.training.budget import run_init_flops
    from eeve.training.flops import stage_flops_per_token
    from eeve.training.recipe import prepare_recipe
    from eeve.training.stages import run_stage

    cache = tmp_path / "cache"
    cfg = train_cfg(tmp_path / "run", expanded_tokenizer, cache)
    exp = read_expansion(expanded_tokenizer)
    per = stage_flops_per_token(
        dict(cfg.model.config), cfg.stage.trainable, exp["base_vocab_size"], exp["vocab_size"], cfg.data.seq_len
    )["per_token"]
    budget = run_init_flops(cfg, exp) + 23 * per * 512  # stage 1's share (1 of 23): about two steps of 4 x 64
    args = (f"budget.flops={budget}",)  # its max_tokens replaces stage.max_steps
    first_cfg = train_cfg(tmp_path / "run", expanded_tokenizer, cache, *args)
    planned = prepare_recipe(first_cfg, "1").max_tokens
    first = run_stage(first_cfg, 1)
    assert 0 < first["flops"]["init"] < run_init_flops(first_cfg, exp, "1")  # the plan is an upper bound
    mtime = (tmp_path / "run" / "stage1" / "model.safetensors").stat().st_mtime_ns
    again_cfg = train_cfg(tmp_path / "run", expanded_tokenizer, cache, *args)
    assert prepare_recipe(again_cfg, "1").max_tokens == planned
    assert run_stage(again_cfg, 1) == first
    assert (tmp_path / "run" / "stage1" / "model.safetensors").stat().st_mtime_ns == mtime
