"""FLOP accounting (eeve.training.flops) against torch's own counter on the debug model.

Each case runs the training module's real step (EEVEModule.configure_model, then its loss and backward) under
``torch.utils.flop_counter.FlopCounterMode`` and compares with the formula. Attention runs eager: on CPU torch's
counter does not see SDPA's kernel (see eeve.training.flops for the SDPA difference)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from eeve.model.load import load_base_model
from eeve.model.split import split_vocab
from eeve.training.flops import GFLOP, flops_per_position, module_flops_per_token, stage_flops_per_token
from eeve.training.module import EEVEModule

ROOT = Path(__file__).resolve().parents[1]
BASE, NEW = 32000, 1536
ALL = ["old_input", "new_input", "old_output", "new_output", "transformer"]


def compose(tmp_path: Path, *overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from eeve.config import register_configs, to_train_config

    register_configs()
    overrides = tuple(f"stage='{o[6:]}'" if o.startswith("stage=") else o for o in overrides)
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        c = hydra_compose(
            "config",
            overrides=[f"paths.root={ROOT}", f"paths.run_dir={tmp_path}", "data.seq_len=64", *overrides],
        )
    return to_train_config(c)


def split_model(cfg, new: int):
    model = load_base_model(cfg.model)
    model.resize_token_embeddings(BASE + new, mean_resizing=False)
    model.set_attn_implementation("eager")
    return split_vocab(model, BASE) if new else model


def measured(cfg, new: int = NEW, batch: int = 2) -> tuple[float, float, EEVEModule]:
    """(torch's count, the formula) for one training step of one micro batch of the stage in ``cfg``."""
    module = EEVEModule(cfg, cfg.stage, lambda: split_model(cfg, new), BASE, torch.ones(BASE + new), ["ko"], 1)
    module.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    module.configure_model()
    ids = torch.randint(0, BASE + new, (batch, cfg.data.seq_len), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        loss, _, _ = module.losses(ids)
        if loss.requires_grad:
            loss.backward()
    return counter.get_total_flops(), module_flops_per_token(module)["per_token"] * ids.numel(), module


STAGES = ["1", "2", "3", "4", "5", "6", "7", "6_lora", "7_lora"]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("layers", [2, pytest.param(12, marks=pytest.mark.slow)])
def test_stage_flops_match_torch_counter(tmp_path, stage, layers):
    """Every stage, on the debug model and on a deeper variant where the backbone outweighs the head (on the
    2-layer model the 32k-row head is most of the work: a wrong backbone term moves the total by < 10 %, so the
    check is 0.1 %, which both meet: the formula counts exactly the products torch counts)."""
    cfg = compose(tmp_path, f"stage={stage}", f"model.config.num_hidden_layers={layers}")
    counted, formula, _ = measured(cfg)
    assert abs(formula / counted - 1) < 0.10, (stage, counted, formula)
    assert abs(formula / counted - 1) < 0.001, (stage, counted, formula)  # measured: equal (the same products)


def test_full_and_no_expansion_shapes(tmp_path):
    """All groups trainable: the `full` recipe's shape (= stage 6's groups) with new rows, and `no_expansion`
    (the base vocabulary, no new rows: the plain HF model's own loss path)."""
    cfg = compose(tmp_path, "stage=6", "model.config.num_hidden_layers=12")
    assert sorted(cfg.stage.trainable) == sorted(ALL)
    counted, formula, _ = measured(cfg)
    assert abs(formula / counted - 1) < 0.001
    model = load_base_model(cfg.model)
    model.set_attn_implementation("eager")
    ids = torch.randint(0, BASE, (2, 63), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    fwd, bwd = flops_per_position(model.config, ALL, BASE, BASE, 63)
    assert abs((fwd + bwd) * ids.numel() / counter.get_total_flops() - 1) < 0.001


def test_the_check_can_fail(tmp_path):
    """A backward through the backbone in stage 2 (output rows only), or none in stage 1, would be far off
    torch's count on the deep variant: the 0.5 % check above tells the stages apart."""
    for stage, wrong_groups in (("2", ["new_output", "transformer"]), ("1", ["new_output"])):
        cfg = compose(tmp_path, f"stage={stage}", "model.config.num_hidden_layers=12")
        counted, _, module = measured(cfg)
        wrong = stage_flops_per_token(module.model.config, wrong_groups, BASE, BASE + NEW, 64)["per_token"] * 128
        assert abs(wrong / counted - 1) > 0.10, stage


def test_per_token_scales_to_the_stage_total():
    """train = tokens x per_token; a FLOP budget divides back into tokens; GFLOP is the TensorBoard step unit."""
    cfg = {
        "hidden_size": 64,
        "intermediate_size": 192,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "model_type": "llama",
    }
    per = stage_flops_per_token(cfg, ["transformer"], BASE, BASE + NEW, 128)
    fwd = stage_flops_per_token(cfg, [], BASE, BASE + NEW, 128)
    assert per["forward_per_token"] == fwd["per_token"] == fwd["forward_per_token"]
    assert 2 * per["forward_per_token"] < per["per_token"] < 3 * per["forward_per_token"]
    assert GFLOP == 10**9


def test_adapter_settings_in_any_form():
    """The integrator's budget code passes the stage's adapter as it has it: a name, or (name, settings)."""
    from omegaconf import OmegaConf

    from eeve.config import LoraSettings

    cfg = {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4}
    args = (cfg, ["transformer"], BASE, BASE + NEW, 128)
    plain = stage_flops_per_token(*args)["per_token"]
    forms = ["lora", ("lora", LoraSettings()), ("lora", {"rank": 16}), ("lora", OmegaConf.structured(LoraSettings))]
    values = {stage_flops_per_token(*args, adapter=a)["per_token"] for a in forms}
    assert len(values) == 1 and values.pop() > plain * 0.5
    assert stage_flops_per_token(*args, adapter=("lora", {"rank": 4}))["per_token"] != plain
    assert stage_flops_per_token(*args, adapter="none")["per_token"] == plain
