"""Recipes as configuration (conf/recipe/) and run budgets (eeve.training.budget), on the real config and the tiny
model: what each recipe composes to, how a budget becomes tokens per stage, and a no-expansion run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_train import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
ALL = ["old_input", "new_input", "old_output", "new_output", "transformer"]


def staged(cfg, name):
    from eeve.training.stages import apply_schedule

    return apply_schedule(cfg.stage, name, cfg.schedule, [], cfg.recipe.stage)


def test_recipes_compose_to_their_shape(expanded_tokenizer, tmp_path):
    default = compose_cfg(tmp_path, expanded_tokenizer, tmp_path)
    assert default.recipe.name == "eeve" and default.stages == [str(n) for n in range(1, 8)]
    assert default.init == "mass_first_piece"  # mass-aware; the English guard is on by default (test_config_defaults)
    six = staged(compose_cfg(tmp_path, expanded_tokenizer, tmp_path, "stage=6"), "6")
    rates = six.rate_groups()
    assert rates.pop("new_output")[0] == 2e-4  # the new output rows slower (docs/recipes.md) ...
    assert {lr for lr, _ in rates.values()} == {six.lr}  # ... and one rate per stage for the rest, as published
    assert default.data.sources["multilingual"].ratio == 0.20  # English replay (the card: 0.1069)

    paper = compose_cfg(tmp_path, expanded_tokenizer, tmp_path, "recipe=eeve_paper", "stage=6")
    stage = staged(paper, "6")
    assert paper.init == "mean_subwords" and not stage.max_regression
    assert {lr for lr, _ in stage.rate_groups().values()} == {stage.lr}  # one rate per stage
    assert {wd for _, wd in stage.rate_groups().values()} == {stage.weight_decay}  # decay on every tensor
    ratios = {n: s.ratio for n, s in paper.data.sources.items()}
    assert ratios == {"ko_web": 0.8346, "multilingual": 0.1069, "en_ko_pairs": 0.0586}

    for name in ("full", "no_expansion"):
        cfg = compose_cfg(tmp_path, expanded_tokenizer, tmp_path, f"recipe={name}", "stage=6")
        assert cfg.stages == ["6"] and sorted(cfg.stage.trainable) == sorted(ALL)
        assert cfg.recipe.expand == (name == "full")


def test_budget_spreads_flops_tokens_and_bytes_over_stages(expanded_tokenizer, tmp_path):
    from eeve.errors import ConfigError
    from eeve.model.expand import read_expansion
    from eeve.training.budget import apply_budget, run_init_flops
    from eeve.training.flops import stage_flops_per_token

    exp = read_expansion(expanded_tokenizer)
    tokens = {}
    for n in ("1", "2", "6"):  # the default recipe's shares: 1 for stages 1-5, 16 for stage 6, 2 for stage 7
        cfg = compose_cfg(tmp_path, expanded_tokenizer, tmp_path, f"stage={n}", "budget.flops=2.3e12")
        stage = apply_budget(cfg.stage, n, cfg, exp)
        per = stage_flops_per_token(dict(cfg.model.config), stage.trainable, 32000, exp["vocab_size"], 64)
        share = 16 / 23 if n == "6" else 1 / 23
        init = run_init_flops(cfg, exp)  # mass_first_piece's teacher pass is paid first
        assert 0 < init < 0.01 * 2.3e12  # 1,024 base tokens on the debug model
        assert stage.max_tokens * per["per_token"] == pytest.approx((2.3e12 - init) * share, rel=1e-3)
        tokens[n] = stage.max_tokens
    assert tokens["2"] > tokens["1"]  # no backward through the backbone buys stage 2 more tokens for its FLOPs

    paper = ("recipe=eeve_paper", "stage=3")  # equal shares unless budget.shares says otherwise
    cfg = compose_cfg(tmp_path, expanded_tokenizer, tmp_path, *paper, "budget.tokens=70000", "+budget.shares.3=6")
    assert apply_budget(cfg.stage, "3", cfg, exp).max_tokens == 35000  # 6 / (6 + 6 x 1) of the tokens
    cfg = compose_cfg(tmp_path, expanded_tokenizer, tmp_path, *paper, "budget.bytes=7e6")
    assert apply_budget(cfg.stage, "3", cfg, exp, lambda: 2.5).max_tokens == 400000
    with pytest.raises(ConfigError, match="give one of budget.tokens"):
        compose_cfg(tmp_path, expanded_tokenizer, tmp_path, "budget.bytes=1", "budget.flops=1")


def test_the_init_is_paid_from_a_flop_budget(expanded_tokenizer, tmp_path):
    """A FLOP budget pays the init's passes over the base model first: planned before the expanding stage runs,
    then what it recorded (flops.init in its metrics.json), except in the expanding stage's own budget, which a
    rerun must find unchanged; an init that reads no text (mean_subwords) and a run that does not expand pay
    nothing; a budget below the init's cost is refused."""
    from eeve.errors import ConfigError
    from eeve.model.expand import read_expansion
    from eeve.training.budget import apply_budget, run_init_flops

    exp = read_expansion(expanded_tokenizer)
    run = tmp_path / "run"
    cfg = compose_cfg(run, expanded_tokenizer, tmp_path, "stage=2", "budget.flops=2.3e12")
    planned = run_init_flops(cfg, exp)
    before = apply_budget(cfg.stage, "2", cfg, exp).max_tokens
    first = apply_budget(cfg.stage, "1", cfg, exp).max_tokens
    (run / "stage1").mkdir(parents=True)
    recorded = planned / 2
    (run / "stage1" / "metrics.json").write_text(json.dumps({"flops": {"train": 1e11 - recorded, "init": recorded}}))
    assert run_init_flops(cfg, exp) == recorded  # stage 1 spent its share (1e11 of 2.3e12 / 23) with its init
    assert apply_budget(cfg.stage, "2", cfg, exp).max_tokens > before
    assert run_init_flops(cfg, exp, "1") == planned  # stage 1's own budget, on a rerun: as when it first ran
    assert apply_budget(cfg.stage, "1", cfg, exp).max_tokens == first
    for k, arg in enumerate(("init=mean_subwords", "recipe=eeve_paper", "recipe=no_expansion")):
        other = compose_cfg(tmp_path / f"o{k}", expanded_tokenizer, tmp_path, arg, "budget.flops=2.3e12")
        assert run_init_flops(other, exp) == 0, arg
    small = compose_cfg(tmp_path / "small", expanded_tokenizer, tmp_path, "stage=2", f"budget.flops={planned / 2}")
    with pytest.raises(ConfigError, match="does not cover init=mass_first_piece"):
        apply_budget(small.stage, "2", small, exp)


