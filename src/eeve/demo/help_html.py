"""LibreOffice help pages -> paragraphs: the id-bearing block elements of ``#DisplayArea``, as clean NFC text."""

from __future__ import annotations

import html.parser
import unicodedata
from pathlib import Path

from eeve.demo.archive import iter_deb_files
from eeve.demo.languages import HELP_DIRS

_CAPTURE_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "td", "th", "dt", "dd", "pre", "caption"}
_VOID_TAGS = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
    "param",
    "keygen",
}
_SKIP_TAGS = {"script", "style", "noscript", "template", "nav", "button", "select", "option", "label"}


def clean(text: str) -> str:
    """Whitespace collapsed, NFC."""
    return unicodedata.normalize("NFC", " ".join(text.split()))


def has_letter(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


class _HelpParser(html.parser.HTMLParser):
    """Collects (id, text) of id-bearing block elements inside ``#DisplayArea``.

    Text goes to the innermost open captured element. Hidden switch variants (``<span hidden id="MAC...">``) are
    dropped except the ``default...`` one, so "Ctrl" rather than "CommandCtrl".
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[list] = []  # [tag, display, skip, capture_index or None]
        self.display = 0
        self.skip = 0
        self.captures: list[tuple[str, list[str]]] = []
        self.out: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag in _VOID_TAGS:
            if tag == "br" and self.captures and not self.skip:
                self.captures[-1][1].append(" ")
            return
        a = dict(attrs)
        ident = a.get("id") or ""
        display = ident == "DisplayArea"
        skip = tag in _SKIP_TAGS or ("hidden" in a and not ident.startswith("default"))
        capture = bool(ident) and tag in _CAPTURE_TAGS and self.display > 0 and not self.skip and not skip
        self.stack.append([tag, display, skip, capture])
        self.display += display
        self.skip += skip
        if capture:
            self.captures.append((ident, []))
        elif self.captures and (tag in _CAPTURE_TAGS or tag == "div"):
            self.captures[-1][1].append(" ")

    def handle_endtag(self, tag):
        if not any(frame[0] == tag for frame in self.stack):
            return
        while self.stack:
            t, display, skip, capture = self.stack.pop()
            self.display -= display
            self.skip -= skip
            if capture:
                ident, parts = self.captures.pop()
                text = clean("".join(parts))
                if text and has_letter(text):
                    self.out.append((ident, text))
            if t == tag:
                break

    def handle_data(self, data):
        if self.captures and not self.skip and self.display > 0:
            self.captures[-1][1].append(data)


def extract_help_paragraphs(html_text: str) -> dict[str, str]:
    """Paragraphs of one help page as {element id: text} (document order, first occurrence of an id kept)."""
    parser = _HelpParser()
    parser.feed(html_text)
    parser.close()
    while parser.stack:  # unclosed elements at EOF
        parser.handle_endtag(parser.stack[-1][0])
    out: dict[str, str] = {}
    for ident, text in parser.out:
        out.setdefault(ident, text)
    return out


def read_help_tree(deb: Path, pkg: str) -> dict[str, dict[str, str]]:
    """{relative path ('text/...html'): {id: paragraph}} for one language's help package."""
    prefix = HELP_DIRS[pkg]
    pages: dict[str, dict[str, str]] = {}
    for path, raw in iter_deb_files(deb, prefix + "text/"):
        rel = path[len(prefix) :]
        pages[rel] = extract_help_paragraphs(raw.decode("utf-8", "replace"))
    return pages
