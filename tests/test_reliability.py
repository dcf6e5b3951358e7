"""Reliability of train.py: crash and resume, corrupt checkpoints, one-line errors on bad input, safe loading.

Runs the real CLI (`python train.py ...`) as subprocesses on a tiny model, small data and a small expanded
tokenizer built once for this module."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(demo_data, tmp_path_factory):
    """Small corpus files, a small expanded tokenizer (intermediate vocab 2000) and a shared packed-token cache."""
    from eeve.tokenizer.run import run_from_config

    d = tmp_path_factory.mktemp("rel")

    def head(src: Path, n: int, name: str) -> Path:
        lines = src.read_text(encoding="utf-8").split("\n")[:n]
        (d / name).write_text("\n".join(x for x in lines if x.strip()) + "\n", encoding="utf-8")
        return d / name

    files = {
        "ko": head(demo_data / "ko" / "train.txt", 2000, "ko.txt"),
        "en": head(demo_data / "en" / "train.txt", 400, "en.txt"),
        "pairs": head(demo_data / "pairs" / "train.jsonl", 300, "pairs.jsonl"),
        "kov": head(demo_data / "ko" / "heldout.txt", 200, "kov.txt"),
        "env": head(demo_data / "en" / "heldout.txt", 200, "env.txt"),
    }
    tok = d / "tokenizer"
    run_from_config(
        {
            "base_tokenizer": str(demo_data / "base_tokenizer" / "tokenizer.model"),
            "corpus": {"paths": [str(files["ko"])]},
            "heldout": {"ko": str(files["kov"]), "en": str(files["env"])},
            "output_dir": str(tok),
            "intermediate_vocab_size": 2000,
            "min_frequency": 3,
            "progress": False,
        }
    )
    args = [
        "run_name=rel",
        "trainer.val_every_n_steps=100",
        "data.seq_len=32",
        "data.micro_batch_size=2",
        "eval.enabled=false",  # checkpoints, resumes and errors; the same-bytes evaluation is test_eval.py's
        "data.validation.ko.max_sequences=4",
        "data.validation.en.max_sequences=4",
        f"paths.cache_dir={d / 'cache'}",
        f"tokenizer.path={tok}",
        f"data.sources.ko_web.paths=[{files['ko']}]",
        f"data.sources.multilingual.paths=[{files['en']}]",
        f"data.sources.en_ko_pairs.paths=[{files['pairs']}]",
        f"data.validation.ko.paths=[{files['kov']}]",
        f"data.validation.en.paths=[{files['env']}]",
    ]
    return {"dir": d, "tok": tok, "args": args}


def cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *args]


def run(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd(*args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def load_export(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    assert out, f"no safetensors in {folder}"
    return out


def error_lines(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.startswith("error:")]


# ---------------------------------------------------------------------------------------------- crash and resume
@pytest.mark.slow
def test_sigkill_resume_matches_uninterrupted_run(env, tmp_path):
    stage = ["stage=1", "stage.max_steps=24", "trainer.checkpoint_every_n_steps=3"]
    a, b = tmp_path / "a", tmp_path / "b"
    # the uninterrupted reference runs alongside the run we kill
    ref = subprocess.Popen(
        cmd(*stage, *env["args"], f"hydra.run.dir={a}"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = subprocess.Popen(
        cmd(*stage, *env["args"], f"hydra.run.dir={b}"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpts = b / "checkpoints" / "stage1"
    deadline = time.time() + 180
    while time.time() < deadline and killed.poll() is None:
        if len(list(ckpts.glob("step-*.ckpt"))) >= 2:
            break
        time.sleep(0.02)
    assert killed.poll() is None, "the run finished before it could be killed: make the stage longer"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    out, err = ref.communicate(timeout=240)
    assert ref.returncode == 0, err[-3000:]
    assert not (b / "stage1").exists(), "a killed stage must not leave an export"
    good = sorted(ckpts.glob("step-*.ckpt"))
    assert len(good) >= 2

    # a normal run leaves no temporary files behind (checkpoints and exports are renamed into place)
    assert not [p for p in a.rglob("*") if ".tmp-" in p.name]
    assert json.loads((a / "stage1" / "metrics.json").read_text())["resumed_from"] is None

    # the newest checkpoint is torn (as by a crash on a filesystem without atomic rename): skipped for the older one
    newest, older = good[-1], good[-2]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    r = run(*stage, *env["args"], f"hydra.run.dir={b}")
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout + r.stderr
    assert f"warning: checkpoint {newest} is unreadable" in text
    assert f"resuming from {older}" in text
    metrics = json.loads((b / "stage1" / "metrics.json").read_text())
    assert metrics["resumed_from"] == str(older) and metrics["steps"] == 24
    wa, wb = load_export(a / "stage1"), load_export(b / "stage1")
    assert wa.keys() == wb.keys()
    for k in wa:  # CPU, fixed seeds, data position restored from the checkpoint: bit-identical
        assert wa[k].dtype == wb[k].dtype and (wa[k] == wb[k]).all(), k
    assert not [p for p in b.rglob("*") if ".tmp-" in p.name and p.parent != ckpts]


def test_find_resume_checkpoint_skips_torn_and_malicious(tmp_path):
    import torch

    from eeve.training.checkpoint import find_resume_checkpoint

    d = tmp_path / "ck"
    d.mkdir()
    good = {"state_dict": {"w": torch.ones(3)}, "global_step": 4}
    torch.save(good, d / "step-00000004.ckpt")
    torch.save({**good, "global_step": 8}, d / "step-00000008.ckpt")
    assert find_resume_checkpoint(d, log=lambda m: None) == d / "step-00000008.ckpt"

    raw = (d / "step-00000008.ckpt").read_bytes()
    (d / "step-00000008.ckpt").write_bytes(raw[: len(raw) // 2])  # torn write
    (d / "step-00000012.ckpt").write_bytes(b"")  # empty file
    marker = tmp_path / "pwned"

    class Evil:  # unpickling this calls os.system
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"state_dict": {}, "global_step": 16, "x": Evil()}, d / "step-00000016.ckpt")
    (d / "step-00000020.ckpt").write_bytes(pickle.dumps(Evil()))  # legacy bare pickle
    (d / ".tmp-step-00000024.ckpt").write_bytes(raw)  # an unfinished write is not a checkpoint
    logs = []
    assert find_resume_checkpoint(d, log=logs.append) == d / "step-00000004.ckpt"
    assert not marker.exists(), "loading a checkpoint executed code from it"
    assert len(logs) == 4 and all(m.startswith("warning: checkpoint") for m in logs)
    assert all("\n" not in m for m in logs)


# -------------------------------------------------------------------------------------------------- bad input
def _typo_conf(tmp: Path) -> Path:
    conf = tmp / "conf"
    shutil.copytree(ROOT / "conf", conf)
    p = conf / "stage" / "1.yaml"
    p.write_text(p.read_text() + "lrr: 0.1\n")
    return conf


def _bad_cases(env, tmp: Path) -> dict:
    a = env["args"]
    nodir = tmp / "a_file"
    nodir.write_text("not a folder\n")
    return {
        "stage_9": (["stage=9", *a], "stage=9", None),
        "stage_0": (["stage=0", *a], "stage=0", None),
        "prev_export_missing": (["stage=3", *a], "stage=2", "stage3"),
        "vocab_mismatch": (["stage=1", "model.config.vocab_size=1000", *a], "vocab", "stage1"),
        "tokenizer_missing": (["stage=1", *a, f"tokenizer.path={tmp / 'no_tokenizer'}"], "tokenize.py", "stage1"),
        "unwritable_run_dir": (["stage=1", *a, f"hydra.run.dir={nodir}/sub"], "hydra.run.dir", None),
        "cli_key_typo": (["stage=1", "trainer.max_stepz=3", *a], "'trainer.max_stepz'", "stage1"),
        "yaml_key_typo": ([f"--config-path={_typo_conf(tmp)}", "stage=1", *a], "lrr", "stage1"),
    }


@pytest.mark.slow
def test_bad_inputs_one_line_errors(env, tmp_path):
    cases = _bad_cases(env, tmp_path)

    def one(name):
        args, must, export = cases[name]
        rd = tmp_path / f"run_{name}"
        if not any(x.startswith("hydra.run.dir=") for x in args):
            args = [*args, f"hydra.run.dir={rd}"]
        return name, run(*args), rd, must, export

    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(one, cases))
    failures = []
    for name, r, rd, must, export in results:
        errs = error_lines(r.stderr)
        problems = []
        if r.returncode == 0:
            problems.append("exit 0")
        if len(errs) != 1:
            problems.append(f"{len(errs)} error lines")
        elif must.lower() not in errs[0].lower():
            problems.append(f"error line does not mention {must!r}")
        if "Traceback" in r.stderr:
            problems.append("traceback")
        if export and (rd / export).exists():
            problems.append(f"{export} export written")
        if problems:
            failures.append(f"{name}: {problems}\n{r.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
def test_nonfinite_loss_stops_and_keeps_good_checkpoint(env, tmp_path):
    from eeve.training.checkpoint import find_resume_checkpoint, is_loadable

    rd = tmp_path / "nan"
    stage = ["stage=1", "stage.max_steps=6", "trainer.checkpoint_every_n_steps=1"]
    r = run(*stage, "stage.lr=1e30", *env["args"], f"hydra.run.dir={rd}")
    assert r.returncode != 0
    errs = error_lines(r.stderr)
    assert len(errs) == 1 and "loss is" in errs[0] and "stage.lr" in errs[0], r.stderr[-2000:]
    failed_at = int(errs[0].split(" step ")[1].split(":")[0])
    assert "Traceback" not in r.stderr
    assert not (rd / "stage1").exists()
    ckpts = rd / "checkpoints" / "stage1"
    resume = find_resume_checkpoint(ckpts)
    assert resume is not None and is_loadable(resume)[0]
    import torch

    ck = torch.load(resume, map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    # the checkpoint holding the weights that gave the non-finite loss is not the one a rerun resumes from
    assert 0 < ck["global_step"] < failed_at
    assert (ckpts / f"nonfinite-step-{failed_at:08d}.ckpt").exists()

    # following the message's advice (a lower stage.lr) resumes from that checkpoint at the new learning rate
    r = run(*stage, "stage.lr=1e-3", *env["args"], f"hydra.run.dir={rd}")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((rd / "stage1" / "metrics.json").read_text())
    assert m["resumed_from"] == str(resume) and m["steps"] == 6


# ------------------------------------------------------------------------------------------------- safe loading
def _remote_code_folder(tmp: Path, marker: Path) -> Path:
    """A model folder whose config asks for custom code; importing that code creates `marker`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp / "remote"
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(d, safe_serialization=True)
    c = json.loads((d / "config.json").read_text())
    c["model_type"] = "evil_llama"
    c["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(c))
    (d / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil_llama'\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    return d


def test_remote_code_runs_only_when_asked(tmp_path):
    from eeve.model.load import load_base_model

    marker = tmp_path / "ran"
    folder = _remote_code_folder(tmp_path, marker)
    with pytest.raises(Exception):
        load_base_model({"name_or_path": str(folder), "dtype": "float32"})  # trust_remote_code defaults to false
    assert not marker.exists(), "code from the model folder ran without model.trust_remote_code=true"
    load_base_model({"name_or_path": str(folder), "dtype": "float32", "trust_remote_code": True})
    assert marker.exists()  # the folder's code does run when asked, so the check above is meaningful


def unsafe_calls(source: str, where: str) -> list[str]:
    """Calls that run code from data: trust_remote_code=True, torch.load without an explicit weights_only=True
    (the default changed across torch versions), pickle.load(s), allow_pickle=True."""
    import ast

    bad = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        owner = getattr(getattr(node.func, "value", None), "id", "")
        kw = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
        if kw.get("trust_remote_code") is True:
            bad.append(f"{where}:{node.lineno} trust_remote_code=True")
        if name == "load" and owner == "torch" and kw.get("weights_only") is not True:
            bad.append(f"{where}:{node.lineno} torch.load without weights_only=True")
        if name in ("load", "loads") and owner == "pickle":
            bad.append(f"{where}:{node.lineno} pickle.{name}")
        if kw.get("allow_pickle") is True:
            bad.append(f"{where}:{node.lineno} allow_pickle=True")
    return bad


def test_no_hardcoded_trust_remote_code_or_unsafe_load():
    """Every module of the package, sub-packages included (the scan once read src/eeve/*.py only: six files, none
    of which loads anything)."""
    src = ROOT / "src" / "eeve"
    files = [ROOT / "train.py", ROOT / "tokenize.py", *sorted(src.rglob("*.py"))]
    scanned = {f.relative_to(src).parts[0] for f in files if src in f.parents}
    assert {"training", "model", "data", "eval", "tokenizer", "text"} <= scanned
    assert src / "training" / "checkpoint.py" in files  # the one torch.load of the package
    bad = [b for f in files for b in unsafe_calls(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert not bad, bad


def test_the_unsafe_load_check_can_fail():
    snippet = (
        "import pickle, torch, numpy as np\n"
        "torch.load('a.ckpt')\n"
        "torch.load('b.ckpt', weights_only=False)\n"
        "torch.load('c.ckpt', weights_only=True)\n"
        "pickle.loads(b'')\n"
        "np.load('d.npy', allow_pickle=True)\n"
        "AutoModel.from_pretrained('e', trust_remote_code=True)\n"
    )
    assert [b.split(" ", 1)[0] for b in unsafe_calls(snippet, "x.py")] == [
        "x.py:2",
        "x.py:3",
        "x.py:5",
        "x.py:6",
        "x.py:7",
    ]


@pytest.mark.slow
def test_guard_breach_right_after_a_resume_records_the_exported_weights(env, tmp_path):
    """A stage killed after a checkpoint, resumed, and stopped by the guard at its first validation after the
    resume: the export is the resumed weights, and val_end is their validation (it was once left empty: the
    resumed weights had no validation of their own)."""
    rd = tmp_path / "guarded"
    args = [a for a in env["args"] if not a.startswith("trainer.val_every_n_steps=")]
    stage = ["stage=2", "stages=['2']", "stage.max_steps=24", "stage.lr=1.0", "stage.max_regression.en=0.0"]
    stage += ["stage.lr_new_output=null"]  # the recipe's 2e-4 for new output rows would not breach
    stage += ["trainer.checkpoint_every_n_steps=2", f"hydra.run.dir={rd}", *args]
    killed = subprocess.Popen(
        cmd(*stage, "trainer.val_every_n_steps=100"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpts = rd / "checkpoints" / "stage2"
    deadline = time.time() + 180
    while time.time() < deadline and killed.poll() is None and not list(ckpts.glob("step-*.ckpt")):
        time.sleep(0.02)
    assert killed.poll() is None, "the run finished before it could be killed: make the stage longer"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    r = run(*stage, "trainer.val_every_n_steps=2")  # a rate far too high, a 0 % limit: breached at once
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((rd / "stage2" / "metrics.json").read_text())
    resumed_at = int(Path(m["resumed_from"]).stem.split("-")[1])
    assert m["guard"]["breached"] and m["guard"]["exported_step"] == resumed_at < m["guard"]["breach"]["step"]
    assert set(m["val_end"]) == {"ko", "en"} and m["val_end"]["en"]["bpb"] < m["guard"]["breach"]["bpb"]
