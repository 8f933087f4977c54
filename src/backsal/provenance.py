"""Provenance of result files: what produced them, embedded in every format the report writes.

A provenance record is a plain JSON-serialisable dict built by :func:`collect`::

    {
      "schema": "backsal.provenance/1",
      "created": "2026-01-01T12:00:00+00:00",      # UTC, ISO 8601
      "command": "snakemake --cores 4 ...",          # sys.argv of the process unless given
      "rule": "pointing_tables",                      # the Snakemake rule, or null
      "config_hash": "sha256:…",                      # config_hash(config)
      "versions": {"python": "3.12.3", "torch": "2.14.1", ..., "snakemake": null},
      "checksums": {"model:vgg16_voc07": "sha256:…", "data:voc07_test": "sha256:…"},
      "seeds": {"saliency": 0},
      "extra": {...}                                  # anything else (wildcards, inputs, notes)
    }

Where it goes in each format (all readable back with :func:`read_provenance`):

========  ===============================================================================
CSV       leading ``# key: <json>`` lines, one per top-level key (``pandas.read_csv(path,
          comment="#")`` skips them)
Markdown  one HTML comment ``<!-- backsal-provenance … -->`` holding the JSON (indented)
LaTeX     leading ``% key: <json>`` lines, as in CSV
PNG       a text chunk ``backsal-provenance`` holding the JSON (``PIL.Image.open(p).text``)
PDF       the document information dictionary: ``Subject`` holds the JSON (ASCII only, so
          matplotlib writes it as a plain literal string), ``Keywords`` names the schema and
          the config hash
parquet   the Arrow schema metadata key ``backsal.provenance`` (``pyarrow.parquet.read_schema``)
JSON      a top-level ``"provenance"`` key
========  ===============================================================================

Every writer is atomic: it writes a temporary file beside the target and renames it into place,
so a job killed half-way leaves either the previous file or none, never a truncated one that
Snakemake would take for a finished output.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import pandas as pd

__all__ = [
    "PARQUET_METADATA_KEY",
    "PNG_TEXT_KEY",
    "PROVENANCE_SCHEMA",
    "Provenance",
    "atomic_path",
    "atomic_write",
    "collect",
    "config_hash",
    "figure_metadata",
    "file_checksum",
    "file_digest",
    "package_versions",
    "new_hasher",
    "provenance_from_snakemake",
    "read_csv_provenance",
    "read_json_provenance",
    "read_markdown_provenance",
    "read_parquet",
    "read_parquet_provenance",
    "read_pdf_provenance",
    "read_png_provenance",
    "read_provenance",
    "read_tex_provenance",
    "validate_provenance",
    "write_csv",
    "write_json",
    "write_markdown",
    "write_parquet",
    "write_tex",
]

PROVENANCE_SCHEMA = "backsal.provenance/1"
PNG_TEXT_KEY = "backsal-provenance"
PARQUET_METADATA_KEY = b"backsal.provenance"
_MD_OPEN = "<!-- backsal-provenance"
_MD_CLOSE = "-->"
_REQUIRED_KEYS = ("config_hash", "versions")
_CHUNK = 1 << 20

# Distributions whose versions every record carries; a missing optional one is recorded as null
# rather than left out, so "not installed" is visible and records of different runs line up.
_VERSIONED = ("torch", "torchvision", "numpy", "pandas", "backsal", "snakemake")


# --------------------------------------------------------------------------------------------
# Building a record
# --------------------------------------------------------------------------------------------


def _canonical(value: Any, where: str = "config") -> Any:
    """A JSON-ready copy of ``value`` whose serialisation does not depend on insertion order.

    Paths become strings and tuples lists; sets are sorted. Anything else that JSON cannot hold
    is an error rather than ``str(value)``: a repr may embed a memory address and would make the
    hash differ between two runs of the same config.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: non-finite float {value!r} has no canonical JSON form")
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be strings, got {key!r}")
            out[key] = _canonical(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return sorted(_canonical(item, f"{where}{{}}") for item in value)
    # numpy scalars (np.float32(0.1), np.int64(3)) without importing numpy here
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return _canonical(value.item(), where)
    raise TypeError(
        f"{where}: {type(value).__name__} is not JSON-serialisable; "
        "convert it to str, int, float, bool, list or dict first"
    )


def config_hash(config: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of ``config`` (sorted keys, no whitespace).

    Two configs that are equal as data (same keys and values, any key order) get the same hash.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def package_versions() -> dict[str, str | None]:
    """Python and the versions of the packages results depend on (``None``: not installed).

    Read from the installed distributions' metadata, so torch is not imported just to be named.
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    if versions["backsal"] is None:
        # A checkout used through PYTHONPATH has no distribution metadata.
        from backsal import __version__

        versions["backsal"] = __version__
    return versions


class _GitBlobHasher:
    """Streaming git blob id: the header needs the total size, so it is given up front."""

    def __init__(self, size: int) -> None:
        self._sha1 = hashlib.sha1(b"blob %d\0" % size)

    def update(self, data: bytes) -> None:
        self._sha1.update(data)

    def hexdigest(self) -> str:
        return self._sha1.hexdigest()


def new_hasher(algorithm: str, size: int | None = None) -> Any:
    """A streaming hasher (``update`` / ``hexdigest``) for ``algorithm``.

    Args:
        algorithm: A :mod:`hashlib` name (``"sha256"``, ``"sha1"``, ``"md5"``) or ``"git-blob"``,
            the object id git gives a file (sha1 of ``blob <size>\\0`` and the bytes).
        size: The total number of bytes; required by ``"git-blob"`` only.
    """
    if algorithm == "git-blob":
        if size is None:
            raise ValueError("a git blob id needs the file size before hashing")
        return _GitBlobHasher(size)
    return hashlib.new(algorithm)


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """The hexadecimal digest of a file's bytes, read in chunks (checkpoints are large).

    The one file-hashing routine of backsal: downloads, checkpoints and provenance records use it.
    """
    path = Path(path)
    hasher = new_hasher(algorithm, path.stat().st_size)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return str(hasher.hexdigest())


def file_checksum(path: str | os.PathLike[str]) -> str:
    """``"sha256:<hex>"`` of a file's bytes: the form a record's ``checksums`` hold."""
    return "sha256:" + file_digest(path, "sha256")


@dataclass(frozen=True)
class Provenance:
    """What produced a result file. :meth:`as_dict` gives the record the writers embed.

    Attributes:
        config_hash: :func:`config_hash` of the run's config.
        versions: :func:`package_versions`.
        checksums: Name → checksum of every model and data file the result depends on.
        seeds: Name → seed of every random choice.
        command: The command line that ran.
        rule: The Snakemake rule, if any.
        created: UTC time the record was made (ISO 8601).
        extra: Anything else worth keeping (wildcards, input files, notes).
    """

    config_hash: str
    versions: dict[str, str | None]
    checksums: dict[str, str] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    command: str = ""
    rule: str | None = None
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready record (key order fixed, ``schema`` first)."""
        return {
            "schema": PROVENANCE_SCHEMA,
            "created": self.created,
            "command": self.command,
            "rule": self.rule,
            "config_hash": self.config_hash,
            "versions": dict(self.versions),
            "checksums": dict(self.checksums),
            "seeds": dict(self.seeds),
            "extra": _canonical(self.extra, "extra"),
        }


def collect(
    config: Mapping[str, Any],
    checksums: Mapping[str, str],
    seeds: Mapping[str, int],
    extra: Mapping[str, Any] | None = None,
    *,
    command: str | None = None,
    rule: str | None = None,
) -> dict[str, Any]:
    """Build the provenance record of a result.

    Args:
        config: The run's config (hashed, not stored: the config file is in the repository).
        checksums: Name → ``"sha256:…"`` of the models and data the result depends on.
        seeds: Name → integer seed.
        extra: Further JSON-serialisable facts.
        command: The command line; default: this process's ``sys.argv``.
        rule: The Snakemake rule name, if any.

    Returns:
        The record (a plain dict) that the ``write_*`` functions embed.
    """
    for name, checksum in checksums.items():
        if not isinstance(name, str) or not isinstance(checksum, str) or not checksum:
            raise TypeError(
                f"checksums must map names to non-empty strings, got {name!r}: {checksum!r}"
            )
    for name, seed in seeds.items():
        # bool is an int subclass; a True "seed" is a bug upstream, not a seed
        if not isinstance(name, str) or isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seeds must map names to integers, got {name!r}: {seed!r}")
    record = Provenance(
        config_hash=config_hash(config),
        versions=package_versions(),
        checksums=dict(checksums),
        seeds=dict(seeds),
        command=shlex.join(sys.argv) if command is None else command,
        rule=rule,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        extra=dict(extra or {}),
    )
    return record.as_dict()


def provenance_from_snakemake(
    snakemake: Any,
    checksums: Mapping[str, str],
    seeds: Mapping[str, int],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`collect` for a Snakemake ``script:`` / ``notebook:`` job.

    Takes the config, rule name, wildcards and input/output files from the ``snakemake`` object
    that Snakemake injects into the script or notebook.
    """
    details: dict[str, Any] = {
        "wildcards": {k: str(v) for k, v in dict(snakemake.wildcards.items()).items()},
        "input": [str(p) for p in snakemake.input],
        "output": [str(p) for p in snakemake.output],
    }
    details.update(extra or {})
    return collect(dict(snakemake.config), checksums, seeds, details, rule=str(snakemake.rule))


def validate_provenance(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """Check that ``provenance`` is a record worth embedding and return it as a plain dict.

    Raises:
        TypeError: Not a mapping, or not JSON-serialisable.
        ValueError: ``config_hash`` or ``versions`` missing (a result that cannot be traced back
            to its config is not reproducible).
    """
    if not isinstance(provenance, Mapping):
        raise TypeError(f"provenance must be a dict, got {type(provenance).__name__}")
    missing = [key for key in _REQUIRED_KEYS if key not in provenance]
    if missing:
        raise ValueError(
            f"provenance lacks {missing}: build it with backsal.provenance.collect(...)"
        )
    return _canonical(dict(provenance), "provenance")


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the target's suffix, so libraries that infer the format from it
    (matplotlib, pyarrow) still work. On an exception the temporary file is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: Literal["w", "wb"] = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; rename it onto ``path`` on success."""
    with atomic_path(path) as tmp:
        encoding = "utf-8" if mode == "w" else None
        newline = "\n" if mode == "w" else None
        with open(tmp, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


# --------------------------------------------------------------------------------------------
# Writers and readers, one pair per format
# --------------------------------------------------------------------------------------------


def _line_records(provenance: Mapping[str, Any], prefix: str) -> str:
    """``{prefix} key: <compact json>`` per top-level key; JSON escapes newlines, so one line."""
    record = validate_provenance(provenance)
    lines = [f"{prefix} backsal-provenance: {PROVENANCE_SCHEMA}"]
    lines += [
        f"{prefix} {key}: {json.dumps(value, ensure_ascii=False, separators=(',', ':'))}"
        for key, value in record.items()
    ]
    return "\n".join(lines) + "\n"


def _parse_line_records(lines: list[str], prefix: str, path: Path) -> dict[str, Any]:
    record: dict[str, Any] = {}
    marker_seen = False
    pattern = re.compile(rf"^{re.escape(prefix)} ([A-Za-z0-9_.-]+): (.*)$")
    for line in lines:
        match = pattern.match(line.rstrip("\n"))
        if match is None:
            break
        key, value = match.groups()
        if key == "backsal-provenance":
            marker_seen = True
            continue
        record[key] = json.loads(value)
    if not marker_seen:
        raise ValueError(f"{path}: no backsal provenance header")
    return record


def _leading_lines(path: Path, prefix: str) -> list[str]:
    lines = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith(prefix):
                break
            lines.append(line)
    return lines


def write_csv(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    provenance: Mapping[str, Any],
    **to_csv: Any,
) -> Path:
    """Write ``frame`` as CSV under ``# key: value`` provenance lines; returns the path.

    ``pandas.read_csv(path, comment="#")`` reads the table back. Because pandas treats a ``#``
    anywhere as the start of a comment, a ``#`` in a cell or column name would be cut off on
    reading: that is refused here instead of producing a file that does not round-trip.
    """
    _refuse_hash_sign(frame, path)
    header = _line_records(provenance, "#")
    target = Path(path)
    with atomic_write(target) as handle:
        handle.write(header)
        frame.to_csv(handle, lineterminator="\n", **to_csv)
    return target


def _refuse_hash_sign(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    labels = [str(c) for c in frame.columns] + [str(i) for i in frame.index]
    labels += [str(n) for n in frame.columns.names if n is not None]
    labels += [str(n) for n in frame.index.names if n is not None]
    bad = [label for label in labels if "#" in label]
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            bad += [str(v) for v in values.dropna() if "#" in str(v)]
    if bad:
        raise ValueError(
            f"{path}: '#' in {bad[:3]} would be read back as a comment; rename those values"
        )


def read_csv_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record written by :func:`write_csv`."""
    path = Path(path)
    return _parse_line_records(_leading_lines(path, "#"), "#", path)


def write_tex(text: str, path: str | os.PathLike[str], provenance: Mapping[str, Any]) -> Path:
    """Write LaTeX ``text`` under ``% key: value`` provenance lines; returns the path."""
    target = Path(path)
    with atomic_write(target) as handle:
        handle.write(_line_records(provenance, "%"))
        handle.write(text if text.endswith("\n") else text + "\n")
    return target


def read_tex_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record written by :func:`write_tex`."""
    path = Path(path)
    return _parse_line_records(_leading_lines(path, "%"), "%", path)


def _html_comment_safe(text: str) -> str:
    # An HTML comment may not contain "--". In JSON that pair can only occur inside a string
    # (e.g. "--cores"), where "\u002d" is a valid escape of "-": the JSON still parses the same.
    while "--" in text:
        text = text.replace("--", "-\\u002d")
    return text


def write_markdown(text: str, path: str | os.PathLike[str], provenance: Mapping[str, Any]) -> Path:
    """Write Markdown ``text`` after an HTML comment holding the provenance JSON."""
    record = validate_provenance(provenance)
    block = _html_comment_safe(json.dumps(record, ensure_ascii=False, indent=2))
    target = Path(path)
    with atomic_write(target) as handle:
        handle.write(f"{_MD_OPEN}\n{block}\n{_MD_CLOSE}\n\n")
        handle.write(text if text.endswith("\n") else text + "\n")
    return target


def read_markdown_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record written by :func:`write_markdown`."""
    text = Path(path).read_text(encoding="utf-8")
    start = text.find(_MD_OPEN)
    if start < 0:
        raise ValueError(f"{path}: no backsal provenance comment")
    body_start = start + len(_MD_OPEN)
    end = text.find(_MD_CLOSE, body_start)
    if end < 0:
        raise ValueError(f"{path}: unterminated provenance comment")
    return json.loads(text[body_start:end])


def write_json(
    payload: Mapping[str, Any], path: str | os.PathLike[str], provenance: Mapping[str, Any]
) -> Path:
    """Write ``payload`` as a JSON object with an added top-level ``"provenance"`` key."""
    if "provenance" in payload:
        raise ValueError(f"{path}: payload already has a 'provenance' key")
    document = {
        **_canonical(dict(payload), "payload"),
        "provenance": validate_provenance(provenance),
    }
    target = Path(path)
    with atomic_write(target) as handle:
        json.dump(document, handle, ensure_ascii=False, indent=2)
        handle.write("\n")
    return target


def read_json_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record of a JSON file written by :func:`write_json`."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or "provenance" not in document:
        raise ValueError(f"{path}: no 'provenance' key")
    return document["provenance"]


def write_parquet(
    frame: pd.DataFrame, path: str | os.PathLike[str], provenance: Mapping[str, Any]
) -> Path:
    """Write ``frame`` as parquet with the provenance JSON in the Arrow schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    record = validate_provenance(provenance)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[PARQUET_METADATA_KEY] = json.dumps(record, ensure_ascii=False).encode("utf-8")
    table = table.replace_schema_metadata(metadata)
    target = Path(path)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)
    return target


def read_parquet_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record written by :func:`write_parquet` (reads only the footer)."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    if PARQUET_METADATA_KEY not in metadata:
        raise ValueError(f"{path}: no backsal provenance in the parquet schema metadata")
    return json.loads(metadata[PARQUET_METADATA_KEY].decode("utf-8"))


def read_parquet(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A parquet table written by :func:`write_parquet` and its provenance record."""
    return pd.read_parquet(path), read_parquet_provenance(path)


def figure_metadata(
    provenance: Mapping[str, Any], fmt: str, title: str | None = None
) -> dict[str, str]:
    """The ``savefig(metadata=...)`` dict that embeds ``provenance`` in a PNG or PDF."""
    record = validate_provenance(provenance)
    if fmt == "png":
        metadata = {PNG_TEXT_KEY: json.dumps(record, ensure_ascii=False)}
        if title:
            metadata["Title"] = title
        return metadata
    if fmt == "pdf":
        # ASCII JSON: matplotlib then writes a plain literal string, which read_pdf_provenance
        # (and any PDF viewer's "document properties") can read without UTF-16 decoding.
        metadata = {
            "Subject": json.dumps(record, ensure_ascii=True),
            "Keywords": f"{PROVENANCE_SCHEMA} {record['config_hash']}",
        }
        if title:
            metadata["Title"] = title
        return metadata
    raise ValueError(f"no provenance embedding for figure format {fmt!r}; use 'png' or 'pdf'")


def read_png_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record of a PNG saved with :func:`figure_metadata` (its text chunk)."""
    from PIL import Image

    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}) or {})
    if PNG_TEXT_KEY not in text:
        raise ValueError(f"{path}: no '{PNG_TEXT_KEY}' text chunk")
    return json.loads(text[PNG_TEXT_KEY])


def read_pdf_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record of a PDF saved with :func:`figure_metadata` (its ``Subject``).

    Read with ``pypdf`` (the ``workflow`` and ``test`` extras), imported here only: writing
    figures needs matplotlib alone, and a hand-written PDF parser would be one more thing to trust.
    """
    try:
        from pypdf import PdfReader
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading the provenance of {path} needs pypdf: pip install pypdf "
            "(or install backsal with the 'workflow' extra)"
        ) from error
    info: Mapping[str, Any] = PdfReader(Path(path)).metadata or {}
    subject, keywords = info.get("/Subject"), str(info.get("/Keywords", ""))
    if subject is None or PROVENANCE_SCHEMA not in keywords:
        raise ValueError(f"{path}: no backsal provenance in the PDF document information")
    return dict(json.loads(str(subject)))


_READERS = {
    ".csv": read_csv_provenance,
    ".md": read_markdown_provenance,
    ".tex": read_tex_provenance,
    ".png": read_png_provenance,
    ".pdf": read_pdf_provenance,
    ".parquet": read_parquet_provenance,
    ".json": read_json_provenance,
}


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record of any file the report writes, chosen by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in _READERS:
        raise ValueError(f"{path}: no provenance reader for {suffix!r}; known: {sorted(_READERS)}")
    return _READERS[suffix](path)
