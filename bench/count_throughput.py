"""Frequency-counting throughput vs raw `tokenizers` batch encoding, and peak memory at 1x vs 10x input.

    .venv/bin/python bench/count_throughput.py [--tokenizer DIR] [--text FILE] [--mb 8] [--threads 2]

* raw:    `encode_batch_fast` over the same byte-bounded batches, text already in memory, only the encode calls
          timed (not even reading the ids back);
* count:  `eeve.token_counting.count_tokens` from the file on disk (read + NFC + encode + bincount), i.e. what
          `tokenize.py` does per iteration. Goal: >= 0.9x raw. Also shown: with character counts (first
          iteration only) and with packing off (one encode input per document, as for byte-level bases).
* memory: `count_tokens` over an input of `--mb` MB and of 10x that, each in a fresh subprocess; peak RSS from
          getrusage. Goal: flat (the corpus is streamed; only a few batches are alive at a time).
Every measurement runs in its own subprocess with RAYON_NUM_THREADS=--threads, so both sides use the same threads.
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


def worker(mode: str, tokenizer: str, path: str, batch_bytes: int) -> dict:
    import numpy as np  # noqa: F401
    from tokenizers import Tokenizer

    from eeve.text.corpus import iter_batches, iter_documents
    from eeve.tokenizer.counting import count_tokens

    tok = Tokenizer.from_file(tokenizer)
    size = os.path.getsize(path)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "raw":
        batches = list(iter_batches(iter_documents([path]), batch_bytes))
        tok.encode_batch_fast(batches[0][:64], add_special_tokens=False)  # warm the thread pool
        dt, n = 0.0, 0
        for b in batches:  # time the encode calls only; the token total is taken outside the clock
            t = time.perf_counter()
            encs = tok.encode_batch_fast(b, add_special_tokens=False)
            dt += time.perf_counter() - t
            n += sum(len(e) for e in encs)
    else:
        tok.encode_batch_fast(["warm up"], add_special_tokens=False)
        t = time.perf_counter()
        c = count_tokens(
            tok,
            iter_documents([path]),
            batch_bytes=batch_bytes,
            count_chars=(mode == "count_chars"),
            pack=0 if mode == "count_unpacked" else 64,
        )
        dt = time.perf_counter() - t
        n = int(c.tokens.sum())
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


def spawn(mode: str, tokenizer: str, path: Path, batch_bytes: int, threads: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    r = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            mode,
            "--tokenizer",
            tokenizer,
            "--text",
            str(path),
            "--batch-bytes",
            str(batch_bytes),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tokenizer", default=None, help="tokenizer.json or folder (default: the demo expansion, else the demo base)"
    )
    ap.add_argument("--text", default=None, help="text file (default: .cache/demo/ko/train.txt)")
    ap.add_argument("--mb", type=float, default=8.0, help="input size for the throughput and 1x memory runs")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch-bytes", type=int, default=1 << 20)
    ap.add_argument("--repeats", type=int, default=3, help="best of N for throughput")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.tokenizer, a.text, a.batch_bytes)))
        return

    sys.path.insert(0, str(ROOT / "src"))
    from eeve.demo.data import ensure_demo_data
    from eeve.tokenizer.base import load_base

    demo = ensure_demo_data()
    tok = a.tokenizer or str(ROOT / "outputs/tokenize/demo/tokenizer")
    tmp = Path(tempfile.mkdtemp(prefix="count_bench-"))
    if Path(tok).is_dir() and (Path(tok) / "tokenizer.json").is_file():
        tok = str(Path(tok) / "tokenizer.json")
    elif not tok.endswith(".json"):
        if not Path(tok).exists():
            print(f"(no {tok}: using the demo base tokenizer; run `python tokenize.py` first to bench the expansion)")
            tok = str(demo / "base_tokenizer" / "tokenizer.model")
        base = load_base(tok)
        (tmp / "tokenizer.json").write_text(json.dumps(base.tokenizer_json), encoding="utf-8")
        tok = str(tmp / "tokenizer.json")
    text = Path(a.text) if a.text else demo / "ko" / "train.txt"
    small = make_input(text, a.mb, tmp / "x1.txt")
    big = make_input(text, a.mb * 10, tmp / "x10.txt")
    print(
        f"tokenizer {tok}\ntext {text} -> {small.stat().st_size / 1e6:.1f} MB and {big.stat().st_size / 1e6:.1f} MB; "
        f"threads {a.threads}; batch {a.batch_bytes} chars; best of {a.repeats}"
    )
    modes = ("raw", "count", "count_chars", "count_unpacked")
    runs = [spawn(m, tok, small, a.batch_bytes, a.threads) for _ in range(a.repeats) for m in modes]  # interleaved
    res = {m: max((r for r in runs if r["mode"] == m), key=lambda r: r["mb_per_s"]) for m in modes}
    raw = res["raw"]["mb_per_s"]
    print(f"{'':28s}{'MB/s':>8s}{'x raw':>8s}")
    print(f"{'raw encode_batch_fast':28s}{raw:8.2f}{1.0:8.2f}")
    print(f"{'count_tokens (from disk)':28s}{res['count']['mb_per_s']:8.2f}{res['count']['mb_per_s'] / raw:8.2f}")
    cc = res["count_chars"]["mb_per_s"]
    print(f"{'  + character counts':28s}{cc:8.2f}{cc / raw:8.2f}")
    print(
        f"{'  one document per encode':28s}{res['count_unpacked']['mb_per_s']:8.2f}{res['count_unpacked']['mb_per_s'] / raw:8.2f}"  # noqa: E501
    )
    assert res["raw"]["tokens"] == res["count"]["tokens"] == res["count_unpacked"]["tokens"], "token totals disagree"
    m1 = spawn("count", tok, small, a.batch_bytes, a.threads)
    m10 = spawn("count", tok, big, a.batch_bytes, a.threads)
    print(
        f"peak RSS count_tokens: {m1['bytes'] / 1e6:.0f} MB input -> {m1['peak_rss_mb']:.0f} MB; "
        f"{m10['bytes'] / 1e6:.0f} MB input -> {m10['peak_rss_mb']:.0f} MB (ratio {m10['peak_rss_mb'] / m1['peak_rss_mb']:.2f}; "  # noqa: E501
        f"after imports + tokenizer load {m1['rss_before_mb']:.0f} MB)"
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
