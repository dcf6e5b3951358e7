"""Run llama.cpp's ``convert_hf_to_gguf.py`` with two vocabulary hooks; a script, run in a subprocess by path:

    python converter_main.py LLAMA_CPP_DIR [convert_hf_to_gguf.py arguments ...]

It imports nothing from eeve (it runs against the pinned llama.cpp tree and its gguf-py, not the installed ``gguf``).
The hooks only fill in what the converter leaves undetermined for an expanded tokenizer; ``eeve.gguf.convert`` then
checks llama.cpp's tokenization against the HF tokenizer and deletes a GGUF that disagrees.

1. SentencePiece-style tokenizer.json without tokenizer.model (``_set_vocab_llama_hf``): gguf-py's ``LlamaHfVocab``
   gives every token the score -1000, and llama.cpp's SentencePiece tokenizer merges the adjacent pair whose result
   has the highest score, so equal scores merge left to right instead of in BPE order. The hook gives each token the
   score ``-rank`` of the first merge in tokenizer.json that forms it (0 for tokens no merge forms), which is the
   order HF's BPE applies the merges in. A ``tokenizer.model`` present in the folder is read by the converter as it
   is; this hook does not touch it.
2. Byte-level BPE whose pre-tokenizer hash the converter does not know (``get_vocab_base_pre`` raises
   NotImplementedError; the hash covers the vocabulary, so a newly trained or expanded vocabulary is never known):
   the pre-tokenizer type is taken, in order, from the export's ``base_tokenizer/`` (the base the vocabulary was
   expanded from, when its pre-tokenizer is identical and the converter knows the base's hash), or from the
   tokenizer.json itself when it is exactly GPT-2's (a lone ByteLevel pre-tokenizer with GPT-2's split regex).
   Anything else stops with one line.

Exit status 3 with one ``error:`` line on stderr when the vocabulary cannot be converted faithfully.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

UNSUPPORTED = 3


def _merge_scores(tokenizer_json: Path) -> dict[str, float]:
    """token -> -(rank of the first merge that forms it)."""
    model = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]
    scores: dict[str, float] = {}
    for rank, m in enumerate(model.get("merges", [])):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        scores.setdefault(a + b, -float(rank))
    return scores


def _hook_llama_hf_scores(gguf) -> None:
    original_init = gguf.LlamaHfVocab.__init__

    def init(self, base_path):
        original_init(self, base_path)
        self._eeve_scores = _merge_scores(Path(base_path) / "tokenizer.json")
        self._eeve_reverse = {i: t for t, i in self.tokenizer.get_vocab().items()}

    def score(self, token_id: int) -> float:
        return self._eeve_scores.get(self._eeve_reverse.get(token_id), 0.0)

    gguf.LlamaHfVocab.__init__ = init
    gguf.LlamaHfVocab.get_token_score = score


def _pre_tokenizer_parts(folder: Path) -> tuple[str, str] | None:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    tj = json.loads(path.read_text(encoding="utf-8"))
    return json.dumps(tj.get("pre_tokenizer"), sort_keys=True), json.dumps(tj.get("model", {}).get("type"))


def _is_gpt2_byte_level(folder: Path) -> bool:
    tj = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    pre, norm = tj.get("pre_tokenizer") or {}, tj.get("normalizer")
    plain = pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", False)
    return plain and norm in (None, {"type": "NFC"})  # NFC: the expansion's normaliser (see docs/gguf.md)


def _hook_pre_tokenizer(base_cls) -> None:
    original = base_cls.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            pass
        folder, base = Path(self.dir_model), Path(self.dir_model) / "base_tokenizer"
        if _pre_tokenizer_parts(base) is not None and _pre_tokenizer_parts(base) == _pre_tokenizer_parts(folder):
            from transformers import AutoTokenizer

            try:
                return original(self, AutoTokenizer.from_pretrained(base))
            except NotImplementedError:
                pass
        if _is_gpt2_byte_level(folder):
            return "gpt-2"
        print(
            f"error: llama.cpp's converter does not know the pre-tokenizer of {folder} (nor of its base_tokenizer/) "
            "and it is not GPT-2's byte-level one, so a GGUF would split text differently; use a base whose tokenizer "
            "the pinned llama.cpp supports (convert_hf_to_gguf_update.py lists them)",
            file=sys.stderr,
        )
        sys.exit(UNSUPPORTED)

    base_cls.get_vocab_base_pre = get_vocab_base_pre


def main(argv: list[str]) -> None:
    llama_cpp = Path(argv[0]).resolve()
    sys.path[:0] = [str(llama_cpp / "gguf-py"), str(llama_cpp)]
    import gguf
    from conversion import base

    _hook_llama_hf_scores(gguf)
    _hook_pre_tokenizer(base.TextModel)
    import convert_hf_to_gguf

    sys.argv = [str(llama_cpp / "convert_hf_to_gguf.py"), *argv[1:]]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main(sys.argv[1:])
