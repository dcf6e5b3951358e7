"""Running one EEVE stage: where its weights come from, resuming it, training, exporting it.

"Initialise from" and "resume" are different things, kept apart:
  - initialise: stage N starts from stage N-1's *export* (weights only; stage 1 from the expanded base), with a
    fresh optimizer, so no Adam moments leak from rows a previous stage trained;
  - resume: an interrupted stage N continues from its own newest good *checkpoint* (weights, optimizer,
    scheduler, data position), without repeating finished steps.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import shutil
import time
from pathlib import Path
from typing import Callable, Protocol

import lightning as L
from omegaconf import OmegaConf

from eeve.config import StageConfig, TrainConfig
from eeve.data.datamodule import EEVEDataModule
from eeve.errors import ConfigError, StageError
from eeve.layout import flops_spent, resolve, stage_dir, stage_source
from eeve.model import equivalence
from eeve.model.delta import SafetensorsWeights, base_weights, delta_writer
from eeve.model.expand import expand_model, read_expansion
from eeve.model.export import export_hf
from eeve.model.init_data import init_inputs
from eeve.model.load import check_model_path, load_base_model, torch_dtype
from eeve.model.split import split_vocab
from eeve.training.adapters import prepare_export, require_qlora
from eeve.training.checkpoint import AtomicCheckpoint, find_resume_checkpoint, is_loadable
from eeve.training.fingerprint import finished_stage, stage_fingerprint
from eeve.training.flops import FlopsLogger, flops_before, flops_metrics
from eeve.training.guard import RegressionGuard, base_validation_bpb, make_guard
from eeve.training.module import EEVEModule, group_fingerprints
from eeve.training.progress import StageProgress


def apply_schedule(
    stage: StageConfig, name: str, schedule: dict, overrides: list[str], recipe_stage: dict | None = None
) -> StageConfig:
    """The stage as composed from conf/stage/<name>.yaml, then the recipe's overrides for every stage
    (``recipe.stage``), then the config's ``schedule`` entry for it (by name, else by number), then the command
    line's ``stage.*`` overrides again (they win)."""
    entry = schedule.get(name) or schedule.get(str(stage.number)) or {}
    if not entry and not recipe_stage:
        return stage
    try:
        node = OmegaConf.merge(
            OmegaConf.structured(stage),
            recipe_stage or {},
            entry,
            OmegaConf.from_dotlist([o.removeprefix("stage.") for o in overrides]),
        )
    except Exception as e:
        raise ConfigError(
            f"schedule[{name!r}]: {str(e).splitlines()[0]} (check its keys against conf/stage/)"
        ) from None
    return OmegaConf.to_object(node)


