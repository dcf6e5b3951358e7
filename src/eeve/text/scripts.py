"""Which characters belong to the target language's script(s).

A *target script* answers two questions the tokenizer builder and the reports ask: is this character a target
character, and can these UTF-8 bytes only occur inside a target character (byte-level BPE entries are byte strings)?
"""
from __future__ import annotations

# Hangul code points: syllables, jamo, compatibility jamo, jamo extended A and B
HANGUL_RANGES = ((0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))


def is_hangul_char(c: str) -> bool:
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in HANGUL_RANGES)


def has_hangul(text: str) -> bool:
    return any(is_hangul_char(c) for c in text)


class HangulScript:
    """The Korean target: Hangul syllables and jamo."""

    name = "Hangul"
    ranges = HANGUL_RANGES

    def is_target_char(self, c: str) -> bool:
        return is_hangul_char(c)

    def has_target(self, text: str) -> bool:
        return has_hangul(text)

    def bytes_imply_target(self, b: bytes) -> bool:
        """True if ``b``, occurring anywhere in valid UTF-8 text, proves the text holds a Hangul (or unassigned)
        character."""
        if any(is_hangul_char(c) for c in b.decode("utf-8", errors="ignore")):
            return True
        for i, x in enumerate(b):
            if x in (0xEB, 0xEC, 0xED):  # lead bytes of U+B000-U+DFFF: all Hangul syllables / jamo (or unassigned)
                return True
            if i + 1 < len(b) and (x, b[i + 1] >> 6) == (0xEA, 2) and b[i + 1] >= 0xB0:  # U+AC00-U+AFFF
                return True
            if i + 1 < len(b) and x == 0xE1 and 0x84 <= b[i + 1] <= 0x87:  # U+1100-U+11FF jamo
                return True
        return False


HANGUL = HangulScript()
