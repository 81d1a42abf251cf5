"""Rebuild the "Reported vs reproduced" table in README.md from the committed results.

    python scripts/readme_table.py           # rewrite the table between the README's markers
    python scripts/readme_table.py --check   # exit 1, writing nothing, when the table is out of date

The rows are ``metabench compare``'s: ``metabench.compare.load_frame`` over ``results/`` (every result
judged against the registry as it is now) and ``metabench.compare.display_frame`` for the cells, one row
per result, per component of a vector result and per competitor of a claim. Each paper links to its
page, ``docs/papers/KEY.md``. Paths are taken from this repository's root, wherever it is run from.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START = "<!-- results-table:start -->"
END = "<!-- results-table:end -->"
#: display_frame's columns shown in the README, in order; ``notes`` only when some row has one
COLUMNS = ["paper", "benchmark", "reported", "reproduced", "difference", "verdict", "profile", "budget"]
HEADERS = {"reproduced": "reproduced ± 95%"}


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(root: Path = ROOT) -> str:
    """The markdown table of every committed result under ``root/results``."""
    from metabench.compare import display_frame, load_frame

    shown = display_frame(load_frame([root / "results"]))
    columns = COLUMNS + (["notes"] if "notes" in shown.columns else [])
    lines = ["| " + " | ".join(HEADERS.get(c, c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for _, row in shown.iterrows():
        cells = [_cell(row[c]) for c in columns]
        page = root / "docs" / "papers" / f"{row['paper']}.md"
        if page.is_file():
            cells[0] = f"[{cells[0]}](docs/papers/{row['paper']}.md)"
        else:
            print(f"warning: no page {page.relative_to(root)} for paper {row['paper']!r}", file=sys.stderr)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def replaced(text: str, new_table: str) -> str:
    """``text`` with everything between the two markers replaced by ``new_table``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise SystemExit(f"README.md needs exactly one {START} followed by one {END}")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{new_table}{END}{tail}"


def main(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    updated = replaced(text, table())
    if "--check" in argv:
        if updated != text:
            print("README.md's results table is out of date: run python scripts/readme_table.py", file=sys.stderr)
            return 1
        return 0
    if updated != text:
        README.write_text(updated, encoding="utf-8")
        print(f"rewrote the results table in {README.relative_to(ROOT)}")
    else:
        print("README.md's results table is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
