"""Which characters belong to the target language: sets built from Unicode's Script and Script_Extensions
properties (the PyPI ``regex`` package's Unicode tables; Python's ``unicodedata`` has no script property).

``target_scripts(["Han", "Hiragana", "Katakana"])`` (or ``ranges=["U+1EA0-U+1EF9"]`` for languages whose letters
are a subset of a shared script) gives a :class:`TargetScripts` that the tokenizer builder, the reports and the demo
data ask three questions:

* **target** characters (T): Script is one of the named scripts, or the code point lies in an explicit range. A text
  holding one is target-language text. Every new vocabulary entry must contain a T character (SentencePiece bases)
  or consist of bytes that only occur inside T characters (byte-level bases): that alone guarantees that text without
  a T character encodes exactly as with the base.
* **allowed** characters (A ⊇ T): may stand inside a candidate token next to T characters without being target
  characters themselves: letters and marks whose Script_Extensions name a target script (Japanese ー U+30FC, the kana
  voicing marks U+3099/U+309A, the combining acute U+0301 used for Russian stress) and characters whose only script
  is Inherited (ZWJ/ZWNJ, variation selectors). They never make a token a target token: ZWJ and U+FE0F also occur in
  English emoji text. For explicit ranges, letters and marks of the ranges' own scripts are allowed too (Vietnamese:
  every Latin letter, as long as the token holds a Vietnamese-only letter).
* **bytes implying the target**: whether a byte string, wherever it occurs in valid UTF-8 text, proves that the text
  holds a T character (byte-level BPE entries are byte strings that may cut characters). Computed from the code-point
  set over all of Unicode, it generalises the old Hangul lead-byte rules.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import regex

from eeve.errors import ConfigError

MAX_CP = 0x110000
_NOT_TARGET = {"COMMON", "INHERITED", "UNKNOWN"}
_RANGE_RE = re.compile(r"^\s*U\+([0-9A-Fa-f]{4,6})\s*(?:(?:-|\.\.)\s*(?:U\+)?([0-9A-Fa-f]{4,6}))?\s*$")


def _loose(name: str) -> str:
    """Unicode's loose matching of property values (UAX #44 LM3): case, spaces, '_' and '-' do not count."""
    return re.sub(r"[\s_\-]", "", name).upper()


@functools.lru_cache(maxsize=1)
def script_names() -> dict[str, str]:
    """{loose alias: loose long name} for every Script value ``regex`` knows (long names and ISO 15924 codes).

    Read from regex's property table (the data behind its ``\\p{sc=...}``). That table is private: if its layout
    ever changes this returns {} and names are checked by compiling ``\\p{sc=NAME}`` instead (only the did-you-mean
    suggestions are lost)."""
    try:
        from regex import _regex_core

        values = _regex_core.PROPERTIES["SCRIPT"][1]  # {alias: value id}; the long name comes first per id
    except Exception:  # noqa: BLE001 - private layout changed
        return {}
    long_of: dict[int, str] = {}
    for alias, vid in values.items():
        long_of.setdefault(vid, alias)
    return {alias: long_of[vid] for alias, vid in values.items()}


def _canonical(name: str) -> str:
    key = _loose(name)
    names = script_names()
    if names:
        if key in names:
            return names[key]
        close = difflib.get_close_matches(key, sorted(set(names.values())), n=3, cutoff=0.6)
        hint = f": did you mean {' or '.join(c.title() for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown Unicode script {name!r} in target.scripts{hint} (names as in Unicode's "
            "Scripts.txt, e.g. Hangul, Han, Hiragana, Katakana, Devanagari, Cyrillic, Thai, Arabic)"
        )
    try:
        regex.compile(rf"\p{{sc={key}}}")
    except regex.error:
        raise ConfigError(
            f"unknown Unicode script {name!r} in target.scripts (names as in Unicode's Scripts.txt, "
            "e.g. Hangul, Han, Devanagari, Cyrillic)"
        ) from None
    return key


def _parse_range(spec: str) -> tuple[int, int]:
    m = _RANGE_RE.match(str(spec))
    if not m:
        raise ConfigError(f"target.ranges entry {spec!r} is not a range: write 'U+1EA0-U+1EF9' (or 'U+0111')")
    lo = int(m.group(1), 16)
    hi = int(m.group(2), 16) if m.group(2) else lo
    if not lo <= hi < MAX_CP:
        raise ConfigError(f"target.ranges entry {spec!r} is empty or beyond U+10FFFF: write 'U+LOW-U+HIGH'")
    if lo < 0x80:
        raise ConfigError(
            f"target.ranges entry {spec!r} includes ASCII: English text would count as target text, "
            "so no guarantee would be left; give the language's own letters only"
        )
    return lo, hi


@functools.lru_cache(maxsize=1)
def _all_code_points() -> str:
    return "".join(map(chr, range(MAX_CP)))  # surrogates included: regex scans it in ~10 ms per property


