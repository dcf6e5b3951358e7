"""LibreOffice help pages -> paragraphs (eeve.demo.help_html)."""

from __future__ import annotations

import unicodedata

from eeve.demo.help_html import extract_help_paragraphs


def test_extract_help_paragraphs():
    html = """<html><body><header><p id="nav">LibreOffice Help</p></header>
    <div id="DisplayArea">
      <h1 id="hd_1">찾기  도구 모음</h1>
      <p id="par_1" class="paragraph">Use <span class="switchinline"><span hidden="true" id="MAC1">
        <span class="keycode">Command</span></span><span hidden="true" id="default1"><span class="keycode">Ctrl
        </span></span></span><span class="keycode"> + F</span> to&nbsp;find.</p>
      <p id="par_2"><img src="x.svg" alt="Icon"></p>
      <ul><li id="li_1">first<br>item</li></ul>
      <table><tr><td><p id="par_3">cell</p></td></tr></table>
      <p id="par_1">duplicate id ignored</p>
      <p>no id</p>
      <script>var x = 1;</script>
    </div>
    <footer><p id="bm_module">Title is: x</p></footer></body></html>"""
    out = extract_help_paragraphs(html)
    assert out == {"hd_1": "찾기 도구 모음", "par_1": "Use Ctrl + F to find.", "li_1": "first item", "par_3": "cell"}
    # NFC: decomposed Hangul jamo are composed
    decomposed = unicodedata.normalize("NFD", "한국어")
    assert extract_help_paragraphs(f'<div id="DisplayArea"><p id="a">{decomposed}</p></div>') == {"a": "한국어"}
