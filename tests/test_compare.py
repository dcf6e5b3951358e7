"""`python -m eeve.compare` on real debug-model runs: a Hydra sweep of two runs (two stages each) trained through
train.py, compared as a sweep folder and as two run folders; the FLOPs and text bytes those runs recorded (metrics,
TensorBoard, the run table)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_train import BASE, FAST, export_state, run_cli

from eeve.compare import main
from eeve.training.flops import GFLOP


@pytest.fixture(scope="module")
def sweep(expanded_tokenizer, packed_cache, tmp_path_factory):
    """`train.py -m stage=all stages=[1,2] init=mean,mass_first_piece`: two runs of two 2-step stages, evaluated;
    the second init runs the base model over text (its FLOPs are charged to stage 1)."""
    root = tmp_path_factory.mktemp("compare") / "multirun"
    args = [a for a in FAST if not a.startswith(("stage.max_steps", "trainer.val_every_n_steps"))]
    r = run_cli(
        "-m",
        "stage=all",
        "stages=[1,2]",
        "init=mean,mass_first_piece",
        "init_options.documents=64",
        "init_options.teacher_tokens=1024",
        "stage.max_steps=2",
        "trainer.val_every_n_steps=1",
        f"hydra.sweep.dir={root}",
        f"tokenizer.path={expanded_tokenizer}",
        f"paths.cache_dir={packed_cache}",
        *args,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def metrics(job, n):
    return json.loads((job / f"stage{n}" / "metrics.json").read_text())


@pytest.mark.slow
def test_multirun_sweep_one_folder_per_job(sweep):
    """`train.py -m`: one folder per job, named by its swept value, each with its own stages."""
    jobs = {}
    for init in ["mean", "mass_first_piece"]:
        (job,) = [p for p in sweep.iterdir() if p.name.endswith(f"init={init}")]
        assert (job / "stage1" / "metrics.json").is_file(), sorted(p.name for p in job.iterdir())
        jobs[init] = export_state(job / "stage1")["lm_head.weight"][BASE:]
    # the inits really differ (the new output rows are frozen in stage 1, so they are the init itself)
    assert not torch.equal(jobs["mean"], jobs["mass_first_piece"])


@pytest.mark.slow
def test_runs_record_flops_and_text_bytes(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from eeve.eval.table import eval_table

    (job,) = [d for d in sweep.iterdir() if d.name.endswith("init=mass_first_piece")]
    m1, m2 = metrics(job, 1), metrics(job, 2)
    for m in (m1, m2):
        assert m["flops"]["train"] == pytest.approx(m["flops"]["per_token"] * m["tokens"], rel=1e-6)
        assert 2.0 < m["text_bytes"] / m["tokens"] < 10.0  # mostly Korean: ~2.3 characters of 3 bytes per token
    # the init's teacher pass (1,024 base tokens) is charged to stage 1, the stage that expanded the model
    init = m1["flops"]["init"]
    assert init > 0 and m2["flops"]["init"] == 0
    spent1 = m1["flops"]["train"] + init
    # stage 2 (output rows only) has no backward through the backbone: far cheaper per token than stage 1
    assert m2["flops"]["per_token"] < m1["flops"]["per_token"]
    assert m1["flops"]["forward_per_token"] == pytest.approx(m2["flops"]["forward_per_token"])
    ea = EventAccumulator(str(job / "tensorboard" / "stage1"), size_guidance={"scalars": 0})
    ea.Reload()
    assert ea.Scalars("flops/cumulative")[0].value == pytest.approx(init + m1["flops"]["train"] / 2, rel=1e-5)
    ea = EventAccumulator(str(job / "tensorboard" / "stage2"), size_guidance={"scalars": 0})
    ea.Reload()
    cum = ea.Scalars("flops/cumulative")
    assert cum[-1].value == pytest.approx(spent1 + m2["flops"]["train"], rel=1e-5)
    val = ea.Scalars("val_flops/ko_bpb")  # stage 2's validations on the cumulative-GFLOP axis
    assert val[0].step == int(spent1 // GFLOP) and val[-1].step > val[0].step
    base = metrics(job, 0)
    table = eval_table([m1, m2], base)
    assert "FLOPs (cumulative)" in table and f"{spent1 + m2['flops']['train']:.3g}" in table
    assert f"| 1 start | (expanded, untrained) | 0 | {init:.3g} |" in table  # the start row stands after the init


@pytest.mark.slow
def test_compare_table_and_plot_from_a_sweep_and_from_runs(sweep, tmp_path, capsys):
    jobs = sorted((d for d in sweep.iterdir() if d.is_dir()), key=lambda d: d.name)
    assert [d.name.split("_")[0] for d in jobs] == ["0", "1"]
    table = main([str(sweep), "--out", str(tmp_path / "a")])
    lines = table.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[:4] == ["run", "recipe", "stage", "trained"]
    for col in ["ko BPB (vs base)", "en BPB (vs base)", "FLOPs (cum.)", "tokens (cum.)", "text bytes (cum.)"]:
        assert col in head
    assert "ko chars/token" in head and "en chars/token" in head
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:] if line.startswith("|")]
    # one base row (both jobs share the base's evaluation), then 2 runs x 2 stages, named by their job folders
    assert [r[0] for r in rows] == ["base"] + [d.name for d in jobs for _ in (1, 2)]
    assert [r[2] for r in rows] == ["0", "1", "2", "1", "2"] and {r[1] for r in rows[1:]} == {"eeve"}
    ko = head.index("ko BPB (vs base)")
    assert all("%" in r[ko] for r in rows[1:])
    for job, job_rows in ((jobs[0], rows[1:3]), (jobs[1], rows[3:5])):
        flops = [float(r[head.index("FLOPs (cum.)")]) for r in job_rows]
        m1, m2 = metrics(job, 1), metrics(job, 2)
        spent1 = m1["flops"]["train"] + m1["flops"]["init"]
        assert flops == pytest.approx([spent1, spent1 + m2["flops"]["train"]], rel=1e-2)
    assert (tmp_path / "a" / "compare.png").stat().st_size > 10_000
    assert (tmp_path / "a" / "compare.md").read_text().strip() == table.strip()

    # the same runs given as run folders, renamed; a run without evaluation falls back to val_end, marked
    plain = tmp_path / "plain"
    shutil.copytree(jobs[1], plain)
    m = metrics(plain, 2)
    del m["eval"]
    (plain / "stage2" / "metrics.json").write_text(json.dumps(m))
    table = main([str(jobs[0]), str(plain), "--names", "mean,subwords", "--out", str(tmp_path / "b")])
    assert "| mean | eeve | 1 |" in table and "| subwords | eeve | 2 |" in table
    assert f"{m['val_end']['ko']['bpb']:.4f}*" in table and "evaluation was off" in table
    assert (tmp_path / "b" / "compare.png").is_file()
    with pytest.raises(SystemExit):
        main([str(sweep), "--names", "just_one"])
    assert "give one name per run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "b")])
    assert "holds no stage<N>/metrics.json" in capsys.readouterr().err


@pytest.mark.slow  # the sweep fixture trains four stages
def test_a_sweep_ends_with_one_table_of_its_jobs(sweep):
    """train.py -m: the Hydra callback eeve.sweep.SweepTable wrote eeve.compare's table of the jobs in the sweep dir."""
    from eeve.compare import collect
    from eeve.eval.comparison import comparison_table

    md = (sweep / "compare.md").read_text(encoding="utf-8")
    assert md.strip() == comparison_table(collect([str(sweep)])).strip()
    assert "init=mean" in md and "init=mass_first_piece" in md and (sweep / "compare.png").is_file()
