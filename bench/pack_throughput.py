"""Packing throughput (text -> packed token cache) vs raw `tokenizers` batch encoding, and peak memory at 1x vs 10x.

    .venv/bin/python bench/pack_throughput.py [--tokenizer DIR] [--text FILE] [--mb 8] [--threads N]

* raw:      `encode_batch_fast` (what packing calls) over the same 1 MB batches, text already in memory, only the
            encode calls timed; `encode_batch` (with offsets, what packing called before) for reference;
* pack:     `eeve.data.packing.pack_source` from the file on disk to a fresh cache: read + NFC + encode + BOS/EOS +
            cut into sequences + write, all timed; also from the same text written as a Parquet file (`datasets`'
            one-time start-up in a process, about a second, happens before the clock starts).
* memory:   `pack_source` over `--mb` MB and over 10x that, each in a fresh subprocess; peak RSS from getrusage.
Every measurement runs in its own subprocess with RAYON_NUM_THREADS=--threads, so both sides use the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def make_input(text: Path, mb: float, dest: Path) -> Path:
    """`text` repeated until it holds about `mb` MB."""
    data = text.read_bytes()
    if not data.endswith(b"\n"):
        data += b"\n"
    reps = max(1, round(mb * 1e6 / len(data)))
    with open(dest, "wb") as f:
        for _ in range(reps):
            f.write(data)
    return dest


def worker(mode: str, tokenizer: str, path: str) -> dict:
    from eeve.data.packing import ENCODE_BATCH_BYTES, open_packed, pack_source
    from eeve.text.corpus import iter_batches, iter_documents
    from eeve.text.sources import SourceOptions
    from eeve.tokenizer.info import TokenizerInfo

    tok = TokenizerInfo(Path(tokenizer))
    if mode == "pack_parquet":  # datasets' one-time start-up (imports, builder modules: ~1 s) is not throughput
        import datasets

        datasets.disable_progress_bars()
        warm = Path(tempfile.mkdtemp(prefix="pack-bench-warm-")) / "w.parquet"
        datasets.Dataset.from_dict({"text": ["warm up"]}).to_parquet(str(warm))
        list(datasets.load_dataset("parquet", data_files=[str(warm)], split="train", streaming=True))
    size = os.path.getsize(path)
    tok.tok.encode_batch_fast(["warm up the thread pool"] * 64)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode in ("raw", "raw_offsets"):
        batches = list(iter_batches(iter_documents([path]), ENCODE_BATCH_BYTES))
        encode = tok.tok.encode_batch_fast if mode == "raw" else tok.tok.encode_batch
        dt, n = 0.0, 0
        for b in batches:  # only the encode calls are timed; the token total is taken outside the clock
            t = time.perf_counter()
            encs = encode(b, add_special_tokens=True)
            dt += time.perf_counter() - t
            n += sum(len(e) for e in encs) + (tok.add_bos + tok.add_eos) * len(b)
    else:
        cache = Path(tempfile.mkdtemp(prefix="pack-bench-cache-"))
        opts = SourceOptions(text_field="text")
        t = time.perf_counter()
        folder, built = pack_source("bench", [path], opts, tok, 2048, cache, None)
        dt = time.perf_counter() - t
        meta = open_packed(folder).meta
        n = meta["tokens_total"]
        shutil.rmtree(cache, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "mode": mode,
        "bytes": size,
        "seconds": dt,
        "mb_per_s": size / dt / 1e6,
        "tokens": n,
        "peak_rss_mb": rss / 1024,
        "rss_before_mb": rss0 / 1024,
    }


def spawn(mode: str, tokenizer: str, path: Path, threads: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    r = subprocess.run(
        [sys.executable, __file__, "--worker", mode, "--tokenizer", tokenizer, "--text", str(path)],
        env=env,
        capture_output=True,
        text=True,
    )
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tokenizer",
        default=str(ROOT / "outputs/tokenize/demo/tokenizer"),
        help="expanded tokenizer folder (default: the demo's, from `python tokenize.py`)",
    )
    ap.add_argument("--text", default=None, help="text file (default: .cache/demo/ko/train.txt)")
    ap.add_argument("--mb", type=float, default=8.0, help="input size for the throughput and 1x memory runs")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3, help="best of N for throughput")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.tokenizer, a.text)))
        return

    from eeve.demo.data import ensure_demo_data

    if not (Path(a.tokenizer) / "tokenizer.json").is_file():
        raise SystemExit(f"no tokenizer at {a.tokenizer}: run `python tokenize.py` first (or pass --tokenizer)")
    demo = ensure_demo_data()
    tmp = Path(tempfile.mkdtemp(prefix="pack_bench-"))
    text = Path(a.text) if a.text else demo / "ko" / "train.txt"
    small = make_input(text, a.mb, tmp / "x1.txt")
    big = make_input(text, a.mb * 10, tmp / "x10.txt")
    import datasets

    datasets.disable_progress_bars()
    lines = [x for x in small.read_text(encoding="utf-8").split("\n") if x.strip()]
    parquet = tmp / "x1.parquet"
    datasets.Dataset.from_dict({"text": lines}).to_parquet(str(parquet))
    print(
        f"tokenizer {a.tokenizer}\ntext {text} -> {small.stat().st_size / 1e6:.1f} MB and "
        f"{big.stat().st_size / 1e6:.1f} MB; threads {a.threads}; best of {a.repeats}"
    )
    modes = {"raw": small, "raw_offsets": small, "pack": small, "pack_parquet": parquet}
    runs = [spawn(m, a.tokenizer, p, a.threads) | {"mode": m} for _ in range(a.repeats) for m, p in modes.items()]
    res = {m: min((r for r in runs if r["mode"] == m), key=lambda r: r["seconds"]) for m in modes}  # best of N
    text_bytes = small.stat().st_size
    raw = text_bytes / res["raw"]["seconds"] / 1e6
    print(f"{'':44s}{'MB/s':>8s}{'x raw':>8s}")
    for m, label in [
        ("raw", "raw encode_batch_fast (in memory)"),
        ("raw_offsets", "raw encode_batch (with offsets)"),
        ("pack", "pack_source from .txt (read..write)"),
        ("pack_parquet", "pack_source from .parquet (datasets)"),
    ]:
        mbs = text_bytes / res[m]["seconds"] / 1e6  # the same text bytes on every row
        print(f"{label:44s}{mbs:8.2f}{mbs / raw:8.2f}")
    assert res["raw"]["tokens"] == res["pack"]["tokens"] == res["pack_parquet"]["tokens"], "token totals disagree"
    m1 = spawn("pack", a.tokenizer, small, a.threads)
    m10 = spawn("pack", a.tokenizer, big, a.threads)
    print(
        f"peak RSS pack_source: {m1['bytes'] / 1e6:.0f} MB input -> {m1['peak_rss_mb']:.0f} MB; "
        f"{m10['bytes'] / 1e6:.0f} MB input -> {m10['peak_rss_mb']:.0f} MB (ratio "
        f"{m10['peak_rss_mb'] / m1['peak_rss_mb']:.2f}; after imports + tokenizer load {m1['rss_before_mb']:.0f} MB)"
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