@functools.lru_cache(maxsize=None)
def _mask_of(pattern: str) -> np.ndarray:
    """Boolean array over all code points: which ones the one-character regex ``pattern`` matches."""
    mask = np.zeros(MAX_CP, dtype=bool)
    for m in regex.finditer(f"(?:{pattern})+", _all_code_points()):
        mask[m.start() : m.end()] = True
    mask.flags.writeable = False
    return mask


def _ranges_of(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1).tolist(), (np.flatnonzero(d == -1) - 1).tolist()))


def _char_class(mask: np.ndarray) -> str:
    return "".join(
        f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}"
        for lo, hi in _ranges_of(mask)
        if not 0xD800 <= lo <= 0xDFFF
    )


# ------------------------------------------------------------------------------------------ byte implication
@dataclass
class ByteTables:
    """Byte patterns inside one character's UTF-8 encoding: those that occur at all (``*_exist``) and those that
    occur only inside proof characters. ``prefix``: a lead byte plus 0..n-2 continuation bytes of an n-byte
    character (an incomplete character); ``suffix``: its last 1..3 bytes; ``interior``: 1..3 continuation bytes
    at any offset >= 1 (a byte string with no lead byte)."""

    prefix: set = field(default_factory=set)
    suffix: set = field(default_factory=set)
    interior: set = field(default_factory=set)
    prefix_exist: set = field(default_factory=set)
    suffix_exist: set = field(default_factory=set)
    interior_exist: set = field(default_factory=set)


def byte_tables(proof: np.ndarray) -> ByteTables:
    """Vectorised over all code points (~1 s): a pattern implies the proof set iff it occurs in some character's
    encoding and in no encoding of a character outside it. Surrogates are never encoded (not valid in UTF-8)."""
    cps = np.arange(MAX_CP, dtype=np.int64)
    valid = ~((cps >= 0xD800) & (cps <= 0xDFFF))
    n = 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)
    b = np.zeros((4, MAX_CP), dtype=np.int64)  # byte k of each encoding (0 beyond its length)
    b[0] = np.where(
        n == 1, cps, np.where(n == 2, 0xC0 | (cps >> 6), np.where(n == 3, 0xE0 | (cps >> 12), 0xF0 | (cps >> 18)))
    )
    for k in range(1, 4):
        b[k] = np.where(k < n, 0x80 | ((cps >> np.maximum(6 * (n - 1 - k), 0)) & 0x3F), 0)
    bad = valid & ~proof
    out = ByteTables()

    def window(start: int, length: int) -> np.ndarray:
        key = np.zeros(MAX_CP, dtype=np.int64)
        for k in range(start, start + length):
            key = (key << 8) | b[k]
        return key

    def add(keys_all: list, keys_bad: list, length: int, good: set, exist: set) -> None:
        size = 1 << (8 * length)
        ex = np.bincount(np.concatenate(keys_all), minlength=size) > 0
        ok = ex & ~(np.bincount(np.concatenate(keys_bad), minlength=size) > 0)
        exist.update(int(g).to_bytes(length, "big") for g in np.flatnonzero(ex))
        good.update(int(g).to_bytes(length, "big") for g in np.flatnonzero(ok))

    for length in (1, 2, 3):
        sel = n > length  # prefixes: the lead byte + length-1 continuation bytes of a longer character
        k = window(0, length)
        add([k[sel & valid]], [k[sel & bad]], length, out.prefix, out.prefix_exist)
        suf_all, suf_bad, int_all, int_bad = [], [], [], []
        for nn in range(length + 1, 5):
            sel = n == nn
            for start in range(1, nn - length + 1):
                k = window(start, length)
                int_all.append(k[sel & valid])
                int_bad.append(k[sel & bad])
                if start + length == nn:
                    suf_all.append(k[sel & valid])
                    suf_bad.append(k[sel & bad])
        add(suf_all, suf_bad, length, out.suffix, out.suffix_exist)
        add(int_all, int_bad, length, out.interior, out.interior_exist)
    return out


