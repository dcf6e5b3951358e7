"""The regression guard: a stage may not make a language (English) worse than the BASE model by more than a limit.

``stage.max_regression={en: 0.01}``: at every validation of the stage, each named language's BPB is compared with
the base model's BPB on the same held-out bytes (:func:`base_validation_bpb`: the validation sequences decoded
back to text, re-encoded with the base tokenizer, scored by the unexpanded base model; cached per run). Only
text tokens are scored, here and in validation: predicting the BOS and EOS that packing puts between documents
carries no text, costs a model that never saw them packed (Gemma-3: 23 % of the base's English BPB on short
documents) and is learnt in a few steps, which would pass for an English gain and hide a real loss. The limit
is ``base × (1 + limit)``, or the stage's starting BPB when that is already higher (a stage must not make things
worse, and a start above the limit must not forbid training). While within the limit the guard keeps a copy of
the trainable tensors (the only ones that change; under FSDP each rank keeps its own shards, on the CPU); on a
breach the stage stops, those tensors are put back, and the export is the last validated state within the limit.
``metrics.json`` records it under ``guard``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import torch

from eeve.io import atomic_write
from eeve.model.expand import check_base_vocab
from eeve.model.load import load_base_model
from eeve.tokenizer.info import tokenizer_info

LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------- base BPB
def base_rows(dm, name: str, base_info, exp_info, seq_len: int) -> tuple[np.ndarray, int]:
    """The validation set ``name``'s sequences (all ranks' rows) re-tokenized for the base: the stream decoded
    run by run between special tokens (kept as they are: the expansion appends, so their ids are the base's),
    each run re-encoded with the base tokenizer, packed into ``seq_len`` rows like the training data, the last
    one shorter (so every byte is scored). Returns (rows, bytes the expanded model's validation scores)."""
    packed = dm.val_sets[name]
    n = min(packed.n, int(dm.cfg.validation[name].max_sequences))
    stream = np.asarray(packed.tokens[:n], dtype=np.int64)
    exp_bytes = exp_info.token_bytes()
    scored_bytes = int(exp_bytes[stream[:, 1:]].sum())
    special = {t["id"] for t in exp_info.spec.get("added_tokens", []) if t.get("special")}
    flat = stream.reshape(-1).tolist()
    out, run = [], []

    def flush():
        if run:
            text = exp_info.tok.decode(run, skip_special_tokens=False).rstrip("\ufffd")  # a character cut at the end
            out.extend(base_info.tok.encode(text, add_special_tokens=False).ids)
            run.clear()

    for t in flat:
        if t in special:
            flush()
            out.append(t)
        else:
            run.append(t)
    flush()
    out = np.asarray(out, dtype=np.int64)
    return [out[a : a + seq_len] for a in range(0, len(out) - 1, seq_len)], scored_bytes


@torch.no_grad()
def score_rows(model, rows: list[np.ndarray], token_bytes: np.ndarray, batch: int = 1) -> dict:
    """Bits per byte of a plain HF causal LM on packed rows (predicting tokens 1.. of each row, as validation; a
    target without text bytes, i.e. BOS, EOS or another special token, is not scored)."""
    model.eval()
    dev = next(model.parameters()).device
    nats, nbytes, ntok = 0.0, 0, 0
    full = [r for r in rows if len(r) == len(rows[0])]
    groups = [full[a : a + batch] for a in range(0, len(full), batch)] + [[r] for r in rows[len(full) :]]
    for group in groups:  # the shorter last row on its own
        x = torch.from_numpy(np.stack(group)).to(dev)
        logp = model(input_ids=x, use_cache=False).logits[:, :-1].float().log_softmax(-1)
        tgt = x[:, 1:]
        tb = torch.from_numpy(token_bytes[tgt.cpu().numpy()]).to(dev)
        nats += float(-logp.gather(-1, tgt[..., None])[..., 0][tb > 0].sum())
        nbytes += int(tb.sum())
        ntok += int((tb > 0).sum())
    return {"bpb": nats / LN2 / max(nbytes, 1), "bytes": nbytes, "tokens": ntok}


def base_validation_bpb(cfg, dm, tokenizer_dir: Path, cache_file: Path | None = None) -> dict[str, dict]:
    """The base model's BPB on the bytes of each validation set (see :func:`base_rows`), cached in
    ``cache_file`` under a key of the base model, the tokenizer, the validation caches and their sizes. Loads the
    whole base model: under DDP/FSDP only global rank 0 calls it (:func:`make_guard`)."""
    exp_info = tokenizer_info(tokenizer_dir)
    base_info = tokenizer_info(Path(tokenizer_dir) / "base_tokenizer")
    dm.setup("validate")
    weights = (
        sorted(
            (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in Path(cfg.model.name_or_path).glob("*.safetensors")
        )
        if cfg.model.name_or_path and Path(cfg.model.name_or_path).is_dir()
        else None
    )
    key_src = json.dumps(
        {
            "model": cfg.model.name_or_path or cfg.model.config,
            "weights": weights,
            "dtype": cfg.model.dtype,
            "tok": exp_info.hash,
            "seed": cfg.seed,
            "val": {n: [str(dm.val_sets[n].path.name), int(v.max_sequences)] for n, v in dm.cfg.validation.items()},
            "seq_len": dm.cfg.seq_len,
            "scored": "text tokens",  # since BOS/EOS targets stopped counting: older cached figures are not reused
        },
        sort_keys=True,
        default=str,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    cached = json.loads(cache_file.read_text()) if cache_file is not None and cache_file.is_file() else {}
    if key in cached:
        return cached[key]
    model = load_base_model(cfg.model, seed=cfg.seed)
    check_base_vocab(model, base_info.vocab_size)
    tb = base_info.token_bytes()
    out = {}
    for name in dm.val_names:
        rows, exp_scored = base_rows(dm, name, base_info, exp_info, dm.cfg.seq_len)
        out[name] = {
            **score_rows(model, rows, tb, batch=max(1, dm.cfg.micro_batch_size)),
            "expanded_scored_bytes": exp_scored,
        }
    del model
    if cache_file is not None:
        cached[key] = out
        atomic_write(cache_file, json.dumps(cached, indent=1))
    return out


def job_rank_zero() -> bool:
    """Whether this process is global rank 0, known before the trainer connects the ranks: from the launcher's
    environment (torchrun's RANK; Lightning's LOCAL_RANK and NODE_RANK; SLURM_PROCID). The process that launches
    the others (train.py under trainer=ddp or fsdp) has none of them and is rank 0."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    if int(env.get("LOCAL_RANK", 0)) != 0 or int(env.get("NODE_RANK", env.get("GROUP_RANK", 0))) != 0:
        return False
    return int(env.get("SLURM_PROCID", env.get("JSM_NAMESPACE_RANK", 0))) == 0


def make_guard(limits: dict[str, float], base_bpb: Callable[[], dict[str, dict]]) -> "RegressionGuard":
    """A stage's guard. ``base_bpb`` (:func:`base_validation_bpb`: loads the whole base model, writes its cache)
    runs on global rank 0 only, now, before the trainer starts or connects the other ranks (no collective waits on
    it); they receive its result when the trainer sets up."""
    return RegressionGuard(limits, base_bpb() if job_rank_zero() else None)


# ---------------------------------------------------------------------------------------------- the guard
class RegressionGuard(L.Callback):
    """See the module docstring. ``base``: the base model's validation ({lang: {"bpb": ...}}) on global rank 0,
    None on the other ranks, which receive rank 0's when the trainer sets up (:func:`make_guard`). ``start`` is the
    stage's validation before training."""

    def __init__(self, limits: dict[str, float], base: dict[str, dict] | None):
        self.limits = dict(limits)
        self._given, self._received = base, False
        self.base: dict[str, float] = {}
        self.allowed: dict[str, float] = {}
        if base is not None:
            self._set_base(base)
        self.kept_step: int | None = None
        self.kept_val: dict = {}
        self._kept: list[torch.Tensor] | None = None
        self.breach: dict | None = None
        self.history: list[dict] = []

    def _set_base(self, base: dict[str, dict]) -> None:
        self.base = {k: float(base[k]["bpb"]) for k in self.limits}
        self.allowed = {k: self.base[k] * (1 + lim) for k, lim in self.limits.items()}

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Every rank takes rank 0's base BPB (the ranks are connected here, before any validation or restore)."""
        if not self._received:
            value = trainer.strategy.broadcast(self._given, src=0)
            if value is None:
                raise RuntimeError("the guard's base BPB is missing on global rank 0: build the guard with make_guard")
            self._set_base(value)
            self._received = True

    def set_start(self, module, start: dict[str, dict]) -> None:
        """The stage's validation before training: a start already above the limit becomes the limit, and the
        starting weights are the first state within it."""
        for k in self.limits:
            s = start.get(k, {}).get("bpb")
            if s is not None:
                self.allowed[k] = max(self.allowed[k], s)
        self.snapshot(module)
        self.kept_step, self.kept_val = 0, {k: dict(v) for k, v in start.items()}

    def snapshot(self, module) -> None:
        self._kept = [_local(p).detach().to("cpu", copy=True) for p in module.model.parameters() if p.requires_grad]

    def on_train_start(self, trainer, pl_module):
        if self._kept is None:  # resumed: no start validation; the resumed weights are the first kept state
            self.snapshot(pl_module)
            self.kept_step = trainer.global_step

    # The limits and the history travel in every checkpoint (Lightning saves a callback's state_dict): a resumed
    # stage must judge with the limit the uninterrupted stage set at its start (a start above base x (1 + limit)
    # raises it), or it would stop where the uninterrupted stage goes on. The kept state does not travel (its
    # tensors would add the trainable weights' size to every checkpoint): after a resume the resumed weights are
    # the first kept state, as above, with no validation of their own until the next one.
    def state_dict(self) -> dict:
        return {"allowed": self.allowed, "history": self.history, "breach": self.breach}

    def load_state_dict(self, state: dict) -> None:
        self.allowed = {k: float(state.get("allowed", {}).get(k, v)) for k, v in self.allowed.items()}
        self.history = list(state.get("history", []))
        self.breach = state.get("breach")

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != "fit":  # the stage's own start/end validations
            return
        if self.check(trainer.global_step, pl_module):
            trainer.should_stop = True

    def check(self, step: int, pl_module) -> bool:
        """Compare the module's latest validation with the limits; keep the state when within. True on a breach."""
        val = pl_module.last_val
        rel = {k: val[k]["bpb"] / self.base[k] - 1 for k in self.limits if k in val}
        self.history.append({"step": step, **{k: round(v, 5) for k, v in rel.items()}})
        over = {k: val[k]["bpb"] for k in rel if val[k]["bpb"] > self.allowed[k]}
        if self.breach is not None:
            return True
        if over:
            k = next(iter(over))
            self.breach = {"step": step, "lang": k, "bpb": over[k], "allowed": self.allowed[k], "vs_base": rel[k]}
            return True
        self.snapshot(pl_module)
        self.kept_step, self.kept_val = step, {k: dict(v) for k, v in val.items()}
        return False

    @torch.no_grad()
    def restore(self, module) -> None:
        """Put back the trainable tensors of the last validation within the limit."""
        params = [p for p in module.model.parameters() if p.requires_grad]
        for p, kept in zip(params, self._kept):
            _local(p).copy_(kept.to(_local(p).device))

    def report(self) -> dict:
        return {
            "max_regression": self.limits,
            "base_bpb": self.base,
            "allowed_bpb": self.allowed,
            "breached": self.breach is not None,
            "breach": self.breach,
            "exported_step": self.kept_step,
            "checks": self.history,
        }


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t
