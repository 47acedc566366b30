"""nlcore.results: atomic writes, deterministic JSON/CSV, run and experiment files, tables."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nlcore import results, stats

# ---------------------------------------------------------------------------- atomic writes


def test_atomic_write_creates_overwrites_and_leaves_no_temp_files(tmp_out):
    p = tmp_out / "deep" / "a.txt"
    results.atomic_write_text(p, "one\n")
    results.atomic_write_text(p, "two\n")
    results.atomic_write_bytes(tmp_out / "b.bin", b"\x00\x01")
    assert p.read_text() == "two\n"
    assert (tmp_out / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(q.name for q in tmp_out.rglob("*")) == ["a.txt", "b.bin", "deep"]
    assert oct(p.stat().st_mode & 0o777) == oct(0o644)


def test_atomic_write_failure_keeps_the_old_file(tmp_out, monkeypatch):
    p = tmp_out / "a.txt"
    results.atomic_write_text(p, "old\n")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        results.atomic_write_text(p, "new\n")
    assert p.read_text() == "old\n"
    assert [q.name for q in tmp_out.iterdir()] == ["a.txt"]


# ---------------------------------------------------------------------------- JSON


@dataclasses.dataclass(frozen=True)
class _Cfg:
    d_model: int = 8
    lr: float = 1e-3
    chunks: tuple = (1, 4)


def test_json_is_sorted_indented_and_writes_nan_as_null():
    obj = {"b": float("nan"), "a": np.float32(0.5), "c": [np.int64(3), float("inf")],
           "d": Path("x/y"), "e": torch.tensor([1.0, 2.0]), "f": _Cfg(), "g": np.bool_(True),
           "h": torch.device("cpu"), "i": {2: "two"}, "j": pd.NA}
    text = results.dumps(obj)
    assert text.endswith("}\n")
    assert json.loads(text) == {
        "a": 0.5, "b": None, "c": [3, None], "d": "x/y", "e": [1.0, 2.0],
        "f": {"chunks": [1, 4], "d_model": 8, "lr": 0.001}, "g": True, "h": "cpu",
        "i": {"2": "two"}, "j": None,
    }
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert '\n  "a": 0.5' in text
    with pytest.raises(TypeError):
        results.dumps({"x": object()})


# ---------------------------------------------------------------------------- one run


def test_write_run(tmp_out):
    paths = results.write_run(
        tmp_out / "run", config=_Cfg(), summary={"valid_bpc": 1.5, "diverged": float("nan")},
        command="python -m nlcore train --preset smoke", wall_time_s=12.5, device="cpu",
        extra={"note": "x"},
    )
    meta = json.loads(paths["meta"].read_text())
    summary = json.loads(paths["summary"].read_text())
    assert summary == {"diverged": None, "valid_bpc": 1.5}
    assert set(meta) >= {"git", "command", "config", "environment", "device", "wall_time_s",
                         "utc_time", "extra"}
    assert set(meta["git"]) == {"revision", "dirty", "branch"}
    assert meta["config"] == {"chunks": [1, 4], "d_model": 8, "lr": 0.001}
    assert meta["command"].startswith("python -m nlcore")
    assert meta["environment"]["torch"] == torch.__version__
    assert meta["device"] == "cpu" and meta["wall_time_s"] == 12.5
    assert meta["extra"] == {"note": "x"}


def test_append_and_read_metrics_survive_a_torn_last_line(tmp_out):
    path = tmp_out / "run" / "metrics.jsonl"
    for step in (1, 2, 3):
        results.append_metrics(path, {"step": step, "loss": 1.0 / step, "bad": float("nan")})
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0]) == {"bad": None, "loss": 1.0, "step": 1}
    with open(path, "a") as fh:
        fh.write('{"step": 4, "lo')  # a crash mid-write
    assert [r["step"] for r in results.read_metrics(path)] == [1, 2, 3]
    assert results.trim_metrics(path, max_step=2) == 1
    assert [r["step"] for r in results.read_metrics(path)] == [1, 2]


def test_read_metrics_rejects_corruption_in_the_middle(tmp_out):
    path = tmp_out / "m.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        results.read_metrics(path)


# ---------------------------------------------------------------------------- one experiment


def _runs():
    rng = np.random.default_rng(0)
    rows = [
        {"config": c, "seed": s, "metric": m, "value": 1.4 + 0.1 * (c == "lstm") + rng.normal(0, 0.01)}
        for c in ("lstm", "cms") for s in (0, 1, 2) for m in ("valid_bpc", "test_bpc")
    ]
    rows += [{"config": "cms", "seed": 0, "metric": "train_loss", "step": st, "value": 2.0 / st}
             for st in (10, 20)]
    return pd.DataFrame(rows)


def test_write_and_read_experiment_round_trip(tmp_out):
    runs = _runs()
    paths = results.write_experiment(tmp_out / "exp", runs, meta={"mode": "smoke", "seeds": (0, 1, 2)})
    assert {p.name for p in paths.values()} == {"runs.csv", "summary.json", "meta.json"}
    df, summary, meta = results.read_experiment(tmp_out / "exp")
    assert list(df.columns) == ["config", "metric", "seed", "step", "value"]
    assert len(df) == len(runs)
    assert df["config"].tolist() == sorted(df["config"].tolist())
    assert summary == json.loads(results.dumps(stats.summarize(df)))  # from runs.csv as written
    assert results.resummarize(tmp_out / "exp") is False  # rebuilt from runs.csv alone: the same bytes
    assert meta["mode"] == "smoke" and meta["seeds"] == [0, 1, 2]
    assert {"git", "environment", "utc_time"} <= set(meta)
    merged = runs.merge(df, on=["config", "seed", "metric"], suffixes=("", "_read"))
    merged = merged[merged["step"].isna()]
    assert np.allclose(merged["value"], merged["value_read"], rtol=1e-7, atol=0)


def test_runs_csv_is_canonical(tmp_out):
    runs = _runs()
    shuffled = runs.sample(frac=1.0, random_state=1)[["value", "metric", "seed", "config", "step"]]
    a, b = tmp_out / "a", tmp_out / "b"
    results.write_experiment(a, runs, meta={})
    results.write_experiment(b, shuffled, meta={})
    assert (a / "runs.csv").read_bytes() == (b / "runs.csv").read_bytes()
    assert (a / "summary.json").read_bytes() == (b / "summary.json").read_bytes()
    text = (a / "runs.csv").read_text()
    assert text.splitlines()[0] == "config,metric,seed,step,value"
    assert "\r" not in text
    assert "cms,train_loss,0,10,0.2\n" in text  # integers stay integers, 8 significant digits
    assert "cms,test_bpc,0,," in text  # a missing step is empty


def test_extra_id_columns_join_the_grouping(tmp_out):
    df = pd.DataFrame({"config": ["a"] * 4, "seq_len": [64, 64, 128, 128], "seed": [0, 1, 0, 1],
                       "metric": ["bpc"] * 4, "value": [1.0, 1.2, 2.0, 2.2]})
    results.write_experiment(tmp_out, df, meta={})
    _, summary, _ = results.read_experiment(tmp_out)
    assert [r["seq_len"] for r in summary] == [64, 128]
    assert [r["mean"] for r in summary] == pytest.approx([1.1, 2.1])


def test_write_experiment_validates(tmp_out):
    with pytest.raises(ValueError, match="lacks column"):
        results.write_experiment(tmp_out, _runs().drop(columns="seed"), meta={})
    dup = pd.concat([_runs(), _runs().iloc[:1]])
    with pytest.raises(ValueError, match="duplicate"):
        results.write_experiment(tmp_out, dup, meta={})


# ---------------------------------------------------------------------------- tables


def test_results_table_markdown():
    records = [
        {"config": "cms", "metric": "valid_bpc", "mean": 1.41234, "ci_low": 1.40, "ci_high": 1.42,
         "n_seeds": 3},
        {"config": "cms", "metric": "test_bpc", "mean": 1.5, "ci_low": None, "ci_high": None,
         "n_seeds": 1},
        {"config": "lstm", "metric": "valid_bpc", "mean": 1.6, "ci_low": math.nan,
         "ci_high": math.nan, "n_seeds": 1},
        {"config": "lstm", "metric": "other", "mean": 9.0, "ci_low": 8.0, "ci_high": 10.0,
         "n_seeds": 3},
    ]
    assert results.results_table_markdown(records) == (
        "| config | valid_bpc | test_bpc |\n"
        "|---|---:|---:|\n"
        "| cms | 1.412 ± 0.010 [1.400, 1.420] (n=3) | 1.500 (n=1) |\n"
        "| lstm | 1.600 (n=1) | — |\n"
    )


def test_replace_block():
    text = "intro\n<!-- results:start -->\nold\n<!-- results:end -->\noutro\n"
    new = results.replace_block(text, "results", "| a |\n")
    assert new == "intro\n<!-- results:start -->\n| a |\n<!-- results:end -->\noutro\n"
    assert results.replace_block(new, "results", "| a |\n") == new
    with pytest.raises(ValueError):
        results.replace_block(text, "gallery", "x")
