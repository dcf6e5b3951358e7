"""Real runs free of the demo: the demo's local tasks belong to data=demo with the demo's models only, the paper's
benchmarks are harness tasks, an unloadable task stops the run before training, and a run on other data with
another configuration builds nothing of the demo's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_TASKS = ["eeve_nextsent_ko", "eeve_nextsent_en"]
PAPER = ["kobest_boolq", "kobest_copa", "kobest_hellaswag", "kobest_sentineg", "kobest_wic", "haerae", "kmmlu"]


def composed_tasks(*overrides: str) -> list[str]:
    from hydra import compose, initialize_config_dir

    from eeve.config import register_configs

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        c = compose("config", overrides=[f"paths.root={ROOT}", "paths.run_dir=/tmp/unused", *overrides])
    return list(c.eval.tasks)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ((), DEMO_TASKS),
        (("model=tiny_pretrained",), DEMO_TASKS),
        (("model=solar",), []),
        (("data=solar",), []),
        (("model=debug_mid",), []),
        (("model=solar", "eval.tasks=[eeve_nextsent_ko]"), ["eeve_nextsent_ko"]),
        (("eval.tasks=[]",), []),
    ],
)
def test_demo_tasks_belong_to_demo_runs(overrides, expected):
    assert composed_tasks(*overrides) == expected


def test_eeve_solar_lists_the_papers_benchmarks():
    tasks = composed_tasks("experiment=eeve_solar")
    assert tasks[: len(PAPER)] == PAPER and {"arc_challenge", "arc_easy", "hellaswag", "mmlu"} <= set(tasks)


@pytest.mark.slow
def test_eeve_solar_tasks_are_installed_harness_tasks():
    from eeve.eval.harness import task_manager

    task_manager(composed_tasks("experiment=eeve_solar"))  # raises EvalError on a name the harness does not know


def run_train(*args: str, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


SMALL = [
    "stage=1",
    "stage.max_steps=2",
    "stage.warmup_steps=1",
    "data.seq_len=64",
    "data.micro_batch_size=4",
    "data.num_workers=0",
    "data.validation.ko.max_sequences=4",
    "data.validation.en.max_sequences=4",
    "eval.bytes=1024",
    "eval.samples.max_new_tokens=2",
    "stage.max_regression=null",
]


@pytest.mark.slow
def test_unloadable_task_stops_before_training(expanded_tokenizer, tmp_path):
    """No hub, no cache, no offline copy: one `error:` line naming the task and the offline route, nothing trained."""
    run = tmp_path / "run"
    r = run_train(
        *SMALL,
        "eval.tasks=[kobest_boolq]",
        f"tokenizer.path={expanded_tokenizer}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run}",
        env={"HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr[-3000:]
    assert r.stderr.startswith("error: eval.tasks: kobest_boolq cannot be loaded") and "eeve.eval.offline" in r.stderr
    assert not (run / "stage1").exists() and not (run / "checkpoints").exists()


@pytest.mark.slow
def test_other_model_and_data_touch_nothing_of_the_demo(expanded_tokenizer, demo_data, tmp_path):
    """A random-init model on the user's own files (data=solar, paths given): no demo data is built or fetched and
    no task runs, with the default eval settings."""
    user = tmp_path / "user"
    user.mkdir()
    for lang in ("ko", "en"):
        for split in ("train", "heldout"):
            (user / f"{lang}_{split}.txt").write_text((demo_data / lang / f"{split}.txt").read_text(encoding="utf-8"))
    empty_cache, run = tmp_path / "eeve-cache", tmp_path / "run"
    r = run_train(
        *SMALL,
        "data=solar",
        f"data.sources.ko_web.paths=[{user / 'ko_train.txt'}]",
        f"data.sources.multilingual.paths=[{user / 'en_train.txt'}]",
        f"data.sources.en_ko_pairs.paths=[{user / 'ko_train.txt'}]",
        f"data.validation.ko.paths=[{user / 'ko_heldout.txt'}]",
        f"data.validation.en.paths=[{user / 'en_heldout.txt'}]",
        f"tokenizer.path={expanded_tokenizer}",
        f"paths.cache_dir={tmp_path / 'packed'}",
        f"hydra.run.dir={run}",
        env={"EEVE_CACHE": str(empty_cache)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "stage1" / "config.json").is_file()
    assert not (empty_cache / "demo").exists() and "eeve_nextsent" not in r.stdout + r.stderr
