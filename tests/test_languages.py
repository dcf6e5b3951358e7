"""Languages come from the configuration (issue 19): one name for a run's tokenizer and folder, validation sets and
training sources added on the command line, reports labelled by `lang`, local tasks for scripts without letter
case, a tokenizer–data check before training, and Japanese end to end (slow)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_rerun import compose

from eeve.cli import new_entry
from eeve.config import to_train_config
from eeve.errors import ConfigError, EEVEError, EvalError

ROOT = Path(__file__).resolve().parents[1]
JA = ".cache/demo/ja/heldout.txt"


def train_cfg(*overrides: str, tok: Path | str = "outputs/tokenize/demo/tokenizer"):
    args = [new_entry(o) for o in overrides]  # as train.py's command line (eeve.cli.check_argv)
    return to_train_config(compose(f"paths.root={ROOT}", "paths.run_dir=x", f"tokenizer.path={tok}", *args))


def run(script: str, *args: str, cwd: Path = ROOT, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


# ------------------------------------------------------------------------------------ sets from the command line
def test_a_validation_set_and_a_source_are_added_on_the_command_line():
    cfg = train_cfg(f"+data.validation.ja.paths=[{JA}]", "+data.validation.ja.max_sequences=4")
    assert list(cfg.data.validation) == ["ko", "en", "ja"]
    ja = cfg.data.validation["ja"]
    assert (ja.paths, ja.max_sequences, ja.text_field) == ([JA], 4, "text")  # the schema's defaults fill the rest
    cfg = train_cfg("+data.sources.ja_web.paths=[.cache/demo/ja/train.txt]", "+data.sources.ja_web.ratio=0.5")
    assert cfg.data.sources["ja_web"].ratio == 0.5 and cfg.data.sources["ja_web"].format == "auto"
    with pytest.raises(ConfigError, match="data.sources.x.ratio"):  # a source needs its ratio
        train_cfg("+data.sources.x.paths=[a.txt]")
    assert new_entry("+data.validation.ja.paths=[a],[b]") == "+data.validation.ja.paths=[a],[b]"  # a sweep: as typed


def test_the_command_line_form_reaches_train_py(tmp_path):
    r = run("train.py", "--cfg", "job", f"+data.validation.ja.paths=[{JA}]", "+data.validation.ja.lang=ja")
    assert r.returncode == 0, r.stderr
    ja = yaml.safe_load(r.stdout)["data"]["validation"]["ja"]
    assert (ja["paths"], ja["lang"], ja["max_sequences"]) == ([JA], "ja", 64), r.stdout


def test_validation_sets_are_named_by_lang():
    cfg = train_cfg(f"data.validation.ko.paths=[{JA}]", "data.validation.ko.lang=ja")
    assert list(cfg.data.validation) == ["ja", "en"]  # columns, panels, tags and guard keys follow
    with pytest.raises(ConfigError, match="stage.max_regression names 'ko'.*'ja', 'en'"):
        train_cfg("data.validation.ko.lang=ja", "+stage.max_regression.ko=0.1")
    with pytest.raises(ConfigError) as e:
        train_cfg("+data.validation.x.paths=[a.txt]", "+data.validation.x.lang=en")
    assert "data.validation.en and data.validation.x are both lang en" in str(e.value)


# ------------------------------------------------------------------------------------------------- the labels
def test_tables_and_panels_take_their_names_from_lang():
    from eeve.eval.report import panel_title
    from eeve.training.stages import summary_table

    m = {
        "stage": 1,
        "trainable": ["new_input"],
        "steps": 3,
        "tokens": 768,
        "groups_changed": ["new_input"],
        "val_start": {"ja": {"bpb": 2.5}, "en": {"bpb": 1.9}},
        "val_end": {"ja": {"bpb": 2.0}, "en": {"bpb": 1.9}},
    }
    head = summary_table([m]).splitlines()[0]
    assert "| ja BPB | en BPB |" in head and "ko" not in head, head
    assert "2.500 → 2.000" in summary_table([m])
    assert panel_title("ja", 1000) == "Japanese: 1,000 held-out bytes" and panel_title("xx", 5).startswith("xx:")


def test_sentences_of_scripts_without_letter_case(tmp_path, demo_data):
    from eeve.eval.tasks import build_items, local_task_dir, sentence_like

    assert sentence_like("関数の結果を文字列として返します。", "ja")
    assert sentence_like("यह फ़ंक्शन एक स्ट्रिंग देता है।", "hi")
    assert not sentence_like("lower case text is not a sentence here.", "en")
    assert sentence_like("Upper case text is a sentence here.", "en")
    ja = [f"{n}番目の段落は文章として読めるように十分な長さです。" for n in range(200)]
    items = build_items(ja, "ja", n=5)
    assert len(items) == 5 and all(len(set(i["choices"])) == 4 for i in items)

    demo = tmp_path / "demo"  # the default pair comes from the demo; a Japanese task is built when asked for
    for lang in ("ko", "en"):
        (demo / lang).mkdir(parents=True)
        (demo / lang / "heldout.txt").symlink_to(demo_data / lang / "heldout.txt")
    with pytest.raises(EvalError, match="python -m eeve.demo.data lang=ja"):
        local_task_dir(demo, langs=["ja"])
    (demo / "ja").mkdir()
    (demo / "ja" / "heldout.txt").write_text("\n".join(ja) + "\n", encoding="utf-8")
    out = local_task_dir(demo, langs=["ja"])
    lines = (out / "eeve_nextsent_ja.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 100 and "task: eeve_nextsent_ja" in (out / "eeve_nextsent_ja.yaml").read_text()


# ------------------------------------------------------------------------------------- tokenizer against data
def test_data_without_new_tokens_under_the_runs_tokenizer_stops_in_one_line(
    expanded_tokenizer, demo_language, tmp_path
):
    from eeve.data.language_check import check_languages

    demo_language("ja")  # the Japanese demo data these configs read (another test may not have built it yet)

    check_languages(train_cfg(tok=expanded_tokenizer))  # Korean data, Korean tokenizer, English replay: fine
    for overrides, where in [
        (["data=demo_ja"], "data.sources.ja_web (lang ja)"),
        (["data.sources.ko_web.paths=[.cache/demo/ja/train.txt]", "data.sources.ko_web.lang=ja"], "ko_web (lang ja)"),
        ([f"+data.validation.ja.paths=[{JA}]"], "data.validation.ja (lang ja)"),
    ]:
        with pytest.raises(ConfigError) as e:
            check_languages(train_cfg(*overrides, tok=expanded_tokenizer))
        msg = str(e.value)
        assert "\n" not in msg and where in msg and f"tokenizer {expanded_tokenizer} (built for Hangul)" in msg, msg
        assert "python tokenize.py run_name=demo" in msg, msg
    check_languages(train_cfg("data=demo_ja", "recipe=no_expansion", tok=expanded_tokenizer))  # no new tokens by design
    check_languages(train_cfg("run_name=ja", tok=tmp_path / "none"))  # no tokenizer: the stage says so
    from eeve.model.expand import read_expansion

    with pytest.raises(EEVEError, match=r"run `python tokenize.py run_name=ja` first"):
        read_expansion(tmp_path / "outputs" / "tokenize" / "ja" / "tokenizer")

    # train.py checks it before anything is loaded or evaluated
    r = run("train.py", "data=demo_ja", f"tokenizer.path={expanded_tokenizer}", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr[-2000:]
    assert "data.sources.ja_web (lang ja) has no new tokens" in r.stderr and not (tmp_path / "run" / "stage0").exists()


# ----------------------------------------------------------------------------------------- Japanese end to end
FAST_JA = [
    "stage.max_steps=3",
    "stage.warmup_steps=1",
    "data.seq_len=64",
    "data.micro_batch_size=4",
    "data.validation.ja.max_sequences=8",
    "data.validation.en.max_sequences=8",
    "trainer.val_every_n_steps=100",
    "trainer.checkpoint_every_n_steps=100",
    "eval.bytes=4096",
    "eval.task_limit=4",
    "eval.samples.max_new_tokens=4",
    "stage.max_regression=null",
]


@pytest.mark.slow
def test_japanese_end_to_end(demo_language, tmp_path):
    """docs/second-language.md's sequence with tiny budgets: the demo's Japanese, the Japanese tokenizer built and
    read under one run name, stages 1 and 7 of the tiny model (`stage=all stages=[1,7]`: what each of the seven
    stages trains is the Korean tests' job), a table in Japanese and English only."""
    demo = demo_language("ja").parent
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "demo").symlink_to(demo)  # the commands' relative paths, from a fresh folder
    r = run(
        "tokenize.py",
        "run_name=ja",
        "target.scripts=[Han,Hiragana,Katakana]",
        "corpus.paths=[.cache/demo/ja/train.txt]",
        "heldout.ko=null",
        "+heldout.ja=.cache/demo/ja/heldout.txt",
        "intermediate_vocab_size=4000",
        "intermediate_max_mb=0.5",
        "progress=false",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    expansion = json.loads((tmp_path / "outputs/tokenize/ja/tokenizer/expansion.json").read_text())
    r = run(
        "train.py", "run_name=ja", "data=demo_ja", "model=tiny", "stage=all", "stages=[1,7]",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *FAST_JA, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = tmp_path / "outputs" / "ja"
    m7 = json.loads((run_dir / "stage7" / "metrics.json").read_text())
    model_vocab = json.loads((run_dir / "stage7" / "config.json").read_text())["vocab_size"]
    assert model_vocab == expansion["vocab_size"]  # the tokenizer of the same name

    table = [x for x in r.stdout.splitlines() if x.startswith("|")]
    head, rows = table[0], {x.split("|")[1].strip(): x for x in table[2:]}
    cols = [c.strip() for c in head.strip("|").split("|")]
    assert "ja BPB (vs base)" in cols and "en BPB (vs base)" in cols, head
    ja = rows["7"].strip("|").split("|")[cols.index("ja BPB (vs base)")]
    assert float(re.search(r"\(([-+]\d+\.\d) %\)", ja).group(1)) < 0, ja  # a gain against the base
    m1 = json.loads((run_dir / "stage1" / "metrics.json").read_text())
    start = next(p for p in m1["eval"]["series"] if p["step"] == 0)["bpb"]["ja"]  # the expanded model, untrained
    assert m7["eval"]["bpb"]["ja"]["bpb"] < start  # and the stages trained it further
    assert "eeve_nextsent_ja acc" in cols, head
    assert not re.search(r"\bko\b|Korean|nextsent_ko", "\n".join(table)), "\n".join(table)

    from eeve.eval.report import panel_title

    base = json.loads((run_dir / "stage0" / "metrics.json").read_text())
    titles = [panel_title(lang, v["bytes"]) for lang, v in base["eval"]["bpb"].items()]
    assert [t.split(":")[0] for t in titles] == ["Japanese", "English"] and (run_dir / "report.png").is_file()
    assert set(m7["eval"]["samples"]) == {"ja", "en"}  # no Korean prompts in a Japanese run

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set(EventAccumulator(str(run_dir / "tensorboard" / "stage7")).Reload().Tags()["scalars"])
    assert "val_ja/bpb" in tags and not [t for t in tags if "ko" in t.split("/")[0]], sorted(tags)
