"""Rendering a table of display strings as Markdown and LaTeX, and writing all three formats.

Hand-written rather than ``DataFrame.to_markdown`` / ``to_latex``: those need tabulate and jinja2
at run time, cannot bold single cells or rule off row groups, and escape differently across
pandas versions. The output here is plain enough to diff in a pull request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..provenance import write_csv, write_markdown, write_tex
from ._common import suffixed

__all__ = ["RenderedTable", "latex_escape", "write_table"]


@dataclass
class RenderedTable:
    """A table ready to write.

    Attributes:
        display: Display strings, one column per shown column (row labels included as columns).
        csv: What the CSV holds (numbers, not strings; its index is written when named).
        caption: One sentence saying what the numbers are.
        label: LaTeX label (``tab:<label>``).
        align: ``"l"`` or ``"r"`` per display column.
        bold: ``(row position, column name)`` cells to emphasise (the best of a column).
        group_breaks: Row positions before which a rule separates row groups.
        notes: Sentences printed under the table (e.g. how weights were tuned).
    """

    display: pd.DataFrame
    csv: pd.DataFrame
    caption: str
    label: str
    align: Sequence[str]
    bold: set[tuple[int, str]] = field(default_factory=set)
    group_breaks: Sequence[int] = ()
    notes: Sequence[str] = ()


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "ρ": r"$\rho$",
    "–": "--",
    "−": "$-$",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and spell the few non-ASCII symbols the tables use."""
    return "".join(_LATEX_SPECIALS.get(char, char) for char in str(text))


def _markdown_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def _markdown(table: RenderedTable) -> str:
    columns = list(table.display.columns)
    header = "| " + " | ".join(_markdown_escape(c) for c in columns) + " |"
    rule = "|" + "|".join(":---" if a == "l" else "---:" for a in table.align) + "|"
    lines = [f"**{table.caption}**", "", header, rule]
    for position, row in enumerate(table.display.itertuples(index=False)):
        cells = []
        for column, value in zip(columns, row, strict=True):
            text = _markdown_escape(value)
            cells.append(f"**{text}**" if (position, column) in table.bold else text)
        lines.append("| " + " | ".join(cells) + " |")
    if table.notes:
        for note in table.notes:  # one paragraph each: Markdown joins adjacent lines
            lines += ["", note]
    return "\n".join(lines) + "\n"


def _latex(table: RenderedTable) -> str:
    columns = list(table.display.columns)
    breaks = set(table.group_breaks)
    lines = [
        "% requires \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{latex_escape(table.caption)}}}",
        f"\\label{{tab:{table.label}}}",
        f"\\begin{{tabular}}{{{''.join(table.align)}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in columns) + r" \\",
        "\\midrule",
    ]
    for position, row in enumerate(table.display.itertuples(index=False)):
        if position in breaks and position > 0:
            lines.append("\\midrule")
        cells = []
        for column, value in zip(columns, row, strict=True):
            text = latex_escape(value)
            cells.append(f"\\textbf{{{text}}}" if (position, column) in table.bold else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if table.notes:
        lines.append(
            "\\par\\smallskip\\footnotesize " + " ".join(latex_escape(n) for n in table.notes)
        )
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def write_table(table: RenderedTable, stem: Path, provenance: Mapping[str, Any]) -> list[Path]:
    """Write ``stem.csv``, ``stem.md`` and ``stem.tex``, each with the provenance embedded."""
    if len(table.align) != table.display.shape[1]:
        raise ValueError(
            f"{stem}: {len(table.align)} alignments for {table.display.shape[1]} columns"
        )
    write_index = any(name is not None for name in table.csv.index.names)
    return [
        write_csv(table.csv, suffixed(stem, ".csv"), provenance, index=write_index),
        write_markdown(_markdown(table), suffixed(stem, ".md"), provenance),
        write_tex(_latex(table), suffixed(stem, ".tex"), provenance),
    ]
