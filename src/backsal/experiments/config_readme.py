"""Generate ``config/README.md`` from the config schema, so that the two cannot disagree.

Run ``python -m backsal.experiments.config_readme`` after editing
``workflow/schemas/config.schema.yaml`` (``--check`` exits 1 when the file is out of date; the
test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from .settings import SCHEMA

__all__ = ["README", "render", "rows"]

#: The generated file.
README = SCHEMA.parents[2] / "config" / "README.md"

_INTRO = """\
# Configuration reference

<!-- Generated from workflow/schemas/config.schema.yaml by
     `python -m backsal.experiments.config_readme`: edit the schema, not this file. -->

Every key of `config/config.yaml` (the offline benchmark, the default) and `config/paper.yaml` (the
paper). The schema `workflow/schemas/config.schema.yaml` holds the same descriptions and defaults and
is enforced on every run: an unknown key or a bad value stops the run with a message naming the key.
Names the schema cannot check (datasets, models, methods, layers of each model, the device) are
checked when the config is read, before any job runs.
Change a value in a config file, or on the command line: `snakemake --config seed=1`, or
`snakemake --configfile my.yaml` for a file of your own (start from a copy of `config/config.yaml`).
Resources of jobs (threads, memory, run time, GPUs) are set by the rules and the profiles, not here.

| key | type | default | meaning |
|---|---|---|---|
"""


def _type(spec: Mapping[str, Any]) -> str:
    kinds = spec.get("type", "")
    return " or ".join(kinds) if isinstance(kinds, list) else str(kinds)


def _default(spec: Mapping[str, Any], required: bool) -> str:
    if "default" in spec:
        return f"`{json.dumps(spec['default'], ensure_ascii=False)}`"
    return "required" if required else "—"


def _meaning(spec: Mapping[str, Any]) -> str:
    text = " ".join(str(spec.get("description", "")).split())
    if "enum" in spec:
        text += f" One of: {', '.join(map(str, spec['enum']))}."
    return text.replace("|", "\\|")


def rows(schema: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any], bool]]:
    """``(dotted key, its schema, required)`` for every key, depth first, in schema order."""
    defs = schema.get("$defs", {})

    def resolve(spec: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = spec.get("$ref", "")
        return defs[ref.rsplit("/", 1)[-1]] if ref.startswith("#/$defs/") else spec

    def walk(node: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Mapping[str, Any], bool]]:
        required = set(node.get("required", ()))
        for key, spec in node.get("properties", {}).items():
            name = f"{prefix}{key}"
            yield name, spec, key in required
            yield from walk(spec, name + ".")
            extra = spec.get("additionalProperties")
            if isinstance(extra, Mapping):
                yield from walk(extra, name + ".<name>.")
            items = spec.get("items")
            if isinstance(items, Mapping):
                yield from walk(resolve(items), name + "[].")

    yield from walk(schema, "")


def render(schema: Mapping[str, Any]) -> str:
    """The README's text for ``schema``."""
    lines = [
        f"| `{name}` | {_type(spec)} | {_default(spec, required)} | {_meaning(spec)} |"
        for name, spec, required in rows(schema)
    ]
    return _INTRO + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is stale")
    args = parser.parse_args(argv)
    text = render(yaml.safe_load(SCHEMA.read_text(encoding="utf-8")))
    if args.check:
        current = README.read_text(encoding="utf-8") if README.is_file() else ""
        if current != text:
            print(f"{README} is out of date: run python -m backsal.experiments.config_readme")
            return 1
        return 0
    Path(README).write_text(text, encoding="utf-8")
    print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
