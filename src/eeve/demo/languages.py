"""The demo's languages: Debian's ``libreoffice-help-<code>`` packages and each language's target characters."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from eeve.errors import DemoDataError
from eeve.text.scripts import TargetScripts, target_scripts


@dataclass(frozen=True)
class HelpLanguage:
    """One language of Debian's ``libreoffice-help-<code>`` packages, and its target characters."""

    code: str
    """Debian's package suffix; also the folder ``demo/<code>/`` and the pairs' key (``ja``, ``zh-cn``)."""
    help_dir: str
    """The package's folder under usr/share/libreoffice/help/ (``zh-CN``)."""
    scripts: tuple[str, ...] = ()
    """Unicode scripts of the language: what ``tokenize.py target.scripts=[...]`` takes for it."""
    ranges: tuple[str, ...] = ()
    """Explicit ranges (``target.ranges``), for languages whose letters are a subset of a shared script."""

    @property
    def package(self) -> str:
        return f"libreoffice-help-{self.code}"

    def target(self) -> TargetScripts:
        return target_scripts(self.scripts, self.ranges)


# Vietnamese is written in Latin: its target is the letters English does not use, the precomposed letters of the
# Vietnamese alphabet that carry a diacritic (in Latin-1, Latin Extended-A/B and Latin Extended Additional).
VI_RANGES = (
    "U+00C0-U+00C3",
    "U+00C8-U+00CA",
    "U+00CC-U+00CD",
    "U+00D2-U+00D5",
    "U+00D9-U+00DA",
    "U+00DD",
    "U+00E0-U+00E3",
    "U+00E8-U+00EA",
    "U+00EC-U+00ED",
    "U+00F2-U+00F5",
    "U+00F9-U+00FA",
    "U+00FD",
    "U+0102-U+0103",
    "U+0110-U+0111",
    "U+0128-U+0129",
    "U+0168-U+0169",
    "U+01A0-U+01A1",
    "U+01AF-U+01B0",
    "U+1EA0-U+1EF9",
)
LANGUAGES: dict[str, HelpLanguage] = {
    x.code: x
    for x in (
        HelpLanguage("ko", "ko", ("Hangul",)),
        HelpLanguage("ja", "ja", ("Han", "Hiragana", "Katakana")),
        HelpLanguage("zh-cn", "zh-CN", ("Han",)),
        HelpLanguage("zh-tw", "zh-TW", ("Han",)),
        HelpLanguage("hi", "hi", ("Devanagari",)),
        HelpLanguage("ru", "ru", ("Cyrillic",)),
        HelpLanguage("el", "el", ("Greek",)),
        HelpLanguage("vi", "vi", ranges=VI_RANGES),
    )
}
"""The languages ``python -m eeve.demo.data lang=...`` builds (Debian 12 ships these help packages)."""
DEFAULT_LANG = "ko"
"""The language of the default demo folder (``demo/``), which also holds the base tokenizer and English."""

DEB_EN = "libreoffice-help-en-us"
HELP_DIRS = {x.package: f"usr/share/libreoffice/help/{x.help_dir}/" for x in LANGUAGES.values()}
HELP_DIRS[DEB_EN] = "usr/share/libreoffice/help/en-US/"


def language(code: str) -> HelpLanguage:
    """The :data:`LANGUAGES` entry for ``code`` (case-insensitive), or a one-line DemoDataError."""
    key = str(code).lower()
    if key not in LANGUAGES:
        close = difflib.get_close_matches(key, list(LANGUAGES), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise DemoDataError(f"demo language {code!r} is unknown: {hint}choose one of {', '.join(LANGUAGES)}")
    return LANGUAGES[key]
