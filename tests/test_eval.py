"""Evaluation on the same held-out bytes (eeve.eval): stage-0 bits per byte against a direct computation, the split
training model against its export, lm-evaluation-harness on the local tasks against a direct computation, and a
stage run writing its evaluation, samples and schedule view. Real tiny model, real demo data."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import pytest
import torch
from test_train import compose_cfg

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base_folder(demo_data, tmp_path_factory) -> Path:
    """The tiny random Llama with the demo's base tokenizer, saved as a HF folder (what a base model looks like)."""
    from omegaconf import OmegaConf

    from eeve.model.load import load_base_model
    from eeve.tokenizer.base import load_base, write_hf_folder

    d = tmp_path_factory.mktemp("base")
    b = load_base(demo_data / "base_tokenizer" / "tokenizer.model")
    write_hf_folder(b.tokenizer_json, b.config, d)
    load_base_model(OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml")).save_pretrained(d)
    return d


def texts_of(demo_data: Path, nbytes: int) -> dict[str, list[str]]:
    from eeve.config import ValConfig
    from eeve.eval.texts import heldout_texts

    return heldout_texts(
        {lang: ValConfig(paths=[str(demo_data / lang / "heldout.txt")]) for lang in ("ko", "en")}, nbytes
    )


def test_take_bytes_keeps_whole_documents_within_the_budget():
    from eeve.eval.texts import take_bytes

    docs = ["ab", "한국", "xyz"]  # 2 + 6 + 3 bytes
    assert take_bytes(docs, 8) == ["ab", "한국"]
    assert take_bytes(docs, 10) == ["ab", "한국"]
    assert take_bytes(docs, 11) == docs
    assert take_bytes(docs, 1) == []


def test_stage0_bpb_equals_direct_computation(base_folder, demo_data):
    """evaluate_bpb (tokenizers + batched, padded windows) against a hand loop over transformers' tokenizer and the
    model's logits, one window at a time; window=16 makes most documents span several windows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eeve.eval.bpb import evaluate_bpb

    texts = texts_of(demo_data, 2500)
    model = AutoModelForCausalLM.from_pretrained(base_folder).eval()
    res = evaluate_bpb(model, base_folder, texts, window=16, batch_tokens=120)
    tok = AutoTokenizer.from_pretrained(base_folder)
    for lang, docs in texts.items():
        nats, n_tok, n_byte_pieces, n_windows = 0.0, 0, 0, 0
        for doc in docs:
            ids = tok(doc).input_ids
            assert ids[0] == tok.bos_token_id
            body = ids[1:]
            n_tok += len(body)
            n_byte_pieces += sum(p.startswith("<0x") for p in tok.convert_ids_to_tokens(body))
            for a in range(0, len(body), 15):
                x = torch.tensor([[tok.bos_token_id] + body[a : a + 15]])
                with torch.no_grad():
                    logp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
                nats -= logp.gather(1, x[0, 1:, None]).sum().item()
                n_windows += 1
        n_bytes = sum(len(d.encode("utf-8")) for d in docs)
        r = res[lang]
        assert r["bytes"] == n_bytes <= 2500 and r["tokens"] == n_tok and r["windows"] == n_windows > len(docs)
        assert r["nats"] == pytest.approx(nats, rel=1e-5)
        assert r["bpb"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)
        assert r["chars_per_token"] == pytest.approx(sum(map(len, docs)) / n_tok)
        assert r["byte_fallback_share"] == pytest.approx(n_byte_pieces / n_tok)
    assert res["ko"]["byte_fallback_share"] > 0.02 and res["en"]["byte_fallback_share"] < 0.01


def test_split_training_model_scores_like_its_export(expanded_tokenizer, demo_data):
    """The in-training path (split model, fused head loss, what the schedule callback uses) equals the plain model."""
    import copy

    from omegaconf import OmegaConf
    from tokenizers import Tokenizer

    from eeve.eval.bpb import evaluate_bpb
    from eeve.model.expand import expand_model, read_expansion
    from eeve.model.load import load_base_model
    from eeve.model.split import merge_vocab, split_vocab
    from eeve.training.module import _eeve_losses

    exp = read_expansion(expanded_tokenizer)
    base_tok = Tokenizer.from_file(str(expanded_tokenizer / "base_tokenizer" / "tokenizer.json"))
    model = expand_model(
        load_base_model(OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml")),
        base_tok,
        exp["new_tokens"],
        exp["base_vocab_size"],
        "mean_subwords",
        0,
        vocab_size=exp["vocab_size"],
    )
    split = split_vocab(copy.deepcopy(model), exp["base_vocab_size"])
    split.eeve_losses = types.MethodType(_eeve_losses, split)
    texts = texts_of(demo_data, 1500)
    a = evaluate_bpb(split, expanded_tokenizer, texts, window=32, batch_tokens=256)
    b = evaluate_bpb(merge_vocab(model), expanded_tokenizer, texts, window=32, batch_tokens=256)
    for lang in texts:
        assert a[lang]["bpb"] == pytest.approx(b[lang]["bpb"], rel=1e-5)
        assert a[lang]["tokens"] == b[lang]["tokens"]


def test_harness_local_tasks_match_direct_loglikelihoods(base_folder):
    """lm-evaluation-harness on the demo's local tasks, offline; accuracy equals argmax of hand-computed
    log-likelihoods of ' ' + choice after the context (the harness's own request split)."""
    pytest.importorskip("lm_eval")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eeve.eval.harness import run_tasks
    from eeve.eval.tasks import local_task_dir

    limit = 6
    model = AutoModelForCausalLM.from_pretrained(base_folder).eval()
    res = run_tasks(model, base_folder, ["eeve_nextsent_ko", "eeve_nextsent_en"], limit=limit, batch_size=8)
    tok = AutoTokenizer.from_pretrained(base_folder)
    for task in ("eeve_nextsent_ko", "eeve_nextsent_en"):
        lines = (local_task_dir() / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()
        docs = [json.loads(x) for x in lines]
        assert len(docs) == 100 and all(len(d["choices"]) == 4 for d in docs)
        correct = 0
        for doc in docs[:limit]:
            lls = []
            for choice in doc["choices"]:
                ctx = tok(doc["context"]).input_ids
                whole = tok(doc["context"] + " " + choice).input_ids
                cont = whole[len(ctx) :]
                with torch.no_grad():
                    logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
                lls.append(sum(logp[len(ctx) - 1 + k, t].item() for k, t in enumerate(cont)))
            correct += max(range(4), key=lambda i: lls[i]) == doc["label"]
        assert res[task]["n"] == limit
        assert res[task]["acc"] == pytest.approx(correct / limit)


@pytest.mark.slow
def test_stage_run_evaluates_base_and_export_with_samples_in_tensorboard(expanded_tokenizer, packed_cache, tmp_path):
    """One stage through run_stage: stage 0 cached, the export evaluated into metrics.json, samples and the
    schedule series in TensorBoard, report.png, and the table with a base row and changes against it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from eeve.eval.table import eval_table
    from eeve.eval.training_run import StageEvaluation
    from eeve.training.stages import run_stage

    tasks = ["eval.tasks=[eeve_nextsent_ko]", "eval.task_limit=2", "eval.after_stages=[1]"]
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        tasks = []
    cfg = compose_cfg(
        tmp_path,
        expanded_tokenizer,
        packed_cache,
        "eval.bytes=3000",
        "eval.samples.max_new_tokens=4",
        "trainer.val_every_n_steps=2",
        *tasks,
    )
    m = run_stage(cfg, 1, evaluation=StageEvaluation)
    base = json.loads((tmp_path / "stage0" / "metrics.json").read_text())
    saved = json.loads((tmp_path / "stage1" / "metrics.json").read_text())
    assert saved["eval"] == m["eval"]
    for lang in ("ko", "en"):
        assert base["eval"]["bpb"][lang]["bytes"] == m["eval"]["bpb"][lang]["bytes"] <= 3000
        assert m["eval"]["bpb"][lang]["bpb"] > 0 and len(m["eval"]["samples"][lang]) == 2
    # the expanded tokenizer packs Korean into fewer tokens than the base one, on the same bytes
    assert m["eval"]["bpb"]["ko"]["chars_per_token"] > 1.5 * base["eval"]["bpb"]["ko"]["chars_per_token"]
    assert [p["step"] for p in m["eval"]["series"]] == [0, 2]  # the expanded start and one validation inside
    if tasks:
        assert 0 <= m["eval"]["benchmarks"]["eeve_nextsent_ko"]["acc"] <= 1 and "benchmarks" not in base["eval"]

    ea = EventAccumulator(str(tmp_path / "tensorboard" / "schedule"), size_guidance={"tensors": 0, "scalars": 0})
    ea.Reload()
    text_tags = ea.Tags()["tensors"]
    for lang in ("ko", "en"):
        tag = f"samples/{lang}/text_summary"
        assert tag in text_tags
        written = [e.tensor_proto.string_val[0].decode() for e in ea.Tensors(tag)]
        assert any(
            s["prompt"] in w and s["continuation"].strip()[:5] in w for s in m["eval"]["samples"][lang] for w in written
        )
        series = ea.Scalars(f"schedule/val_{lang}_bpb")
        assert [e.step for e in series] == [0, 2 * m["tokens"] // m["steps"], m["tokens"]]
        assert series[-1].value == pytest.approx(m["eval"]["bpb"][lang]["bpb"], rel=1e-6)
        ref = [e.value for e in ea.Scalars(f"schedule/base_{lang}_bpb")]
        assert len(ref) >= 2 and ref == [pytest.approx(base["eval"]["bpb"][lang]["bpb"], rel=1e-6)] * len(ref)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    table = eval_table([m], base)
    assert "| 0 (base) |" in table and "| 1 start |" in table and " %)" in table

    # a second pass over the finished stage reuses both evaluations (nothing is recomputed)
    mtime = (tmp_path / "stage0" / "metrics.json").stat().st_mtime_ns
    assert run_stage(cfg, 1, evaluation=StageEvaluation)["eval"] == m["eval"]
    assert (tmp_path / "stage0" / "metrics.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_paper_benchmark_runs_offline_from_local_files(base_folder, tmp_path):
    """The offline route for the paper's benchmarks: local rows in the hub dataset's schema + generated task files
    keep the built-in task (its prompt and metric) and read only the local rows."""
    pytest.importorskip("lm_eval")
    from transformers import AutoModelForCausalLM

    from eeve.eval.harness import run_tasks
    from eeve.eval.offline import write_yamls

    rows = [
        {"id": f"q{i}", "question": q, "choices": {"text": c, "label": ["A", "B", "C", "D"]}, "answerKey": k}
        for i, (q, c, k) in enumerate(
            [
                ("Which organ pumps blood?", ["Heart", "Lung", "Liver", "Skin"], "A"),
                ("What falls from clouds?", ["Stones", "Rain", "Cars", "Light"], "B"),
                ("What do plants need to grow?", ["Noise", "Plastic", "Water", "Metal"], "C"),
            ]
        )
    ]
    d = tmp_path / "data" / "allenai__ai2_arc" / "ARC-Easy"
    d.mkdir(parents=True)
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    names = write_yamls(tmp_path / "data", tmp_path / "tasks", ["arc_easy"])
    assert names == ["arc_easy"]
    model = AutoModelForCausalLM.from_pretrained(base_folder).eval()
    res = run_tasks(model, base_folder, ["arc_easy"], include_path=str(tmp_path / "tasks"), batch_size=4)
    assert res["arc_easy"]["n"] == 3 and {"acc", "acc_norm"} <= set(res["arc_easy"])


def test_evaluate_cli_prints_the_table_for_any_folder_against_a_base(base_folder, demo_data, capsys):
    from eeve.evaluate import main

    val = [f"validation.{lang}.paths=[{demo_data / lang / 'heldout.txt'}]" for lang in ("ko", "en")]
    out = main(
        [f"model={base_folder}", f"base={base_folder}", "eval.bytes=1500", "eval.samples.max_new_tokens=2", *val]
    )
    table = capsys.readouterr().out
    assert "| 0 (base) |" in table and f"| {base_folder.name} |" in table and "(+0.0 %)" in table
    assert out["models"][0]["eval"]["bpb"] == out["base"]["eval"]["bpb"]  # the same model scores the same
    with pytest.raises(SystemExit) as e:
        main(["model", f"base={base_folder}"])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("error: argument 'model' is not key=value")
    with pytest.raises(SystemExit):
        main([f"model={base_folder}", "eval.bytez=1"])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "did you mean 'eval.bytes'" in err and len(err.splitlines()) == 1
