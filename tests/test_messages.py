"""What a person reads when the command line is wrong or asks for the configuration: one line with the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_train import run_cli

from eeve.cli import hydra_error_line

ROOT = Path(__file__).resolve().parents[1]


def composition_error(*overrides: str) -> Exception:
    from hydra import compose, initialize_config_dir

    from eeve.config import register_configs

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        try:
            compose("config", overrides=list(overrides))
        except Exception as e:  # noqa: BLE001 - Hydra's own exception is the input under test
            return e
    raise AssertionError(f"{overrides} composed")


@pytest.mark.parametrize(
    "override,expected",
    [
        (
            "model=tiny_prertained",
            "did you mean model=tiny_pretrained? choose one of debug_mid, solar, tiny, tiny_pretrained",
        ),
        ("trainer=fsdpp", "did you mean trainer=fsdp? choose one of ddp, default, fsdp (conf/trainer/*.yaml)"),
        ("recipe=xyz", "recipe=xyz is not an option: choose one of eeve, eeve_paper, full, no_expansion"),
    ],
)
def test_a_misspelt_group_option_lists_the_options_with_a_did_you_mean(override, expected):
    from eeve.config import TrainConfig

    line = hydra_error_line(composition_error(override), TrainConfig)
    assert "\n" not in line and expected in line, line


def test_cfg_job_resolve_prints_the_resolved_config():
    """Hydra sets hydra:runtime.output_dir only when a job runs; --resolve gets the folder a run would use."""
    r = run_cli("--cfg", "job", "stage=5", "model=solar", "--resolve")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "run_dir: outputs/solar\n" in r.stdout and "${" not in r.stdout, r.stdout[-2000:]
    r = run_cli("-m", "--cfg", "job", "init=a,b")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "can be specified" in r.stderr, r.stderr[-2000:]


def test_tokenize_help_shows_only_its_own_keys():
    r = subprocess.run([sys.executable, "tokenize.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "intermediate_vocab_size" in r.stdout and "corpus:" in r.stdout
    for train_only in ("stage:", "trainer:", "recipe:", "Configuration groups"):
        assert train_only not in r.stdout, r.stdout
