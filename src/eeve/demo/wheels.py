"""What the demo takes from PyPI wheels (downloaded, never installed): the base tokenizer from ``mistral-common``,
Korean prose from ``konlpy``'s corpora, and English prose from the ``mistral-common`` wheel where apt is missing."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

from eeve.demo.fetch import Wheel
from eeve.demo.help_html import clean, has_letter
from eeve.demo.languages import LANGUAGES
from eeve.errors import DemoDataError

MISTRAL_WHEEL = Wheel(
    "mistral-common",
    "1.13.1",
    "mistral_common-1.13.1-py3-none-any.whl",
    "98b4d0755b8d90bf4691fa8f1b70cb3b4a8cd4dc1653c4ed08ef3d1c7d2c29af",
)
KONLPY_WHEEL = Wheel(
    "konlpy",
    "0.6.0",
    "konlpy-0.6.0-py2.py3-none-any.whl",
    "0b7928059e20eb1c72f6fe65a3d12c104fae9e68173904e16beef869cf0ea590",
)
TOKENIZER_MEMBER = "mistral_common/data/tokenizer.model.v1"
TOKENIZER_SHA256 = "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"
TOKENIZER_VOCAB = 32000

KONLPY_PREFIXES = ("konlpy/data/corpus/kolaw/", "konlpy/data/corpus/kobill/")
KONLPY_HELDOUT = "konlpy/data/corpus/kobill/1809899.txt"  # the one konlpy file held out


def konlpy_documents(wheel_path: Path) -> list[tuple[str, list[str]]]:
    """[(member name, Korean lines)] from the konlpy wheel's kolaw/kobill corpora."""
    docs = []
    korean = LANGUAGES["ko"].target()
    with zipfile.ZipFile(wheel_path) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith(".txt") and name.startswith(KONLPY_PREFIXES):
                text = zf.read(name).decode("utf-8", "replace")
                lines = [clean(line) for line in text.splitlines()]
                docs.append((name, [line for line in lines if korean.has_target(line)]))
    if not docs:
        raise DemoDataError(f"{wheel_path.name}: no kolaw/kobill corpus files found")
    return docs


def english_fallback_documents(wheel_path: Path) -> list[tuple[str, list[str]]]:
    """English prose shipped in the mistral-common wheel (Apache-2.0 LICENSE text + README in METADATA).

    Only used where apt is unavailable; paragraphs are blank-line separated blocks, whitespace collapsed.
    """
    docs = []
    with zipfile.ZipFile(wheel_path) as zf:
        for name in sorted(zf.namelist()):
            if ".dist-info/" in name and name.rsplit("/", 1)[-1] in {"LICENSE", "METADATA"}:
                text = zf.read(name).decode("utf-8", "replace")
                if name.endswith("METADATA"):  # skip the RFC 822 header block
                    text = text.split("\n\n", 1)[-1]
                blocks = [clean(b) for b in re.split(r"\n\s*\n", text)]
                docs.append((name, [b for b in blocks if has_letter(b) and not b.startswith(("```", "|", "<", "[!["))]))
    return docs


def extract_tokenizer(wheel_path: Path, dest: Path) -> dict:
    with zipfile.ZipFile(wheel_path) as zf:
        data = zf.read(TOKENIZER_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != TOKENIZER_SHA256:
        raise DemoDataError(f"{TOKENIZER_MEMBER}: sha256 {digest} != expected {TOKENIZER_SHA256}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return verify_tokenizer(dest) | {"sha256": digest, "source": f"{MISTRAL_WHEEL.filename}:{TOKENIZER_MEMBER}"}


def verify_tokenizer(path: Path) -> dict:
    import sentencepiece as spm  # a heavy import, only for the build
    from sentencepiece import sentencepiece_model_pb2 as pb

    sp = spm.SentencePieceProcessor(model_file=str(path))
    proto = pb.ModelProto()
    proto.ParseFromString(path.read_bytes())
    model_type = pb.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)
    info = {
        "pieces": sp.get_piece_size(),
        "model_type": model_type,
        "byte_fallback": bool(proto.trainer_spec.byte_fallback),
    }
    if info != {"pieces": TOKENIZER_VOCAB, "model_type": "BPE", "byte_fallback": True}:
        raise DemoDataError(f"{path}: unexpected tokenizer {info}")
    return info
