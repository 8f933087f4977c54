"""docs/methods.md is the reference the code cites: its sections exist with their agreed titles,
every citation of it names a section that exists, and nothing cites the unpublished spec."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHODS = ROOT / "docs" / "methods.md"

# The numbering other modules cite; renumbering breaks every citation, so it is pinned here.
SECTIONS = {
    "1": "Notation",
    "2": "The framework",
    "3": "Layer combination",
    "4": "Meta-saliency",
    "5": "Backward seeds",
    "6": "Pointing game",
    "7": "Class sensitivity",
    "8": "Qualitative findings",
    "9": "Reference numbers",
    "10": "The gradient-CAM family",
    "11": "Architectures",
    "12": "Model-randomisation sanity check",
    "13": "Deletion and insertion",
    "14": "Deviations from the authors' code and from TorchRay",
    "15": "References",
}
FRAMEWORK_SUBSECTIONS = ("2.1", "2.2", "2.3", "2.4", "2.5")

# Where citations live, and the text files searched there.
CITING = ("src", "workflow", "bench", "tests", "config", "README.md", "Snakefile")
TEXT_SUFFIXES = {".py", ".smk", ".yaml", ".yml", ".md", ".rst", ".ipynb", ".txt", ".cfg", ".toml"}
CITATION = re.compile(r"docs/methods\.md\s*§\s*(\d+(?:\.\d+)*)")
ANCHOR = re.compile(r"docs/methods\.md#([\w-]+)")
# Spelled in two parts so that this file does not contain it.
FORBIDDEN = "method" + "_spec"
# Outputs and environments that are never part of the tree (used only outside a git checkout).
_NOT_TREE = {".git", ".venv", "results", "resources", ".snakemake", "__pycache__", "out"}
_LISTED = ("--cached", "--others", "--exclude-standard")


def _headings() -> list[tuple[int, str, str]]:
    """``(level, number, title)`` of every ``## §N`` / ``### §N.M`` heading, in order."""
    found = []
    for line in METHODS.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"(#{2,4}) §(\d+(?:\.\d+)*) (.+)", line.rstrip())
        if match:
            found.append((len(match.group(1)), match.group(2), match.group(3)))
    return found


def _section_numbers() -> set[str]:
    return {number for _, number, _ in _headings()}


def _github_slug(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def _citing_files() -> list[Path]:
    files = []
    for entry in CITING:
        path = ROOT / entry
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and p.suffix in TEXT_SUFFIXES
                and not set(p.relative_to(ROOT).parts) & _NOT_TREE
            ]
    return files


def _tree_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files; every file outside outputs without git."""
    try:
        command = ["git", "-C", str(ROOT), "ls-files", "-z", *_LISTED]
        listed = subprocess.run(command, check=True, capture_output=True).stdout.decode()
        paths = [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        paths = [
            p
            for p in ROOT.rglob("*")
            if not set(p.relative_to(ROOT).parts) & _NOT_TREE and ".egg-info" not in str(p)
        ]
    return [p for p in paths if p.is_file() and not p.is_symlink()]


def test_sections_have_the_agreed_numbers_and_titles():
    top = [(number, title) for level, number, title in _headings() if level == 2]
    assert top == list(SECTIONS.items()), (
        "docs/methods.md must have exactly the sections §1–§15 with their agreed titles, in order; "
        f"found {top}"
    )


def test_framework_has_its_subsections_in_order():
    numbers = [number for level, number, _ in _headings() if level == 3 and number.startswith("2.")]
    assert numbers[: len(FRAMEWORK_SUBSECTIONS)] == list(FRAMEWORK_SUBSECTIONS)


def test_subsections_sit_under_their_section():
    current = None
    for level, number, _ in _headings():
        if level == 2:
            current = number
        else:
            assert number.split(".")[0] == current, f"§{number} is not under §{current}"


def test_every_citation_names_an_existing_section():
    sections = _section_numbers()
    citations, dangling = 0, []
    for path in _citing_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for line_number, line in enumerate(text.splitlines(), start=1):
            for match in CITATION.finditer(line):
                citations += 1
                if match.group(1) not in sections:
                    dangling.append(f"{path.relative_to(ROOT)}:{line_number}: §{match.group(1)}")
    assert citations > 0, "no docs/methods.md citation found: has the citation format changed?"
    assert not dangling, "citations of sections that do not exist:\n" + "\n".join(dangling)


def test_cross_references_inside_the_document_exist():
    sections = _section_numbers()
    text = METHODS.read_text(encoding="utf-8")
    cited = set(re.findall(r"§(\d+(?:\.\d+)*)", text))
    assert not cited - sections, f"docs/methods.md refers to missing sections {cited - sections}"


def test_links_to_document_anchors_resolve():
    slugs = {_github_slug(f"§{number} {title}") for _, number, title in _headings()}
    broken = []
    for path in _citing_files():
        for anchor in ANCHOR.findall(path.read_text(encoding="utf-8", errors="replace")):
            if anchor not in slugs:
                broken.append(f"{path.relative_to(ROOT)}: #{anchor}")
    assert not broken, "links to headings that do not exist:\n" + "\n".join(broken)


@pytest.mark.parametrize("title", ["§1 Notation", "§14 Deviations from the authors' code"])
def test_github_slug_matches_githubs_rule(title):
    # GitHub drops "§" and the apostrophe and keeps letters, digits, hyphens and underscores.
    expected = {
        "§1 Notation": "1-notation",
        "§14 Deviations from the authors' code": "14-deviations-from-the-authors-code",
    }
    assert _github_slug(title) == expected[title]


def test_the_unpublished_spec_is_cited_nowhere():
    offending = []
    for path in _tree_files():
        try:
            if FORBIDDEN.encode() in path.read_bytes():
                offending.append(str(path.relative_to(ROOT)))
        except OSError:  # unreadable special files are not part of the project
            continue
    assert not offending, (
        f"{FORBIDDEN} is not part of the repository; cite docs/methods.md §N (or the paper) "
        "instead, in:\n" + "\n".join(offending)
    )
