"""The architecture is visible in the imports: dependencies point towards `ris` only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ris", "pacs", "worklist", "reports")
# reports -> pacs -> ris, worklist -> ris, reports -> ris (STYLE.md 5.1)
ALLOWED = {
    "ris": set(),
    "pacs": {"ris"},
    "worklist": {"ris"},
    "reports": {"ris", "pacs"},
}
COMPOSITION_ROOTS = {"ris/app.py", "ris/serve.py", "ris/dicom_door.py", "ris/schema.py"}


def _imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


def test_imports_point_one_way() -> None:
    wrong = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if relative in COMPOSITION_ROOTS:
                continue
            bad = _imported_packages(path) - ALLOWED[package] - {package}
            if bad:
                wrong.append(f"{relative} imports {sorted(bad)}")
    assert wrong == []


def test_only_config_reads_the_environment() -> None:
    readers = [
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "os.environ" in path.read_text()
    ]
    assert readers == ["ris/config.py"]
