"""The core does not import a paper (issue 17): no module in ``bench/`` (or ``bench/data/``) imports
``metabench.reproductions``. A reproduction reaches the core only through a spec's ``implementation``,
which ``registry_loader.implementation`` imports by name, so that a paper can be added or removed
without touching the harness. A static check over the source (``ast``), not an import-time one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted([*(ROOT / "bench").glob("*.py"), *(ROOT / "bench" / "data").glob("*.py")])
FORBIDDEN = "metabench.reproductions"


def paper_imports(source: str, package: str = "metabench") -> list[str]:
    """Every import in ``source`` (a module of ``package``) that reaches ``metabench.reproductions``, as
    ``line N: name``; relative imports are resolved against ``package``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        if any(name == FORBIDDEN or name.startswith(FORBIDDEN + ".") for name in names):
            found.append(f"line {node.lineno}: {names[0]}")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "import metabench.reproductions.maml\n",
        "from metabench.reproductions.maml import MAML\n",
        "from metabench import reproductions\n",
        "from . import reproductions\n",
        "def f():\n    from .reproductions.maml import MAML\n",
    ],
)
def test_the_check_sees_every_form_of_the_import(source: str) -> None:
    assert paper_imports(source)


def test_the_check_lets_the_core_import_itself() -> None:
    assert not paper_imports("import metabench.reproduction\nfrom metabench.registry_loader import implementation\n")


def test_the_walk_finds_the_core() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in MODULES}
    assert {"bench/speed.py", "bench/training.py", "bench/data/problems.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_core_module_imports_a_reproduction(path: Path) -> None:
    package = "metabench.data" if path.parent.name == "data" else "metabench"
    found = paper_imports(path.read_text(encoding="utf-8"), package)
    assert not found, f"{path.relative_to(ROOT)} imports a paper's module ({'; '.join(found)}); build it from its spec"
