"""Benchmarks through lm-evaluation-harness (the optional extra ``pip install -e .[eval]``), offline.

``run_tasks(model, tokenizer_dir, tasks)`` evaluates an in-memory HF causal LM with its tokenizer folder on
harness tasks and returns ``{task: {metric: value}}`` (``acc``, ``acc_stderr``, ``acc_norm``, ...; groups such
as ``kobest`` or ``mmlu`` appear with their aggregate). The local demo tasks (:mod:`eeve.eval.tasks`) are
generated and added to the harness's ``include_path`` when named; ``include_path`` adds the caller's own task
YAMLs (local copies of KoBEST, HAE-RAE, KMMLU, ARC, HellaSwag, MMLU for clusters without a hub; see README).

Hub access is switched off unless the caller's environment says otherwise (``HF_DATASETS_OFFLINE``,
``HF_HUB_OFFLINE`` default to 1): datasets come from the local cache or from ``data_files``.
"""

from __future__ import annotations

import difflib
import logging
import os

from eeve.errors import EvalError
from eeve.eval.tasks import is_local_task, local_task_dir, task_lang

OFFLINE_ENV = {
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
}


def require_lm_eval() -> None:
    """One-line error when the optional harness is missing (checked before any training starts)."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise EvalError(
            "eval.tasks needs lm-evaluation-harness: pip install -e '.[eval]' (or set eval.tasks=[])"
        ) from None


OFFLINE_ROUTE = (
    "copy the benchmark data on a machine with internet (`python -m eeve.eval.offline export --data-dir DIR`), "
    "write task files for it (`python -m eeve.eval.offline yamls --data-dir DIR --out TASKS`) and set "
    "eval.include_path=TASKS; or drop the task from eval.tasks"
)
_CHECKED: set[tuple] = set()

HARNESS_NOISE = (
    "`pretrained` model kwarg is not of type `str`",  # we pass the model in memory on purpose, once per evaluation
    "Passed an already-initialized model through `pretrained`",
)
"""Starts of harness warnings about how eeve calls it, not about the evaluation: dropped (see ``quiet_harness``)."""


class _DropHarnessNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(HARNESS_NOISE)


def quiet_harness() -> None:
    """Harness logs at WARNING and above, less its warnings about our in-memory model (idempotent)."""
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    log = logging.getLogger("lm_eval.models.huggingface")
    if not any(isinstance(f, _DropHarnessNoise) for f in log.filters):
        log.addFilter(_DropHarnessNoise())


def check_tasks(tasks: list[str], include_path: str | None = None) -> None:
    """Load every task's data now (a group's subtasks too), offline unless the environment says otherwise: one that
    cannot be loaded stops with one line naming it and the offline route, before any training. Once per process."""
    key = (tuple(tasks), include_path)
    if not tasks or key in _CHECKED:
        return
    tm = task_manager(list(tasks), include_path)
    from lm_eval.tasks import get_task_dict

    for t in tasks:
        try:
            get_task_dict([t], tm)
        except Exception as e:  # noqa: BLE001 - datasets / hub / harness errors alike
            why = (str(e).splitlines() or [""])[0][:160]
            raise EvalError(f"eval.tasks: {t} cannot be loaded ({type(e).__name__}: {why}): {OFFLINE_ROUTE}") from None
    _CHECKED.add(key)


def task_manager(tasks: list[str], include_path: str | None = None):
    """A harness TaskManager that knows ``tasks`` (the local demo tasks generated on first use)."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    require_lm_eval()
    quiet_harness()
    from lm_eval.tasks import TaskManager

    includes = []
    local_only = all(is_local_task(t) for t in tasks)
    if any(is_local_task(t) for t in tasks):
        includes.append(str(local_task_dir(langs=[lang for t in tasks if (lang := task_lang(t))])))
    if include_path:
        if not os.path.isdir(include_path):
            raise EvalError(f"eval.include_path={include_path} is not a folder of task YAML files")
        includes.append(include_path)
    # Indexing the harness's own thousands of task files takes seconds; skip it when only local tasks are asked.
    tm = TaskManager(include_path=includes or None, include_defaults=not (local_only and not include_path))
    unknown = [t for t in tasks if not tm.match_tasks([t])]
    if unknown:
        close = difflib.get_close_matches(unknown[0], tm.all_tasks, n=3)
        raise EvalError(
            f"eval.tasks: unknown task {unknown[0]!r}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
            + ": see `lm_eval ls tasks`, or give eval.include_path"
        )
    return tm


def run_tasks(
    model,
    tokenizer_dir,
    tasks: list[str],
    *,
    limit: int | None = None,
    batch_size: int = 16,
    include_path: str | None = None,
) -> dict[str, dict[str, float]]:
    """{task or group: {metric: value}} of ``model`` (on its device) with the tokenizer in ``tokenizer_dir``."""
    tm = task_manager(list(tasks), include_path)
    import datasets
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    was_training = model.training
    model.eval()
    try:
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
        res = simple_evaluate(
            model=lm,
            tasks=list(tasks),
            task_manager=tm,
            limit=limit,
            log_samples=False,
            bootstrap_iters=1000,
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
            fewshot_random_seed=0,
        )
    finally:
        model.train(was_training)
    out = {}
    for name, metrics in res["results"].items():
        out[name] = {
            k.split(",")[0]: float(v)
            for k, v in metrics.items()
            if "," in k and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        n = res.get("n-samples", {}).get(name, {}).get("effective")
        if n is not None:
            out[name]["n"] = float(n)
    return out


def main_metric(metrics: dict[str, float]) -> tuple[str, float] | None:
    """The figure a table shows for one task: acc, else acc_norm, f1, exact_match, else the first metric."""
    for k in ("acc", "acc_norm", "f1", "exact_match"):
        if k in metrics:
            return k, metrics[k]
    rest = [k for k in metrics if not k.endswith("_stderr") and k != "n"]
    return (rest[0], metrics[rest[0]]) if rest else None