def test_a_stage_that_overspent_its_share_leaves_the_next_one_less(expanded_tokenizer, tmp_path):
    """Stages train whole steps: what stage 1 spent beyond its share (its metrics.json) comes off stage 2's, so the
    run ends within a step of its budget, not a step per stage over it."""
    from eeve.model.expand import read_expansion
    from eeve.training.budget import apply_budget

    exp = read_expansion(expanded_tokenizer)
    run = tmp_path / "run"
    args = ("recipe=eeve_paper", "stage=2", "budget.tokens=70000")  # 10,000 tokens a stage
    cfg = compose_cfg(run, expanded_tokenizer, tmp_path, *args)
    assert apply_budget(cfg.stage, "2", cfg, exp).max_tokens == 10000  # no stage 1 yet: its share counts as spent
    (run / "stage1").mkdir(parents=True)
    (run / "stage1" / "metrics.json").write_text(json.dumps({"tokens": 10240, "text_bytes": 1, "flops": {}}))
    assert apply_budget(cfg.stage, "2", cfg, exp).max_tokens == 9760
    cfg = compose_cfg(run, expanded_tokenizer, tmp_path, "recipe=eeve_paper", "stage=3", "budget.tokens=70000")
    assert apply_budget(cfg.stage, "3", cfg, exp).max_tokens == 9760  # stage 2 unrun: counted at its share


def test_bytes_per_token_follows_the_tokenizer(expanded_tokenizer, tmp_path):
    """The expanded tokenizer reads more text per token than the base: a bytes budget buys it fewer tokens."""
    from eeve.data.datamodule import EEVEDataModule
    from eeve.tokenizer.identity import write_identity_tokenizer

    cfg = compose_cfg(tmp_path, expanded_tokenizer, tmp_path)
    base = write_identity_tokenizer(cfg.model.tokenizer, tmp_path / "identity")
    per = {
        name: EEVEDataModule(cfg.data, tok, tmp_path / "cache", base_dir=ROOT).bytes_per_token()
        for name, tok in (("expanded", expanded_tokenizer), ("base", base))
    }
    assert per["expanded"] > 1.2 * per["base"] > 1.2


@pytest.mark.slow
def test_no_expansion_trains_every_parameter_with_the_base_tokenizer(expanded_tokenizer, tmp_path):
    from eeve.eval.training_run import StageEvaluation
    from eeve.training.recipe import prepare_recipe
    from eeve.training.stages import run_stage

    run = tmp_path / "run"
    cfg = compose_cfg(
        run, expanded_tokenizer, tmp_path / "cache", "recipe=no_expansion", "stage=6", f"tokenizer.path={run}/tok"
    )
    cfg.stage = prepare_recipe(cfg, "6")
    exp = json.loads((run / "tok" / "expansion.json").read_text())
    assert exp["vocab_size"] == exp["base_vocab_size"] == 32000 and exp["new_tokens"] == []
    m = run_stage(cfg, 6, evaluation=StageEvaluation)
    assert m["recipe"] == "no_expansion"
    assert set(m["groups_changed"]) == {"old_input", "old_output", "transformer"}
    assert m["trainable_parameters"]["new_input"] == m["trainable_parameters"]["new_output"] == 0
    assert json.loads((run / "stage6" / "config.json").read_text())["vocab_size"] == 32000
    assert m["eval"]["bpb"]["ko"]["bpb"] > 0  # evaluated on the same bytes as the base (stage 0)
