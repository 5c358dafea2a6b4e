"""The layout table of ../shared/DESIGN.md: each top-level package imports only the packages below it
in the table's "may import" column. An import that runs up the table fails here, and so `make test`."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MAY_IMPORT: dict[str, set[str]] = {
    "formats": set(),
    "kernels": set(),
    "retrieval": {"formats"},
    "rerankers": {"formats", "kernels"},
    "evaluation": {"formats", "rerankers"},
    "pipelines": {"formats", "kernels", "retrieval", "rerankers", "evaluation"},
}


def rankline_imports(source: str) -> list[tuple[int, str]]:
    """(line, package) for every `rankline.<package>` import in `source`, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module + "." + alias.name for alias in node.names] if node.module == "rankline" else [node.module]
        else:
            continue
        found += [(node.lineno, name.split(".")[1]) for name in names if name.startswith("rankline.")]
    return found


def layering_violations(package: str, files: list[Path]) -> list[str]:
    allowed = MAY_IMPORT[package] | {package}
    return [
        f"{path}:{line}: {package} imports rankline.{target}"
        for path in files
        for line, target in rankline_imports(path.read_text())
        if target not in allowed
    ]


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_point_down_the_layout_table(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    assert layering_violations(package, files) == []


def test_the_check_sees_every_form_of_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import rankline.pipelines.cli\nfrom rankline import retrieval\n"
                   "def f():\n    from rankline.evaluation.metrics import evaluate\n")
    assert rankline_imports(bad.read_text()) == [(1, "pipelines"), (2, "retrieval"), (4, "evaluation")]
    assert len(layering_violations("formats", [bad])) == 3
