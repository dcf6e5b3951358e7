"""The paper's benchmarks on a cluster without a hub: local copies of their datasets and task files naming them.

    # once, on a machine with internet (same `datasets` major version as the cluster):
    python -m eeve.eval.offline export --data-dir /shared/lm_eval_data [--benchmarks kobest haerae kmmlu ...]
    # on the cluster:
    python -m eeve.eval.offline yamls --data-dir /shared/lm_eval_data --out /shared/lm_eval_tasks
    python -m eeve.evaluate model=... base=... eval.include_path=/shared/lm_eval_tasks \\
        eval.tasks='[kobest_boolq,kobest_copa,kobest_hellaswag,kobest_sentineg,kobest_wic,haerae,kmmlu,arc_challenge,arc_easy,hellaswag,mmlu]'

``export`` writes every split of every dataset the harness's built-in tasks of those benchmarks read, as
``<data-dir>/<hub path with / -> __>/<config or default>/<split>.jsonl``. ``yamls`` writes one task file per
built-in subtask with the *same* task name, which ``include:``s the installed built-in file (prompts, metrics and
``!function`` helpers unchanged) and only replaces where the data comes from (``dataset_path: json`` +
``data_files``). Task files in ``include_path`` take precedence over the built-ins, so the built-in groups
(``kobest``, ``kmmlu``, ``mmlu``, ...) pick up the local subtasks and results keep their usual names.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from eeve.eval.harness import require_lm_eval

BENCHMARKS = {  # benchmark -> globs of the harness's built-in subtask files
    "kobest": ["kobest/kobest_*.yaml"],
    "haerae": ["haerae/haerae_*.yaml"],
    "kmmlu": ["kmmlu/default/kmmlu_*.yaml"],
    "arc_easy": ["arc/arc_easy.yaml"],
    "arc_challenge": ["arc/arc_challenge.yaml"],
    "hellaswag": ["hellaswag/hellaswag.yaml"],
    "mmlu": ["mmlu/default/mmlu_*.yaml"],
}
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


def _tasks_root() -> Path:
    require_lm_eval()
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def _resolve(path: Path) -> dict:
    """A built-in task file merged over its ``include`` chain (``!function`` tags kept as plain strings)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix}")
    cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader) or {}
    if "include" in cfg:
        base = _resolve((path.parent / cfg["include"]).resolve())
        base.update({k: v for k, v in cfg.items() if k != "include"})
        cfg = base
    return cfg


def builtin_tasks(benchmarks: list[str]):
    """(file, resolved config) of every built-in subtask of ``benchmarks`` that reads a dataset."""
    root = _tasks_root()
    for b in benchmarks:
        for pattern in BENCHMARKS[b]:
            for p in sorted(root.glob(pattern)):
                cfg = _resolve(p)
                if isinstance(cfg.get("task"), str) and cfg.get("dataset_path"):
                    yield p, cfg


def local_dir(data_dir: Path, cfg: dict) -> Path:
    return Path(data_dir) / cfg["dataset_path"].replace("/", "__") / (cfg.get("dataset_name") or "default")


def export(data_dir: Path, benchmarks: list[str]) -> None:
    from datasets import load_dataset

    done = set()
    for _, cfg in builtin_tasks(benchmarks):
        key = (cfg["dataset_path"], cfg.get("dataset_name"))
        if key in done:
            continue
        done.add(key)
        ds = load_dataset(cfg["dataset_path"], cfg.get("dataset_name"))
        d = local_dir(data_dir, cfg)
        d.mkdir(parents=True, exist_ok=True)
        for split, part in ds.items():
            part.to_json(str(d / f"{split}.jsonl"), force_ascii=False)
        print(f"exported {key[0]} {key[1] or ''}: " + ", ".join(f"{s} {len(p)}" for s, p in ds.items()))


def write_yamls(data_dir: Path, out: Path, benchmarks: list[str]) -> list[str]:
    """Task files for the subtasks whose evaluation split was exported; returns their names."""
    import yaml

    data_dir, out = Path(data_dir).resolve(), Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for path, cfg in builtin_tasks(benchmarks):
        files = {f.stem: str(f) for f in sorted(local_dir(data_dir, cfg).glob("*.jsonl"))}
        split = cfg.get("test_split") or cfg.get("validation_split")
        if split not in files:
            continue
        task = {
            "include": str(path),
            "task": cfg["task"],
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": files},
        }
        for k in SPLIT_KEYS:  # a split the built-in names but that was not exported: the harness would fail on it
            if cfg.get(k) and cfg[k] not in files:
                task[k] = None
        (out / f"{cfg['task']}.yaml").write_text(yaml.safe_dump(task, allow_unicode=True, sort_keys=False))
        names.append(cfg["task"])
    return names


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("export", "yamls"):
        s = sub.add_parser(name)
        s.add_argument("--data-dir", type=Path, required=True)
        s.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), choices=list(BENCHMARKS))
        if name == "yamls":
            s.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.cmd == "export":
        export(a.data_dir, a.benchmarks)
    else:
        names = write_yamls(a.data_dir, a.out, a.benchmarks)
        print(json.dumps({"task_files": len(names), "out": str(a.out)}))


if __name__ == "__main__":
    main()