def build_stage_model(cfg: TrainConfig, number: int, tokenizer_dir: Path, expansion: dict):
    """The split HF model holding stage `number`'s starting weights (see module docstring)."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    base_vocab = expansion["base_vocab_size"]
    src = stage_source(cfg, number)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # every rank builds the same weights
    base_tok = Tokenizer.from_file(str(tokenizer_dir / "base_tokenizer" / "tokenizer.json"))
    probe = equivalence.probe_ids(base_tok, base_vocab)
    if src is None:
        model = load_base_model(cfg.model)
        ref = equivalence.reference(model, probe, base_vocab)  # the base itself, before expansion
        model = expand_model(
            model,
            base_tok,
            expansion["new_tokens"],
            base_vocab,
            cfg.init,
            cfg.seed,
            vocab_size=expansion["vocab_size"],
            untie=cfg.model.untie_embeddings,
            **init_inputs(cfg, tokenizer_dir, expansion),
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=torch_dtype(cfg.model.dtype), trust_remote_code=cfg.model.trust_remote_code
        )
        if model.get_input_embeddings().weight.shape[0] != expansion["vocab_size"]:
            raise StageError(
                f"{src} has {model.get_input_embeddings().weight.shape[0]} embedding rows but the tokenizer "
                f"has {expansion['vocab_size']}: use the tokenizer the previous stage was trained with"
            )
        ref = equivalence.reference(model, probe, base_vocab)
    split_vocab(model, base_vocab)
    equivalence.check(model, ref, f"stage {number}")  # the model being trained computes what its source computes
    return model


def stage_datamodule(cfg: TrainConfig, number: int, tok_dir: Path):
    """Stage ``number``'s data. Each stage draws its own sample stream, deterministic for reruns and resumes, from
    the seed ``seed + data.seed + number``: ``data.seed`` picks another stream with the rest of the run unchanged
    (at ``data.seed=0`` the streams are the ones runs drew before it was honoured)."""
    root = Path(cfg.paths.root)
    seed = cfg.seed + cfg.data.seed + number
    return EEVEDataModule(cfg.data, tok_dir, resolve(cfg.paths.cache_dir, root), base_dir=root, seed=seed)


def make_trainer(
    cfg: TrainConfig,
    number: int,
    max_steps: int,
    ckpt_dir: Path,
    batches_per_epoch: int,
    world: int,
    extra_callbacks: list | None = None,
) -> L.Trainer:
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import TensorBoardLogger

    t = cfg.trainer
    if t.strategy == "fsdp":
        from lightning.pytorch.strategies import ModelParallelStrategy

        strategy = ModelParallelStrategy(data_parallel_size=world, tensor_parallel_size=1)  # pure FSDP
    elif t.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy()
    else:
        strategy = "auto"
    val_every = t.val_every_n_steps * t.accumulate_grad_batches
    logger = TensorBoardLogger(
        save_dir=cfg.paths.run_dir, name="tensorboard", version=f"stage{number}", default_hp_metric=False
    )
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=t.precision,
        max_steps=max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches,
        logger=logger,
        log_every_n_steps=t.log_every_n_steps,
        enable_checkpointing=False,
        callbacks=[
            AtomicCheckpoint(ckpt_dir, t.checkpoint_every_n_steps, t.keep_checkpoints),
            LearningRateMonitor(logging_interval="step"),
            StageProgress(number, t.log_every_n_steps),
            *(extra_callbacks or []),
        ],
        val_check_interval=min(val_every, batches_per_epoch) if val_every > 0 else None,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        deterministic=t.deterministic,
        enable_model_summary=False,
        enable_progress_bar=False,
    )


class Evaluation(Protocol):
    """What ``run_stage`` asks of a stage's evaluation (train.py hands it eeve.eval.training_run.StageEvaluation)."""

    def callback(self, tokens_per_step: int, max_steps: int) -> L.Callback | None:
        """A callback for the stage's trainer (None: none)."""

    def finish(self, out: Path, metrics: dict) -> dict:
        """The stage's metrics with the evaluation of its export in ``out`` added."""


EvaluationHook = Callable[[TrainConfig, int, Path, int], Evaluation]
"""(config, stage number, tokenizer folder, world size) -> the stage's evaluation; made once the world size is
known (it may evaluate the base model right away)."""


class NoEvaluation:
    """The hook that evaluates nothing: ``run_stage``'s default."""

    def __init__(self, cfg: TrainConfig, number: int, tokenizer_dir: Path, world_size: int = 1):
        pass

    def callback(self, tokens_per_step: int, max_steps: int) -> None:
        return None

    def finish(self, out: Path, metrics: dict) -> dict:
        return metrics


@dataclasses.dataclass
class StageRun:
    """What the steps of one stage share."""

    cfg: TrainConfig
    number: int
    tok_dir: Path
    fingerprint: dict
    out: Path
    ckpt_dir: Path
    dm: EEVEDataModule | None = None
    world: int = 1
    tokens_per_step: int = 0
    max_steps: int = 0
    guard: RegressionGuard | None = None
    trainer: L.Trainer | None = None
    module: EEVEModule | None = None
    resume: Path | None = None
    t0: float = 0.0


