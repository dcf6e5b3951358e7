"""English guard (stage.max_regression) against the base model on the same bytes, and per-group learning rates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from test_train import cache_dir, compose_cfg, export_state, grouped  # noqa: F401 (cache_dir: a fixture)

from eeve.training.guard import RegressionGuard, job_rank_zero, make_guard

FIRST2 = ["stages=['2']", "stage.max_steps=4", "trainer.val_every_n_steps=2"]  # stage 2 starts from the expanded base


def guarded(cfg, **limits):
    """The test config (compose_cfg turns the guard off) with the guard on: Hydra cannot merge a dict into the
    null that turned it off, so set it on the checked dataclass and check again."""
    cfg.stage.max_regression = dict(limits)
    cfg.validate()
    return cfg


def test_base_bpb_is_on_the_same_bytes(expanded_tokenizer, cache_dir, tmp_path):
    from eeve.data.datamodule import EEVEDataModule
    from eeve.tokenizer.info import TokenizerInfo
    from eeve.training.guard import base_rows, base_validation_bpb

    cfg = compose_cfg(tmp_path, expanded_tokenizer, cache_dir)
    dm = EEVEDataModule(cfg.data, expanded_tokenizer, cache_dir, base_dir=cfg.paths.root)
    dm.setup("validate")
    exp, base = TokenizerInfo(expanded_tokenizer), TokenizerInfo(expanded_tokenizer / "base_tokenizer")
    n = cfg.data.validation["en"].max_sequences
    # English has no new token: the base's rows are the validation rows themselves
    rows, _ = base_rows(dm, "en", base, exp, cfg.data.seq_len)
    assert np.array_equal(np.stack(rows[:n]), np.asarray(dm.val_sets["en"].tokens[:n], dtype=np.int64))
    # Korean: other tokens, the same text and bytes (a character cut by the last sequence's end aside)
    rows, _ = base_rows(dm, "ko", base, exp, cfg.data.seq_len)
    ko = np.asarray(dm.val_sets["ko"].tokens[:n], dtype=np.int64).reshape(-1)
    flat = np.concatenate(rows)
    assert flat.size > 1.5 * ko.size  # the base needs more tokens for the same Korean
    assert base.tok.decode(flat.tolist()) == exp.tok.decode(ko.tolist()).rstrip("\ufffd")
    assert 0 <= exp.token_bytes()[ko].sum() - base.token_bytes()[flat].sum() < 4
    res = base_validation_bpb(cfg, dm, expanded_tokenizer, tmp_path / "base_bpb.json")
    assert set(res) == {"ko", "en"} and all(0 < r["bpb"] < 20 for r in res.values())
    assert json.loads((tmp_path / "base_bpb.json").read_text())  # cached for the next stages

    # only text tokens are scored: the BOS/EOS packed between documents carry no bytes and are not predicted
    # (HF's own loss with those labels ignored gives the same bits per byte)
    from eeve.model.load import load_base_model
    from eeve.training.guard import score_rows

    x = torch.from_numpy(np.asarray(dm.val_sets["en"].tokens[:n], dtype=np.int64))
    tb = base.token_bytes()
    text = torch.from_numpy(tb[x.numpy()] > 0)
    assert 0 < int((~text[:, 1:]).sum()) < text[:, 1:].numel()  # the rows hold special tokens
    model = load_base_model(cfg.model, seed=cfg.seed)
    got = score_rows(model, list(x.numpy()), tb)
    with torch.no_grad():
        loss = model(input_ids=x, labels=x.masked_fill(~text, -100)).loss.item()
    ntext = int(text[:, 1:].sum())
    assert got["tokens"] == ntext
    assert got["bpb"] == pytest.approx(loss * ntext / np.log(2) / tb[x[:, 1:].numpy()].sum(), rel=1e-5)


def test_guard_stops_a_stage_and_exports_its_last_state_within_the_limit(expanded_tokenizer, cache_dir, tmp_path):
    from eeve.model.split import merge_vocab
    from eeve.training.stages import build_stage_model, read_expansion, run_stage, summary_table

    # a rate far too high for the new output rows: their logits blow up in English contexts too, and English
    # gets worse than where it started; a 0 % limit is breached at the first validation
    cfg = guarded(
        compose_cfg(
            tmp_path, expanded_tokenizer, cache_dir, "stage=2", *FIRST2, "stage.lr=1.0", "stage.lr_new_output=null"
        ),
        en=0.0,
    )
    start = merge_vocab(build_stage_model(cfg, 2, expanded_tokenizer, read_expansion(expanded_tokenizer))).state_dict()
    m = run_stage(cfg, 2)
    g = m["guard"]
    assert g["breached"] and g["breach"]["lang"] == "en" and g["breach"]["step"] == 2 and g["exported_step"] == 0
    assert g["breach"]["bpb"] > g["allowed_bpb"]["en"] >= g["base_bpb"]["en"]
    assert m["val_end"] == m["val_start"]  # the export is the state validated at step 0
    a, b = grouped({k: v.clone() for k, v in start.items()}), grouped(export_state(tmp_path / "stage2"))
    for group in a:  # new output rows trained until step 2, then were put back to step 0
        assert all(torch.equal(x, y) for x, y in zip(a[group], b[group])), group
    assert json.loads((tmp_path / "stage2" / "metrics.json").read_text())["guard"]["breached"]
    assert "guard: en" in summary_table([m]) and "exported step 0" in summary_table([m])


def test_guard_within_a_generous_limit_changes_nothing(expanded_tokenizer, cache_dir, tmp_path):
    from eeve.training.stages import run_stage

    cfg = guarded(compose_cfg(tmp_path, expanded_tokenizer, cache_dir, "stage=2", *FIRST2), en=5.0)
    m = run_stage(cfg, 2)
    assert not m["guard"]["breached"] and m["guard"]["exported_step"] == 4 == m["steps"]
    assert [c["step"] for c in m["guard"]["checks"]] == [2, 4]
    # validation (the training module's split model and fused loss) and the guard's scoring of a plain HF model
    # score the same text tokens: the expanded base that stage 2 started from gives the same English BPB in both
    from eeve.data.datamodule import EEVEDataModule
    from eeve.model.split import merge_vocab
    from eeve.tokenizer.info import TokenizerInfo
    from eeve.training.guard import score_rows
    from eeve.training.stages import build_stage_model, read_expansion

    start = merge_vocab(build_stage_model(cfg, 2, expanded_tokenizer, read_expansion(expanded_tokenizer)))
    dm = EEVEDataModule(cfg.data, expanded_tokenizer, cache_dir, base_dir=cfg.paths.root)
    dm.setup("validate")
    rows = np.asarray(dm.val_sets["en"].tokens[: cfg.data.validation["en"].max_sequences], dtype=np.int64)
    got = score_rows(start, list(rows), TokenizerInfo(expanded_tokenizer).token_bytes())
    assert got["bpb"] == pytest.approx(m["val_start"]["en"]["bpb"], rel=1e-5)
    assert got["tokens"] == m["val_start"]["en"]["tokens"] < rows[:, 1:].size  # BOS/EOS not scored
    assert "new_output" in m["groups_changed"]


def test_max_regression_names_a_validation_language(expanded_tokenizer, cache_dir, tmp_path):
    from eeve.errors import ConfigError

    with pytest.raises(ConfigError, match="not a validation language"):
        guarded(compose_cfg(tmp_path, expanded_tokenizer, tmp_path), fr=0.01)
    with pytest.raises(ConfigError, match="give a fraction"):
        guarded(compose_cfg(tmp_path, expanded_tokenizer, tmp_path), en=-1)
    # every stage guards English at 1 % by default (the schema's default; the stage files do not repeat it)
    from test_config_defaults import composed

    for n in range(1, 8):
        assert composed(f"stage={n}").stage.max_regression == {"en": 0.01}


def test_rate_groups_give_each_group_its_rate_and_decay():
    from test_param_groups import BASE, batch, loss_fn, snapshot, tiny_model

    from eeve.config import StageConfig
    from eeve.model.split import split_vocab
    from eeve.training.groups import group_parameters, set_trainable
    from eeve.training.module import rate_param_groups

    model = split_vocab(tiny_model(), BASE)
    set_trainable(model, ["old_input", "new_input", "old_output", "new_output", "transformer"])
    stage = StageConfig(
        lr=1e-3, lr_new=5e-2, lr_new_output=5e-3, lr_old=0.0, weight_decay=0.1, weight_decay_pretrained=0.0
    )
    groups = rate_param_groups(model, stage)
    assert {g["name"]: (g["lr"], g["weight_decay"]) for g in groups} == {
        "new": (5e-2, 0.1),
        "new_output": (5e-3, 0.1),
        "old": (0.0, 0.0),
        "transformer": (1e-3, 0.0),
    }
    opt = torch.optim.AdamW(groups)
    before = snapshot(model)
    for k in range(2):
        opt.zero_grad()
        loss_fn(model, batch(k)).backward()
        opt.step()
    by_id = {id(p): g for g, ps in group_parameters(model).items() for p in ps}
    for n, p in model.named_parameters():
        moved = not torch.equal(p, before[n])
        assert moved == (by_id[id(p)] != "old_input" and by_id[id(p)] != "old_output"), n


# ------------------------------------------------------------------------ the base BPB under two ranks
class _Idle(L.LightningModule):
    """The smallest module a Trainer validates: one parameter, two empty batches."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def validation_step(self, batch, batch_idx):
        return None

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(2, 1)), batch_size=1)


