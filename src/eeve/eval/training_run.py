"""Evaluation inside a training run: the hook train.py hands to ``run_stage`` (one object per stage).

  - on creation (global rank 0): the base model (stage 0) is evaluated once per run, or read from its cache;
  - ``callback(...)``: a Lightning callback placing same-bytes validations on the schedule's token axis;
  - ``finish(...)`` after the export (global rank 0): evaluate the export (bits per byte, samples, benchmarks for
    ``eval.after_stages``), write it into the stage's metrics.json, log it to ``tensorboard/schedule``, and redraw
    ``report.png``. A stage skipped because it is finished goes through ``finish`` too, which evaluates it only if
    its evaluation is missing or stale.
Benchmarks run only in single-process runs: in a multi-process run the other ranks would wait on rank 0 for as
long as a benchmark suite takes; run ``python -m eeve.evaluate`` on the exports instead.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.utilities.rank_zero import rank_zero_only

from eeve.eval.harness import check_tasks, require_lm_eval
from eeve.eval.report import write_report
from eeve.eval.schedule import ScheduleCallback, ScheduleWriter, bpb_values, tokens_before
from eeve.eval.stage_eval import base_metrics, read_metrics, run_texts, stage_metrics
from eeve.layout import previous_stage, stage_dir, stage_order


class StageEvaluation:
    def __init__(self, cfg, number: int, tokenizer_dir: Path, world_size: int = 1):
        self.cfg, self.number, self.tokenizer_dir, self.world = cfg, number, Path(tokenizer_dir), world_size
        self.enabled = cfg.eval.enabled
        self.rank_zero = rank_zero_only.rank == 0
        self.base = None
        self.callback_ = None
        if not self.enabled:
            return
        if cfg.eval.tasks and (0 in cfg.eval.after_stages or number in cfg.eval.after_stages):
            # before any training: a missing extra or a task without its data should not cost a stage
            if world_size == 1:
                check_tasks(cfg.eval.tasks, cfg.eval.include_path)
            else:  # benchmarks are skipped in multi-process runs (see module docstring)
                require_lm_eval()
        self.texts = run_texts(cfg)
        self.offset = tokens_before(cfg, number)
        if self.rank_zero:
            before = (read_metrics(stage_dir(cfg, 0)) or {}).get("eval", {}).get("key")
            self.base = base_metrics(self._bench_cfg(), self.texts)
            if self.base["eval"]["key"] != before:  # evaluated now: put the base's samples and benchmarks at step 0
                with self._writer() as w:
                    w.evaluation(0, self.base["eval"])

    def _bench_cfg(self):
        """The config with benchmarks removed in multi-process runs (see module docstring)."""
        if self.world > 1 and self.cfg.eval.tasks:
            import copy

            print("note: benchmarks are skipped in multi-process runs; run python -m eeve.evaluate on the exports")
            cfg = copy.deepcopy(self.cfg)
            cfg.eval.tasks = []
            return cfg
        return self.cfg

    def _base_bpb(self) -> dict[str, float] | None:
        return bpb_values(self.base["eval"]["bpb"]) if self.base else None

    def _writer(self):
        import contextlib

        @contextlib.contextmanager
        def cm():
            w = ScheduleWriter(self.cfg.paths.run_dir, list(self.cfg.data.validation))
            try:
                yield w
            finally:
                w.close()

        return cm()

    def callback(self, tokens_per_step: int, max_steps: int):
        """The schedule callback for this stage's trainer (None when evaluation is off)."""
        if not self.enabled:
            return None
        at_start = previous_stage(self.cfg, self.number) is None or bool(self.cfg.init_from)
        writer = ScheduleWriter(self.cfg.paths.run_dir, list(self.cfg.data.validation)) if self.rank_zero else None
        self.callback_ = ScheduleCallback(
            self.texts,
            self.tokenizer_dir,
            self.cfg.eval,
            self.offset,
            tokens_per_step,
            max_steps,
            at_start,
            writer,
            self._base_bpb(),
        )
        return self.callback_

    def finish(self, out: Path, metrics: dict) -> dict:
        """Evaluate the export in ``out`` into its metrics (rank 0), log it, redraw report.png."""
        cb = self.callback_
        if cb is not None and cb.writer is not None:
            cb.writer.close()
        if not (self.enabled and self.rank_zero):
            return metrics
        old_key = metrics.get("eval", {}).get("key")
        metrics = stage_metrics(
            self._bench_cfg(), self.number, Path(out), metrics, self.texts, series=cb.series if cb is not None else None
        )
        if metrics["eval"].get("key") != old_key:  # evaluated now: put it on the schedule
            start, end = self.offset, self.offset + int(metrics.get("tokens", 0))
            with self._writer() as w:
                for p in metrics["eval"].get("series", []):
                    if p["step"] == 0:
                        w.base_line(p["tokens"], self._base_bpb())
                w.bpb(end, bpb_values(metrics["eval"]["bpb"]), self._base_bpb())
                w.base_line(start, self._base_bpb())
                w.base_line(end, self._base_bpb())
                w.stage_span(self.number, start, end)
                w.evaluation(end, metrics["eval"])
        self.write_report()
        return metrics

    def write_report(self) -> None:
        stages = [m for m in (read_metrics(stage_dir(self.cfg, n)) for n in stage_order(self.cfg)) if m]
        path = write_report(
            Path(self.cfg.paths.run_dir) / "report.png",
            self.base,
            stages,
            title=f"run {self.cfg.run_name}: bits per byte on the same held-out bytes, base vs stages",
        )
        if path:
            print(f"report: {path}")