def run_stage(cfg: TrainConfig, number: int, evaluation: EvaluationHook = NoEvaluation) -> dict:
    """Train stage `number` to its export folder and return its metrics (read back if it already finished).
    ``evaluation`` evaluates the stage (train.py: eeve.eval.training_run.StageEvaluation); default: nothing."""
    check_machine(cfg)
    run = start(cfg, number)
    done = finished_stage(run.out, run.fingerprint, cfg.overwrite, number)  # raises if it was another run's
    if done is not None:
        again = "overwrite=true retrains it"
        print(f"stage {number}: already exported at {run.out} by this configuration; skipping ({again})")
        # evaluated again only if its evaluation is missing or stale (eeve.eval.training_run)
        return evaluation(cfg, number, run.tok_dir, 1).finish(run.out, done)
    expansion = read_expansion(run.tok_dir)
    stage_source(cfg, number)  # fail before any data work if the starting weights are missing
    setup_data(run)
    stage_eval = evaluation(cfg, number, run.tok_dir, run.world)  # the base (stage 0), once per run; see eeve.eval
    run.guard = install_guard(run)
    run.trainer = stage_trainer(run, stage_eval.callback(run.tokens_per_step, run.max_steps))
    run.module = stage_module(run, expansion)
    run.resume = resume_checkpoint(cfg, run.ckpt_dir)
    announce(run)
    fit(run)
    restore_within_guard(run)
    metrics = collect_metrics(run)
    _export(run.trainer, run.module, cfg, run.tok_dir, run.out, metrics)  # rank 0 writes, every rank waits
    remove_checkpoints(run)
    metrics = stage_eval.finish(run.out, metrics)  # the export on the same bytes as the base, samples, benchmarks
    log_hyperparameters(run)
    return metrics


def check_machine(cfg: TrainConfig) -> None:
    """What must hold before any work: this machine can run the stage's adapter (the config checked its own
    settings), and the base model is there (stage 0's evaluation loads it too)."""
    if cfg.stage.adapter == "qlora":
        require_qlora()
    check_model_path(cfg.model.name_or_path)


def start(cfg: TrainConfig, number: int) -> StageRun:
    """The stage's folders and the fingerprint of what it would train."""
    tok_dir = resolve(cfg.tokenizer.path, cfg.paths.root)
    return StageRun(
        cfg,
        number,
        tok_dir,
        stage_fingerprint(cfg, number, tok_dir, stage_source(cfg, number, check=False)),
        stage_dir(cfg, number),
        Path(cfg.paths.run_dir) / "checkpoints" / f"stage{number}",
    )


def setup_data(run: StageRun) -> None:
    """The data module, the world size and the stage's steps and tokens per step."""
    cfg = run.cfg
    run.dm = stage_datamodule(cfg, run.number, run.tok_dir)
    run.world = world_size(cfg)
    acc = cfg.trainer.accumulate_grad_batches
    run.tokens_per_step = cfg.data.micro_batch_size * cfg.data.seq_len * run.world * acc
    stage = cfg.stage
    run.max_steps = math.ceil(stage.max_tokens / run.tokens_per_step) if stage.max_tokens else stage.max_steps
    run.dm.configure_sampling(max_steps=run.max_steps, world_size=run.world, accumulate_grad_batches=acc)


def world_size(cfg: TrainConfig) -> int:
    """World size is only known from a trainer; build a throwaway one cheaply to read it."""
    probe = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy="ddp" if cfg.trainer.strategy != "single" else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return probe.world_size


def install_guard(run: StageRun) -> RegressionGuard | None:
    """English (or any language) may not fall behind the base by more than ``stage.max_regression``."""
    cfg = run.cfg
    if not cfg.stage.max_regression:
        return None
    cache = resolve(cfg.paths.cache_dir, cfg.paths.root) / "base_bpb.json"
    return make_guard(cfg.stage.max_regression, functools.partial(base_validation_bpb, cfg, run.dm, run.tok_dir, cache))


def stage_trainer(run: StageRun, eval_callback: L.Callback | None) -> L.Trainer:
    """The stage's trainer; callbacks: the guard, the evaluation's, and the FLOP axis (eeve.training.flops)."""
    flops = FlopsLogger(flops_before(run.cfg, run.number))
    extra = [c for c in (run.guard, eval_callback, flops) if c is not None]
    batches = run.max_steps * run.cfg.trainer.accumulate_grad_batches
    return make_trainer(run.cfg, run.number, run.max_steps, run.ckpt_dir, batches, run.world, extra_callbacks=extra)


def stage_module(run: StageRun, expansion: dict) -> EEVEModule:
    """The LightningModule; it builds the stage's starting model itself (see EEVEModule.configure_model)."""
    cfg = run.cfg
    return EEVEModule(
        cfg,
        cfg.stage,
        lambda: build_stage_model(cfg, run.number, run.tok_dir, expansion),
        expansion["base_vocab_size"],
        run.dm.token_bytes,
        run.dm.val_names,
        run.tokens_per_step,
    )


