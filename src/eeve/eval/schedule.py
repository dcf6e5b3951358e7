"""One view of the whole schedule in TensorBoard: ``outputs/<run>/tensorboard/schedule``.

Every stage logs into this one run folder with ``step`` = training tokens seen since the start of the first stage
(the tokens of the stages before it in ``stages:`` plus its own), so all seven stages share one x axis:

  - ``schedule/val_<lang>_bpb``: bits per byte on the *same held-out bytes* as the base (:mod:`eeve.eval.bpb`),
    measured on the live model at each validation inside a stage (and at the start of the first stage: the
    freshly expanded model), and on the export at each stage's end;
  - ``schedule/val_<lang>_bpb_vs_base_pct``: the change against the base in percent;
  - ``schedule/base_<lang>_bpb``: the base model's value (stage 0), drawn as a flat reference line;
  - ``schedule/stage``: the stage number, a staircase whose steps are the stage boundaries;
  - ``benchmarks/<task>/<metric>``, and the text ``samples/<lang>`` (greedy continuations) at each stage end
    (the base's at step 0).
A custom-scalars layout (TensorBoard's "Custom Scalars" tab) puts each language's series and its base line on
one chart. The per-stage folders (``tensorboard/stage<N>``) keep their own step axes and training curves.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from eeve.eval.bpb import evaluate_bpb, load_tokenizer
from eeve.eval.samples import samples_markdown
from eeve.layout import metrics_before


def tokens_before(cfg, number: int) -> int:
    """Training tokens of the stages before ``number`` in the schedule whose exports exist."""
    return int(sum(m.get("tokens", 0) for m in metrics_before(cfg, number)))


class ScheduleWriter:
    """Writes the schedule view (see module docstring); create on global rank 0 only."""

    def __init__(self, run_dir: str | Path, langs: list[str]):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir) / "tensorboard" / "schedule"
        self.writer = SummaryWriter(str(self.dir))
        self.langs = list(langs)
        self.writer.add_custom_scalars(
            {
                "EEVE schedule (x: training tokens)": {
                    **{
                        f"{lang} bits per byte vs base": [
                            "Multiline",
                            [f"schedule/val_{lang}_bpb", f"schedule/base_{lang}_bpb"],
                        ]
                        for lang in self.langs
                    },
                    "stage": ["Multiline", ["schedule/stage"]],
                }
            }
        )

    def bpb(self, step: int, values: dict[str, float], base: dict[str, float] | None) -> None:
        for lang, v in values.items():
            self.writer.add_scalar(f"schedule/val_{lang}_bpb", v, step)
            if base and base.get(lang):
                self.writer.add_scalar(f"schedule/val_{lang}_bpb_vs_base_pct", 100 * (v / base[lang] - 1), step)

    def base_line(self, step: int, base: dict[str, float]) -> None:
        for lang, v in base.items():
            self.writer.add_scalar(f"schedule/base_{lang}_bpb", v, step)

    def stage_span(self, number: int, start: int, end: int) -> None:
        self.writer.add_scalar("schedule/stage", number, start)
        self.writer.add_scalar("schedule/stage", number, end)

    def evaluation(self, step: int, ev: dict) -> None:
        """A full evaluation (stage end, or the base at step 0): benchmarks and samples."""
        for task, metrics in ev.get("benchmarks", {}).items():
            for k, v in metrics.items():
                if k != "n":
                    self.writer.add_scalar(f"benchmarks/{task}/{k}", v, step)
        for lang in ev.get("samples", {}):
            self.writer.add_text(f"samples/{lang}", samples_markdown(ev["samples"], lang), step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def bpb_values(bpb: dict) -> dict[str, float]:
    return {lang: r["bpb"] for lang, r in bpb.items()}


class ScheduleCallback(L.Callback):
    """Same-bytes bits per byte of the live model at validations inside a stage, on the schedule's token axis.

    Runs on every rank (under FSDP every rank must run the forward passes; each scores its share and the sums
    are reduced); rank 0 logs. Skips the stage's last step (the export is evaluated right after) and its first
    step unless this is the first stage (otherwise it is the previous stage's export, already on the chart)."""

    def __init__(
        self,
        texts: dict[str, list[str]],
        tokenizer_dir: Path,
        ecfg,
        offset: int,
        tokens_per_step: int,
        max_steps: int,
        at_start: bool,
        writer: ScheduleWriter | None,
        base: dict[str, float] | None,
    ):
        self.texts, self.tokenizer_dir, self.ecfg = texts, tokenizer_dir, ecfg
        self.offset, self.tokens_per_step, self.max_steps = offset, tokens_per_step, max_steps
        self.at_start, self.writer, self.base = at_start, writer, base
        self.series: list[dict] = []
        self._done: set[int] = set()
        self._info = None

    def on_validation_end(self, trainer, pl_module):
        step = trainer.global_step
        if trainer.sanity_checking or step in self._done or step >= self.max_steps or (step == 0 and not self.at_start):
            return
        self._done.add(step)
        self._info = self._info or load_tokenizer(self.tokenizer_dir)
        res = evaluate_bpb(
            pl_module.model,
            self._info,
            self.texts,
            self.ecfg.window,
            self.ecfg.batch_tokens,
            rank=trainer.global_rank,
            world=trainer.world_size,
            reduce=lambda t: trainer.strategy.reduce(t, reduce_op="sum"),
        )
        tokens = self.offset + step * self.tokens_per_step
        self.series.append({"step": step, "tokens": tokens, "bpb": bpb_values(res)})
        if self.writer is not None:
            self.writer.bpb(tokens, bpb_values(res), self.base)
            self.writer.writer.flush()