def _seq_len(lead: int) -> int:
    """Length of the UTF-8 sequence a lead byte starts (0: a continuation byte or a byte never valid in UTF-8)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


# ------------------------------------------------------------------------------------------------ the target
class TargetScripts:
    """The target language's characters (see the module docstring). Build through :func:`target_scripts`, which
    caches one instance per (scripts, ranges)."""

    def __init__(self, scripts: Sequence[str] = (), ranges: Sequence[str] = ()):
        scripts, ranges = list(scripts), list(ranges)
        if not scripts and not ranges:
            raise ConfigError(
                "target.scripts and target.ranges are both empty: name at least one Unicode script "
                "(e.g. target.scripts=[Devanagari])"
            )
        self.scripts = [_canonical(s) for s in scripts]
        bad = sorted(_NOT_TARGET & set(self.scripts))
        if bad:
            raise ConfigError(
                f"{bad[0].title()} cannot be a target script: it holds punctuation, digits, joiners and "
                "marks that English text uses too; name the language's own script(s)"
            )
        self.ranges = [_parse_range(r) for r in ranges]
        shown = [*map(str, scripts), *map(str, ranges[:3])] + ([f"... {len(ranges)} ranges"] if len(ranges) > 3 else [])
        self.label = "[" + ", ".join(shown) + "]"
        """The target as the user named it, for messages: ``[Han, Hiragana, Katakana]``."""

        target = np.zeros(MAX_CP, dtype=bool)
        for s in self.scripts:
            target |= _mask_of(rf"\p{{sc={s}}}")
        for lo, hi in self.ranges:
            target[lo : hi + 1] = True
        if not target.any():
            raise ConfigError(f"target {self.label} holds no character")
        # scripts whose letters and marks may stand next to target characters: the named ones, plus the scripts of
        # the explicit ranges' characters (Vietnamese ranges lie in Latin)
        own = set(self.scripts)
        if self.ranges:
            in_ranges = "".join(chr(c) for c in np.flatnonzero(target) if not 0xD800 <= c <= 0xDFFF)
            own |= {s for s in set(script_names().values()) - _NOT_TARGET if regex.search(rf"\p{{sc={s}}}", in_ranges)}
        allowed = target | _mask_of(r"\p{scx=Zinh}")  # ZWJ, ZWNJ, variation selectors: Inherited and nothing else
        letters = _mask_of(r"[\p{L}\p{M}]")
        for s in sorted(own):
            allowed |= letters & _mask_of(rf"\p{{scx={s}}}")
        self._target = bytearray(target.astype(np.uint8))
        self._allowed = bytearray(allowed.astype(np.uint8))
        self._proof = target.copy()
        self._proof[0xD800:0xE000] = True  # surrogates never occur in UTF-8 text
        self._target_re = re.compile(f"[{_char_class(target)}]")
        self._candidate_re = re.compile(f"[{_char_class(allowed)}]*[{_char_class(target)}][{_char_class(allowed)}]*")
        self._bytes: ByteTables | None = None

    def __repr__(self) -> str:
        return f"TargetScripts({self.label}, {sum(self._target):,} target code points)"

    # ---------------------------------------------------------------- characters and text
    def is_target_char(self, c: str) -> bool:
        return bool(self._target[ord(c)])

    def is_allowed_char(self, c: str) -> bool:
        return bool(self._allowed[ord(c)])

    def has_target(self, text: str) -> bool:
        return self._target_re.search(text) is not None

    def strip_target(self, text: str) -> str:
        """``text`` without its target characters: what must encode exactly as with the base."""
        return self._target_re.sub("", text)

    def is_candidate_text(self, text: str) -> bool:
        """Allowed characters only, at least one of them a target character (EEVE's ``[Hangul]+`` generalised;
        strip a leading space first)."""
        return self._candidate_re.fullmatch(text) is not None

    def target_code_points(self) -> np.ndarray:
        return np.flatnonzero(np.frombuffer(self._target, dtype=np.uint8))

    # ---------------------------------------------------------------- bytes (byte-level BPE)
    def bytes_imply_target(self, b: bytes) -> bool:
        """True iff every valid UTF-8 text that contains ``b`` (anywhere, at any alignment) holds a target character.

        UTF-8 is self-synchronising, so ``b`` splits at its lead bytes into pieces every text containing ``b`` holds:
        [the tail of a character] [whole characters ...] [an incomplete character]. ``b`` implies the target iff one
        piece does: a whole target character, a leading run of continuation bytes all of whose completions are
        target characters, or a trailing incomplete character all of whose completions are. A ``b`` that cannot
        occur in valid UTF-8 answers False (such a token is never formed, so keeping it out costs nothing)."""
        t = self._tables()
        if not b:
            return False
        i = 0
        while i < len(b) and 0x80 <= b[i] <= 0xBF:
            i += 1
        if i == len(b):  # continuation bytes only: inside one character
            return b in t.interior
        if i:
            head = b[:i]
            if head not in t.suffix_exist:
                return False
            if head in t.suffix:
                return True
        hit = False
        while i < len(b):
            n = _seq_len(b[i])
            if n == 0:
                return False
            j = i + 1
            while j < len(b) and j < i + n and 0x80 <= b[j] <= 0xBF:
                j += 1
            piece = b[i:j]
            if j - i < n:  # incomplete: only valid as the very end of b
                if j < len(b) or piece not in t.prefix_exist:
                    return False
                return hit or piece in t.prefix
            try:
                c = piece.decode("utf-8")
            except UnicodeDecodeError:  # overlong forms, encoded surrogates, beyond U+10FFFF
                return False
            hit = hit or bool(self._proof[ord(c)])
            i = j
        return hit

    def _tables(self) -> ByteTables:
        if self._bytes is None:
            self._bytes = byte_tables(self._proof)
        return self._bytes


@functools.lru_cache(maxsize=None)
def _cached(scripts: tuple[str, ...], ranges: tuple[str, ...]) -> TargetScripts:
    return TargetScripts(scripts, ranges)


def target_scripts(scripts: Iterable[str] = ("Hangul",), ranges: Iterable[str] = ()) -> TargetScripts:
    """The (cached) target for Unicode script names and explicit ranges; ConfigError on a bad name or range."""
    return _cached(tuple(map(str, scripts)), tuple(map(str, ranges)))


def hangul() -> TargetScripts:
    """The Korean target, the project's default."""
    return target_scripts(("Hangul",))