def resume_checkpoint(cfg: TrainConfig, ckpt_dir: Path) -> Path | None:
    """The checkpoint the stage resumes from (``resume``: auto, never or a path); None: it starts fresh."""
    if cfg.resume == "auto":
        return find_resume_checkpoint(ckpt_dir)
    if cfg.resume == "never":
        return None
    resume = resolve(cfg.resume, cfg.paths.root)
    if not resume.exists():
        raise StageError(f"resume={cfg.resume} does not exist: give a checkpoint under {ckpt_dir} or resume=auto")
    ok, why = is_loadable(resume)
    if not ok:
        raise StageError(f"resume={cfg.resume} is unreadable ({why}): give another checkpoint or resume=auto")
    return resume


def announce(run: StageRun) -> None:
    if run.trainer.is_global_zero:
        print(
            f"stage {run.number}: trains {run.cfg.stage.trainable}; {run.max_steps} steps x {run.tokens_per_step} "
            f"tokens/step = {run.max_steps * run.tokens_per_step:,} tokens; world size {run.world}"
            + (f"; resuming from {run.resume}" if run.resume else "")
        )


def fit(run: StageRun) -> None:
    """Validate the starting weights (unless resuming), then train."""
    trainer, module, guard = run.trainer, run.module, run.guard
    run.t0 = time.time()
    if run.resume is None:
        trainer.validate(module, datamodule=run.dm, verbose=False)
        module.val_start = dict(module.last_val)
        if guard:
            guard.set_start(module, module.val_start)
    # weights_only: a checkpoint is data, never code (find_resume_checkpoint already refused any that is not)
    trainer.fit(module, datamodule=run.dm, ckpt_path=str(run.resume) if run.resume else None, weights_only=True)
    if trainer.is_global_zero:
        counts = module.trainable_counts
        print(f"stage {run.number}: trainable parameters {counts} (total {sum(counts.values()):,})")


def restore_within_guard(run: StageRun) -> None:
    """Validate the end weights (unless fit's last validation was at the end); after a guard breach, go back to
    the last validated weights within the limit."""
    trainer, module, guard = run.trainer, run.module, run.guard
    if module.last_val_step != trainer.global_step:  # the last validation in fit may already be at the end
        if not (guard and guard.breach):
            trainer.validate(module, datamodule=run.dm, verbose=False)
            if guard:
                guard.check(trainer.global_step, module)
    if not (guard and guard.breach):
        return
    guard.restore(module)
    module.last_val = guard.kept_val
    if not guard.kept_val:  # resumed, breached before a validation within the limit: validate what is exported
        trainer.validate(module, datamodule=run.dm, verbose=False)
    if trainer.is_global_zero:
        b = guard.breach
        print(
            f"stage {run.number}: {b['lang']} BPB {b['bpb']:.4f} at step {b['step']} is {b['vs_base']:+.2%} vs the "
            f"base (allowed {b['allowed']:.4f}): stopped; exporting step {guard.kept_step}"
        )


def collect_metrics(run: StageRun) -> dict:
    """What the stage's metrics.json records."""
    trainer, module, stage, dm = run.trainer, run.module, run.cfg.stage, run.dm
    tokens = trainer.global_step * run.tokens_per_step
    start_fp, end_fp = module.start_fingerprints, group_fingerprints(module.model)
    metrics = {
        "stage": run.number,
        "recipe": run.cfg.recipe.name,
        "trainable": stage.trainable,
        "stage_config": dataclasses.asdict(stage),
        "steps": trainer.global_step,
        "tokens": tokens,
        "flops": flops_metrics(module, tokens),  # eeve.training.flops
        "text_bytes": dm.text_bytes(dm.sample_offset, dm.consumed_samples()),  # the training text's UTF-8 bytes
        "trainable_parameters": module.trainable_counts,
        "val_start": module.val_start,  # restored from the checkpoint on resume
        "val_end": dict(module.last_val),
        "groups_changed": sorted(g for g in end_fp if end_fp[g] != start_fp[g]),
        "wall_seconds": round(time.time() - run.t0, 1),
        "resumed_from": str(run.resume) if run.resume else None,
        "new_token_share": {"biased": dm.new_token_share(True), "unbiased": dm.new_token_share(False)},
    }
    metrics["fingerprint"] = run.fingerprint
    if run.guard:
        metrics["guard"] = run.guard.report()
    if getattr(module.model, "eeve_expansion", None) is not None:
        metrics["expansion"] = dataclasses.asdict(module.model.eeve_expansion)
    return metrics


