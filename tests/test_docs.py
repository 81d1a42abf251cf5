"""The documentation holds together: every relative link in README.md and docs/ resolves, the README's
set-up commands are the ones CI runs, and the README's results table is what the results give."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").rglob("*.md"))]

#: the README's two set-up commands, exactly; .ci/run ends with the second
RUN_COMMAND = "pip install torch==2.13.0 -e . && metabench run protonet --shots 1"
TEST_COMMAND = 'pip install torch==2.13.0 -e ".[test]" && pytest -n 2'

_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def relative_links(text: str) -> list[str]:
    """Targets of inline markdown links and images outside code, minus absolute URLs and in-page anchors."""
    prose = _CODE_SPAN.sub("", _FENCE.sub("", text))
    targets = [m.group(1) for m in _LINK.finditer(prose)]
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#|//)", t, re.IGNORECASE)]


def test_link_parser_sees_links_and_skips_code() -> None:
    text = "[a](docs/a.md) [b](https://x.org) [c](#here) `[d](no.md)`\n```\n[e](no.md)\n```\n![f](img.png#x)"
    assert relative_links(text) == ["docs/a.md", "img.png#x"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    missing = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(REPO)} links to missing files: {missing}"


def test_docs_exist_for_every_registry_key() -> None:
    keys = {p.stem for p in (REPO / "registry").glob("*.toml")}
    pages = {p.stem for p in (REPO / "docs" / "papers").glob("*.md")}
    assert keys <= pages, f"registry keys without a docs/papers page: {sorted(keys - pages)}"


def _setup_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Set-up\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "README's Set-up section has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_setup_commands_are_verbatim() -> None:
    assert _setup_commands() == [RUN_COMMAND, TEST_COMMAND]


def test_ci_runs_the_readme_test_command_last() -> None:
    commands = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-1] == _setup_commands()[1]
    assert shlex.split(commands[-1]) == shlex.split(TEST_COMMAND)


def test_readme_results_table_is_current() -> None:
    spec = importlib.util.spec_from_file_location("readme_table", REPO / "scripts" / "readme_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = README.read_text(encoding="utf-8")
    assert module.replaced(text, module.table(REPO)) == text, "run python scripts/readme_table.py"
