"""Target-script character sets (eeve.text.scripts): membership from Unicode's Script / Script_Extensions, one-line
errors, and the byte-implication test byte-level bases rely on (sound: no byte string found in text without target
characters may imply the target)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from eeve.demo.languages import LANGUAGES, VI_RANGES
from eeve.errors import ConfigError
from eeve.text.scripts import MAX_CP, hangul, target_scripts

JA = ("Han", "Hiragana", "Katakana")


def test_hangul_membership_and_text():
    ko = hangul()
    assert all(ko.is_target_char(c) for c in "한글ㄱㅏ각ꥠힰ")  # syllables, compatibility jamo, jamo, extended A/B
    assert not any(ko.is_target_char(c) for c in "a 1.漢あ\u200d")
    assert ko.has_target("hello 세계") and not ko.has_target("hello, world 「」 ー")
    assert ko.strip_target("한국어 text, 텍스트!") == " text, !"
    assert ko.is_candidate_text("데이터") and not ko.is_candidate_text("data") and not ko.is_candidate_text("")
    assert target_scripts(["hangul"]).label == "[hangul]" and target_scripts(["hangul"]).is_target_char("한")


def test_japanese_is_one_target_with_shared_marks():
    ja = target_scripts(JA)
    assert all(ja.is_target_char(c) for c in "漢字ひらがなカタカナ々ゝヽ")
    assert not ja.is_target_char("〆") and ja.is_allowed_char("〆")  # Common, Script_Extensions Han
    # ー (Common, Script_Extensions Hiragana+Katakana) and the voicing marks may stand inside a candidate, but never
    # make a token a target token on their own
    assert not ja.is_target_char("ー") and ja.is_allowed_char("ー") and ja.is_allowed_char("\u3099")
    assert ja.is_candidate_text("データ") and ja.is_candidate_text("サーバー") and not ja.is_candidate_text("ーー")
    assert not ja.is_candidate_text("データ。") and not ja.is_candidate_text("Excelの")  # punctuation, Latin: no
    assert ja.is_candidate_text("葛\U000e0100") and not ja.is_candidate_text("\U000e0100")  # an ideographic variation


def test_devanagari_marks_are_target_joiners_are_allowed():
    hi = target_scripts(["Devanagari"])
    assert all(hi.is_target_char(c) for c in "कि्ँ़ंॐ१")  # vowel signs, virama, candrabindu, nukta: Script=Devanagari
    assert not hi.is_target_char("।") and not hi.is_allowed_char("।")  # the danda is punctuation shared with Bengali
    assert not hi.is_target_char("\u200d") and hi.is_allowed_char("\u200d") and hi.is_allowed_char("\u200c")
    assert hi.is_candidate_text("क्\u200dष") and not hi.is_candidate_text("\u200d")
    assert not hi.is_target_char("\u0951") and hi.is_allowed_char("\u0951")  # udatta: Inherited, scx Devanagari+Latin


def test_cyrillic_and_combining_stress():
    ru = target_scripts(["Cyrillic"])
    assert ru.has_target("Привет") and not ru.has_target("Privet e\u0301")
    assert ru.is_candidate_text("большо\u0301й") and ru.is_allowed_char("\u0301") and not ru.is_target_char("\u0301")


def test_explicit_ranges_vietnamese():
    vi = target_scripts((), VI_RANGES)
    assert vi.has_target("Tiếng Việt") and vi.has_target("không") and not vi.has_target("Viet Nam")
    # Latin letters are allowed next to a Vietnamese letter (the ranges' own script), so whole words are candidates
    assert vi.is_candidate_text("Việt") and vi.is_candidate_text("được") and not vi.is_candidate_text("Viet")
    assert LANGUAGES["vi"].target() is vi


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"scripts": ["Devangari"]}, "did you mean Devanagari"),
        ({"scripts": ["Cyrilic"]}, "did you mean Cyrillic"),
        ({"scripts": ["Common"]}, "cannot be a target script"),
        ({"scripts": ["Inherited"]}, "cannot be a target script"),
        ({"scripts": []}, "both empty"),
        ({"scripts": [], "ranges": ["U+0041-U+005A"]}, "includes ASCII"),
        ({"scripts": [], "ranges": ["0900-097F"]}, "is not a range"),
        ({"scripts": [], "ranges": ["U+097F-U+0900"]}, "empty or beyond"),
    ],
)
def test_bad_names_and_ranges_one_line(kwargs, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        target_scripts(**kwargs)
    assert "\n" not in str(e.value)


def test_names_are_loose_and_iso_codes_work():
    assert target_scripts(["deva"]).is_target_char("क") and target_scripts(["OLD_ITALIC"]).is_target_char("\U00010300")


# ----------------------------------------------------------------------------------------- byte implication
def test_hangul_bytes_generalise_the_lead_byte_rules():
    ko = hangul()
    assert ko.bytes_imply_target("한".encode()) and ko.bytes_imply_target("한".encode()[:2])
    assert ko.bytes_imply_target(b"\xeb") and ko.bytes_imply_target(b"\xec")  # U+B000-U+CFFF: Hangul only
    assert not ko.bytes_imply_target(b"\xed")  # U+D000-U+DFFF also holds unassigned code points (and surrogates)
    assert ko.bytes_imply_target(b"\xed\x80") and not ko.bytes_imply_target(b"\xed\x9e")  # U+D7A4-D7AF unassigned
    assert not ko.bytes_imply_target("한".encode()[1:]) and not ko.bytes_imply_target(b" a")
    assert ko.bytes_imply_target(b"\xe3\x85")  # compatibility jamo U+3140-317F
    assert all(ko.bytes_imply_target(chr(c).encode()[:2]) for c in range(0xB000, 0xD000))
    assert ko.bytes_imply_target(b" " + "한".encode()) and ko.bytes_imply_target(b"a\xeb")


@pytest.mark.parametrize(
    "names, ranges",
    [(("Hangul",), ()), (JA, ()), (("Devanagari",), ()), (("Cyrillic",), ()), ((), VI_RANGES)],
    ids=["ko", "ja", "hi", "ru", "vi"],
)
def test_bytes_imply_target_is_sound_and_complete(names, ranges):
    """Sound: no byte window of a non-target character, nor of two adjacent non-target characters, implies the target.
    Complete on whole characters: the encoding of every target character implies it."""
    ts = target_scripts(names, ranges)
    rng = random.Random(0)
    target = set(ts.target_code_points().tolist())
    nonproof = [c for c in range(MAX_CP) if c not in target and not 0xD800 <= c <= 0xDFFF]
    sample = nonproof[:0x800] + rng.sample(nonproof, 6000)
    for cp in sample:
        e = chr(cp).encode()
        for a in range(len(e)):
            for z in range(a + 1, len(e) + 1):
                assert not ts.bytes_imply_target(e[a:z]), (hex(cp), e[a:z])
    for _ in range(6000):
        x, y = (chr(rng.choice(nonproof)).encode() for _ in range(2))
        s = x + y
        a, z = rng.randrange(len(x)), rng.randrange(len(x) + 1, len(s) + 1)
        assert not ts.bytes_imply_target(s[a:z]), s[a:z]
    pts = ts.target_code_points()
    for cp in rng.sample(list(pts), min(3000, len(pts))):
        assert ts.bytes_imply_target(chr(int(cp)).encode()) and ts.bytes_imply_target(b"x" + chr(int(cp)).encode())


def test_invalid_utf8_never_implies():
    ko = hangul()
    for b in (b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", "한".encode() + b"\x80\x80\x80"):
        assert not ko.bytes_imply_target(b)


def test_target_code_points_match_membership():
    hi = target_scripts(["Devanagari"])
    pts = hi.target_code_points()
    assert pts.dtype.kind in "iu" and len(pts) > 100 and np.all(np.diff(pts) > 0)
    assert all(hi.is_target_char(chr(int(c))) for c in pts)