def remove_checkpoints(run: StageRun) -> None:
    """The export supersedes the stage's resume checkpoints (weights + optimizer state: ~3x the model on SOLAR).
    Removing them also keeps `overwrite=true` from resuming the old run instead of starting over."""
    if run.trainer.is_global_zero and run.ckpt_dir.exists():
        shutil.rmtree(run.ckpt_dir, ignore_errors=True)
        print(f"stage {run.number}: exported to {run.out}; removed its resume checkpoints")
    run.trainer.strategy.barrier("eeve_ckpt_cleanup")


def log_hyperparameters(run: StageRun) -> None:
    trainer = run.trainer
    if trainer.logger is not None and trainer.is_global_zero:
        hp = _flatten(OmegaConf.to_container(OmegaConf.structured(run.cfg)))
        metrics = {f"hparams/val_{k}_bpb": v["bpb"] for k, v in run.module.last_val.items()}
        trainer.logger.log_hyperparams(hp, metrics)
        trainer.logger.finalize("success")


def _export(trainer, module, cfg, tok_dir, out, metrics):
    sd = None  # None: export_hf reads the (unsharded) model itself
    if cfg.trainer.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(module.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        sd = {k.replace("._checkpoint_wrapped_module", ""): v for k, v in sd.items()}
    if trainer.is_global_zero:
        source = stage_source(cfg, cfg.stage.number)
        # Adapter stages export the merged model (+ the PEFT folder with export.adapter=true); see adapters.py.
        sd, extras = prepare_export(module.model, sd, cfg.stage, cfg.export.adapter, source and str(source))
        if cfg.export.delta:
            start = SafetensorsWeights(source) if source else base_weights(cfg.model)
            origin = str(source) if source else cfg.model.name_or_path
            extras.append(
                delta_writer(
                    start, {"stage": cfg.stage.number, "source": origin, "base_vocab_size": module.base_vocab_size}
                )
            )
        export_hf(module.model, sd, tok_dir, out, metrics, extras=extras)
    trainer.strategy.barrier("eeve_export")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def summary_table(results: list[dict]) -> str:
    """Per stage: steps, tokens, cumulative FLOPs, each validation language's BPB (start -> end), groups changed
    (with evaluations, train.py prints eeve.eval.table's table instead)."""
    langs = list(dict.fromkeys(lang for m in results for lang in (*m.get("val_start", {}), *m.get("val_end", {}))))
    head = ["stage", "trained", "steps", "tokens", "FLOPs (cumulative)", *(f"{lang} BPB" for lang in langs)]
    rows = ["| " + " | ".join([*head, "groups changed"]) + " |", "|" + "---|" * (len(head) + 1)]
    flops = 0.0
    for m in results:
        spent = flops_spent(m)
        flops = None if flops is None or spent is None else flops + spent

        def bpb(lang):
            s, e = m["val_start"].get(lang, {}).get("bpb"), m["val_end"].get(lang, {}).get("bpb")
            return (f"{s:.3f} → " if s is not None else "") + (f"{e:.3f}" if e is not None else "–")

        g = m.get("guard") or {}
        steps = f"{m['steps']}" + (
            f" (guard: {g['breach']['lang']} {g['breach']['vs_base']:+.1%} vs base at step "
            f"{g['breach']['step']}; exported step {g['exported_step']})"
            if g.get("breached")
            else ""
        )
        rows.append(
            f"| {m['stage']} | {'+'.join(m['trainable'])} | {steps} | {m['tokens']:,} | "
            f"{'–' if flops is None else format(flops, '.3g')} | {' | '.join(bpb(lang) for lang in langs)} | "
            f"{', '.join(m['groups_changed']) or 'none'} |"
        )
    return "\n".join(rows)
