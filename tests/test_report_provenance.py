"""Provenance: the config hash, the record, and a round trip through every file format."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image
from pypdf import PdfReader

from backsal import provenance as prov
from report_synthetic import provenance


def test_config_hash_is_sha256_of_sorted_compact_json():
    config = {"b": [1, 2.5, {"y": None, "x": "é"}], "a": True}
    expected = hashlib.sha256(b'{"a":true,"b":[1,2.5,{"x":"\xc3\xa9","y":null}]}').hexdigest()
    assert prov.config_hash(config) == f"sha256:{expected}"
    reordered = {"a": True, "b": [1, 2.5, {"x": "é", "y": None}]}
    assert prov.config_hash(reordered) == prov.config_hash(config)
    assert prov.config_hash({**config, "a": False}) != prov.config_hash(config)
    # Paths and numpy scalars hash as their JSON forms, so a config read back hashes the same.
    assert prov.config_hash({"p": Path("x/y"), "s": np.int64(3)}) == prov.config_hash(
        {"p": "x/y", "s": 3}
    )
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        prov.config_hash({"f": object()})


def test_collect_records_versions_checksums_seeds_and_command():
    record = prov.collect({"k": 1}, {"data": "sha256:00"}, {"s": 7}, {"x": 1}, command="run me")
    assert record["schema"] == prov.PROVENANCE_SCHEMA
    assert record["config_hash"] == prov.config_hash({"k": 1})
    assert set(record["versions"]) >= {"python", "torch", "torchvision", "numpy", "pandas",
                                       "backsal", "snakemake"}  # fmt: skip
    assert record["versions"]["pandas"] == pd.__version__
    assert (record["checksums"], record["seeds"], record["command"]) == (
        {"data": "sha256:00"}, {"s": 7}, "run me"
    )  # fmt: skip
    assert record["extra"] == {"x": 1}
    json.dumps(record)  # plain JSON
    with pytest.raises(TypeError, match="seeds"):
        prov.collect({}, {}, {"s": True})
    with pytest.raises(TypeError, match="checksums"):
        prov.collect({}, {"m": ""}, {})


def test_validate_refuses_a_record_without_config_hash():
    with pytest.raises(ValueError, match="collect"):
        prov.validate_provenance({"versions": {}})


def test_text_formats_round_trip(tmp_path):
    record = provenance()
    frame = pd.DataFrame({"method": ["a", "b"], "value": [1.5, np.nan]})
    csv = prov.write_csv(frame, tmp_path / "t.csv", record, index=False)
    back = pd.read_csv(csv, comment="#")
    assert back["method"].tolist() == ["a", "b"]
    assert back["value"].iloc[0] == 1.5 and np.isnan(back["value"].iloc[1])
    assert prov.read_provenance(csv) == record

    md = prov.write_markdown("| a |\n|---|\n| 1 |\n", tmp_path / "t.md", record)
    text = md.read_text()
    comment = text[text.index("<!--") + 4 : text.index("-->")]
    assert "--" not in comment  # "--cores" must not end the HTML comment early
    assert prov.read_provenance(md) == record

    tex = prov.write_tex("\\begin{tabular}{l}\\end{tabular}", tmp_path / "t.tex", record)
    assert all(line.startswith("%") for line in tex.read_text().splitlines()[: len(record) + 1])
    assert prov.read_provenance(tex) == record

    js = prov.write_json({"value": 3}, tmp_path / "t.json", record)
    assert json.loads(js.read_text())["value"] == 3
    assert prov.read_provenance(js) == record


def test_parquet_round_trip(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")  # the workflow extra, not the test extra
    record = provenance()
    frame = pd.DataFrame({"method": ["a"], "accuracy": [0.5]})
    path = prov.write_parquet(frame, tmp_path / "t.parquet", record)
    table, back = prov.read_parquet(path)
    pd.testing.assert_frame_equal(table, frame, check_dtype=False)
    assert back == record
    raw = pq.read_schema(path).metadata[prov.PARQUET_METADATA_KEY]
    assert json.loads(raw) == record


def test_figure_formats_round_trip(tmp_path):
    record = provenance()
    record["extra"]["parens"] = "a (b) \\ c"  # PDF string escapes
    figure = Figure()
    figure.subplots().plot([0, 1], [1, 0])
    pdf, png = tmp_path / "fig.pdf", tmp_path / "fig.png"
    for path, fmt in ((pdf, "pdf"), (png, "png")):
        figure.savefig(path, metadata=prov.figure_metadata(record, fmt, "a title"))
    with Image.open(png) as image:
        assert json.loads(image.text[prov.PNG_TEXT_KEY]) == record
        assert image.text["Title"] == "a title"
    assert prov.read_provenance(pdf) == record
    info = PdfReader(pdf).metadata  # an independent reader of what matplotlib wrote
    assert info.title == "a title"
    assert record["config_hash"] in info["/Keywords"]
    assert json.loads(info.subject) == record
    assert record["config_hash"].encode() in pdf.read_bytes()


def test_csv_refuses_hash_sign_that_would_not_round_trip(tmp_path):
    with pytest.raises(ValueError, match="comment"):
        prov.write_csv(pd.DataFrame({"m": ["a#b"]}), tmp_path / "x.csv", provenance())
    assert not (tmp_path / "x.csv").exists()


def test_atomic_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "result.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), prov.atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]


def test_read_provenance_errors_name_the_file(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="plain.csv"):
        prov.read_provenance(plain)
    with pytest.raises(ValueError, match="no provenance reader"):
        prov.read_provenance(tmp_path / "x.xlsx")


def test_provenance_from_snakemake_takes_rule_config_and_files():
    from types import SimpleNamespace

    try:  # the container Snakemake passes; a dict has the same items() otherwise
        from snakemake.iocontainers import Wildcards

        wildcards = Wildcards(fromdict={"dataset": "voc07"})
    except ImportError:
        wildcards = {"dataset": "voc07"}
    job = SimpleNamespace(
        config={"seed": 1},
        rule="pointing_tables",
        wildcards=wildcards,
        input=["results/voc07/pointing.parquet"],
        output=["report/voc07/pointing_all.csv"],
    )
    record = prov.provenance_from_snakemake(job, {"data": "sha256:11"}, {"seed": 1})
    assert record["rule"] == "pointing_tables"
    assert record["config_hash"] == prov.config_hash({"seed": 1})
    assert record["extra"] == {
        "wildcards": {"dataset": "voc07"},
        "input": ["results/voc07/pointing.parquet"],
        "output": ["report/voc07/pointing_all.csv"],
    }