def _base_computed_by(folder: Path) -> dict:
    """Stands in for base_validation_bpb (which loads the whole base model): records the rank that called it."""
    (folder / f"computed-on-rank{os.environ['RANK']}").write_text("")
    return {"en": {"bpb": 1.5}}


class _SeenBase(L.Callback):
    def __init__(self, folder: Path):
        self.folder = folder

    def on_validation_end(self, trainer, pl_module):
        guard = next(c for c in trainer.callbacks if isinstance(c, RegressionGuard))
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps([guard.base, guard.allowed]))


def _launched_rank(rank: int, folder: Path, port: int) -> None:
    """One of two processes started as torchrun starts them: every rank runs the stage's code from the top."""
    import functools

    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank)}
        | {"LOCAL_RANK": str(rank), "NODE_RANK": "0"}
    )
    guard = make_guard({"en": 0.01}, functools.partial(_base_computed_by, folder))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        callbacks=[guard, _SeenBase(folder)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(_Idle(), verbose=False)


@pytest.mark.slow
def test_only_rank0_computes_the_base_and_every_rank_gets_it(tmp_path):
    """Two gloo ranks launched from outside (as torchrun does): the base model's BPB is computed (the base loaded,
    its cache written) on rank 0 alone, before the ranks connect, and every rank's guard holds rank 0's limits
    (each rank once loaded its own base and wrote the same cache file)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_launched_rank, args=(tmp_path, port), nprocs=2)
    assert sorted(p.name for p in tmp_path.glob("computed-*")) == ["computed-on-rank0"]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] == seen[1] == [{"en": 1.5}, {"en": pytest.approx(1.515)}]


def test_job_rank_zero_reads_the_launchers_environment(monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert job_rank_zero()  # the process that launches the others
    cases = [({"LOCAL_RANK": "1"}, False), ({"NODE_RANK": "1"}, False), ({"RANK": "3"}, False), ({"RANK": "0"}, True)]
    for env, zero in cases:
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            assert job_rank_zero() == zero, env
