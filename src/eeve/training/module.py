"""The LightningModule: one EEVE stage of training on a vocabulary-expanded causal LM.

Exact freezing is by construction: the embedding and head are split into old/new row blocks
(`eeve.model.split`), the stage's groups are the only tensors with requires_grad, and the optimizer is built
fresh for each stage from those tensors alone — so weight decay and Adam moments can never touch a frozen row.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import types

import lightning as L
import torch

from eeve.config import RATE_GROUPS, StageConfig, TrainConfig
from eeve.errors import NonFiniteLossError
from eeve.lr_schedule import warmup_cosine
from eeve.training.adapters import attach_adapter
from eeve.training.distributed import apply_activation_checkpointing, load_from_rank0, shard_model, skeleton_like
from eeve.training.groups import group_parameters, set_trainable

LN2 = math.log(2.0)


class EEVEModule(L.LightningModule):
    def __init__(
        self,
        cfg: TrainConfig,
        stage: StageConfig,
        build_model,
        base_vocab_size: int,
        token_bytes: torch.Tensor,
        val_names: list[str],
        tokens_per_step: int,
    ):
        """`build_model()` returns the split HF model holding this stage's starting weights (called in
        configure_model so that under FSDP every rank builds, then shards, its own copy)."""
        super().__init__()
        self.cfg, self.stage = cfg, stage
        self._build_model = build_model
        self.base_vocab_size = base_vocab_size
        self.register_buffer("token_bytes", token_bytes.long(), persistent=False)
        self.val_names = list(val_names)
        self.tokens_per_step = tokens_per_step  # micro batch x seq_len x data-parallel ranks x accumulation
        self.model = None
        self.trainable_counts: dict[str, int] = {}
        self.start_fingerprints: dict[str, tuple[float, float]] = {}
        # Stages that train neither input rows nor the transformer need no backward through the backbone.
        self.backbone_grad = any(g in stage.trainable for g in ("old_input", "new_input", "transformer"))
        self.last_val: dict[str, dict[str, float]] = {}
        self.last_val_step = -1  # global step of last_val
        self.val_start: dict[str, dict[str, float]] = {}  # the stage's validation before training (kept on resume)
        self._val_sums: dict[str, torch.Tensor] = {}
        self._t_last: float | None = None

    # ---- model -------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.model is not None:
            return
        fsdp = self.cfg.trainer.strategy == "fsdp"
        # The adapter (stage.adapter) goes in before set_trainable: injecting it freezes every other parameter.
        adapt = functools.partial(
            attach_adapter, stage=self.stage, seed=self.cfg.seed, device=self.trainer.strategy.root_device
        )
        if fsdp:  # only rank 0 holds the full starting weights; the others build an empty skeleton
            full = adapt(self._build_model()) if self.global_rank == 0 else None
            model = adapt(skeleton_like(full, self.base_vocab_size))
        else:
            model = adapt(self._build_model())
        self.trainable_counts = set_trainable(model, self.stage.trainable)
        model.config.use_cache = False
        model.train()  # from_pretrained returns eval mode; Lightning switches to eval for validation itself
        model.eeve_losses = types.MethodType(_eeve_losses, model)
        if fsdp:
            if self.cfg.model.activation_checkpointing:
                apply_activation_checkpointing(model)
            # Lightning's mesh is 2-D (data_parallel x tensor_parallel); sharding over the whole 2-D mesh would be
            # HSDP (replicated across data-parallel ranks). Pure FSDP shards over the data-parallel dimension.
            shard_model(model, self.device_mesh["data_parallel"], getattr(torch, self.cfg.trainer.param_dtype))
            load_from_rank0(model, full, self.device)
            del full
        elif self.cfg.model.activation_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.start_fingerprints = group_fingerprints(model)
        self.model = model

    def losses(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean next-token cross-entropy (for backward), per-token losses (nats, fp32, detached) and targets."""
        targets = input_ids[:, 1:]
        loss, per_token = self.model.eeve_losses(input_ids[:, :-1], targets, self.backbone_grad)
        return loss, per_token, targets

    # ---- training ----------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        loss, losses, targets = self.losses(batch["input_ids"])
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss.item()} at stage {self.stage.number} step {self.global_step}: lower stage.lr or check "
                "the data; the last good checkpoint is kept"
            )
        new = targets >= self.base_vocab_size
        log = dict(on_step=True, on_epoch=False, batch_size=targets.shape[0])
        self.log("train/loss", loss, prog_bar=True, **log)
        if self.global_step % self.cfg.trainer.log_every_n_steps == 0:
            with torch.no_grad():
                self.log("train/new_target_share", new.float().mean(), **log)
                if new.any():
                    self.log("train/loss_new_targets", losses[new].mean(), **log)
                if (~new).any():
                    self.log("train/loss_old_targets", losses[~new].mean(), **log)
        return loss

    def on_train_batch_start(self, batch, batch_idx):
        now = time.perf_counter()
        if self._t_last is not None and self.global_step > 0:
            self.log(
                "perf/tokens_per_s",
                self.tokens_per_step / max(now - self._t_last, 1e-9),
                on_step=True,
                on_epoch=False,
                batch_size=1,
            )
        self._t_last = now

    def on_train_start(self):
        for group, n in self.trainable_counts.items():
            if self.logger is not None:
                self.logger.log_metrics({f"params/trainable_{group}": n}, step=self.global_step)

    def on_before_optimizer_step(self, optimizer):
        """Gradient norm per group (logged) and clipping of the global norm. Under FSDP2 each rank sums the squares
        of its local gradient shards and one all-reduce gives every group's norm: no per-tensor gathers."""
        groups = {g: [p.grad for p in ps if p.grad is not None] for g, ps in group_parameters(self.model).items()}
        groups = {g: gs for g, gs in groups.items() if gs}
        if not groups:
            return
        sq = torch.stack([sum(_local(x).float().pow(2).sum() for x in gs) for gs in groups.values()])
        if any(hasattr(x, "to_local") for gs in groups.values() for x in gs):
            torch.distributed.all_reduce(sq)  # pure FSDP: shards partition every tensor across the world
        norms = sq.sqrt()
        if self.global_step % self.cfg.trainer.log_every_n_steps == 0:
            for g, n in zip(groups, norms):
                self.log(f"grad_norm/{g}", n, on_step=True, on_epoch=False, batch_size=1)
            self._log_row_norms()
        clip = self.cfg.trainer.gradient_clip
        if clip > 0:
            scale = torch.clamp(clip / (norms.norm() + 1e-6), max=1.0)
            for gs in groups.values():
                for x in gs:
                    _local(x).mul_(scale.to(x.dtype))

    @torch.no_grad()
    def _log_row_norms(self):
        """Mean L2 norm of old vs new embedding and head rows: new rows drifting far from old ones shows here."""
        emb, head = self.model.model.embed_tokens, self.model.lm_head
        for name, mod in (
            ("input_old", emb.old),
            ("input_new", emb.new),
            ("output_old", head.old),
            ("output_new", head.new),
        ):
            self.log(
                f"row_norm/{name}",
                _full(mod.weight.float().norm(dim=1).mean()),
                on_step=True,
                on_epoch=False,
                batch_size=1,
            )

    def configure_optimizers(self):
        s = self.stage
        opt = torch.optim.AdamW(rate_param_groups(self.model, s), lr=s.lr, betas=tuple(s.betas), eps=s.eps)
        total = max(1, self.trainer.max_steps)
        factor = functools.partial(
            warmup_cosine, total_steps=total, warmup_steps=s.warmup_steps, min_ratio=s.min_lr_ratio
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["eeve_val_start"] = self.val_start

    def on_load_checkpoint(self, checkpoint):
        """Resuming keeps the schedule's position but uses the stage.lr configured now (e.g. lowered after a
        non-finite loss); the restored optimizer and scheduler would otherwise bring back the old peak lr."""
        self.val_start = dict(checkpoint.get("eeve_val_start") or {})
        peak = {name: lr for name, (lr, _) in self.stage.rate_groups().items()}
        for st in checkpoint.get("optimizer_states", []):
            groups = st.get("param_groups", [])
            for g in groups:
                want = peak.get(g.get("name"), self.stage.lr)
                if g.get("initial_lr"):
                    g["lr"], g["initial_lr"] = g["lr"] * (want / g["initial_lr"]), want
            for sched in checkpoint.get("lr_schedulers", []):
                sched["base_lrs"] = [peak.get(g.get("name"), self.stage.lr) for g in groups]

    # ---- validation: loss and bits per byte per language ------------------------------------------------
    def on_validation_epoch_start(self):
        self._val_sums = {n: torch.zeros(3, dtype=torch.float64, device=self.device) for n in self.val_names}

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        _, losses, targets = self.losses(batch["input_ids"])
        name = self.val_names[dataloader_idx]
        nbytes = self.token_bytes[targets]
        text = nbytes > 0  # BOS, EOS and other special tokens carry no text: not scored (eeve.training.guard)
        self._val_sums[name] += torch.stack([losses[text].double().sum(), nbytes.double().sum(), text.sum().double()])

    def on_validation_epoch_end(self):
        for name, sums in self._val_sums.items():
            nats, nbytes, ntok = self.trainer.strategy.reduce(sums, reduce_op="sum").tolist()
            if ntok == 0:
                continue
            res = {"loss": nats / ntok, "bpb": nats / LN2 / max(nbytes, 1.0), "tokens": ntok}
            self.last_val[name] = res
            self.last_val_step = self.global_step
            self.log(f"val_{name}/loss", res["loss"], sync_dist=False, batch_size=1)
            self.log(f"val_{name}/bpb", res["bpb"], sync_dist=False, batch_size=1)


def _eeve_losses(model, inputs: torch.Tensor, targets: torch.Tensor, backbone_grad: bool):
    """Bound onto the HF model as a forward method: the backbone, then the split head's fused, chunked
    cross-entropy -> (mean loss, per-token losses). Without gradients through the backbone (stages 2 and 4) the
    backbone runs without autograd: no activations kept, no backward through it."""
    with contextlib.nullcontext() if backbone_grad and torch.is_grad_enabled() else torch.no_grad():
        hidden = model.model(input_ids=inputs, use_cache=False).last_hidden_state
    return model.lm_head(hidden, targets)


def rate_param_groups(model, stage: StageConfig) -> list[dict]:
    """One AdamW param group per rate group (new rows, old rows, transformer) holding trainable tensors, each with
    its peak lr and weight decay from the stage (``stage.lr_new`` ... default ``stage.lr``)."""
    settings = stage.rate_groups()
    out: dict[str, dict] = {}
    for group, params in group_parameters(model).items():
        params = [p for p in params if p.requires_grad]
        if params:
            name = RATE_GROUPS[group]
            lr, wd = settings[name]
            out.setdefault(name, {"name": name, "params": [], "lr": lr, "weight_decay": wd})["params"] += params
    return list(out.values())


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (FSDP2); plain tensors pass through."""
    return t.to_local() if hasattr(t, "to_local") else t


def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP2) reduced to a plain tensor; plain tensors pass through."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def group_fingerprints(model) -> dict[str, tuple[float, float]]:
    """(sum, sum of squares) per parameter group, in float64: cheap evidence of which groups a stage changed."""
    out = {}
    with torch.no_grad():
        for g, ps in group_parameters(model).items():
            full = [_full(p.detach()) for p in ps]  # whole tensors: shard-wise sums would round differently
            s = sum(t.double().sum().item() for t in full)
            q = sum(t.double().pow(2).sum().item() for t in full)
            out[g] = (s, q)
    return out
