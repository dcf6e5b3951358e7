"""No function in src/eeve is longer than 60 lines (from ``def`` to its last line): a long function is split into
named steps (issue 18)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "eeve"
LIMIT = 60


def long_functions(root: Path, limit: int = LIMIT) -> list[str]:
    """``path:line name (n lines)`` of every function or method under ``root`` longer than ``limit`` lines."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_the_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    (tmp_path / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n", encoding="utf-8")
    assert long_functions(tmp_path) == [f"{tmp_path.name}/m.py:5 long ({LIMIT + 1} lines)"]


def test_no_function_over_60_lines():
    assert long_functions(SRC) == []
