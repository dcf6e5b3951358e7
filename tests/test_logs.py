"""Logs a person reads (eeve.console, eeve.eval.stage_line): no progress-bar redraws when stderr is a file or a pipe,
one plain format for log records and printed lines, one result line per stage, harness noise filtered."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_py(code: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``code`` with stdout and stderr piped (no terminal); both decoded as written (text mode would turn the
    carriage returns under test into newlines)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=cwd, env=env, capture_output=True)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


BARS = """
    import sys
    if sys.argv[1] == "plain":
        from eeve.console import plain_stderr
        plain_stderr()
    from tqdm import tqdm
    from transformers import LlamaConfig, LlamaForCausalLM
    for _ in tqdm(range(3), desc="a bar"):
        pass
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    LlamaForCausalLM(cfg).save_pretrained(sys.argv[2])  # transformers' "Writing model shards" bar
    LlamaForCausalLM.from_pretrained(sys.argv[2])  # "Loading weights"
    print("kept", file=sys.stderr)
"""


def test_no_bar_redraws_when_stderr_is_not_a_terminal(tmp_path):
    raw = run_py(BARS, "raw", str(tmp_path / "a"))
    assert raw.returncode == 0 and "\r" in raw.stderr, raw.stderr[-2000:]  # what a log file got before
    plain = run_py(BARS, "plain", str(tmp_path / "b"))
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "\r" not in plain.stderr and "a bar" not in plain.stderr and "kept" in plain.stderr, plain.stderr


def test_log_records_print_like_the_code_s_own_lines(tmp_path):
    """conf/config.yaml's job logging: `[data] ...` whether logged (Lightning's rank_zero_info) or printed."""
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            f"""
            import logging
            import hydra
            from eeve.cli import run_hydra
            from eeve.config import TrainConfig

            @hydra.main(config_path="{ROOT / "conf"}", config_name="config", version_base="1.3")
            def main(cfg):
                logging.getLogger("lightning.pytorch.utilities.rank_zero").info("[data] logged")
                logging.getLogger("eeve.x").warning("careful")
                print("[data] printed")

            run_hydra(main, TrainConfig)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(
        [sys.executable, str(app), f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == ["[data] logged", "warning: careful", "[data] printed"], r.stdout
    assert (tmp_path / "run" / "app.log").read_text().splitlines() == ["[data] logged", "warning: careful"]


def metrics(stage: int, ko: float, en: float, guard: dict | None = None) -> dict:
    m = {"stage": stage, "eval": {"bpb": {"ko": {"bpb": ko}, "en": {"bpb": en}}}}
    return {**m, "guard": guard} if guard is not None else m


def test_stage_done_line():
    from eeve.eval.stage_line import stage_done_line

    base = metrics(0, 2.4, 1.758)
    held = {"breached": False}
    line = stage_done_line(metrics(3, 1.932, 1.774, held), base)
    assert line == "stage 3 done: ko 1.932 (-19.5 % vs base) en 1.774 (+0.9 %); guard held"
    breach = {"breached": True, "breach": {"lang": "en", "vs_base": 0.012, "step": 40}, "exported_step": 30}
    line = stage_done_line(metrics(5, 1.9, 1.78, breach), base)
    assert line.endswith("; guard stopped it: en +1.2% vs base at step 40, exported step 30"), line
    no_eval = {"stage": 2, "val_start": {"ko": {"bpb": 3.0}}, "val_end": {"ko": {"bpb": 2.7}}}
    assert stage_done_line(no_eval, None) == "stage 2 done: ko 2.700 (-10.0 % vs stage start); no guard"


@pytest.mark.slow
def test_harness_evaluation_leaves_no_bars_and_no_warnings_about_our_model(tmp_path):
    """The harness's own bars pass disable=False explicitly, and it warns twice per evaluation about the model
    being passed in memory; a log of an evaluation holds neither."""
    code = """
        import sys
        from eeve.console import plain_stderr
        plain_stderr()
        import logging
        logging.basicConfig(level=logging.INFO)
        from omegaconf import OmegaConf
        from eeve.eval.harness import run_tasks
        from eeve.model.load import load_base_model
        from eeve.tokenizer.base import load_base, write_hf_folder
        from pathlib import Path
        d = Path(sys.argv[1])
        b = load_base(".cache/demo/base_tokenizer/tokenizer.model")
        write_hf_folder(b.tokenizer_json, b.config, d)
        cfg = OmegaConf.load("conf/model/tiny.yaml")
        cfg.tokenizer = None
        out = run_tasks(load_base_model(cfg), d, ["eeve_nextsent_ko"], limit=4)
        print("acc", out["eeve_nextsent_ko"]["acc"])
    """
    r = run_py(code, str(tmp_path))
    assert r.returncode == 0 and "acc " in r.stdout, r.stderr[-3000:]
    assert "\r" not in r.stderr and "Running loglikelihood requests" not in r.stderr, r.stderr[-3000:]
    assert "`pretrained`" not in r.stderr, r.stderr[-3000:]
