"""Builds ``static/catalogue.json`` from the seed-paper catalogue (METHODS.md plus papers.txt).

The catalogue lives outside the package, so the UI ships this small JSON instead; run it again
when the catalogue changes: ``python -m api.ui.build_catalogue /work/shared/METHODS.md``.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("static") / "catalogue.json"
COLUMNS = (
    "row",
    "short_name",
    "essence",
    "category",
    "phase",
    "family",
    "executable",
    "proposed_ids",
    "cpu_testable",
    "needs_gpu",
    "effort",
    "measure",
)


def paper_titles(papers: Path) -> list[str]:
    """A title is a short line whose next non-empty line is a long abstract."""
    lines = [line.strip() for line in papers.read_text().splitlines() if line.strip()]
    return [line for line, after in itertools.pairwise(lines) if len(line) < 300 <= len(after)]


def catalogue_rows(methods_md: Path) -> list[dict]:
    rows = []
    for line in methods_md.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(COLUMNS) and re.fullmatch(r"\d+", cells[0]):
            row: dict[str, Any] = dict(zip(COLUMNS, cells, strict=True))
            row["row"] = int(row["row"])
            row["proposed_ids"] = re.findall(r"`([^`]+)`", row["proposed_ids"])
            rows.append(row)
    return rows


def main(methods_md: str) -> None:
    path = Path(methods_md)
    rows = catalogue_rows(path)
    titles = paper_titles(path.parent / "seeds" / "papers.txt")
    if len(titles) != len(rows):
        raise SystemExit(f"{len(rows)} catalogue rows but {len(titles)} paper titles")
    for row, title in zip(rows, titles, strict=True):
        row["title"] = title
    OUT.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
