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

import lightning as L
from omegaconf import OmegaConf

from eeve.config import StageConfig, TrainConfig
from eeve.errors import ConfigError, StageError
from eeve.model.expand import read_expansion
from eeve.model.load import check_model_path
from eeve.training.checkpoint import AtomicCheckpoint, find_resume_checkpoint, is_loadable
from eeve.training.fingerprint import finished_stage, stage_fingerprint


def resolve(path: str | Path, root: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(root) / p


def stage_dir(cfg: TrainConfig, number: int) -> Path:
    return Path(cfg.paths.run_dir) / f"stage{number}"


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


def previous_stage(cfg: TrainConfig, number: int) -> int | None:
    """The number of the stage before ``number`` in the schedule (``cfg.stages``); None for the first stage."""
    from eeve.cli import stage_numbers

    numbers = stage_numbers(cfg.stages)
    earlier = [n for n in numbers[: numbers.index(number)]] if number in numbers else [n for n in numbers if n < number]
    return earlier[-1] if earlier else None


def stage_source(cfg: TrainConfig, number: int, check: bool = True) -> Path | None:
    """The exported model stage `number` starts from (None: the expanded base); checked to exist unless `check`
    is false."""
    prev = previous_stage(cfg, number)
    src = resolve(cfg.init_from, cfg.paths.root) if cfg.init_from else (None if prev is None else stage_dir(cfg, prev))
    if check and src is not None and not (src / "config.json").is_file():
        hint = f"run `python train.py stage={prev}` first (or stage=all)" if not cfg.init_from else "fix init_from"
        raise StageError(f"stage {number} starts from {src}, which holds no exported model: {hint}")
    return src


def build_stage_model(cfg: TrainConfig, number: int, tokenizer_dir: Path, expansion: dict):
    """The split HF model holding stage `number`'s starting weights (see module docstring)."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from eeve.model import equivalence
    from eeve.model.expand import expand_model
    from eeve.model.load import load_base_model, torch_dtype
    from eeve.model.split import split_vocab

    base_vocab = expansion["base_vocab_size"]
    src = stage_source(cfg, number)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # every rank builds the same weights
    base_tok = Tokenizer.from_file(str(tokenizer_dir / "base_tokenizer" / "tokenizer.json"))
    probe = equivalence.probe_ids(base_tok, base_vocab)
    if src is None:
        from eeve.model.init_data import init_inputs

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
    from eeve.data.datamodule import EEVEDataModule

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

    from eeve.training.progress import StageProgress

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


def run_stage(cfg: TrainConfig, number: int) -> dict:
    """Train stage `number` to its export folder and return its metrics (read back if it already finished)."""
    from eeve.eval.schedule import flops_before
    from eeve.eval.training_run import StageEvaluation
    from eeve.training.adapters import require_qlora
    from eeve.training.flops import FlopsLogger, flops_metrics
    from eeve.training.module import EEVEModule, group_fingerprints

    if cfg.stage.adapter == "qlora":
        require_qlora()  # this machine's side of the adapter settings (the config checked its own)
    check_model_path(cfg.model.name_or_path)  # the base: before any work (stage 0's evaluation loads it too)
    out = stage_dir(cfg, number)
    root = Path(cfg.paths.root)
    tok_dir = resolve(cfg.tokenizer.path, root)
    fingerprint = stage_fingerprint(cfg, number, tok_dir, stage_source(cfg, number, check=False))
    done = finished_stage(out, fingerprint, cfg.overwrite, number)  # raises if it was another run's
    if done is not None:
        print(f"stage {number}: already exported at {out} by this configuration; skipping (overwrite=true retrains it)")
        # evaluated again only if its evaluation is missing or stale (eeve.eval.training_run)
        return StageEvaluation(cfg, number, tok_dir).finish(out, done)
    expansion = read_expansion(tok_dir)
    stage_source(cfg, number)  # fail before any data work if the starting weights are missing
    stage = cfg.stage

    dm = stage_datamodule(cfg, number, tok_dir)
    ckpt_dir = Path(cfg.paths.run_dir) / "checkpoints" / f"stage{number}"
    # World size is only known from a trainer; build a throwaway one cheaply to read it.
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
    world = probe.world_size
    tokens_per_step = cfg.data.micro_batch_size * cfg.data.seq_len * world * cfg.trainer.accumulate_grad_batches
    max_steps = math.ceil(stage.max_tokens / tokens_per_step) if stage.max_tokens else stage.max_steps
    dm.configure_sampling(
        max_steps=max_steps, world_size=world, accumulate_grad_batches=cfg.trainer.accumulate_grad_batches
    )
    evaluation = StageEvaluation(cfg, number, tok_dir, world)  # the base (stage 0), once per run; see eeve.eval
    guard = None
    if stage.max_regression:  # English (or any language) may not fall behind the base by more than the limit
        from eeve.training.guard import base_validation_bpb, make_guard

        base_cache = resolve(cfg.paths.cache_dir, root) / "base_bpb.json"
        guard = make_guard(stage.max_regression, functools.partial(base_validation_bpb, cfg, dm, tok_dir, base_cache))
    trainer = make_trainer(
        cfg,
        number,
        max_steps,
        ckpt_dir,
        max_steps * cfg.trainer.accumulate_grad_batches,
        world,
        extra_callbacks=[guard] if guard else [],
    )
    if evaluation.enabled:
        trainer.callbacks.append(evaluation.callback(tokens_per_step, max_steps))
    trainer.callbacks.append(FlopsLogger(flops_before(cfg, number)))  # TensorBoard's FLOP axis

    module = EEVEModule(
        cfg,
        stage,
        lambda: build_stage_model(cfg, number, tok_dir, expansion),
        expansion["base_vocab_size"],
        dm.token_bytes,
        dm.val_names,
        tokens_per_step,
    )
    resume = None
    if cfg.resume == "auto":
        resume = find_resume_checkpoint(ckpt_dir)
    elif cfg.resume != "never":
        resume = resolve(cfg.resume, root)
        if not resume.exists():
            raise StageError(f"resume={cfg.resume} does not exist: give a checkpoint under {ckpt_dir} or resume=auto")
        ok, why = is_loadable(resume)
        if not ok:
            raise StageError(f"resume={cfg.resume} is unreadable ({why}): give another checkpoint or resume=auto")
    if trainer.is_global_zero:
        print(
            f"stage {number}: trains {stage.trainable}; {max_steps} steps x {tokens_per_step} tokens/step "
            f"= {max_steps * tokens_per_step:,} tokens; world size {world}"
            + (f"; resuming from {resume}" if resume else "")
        )

    t0 = time.time()
    if resume is None:
        trainer.validate(module, datamodule=dm, verbose=False)
        module.val_start = dict(module.last_val)
        if guard:
            guard.set_start(module, module.val_start)
    # weights_only: a checkpoint is data, never code (find_resume_checkpoint already refused any that is not)
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None, weights_only=True)
    if trainer.is_global_zero:
        print(
            f"stage {number}: trainable parameters {module.trainable_counts} (total {sum(module.trainable_counts.values()):,})"  # noqa: E501
        )
    if module.last_val_step != trainer.global_step:  # the last validation in fit may already be at the end
        if not (guard and guard.breach):
            trainer.validate(module, datamodule=dm, verbose=False)
            if guard:
                guard.check(trainer.global_step, module)
    if guard and guard.breach:
        guard.restore(module)
        module.last_val = guard.kept_val
        if not guard.kept_val:  # resumed, breached before a validation within the limit: validate what is exported
            trainer.validate(module, datamodule=dm, verbose=False)
        if trainer.is_global_zero:
            b = guard.breach
            print(
                f"stage {number}: {b['lang']} BPB {b['bpb']:.4f} at step {b['step']} is {b['vs_base']:+.2%} vs the "
                f"base (allowed {b['allowed']:.4f}): stopped; exporting step {guard.kept_step}"
            )
    start_fp, end_fp = module.start_fingerprints, group_fingerprints(module.model)
    metrics = {
        "stage": number,
        "recipe": cfg.recipe.name,
        "trainable": stage.trainable,
        "stage_config": dataclasses.asdict(stage),
        "steps": trainer.global_step,
        "tokens": trainer.global_step * tokens_per_step,
        "flops": flops_metrics(module, trainer.global_step * tokens_per_step),  # eeve.training.flops
        "text_bytes": dm.text_bytes(dm.sample_offset, dm.consumed_samples()),  # the training text's UTF-8 bytes
        "trainable_parameters": module.trainable_counts,
        "val_start": module.val_start,  # restored from the checkpoint on resume
        "val_end": dict(module.last_val),
        "groups_changed": sorted(g for g in end_fp if end_fp[g] != start_fp[g]),
        "wall_seconds": round(time.time() - t0, 1),
        "resumed_from": str(resume) if resume else None,
        "new_token_share": {"biased": dm.new_token_share(True), "unbiased": dm.new_token_share(False)},
    }
    metrics["fingerprint"] = fingerprint
    if guard:
        metrics["guard"] = guard.report()
    if getattr(module.model, "eeve_expansion", None) is not None:
        metrics["expansion"] = dataclasses.asdict(module.model.eeve_expansion)
    _export(trainer, module, cfg, tok_dir, out, metrics)
    # The export supersedes the stage's resume checkpoints (weights + optimizer state: ~3x the model on SOLAR).
    # Removing them also keeps `overwrite=true` from resuming the old run instead of starting over.
    if trainer.is_global_zero and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        print(f"stage {number}: exported to {out}; removed its resume checkpoints")
    trainer.strategy.barrier("eeve_ckpt_cleanup")
    metrics = evaluation.finish(out, metrics)  # the export on the same bytes as the base, samples, benchmarks
    if trainer.logger is not None and trainer.is_global_zero:
        hp = _flatten(OmegaConf.to_container(OmegaConf.structured(cfg)))
        trainer.logger.log_hyperparams(hp, {f"hparams/val_{k}_bpb": v["bpb"] for k, v in module.last_val.items()})
        trainer.logger.finalize("success")
    return metrics


def _export(trainer, module, cfg, tok_dir, out, metrics):
    from eeve.model.export import export_hf
    from eeve.training.adapters import prepare_export

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
            from eeve.model.delta import SafetensorsWeights, base_weights, delta_writer

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


def summary_table(results: list[dict], base: dict | None = None) -> str:
    """With evaluations (eeve.eval): the base (stage 0) and each stage on the same held-out bytes, changes against
    the base. Without: per stage, steps, tokens, Korean and English validation BPB (start -> end), groups changed."""
    if base is not None:
        from eeve.eval.table import eval_table

        return eval_table(results, base)
    rows = [
        "| stage | trained | steps | tokens | FLOPs (cumulative) | ko BPB | en BPB | groups changed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    flops = 0.0
    for m in results:
        flops = None if flops is None or not m.get("flops") else flops + m["flops"]["train"]

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
            f"{'–' if flops is None else format(flops, '.3g')} | {bpb('ko')} | "
            f"{bpb('en')} | {', '.join(m['groups_changed']) or 'none'} |"
        )
    return "\n".join(rows)
