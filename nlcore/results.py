"""Results on disk: one run's `meta.json`/`summary.json`/`metrics.jsonl`, one experiment's
`runs.csv`/`summary.json`/`meta.json`, and the README results table made from them.

Layout of an experiment (`results/<stem>/` in FULL mode, `build/smoke/results/<stem>/` in SMOKE):

    runs.csv      tidy, one row per (config, seed, metric[, step]) -> value; sorted, fixed
                  float format, so a diff shows only numbers that changed
    summary.json  per (config, metric): mean, std, ci_low, ci_high, n_seeds, ci_method
    meta.json     provenance only: git revision and dirty flag, environment, UTC time, and
                  whatever the caller adds (mode, params, config, device, wall time)

Every file is written atomically (temp file in the same folder, fsync, `os.replace`), so a crash
never leaves half a file. JSON has sorted keys and an indent of 2; NaN and inf become null.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nlcore import repro, stats

FLOAT_FORMAT = "%.8g"  # runs.csv: 8 significant digits, stable across platforms
RUN_COLUMNS = ("config", "seed", "metric", "value")  # required in runs.csv; "step" optional
_KEY_ORDER = ("config", "metric", "seed", "step")  # sort order of runs.csv rows


# ---------------------------------------------------------------------------- atomic writes


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically: temp file beside it, fsync, `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` atomically (UTF-8, newlines exactly as given)."""
    return atomic_write_bytes(path, text.encode(encoding))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every OS can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- JSON


def jsonable(obj):
    """`obj` as plain JSON values: NaN/inf -> None, NumPy/torch scalars and arrays -> Python,
    dataclasses -> dicts, tuples/sets -> lists, paths/devices/dtypes/datetimes -> strings."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return jsonable(obj.tolist())
    if isinstance(obj, (set, frozenset)):
        return [jsonable(v) for v in sorted(obj, key=repr)]
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, (os.PathLike, torch.device, torch.dtype)):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON: {obj!r}")


def dumps(obj, indent: int | None = 2) -> str:
    """Deterministic JSON text: sorted keys, `indent`, NaN as null, trailing newline if indented."""
    text = json.dumps(jsonable(obj), sort_keys=True, indent=indent, allow_nan=False,
                      ensure_ascii=False)
    return text + "\n" if indent is not None else text


def write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, dumps(obj))


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- one run


def write_run(
    out_dir: str | os.PathLike,
    *,
    config,
    summary: Mapping,
    command: str | None,
    wall_time_s: float,
    device,
    extra: Mapping | None = None,
) -> dict[str, Path]:
    """Write `meta.json` (provenance) and `summary.json` (final numbers) of one run.

    `config` is a dict or a dataclass (written in full); `command` the command line
    (`repro.command_line()` for a CLI, None inside a notebook).
    """
    out_dir = Path(out_dir)
    meta = {
        "git": repro.git_info(),
        "command": command,
        "config": config,
        "environment": repro.capture_environment(device),
        "device": str(device) if device is not None else None,
        "wall_time_s": float(wall_time_s),
        "utc_time": repro.utc_now(),
        "extra": dict(extra) if extra is not None else None,
    }
    return {
        "meta": write_json(out_dir / "meta.json", meta),
        "summary": write_json(out_dir / "summary.json", dict(summary)),
    }


def append_metrics(path: str | os.PathLike, record: Mapping) -> None:
    """Append `record` as one JSON line to `path` (e.g. `metrics.jsonl`), flushed and fsynced,
    so every line written before a crash is on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = dumps(record, indent=None)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a `metrics.jsonl`. A torn last line (a crash mid-write) is dropped;
    a bad line anywhere else is an error."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # no newline after it: the write was cut short
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON") from None
    return records


def trim_metrics(path: str | os.PathLike, max_step: int, step_key: str = "step") -> int:
    """Keep only records with `record[step_key] <= max_step` (records without it are kept).

    For a resume from a checkpoint at `max_step`: lines logged after that checkpoint would
    otherwise appear twice. Rewrites the file atomically; returns the number of lines dropped.
    """
    path = Path(path)
    if not path.exists():
        return 0
    records = read_metrics(path)
    kept = [r for r in records if r.get(step_key) is None or r[step_key] <= max_step]
    atomic_write_text(path, "".join(dumps(r, indent=None) + "\n" for r in kept))
    return len(records) - len(kept)


# ---------------------------------------------------------------------------- one experiment


def _tidy(runs: pd.DataFrame) -> pd.DataFrame:
    """Validated, canonically ordered copy of a tidy runs table."""
    missing = [c for c in RUN_COLUMNS if c not in runs.columns]
    if missing:
        raise ValueError(f"runs table lacks column(s) {missing}; have {list(runs.columns)}")
    keys = [c for c in _KEY_ORDER if c in runs.columns]
    others = [c for c in runs.columns if c not in keys and c != "value"]
    df = runs[[*keys[:1], *others, *keys[1:], "value"]].copy()  # config, extras, ..., value
    df["value"] = pd.to_numeric(df["value"], errors="raise").astype(np.float64)
    for col in ("seed", "step"):
        if col in df.columns:
            v = pd.to_numeric(df[col], errors="raise")
            if v.dropna().eq(v.dropna().round()).all():
                v = v.astype("Int64")  # integral: written without ".0", missing as empty
            df[col] = v
    sort_cols = [keys[0], *others, *keys[1:]]
    if df.duplicated(sort_cols).any():
        raise ValueError(f"runs table has duplicate rows for keys {sort_cols}")
    return df.sort_values(sort_cols, kind="mergesort").reset_index(drop=True)


def runs_to_csv(runs: pd.DataFrame) -> str:
    """The canonical CSV text of a runs table (sorted rows, fixed float format, LF endings)."""
    return _tidy(runs).to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def write_experiment(
    exp_dir: str | os.PathLike,
    runs: pd.DataFrame,
    *,
    meta: Mapping,
    by: Iterable[str] | None = None,
) -> dict[str, Path]:
    """Write `runs.csv`, `summary.json` and `meta.json` of one experiment into `exp_dir`.

    `runs` is tidy: columns config, seed, metric, value, optionally step, and optionally other
    id columns (e.g. seq_len), which then join config in the summary's grouping unless `by`
    says otherwise. `meta` (mode, params, config, device, wall time, ...) is written with the
    git state, the environment and the UTC time added under keys it does not already use.
    """
    exp_dir = Path(exp_dir)
    csv = runs_to_csv(runs)
    auto = {
        "git": repro.git_info(),
        "environment": repro.capture_environment(meta.get("device")),
        "utc_time": repro.utc_now(),
    }
    return {
        "runs": atomic_write_text(exp_dir / "runs.csv", csv),
        "summary": write_json(exp_dir / "summary.json", summary_of(_read_runs(io.StringIO(csv)), by)),
        "meta": write_json(exp_dir / "meta.json", {**auto, **dict(meta)}),
    }


def summary_of(runs: pd.DataFrame, by: Iterable[str] | None = None) -> list[dict]:
    """The summary records of a runs table as read back from runs.csv (so a summary can always be
    rebuilt from the committed runs.csv alone): `by` defaults to every id column (config and any
    others such as seq_len)."""
    df = _tidy(runs)
    if by is None:
        by = [c for c in df.columns if c not in ("seed", "metric", "step", "value")]
    return stats.summarize(df, by=tuple(by))


def _read_runs(source) -> pd.DataFrame:
    runs = pd.read_csv(source, dtype={"config": str, "metric": str})
    for col in ("seed", "step"):
        if col in runs.columns and runs[col].dropna().eq(runs[col].dropna().round()).all():
            runs[col] = runs[col].astype("Int64")
    return runs


def resummarize(exp_dir: str | os.PathLike) -> bool:
    """Rewrite `summary.json` from the committed `runs.csv` with today's statistics (runs.csv and
    meta.json stay as they are); True when the file changed."""
    exp_dir = Path(exp_dir)
    path = exp_dir / "summary.json"
    before = path.read_bytes() if path.exists() else None
    write_json(path, summary_of(_read_runs(exp_dir / "runs.csv")))
    return path.read_bytes() != before


def read_experiment(exp_dir: str | os.PathLike) -> tuple[pd.DataFrame, list[dict], dict]:
    """`(runs_df, summary_records, meta)` as written by `write_experiment`."""
    exp_dir = Path(exp_dir)
    runs = _read_runs(exp_dir / "runs.csv")
    return runs, read_json(exp_dir / "summary.json"), read_json(exp_dir / "meta.json")


# ---------------------------------------------------------------------------- tables


def format_ci(record: Mapping, digits: int = 3) -> str:
    """`mean ± half-width [lo, hi] (n=3)`; just `mean (n=1)` when there is no interval."""
    mean, lo, hi, n = (record.get(k) for k in ("mean", "ci_low", "ci_high", "n_seeds"))
    if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
        return f"n/a (n={n})"
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{mean:.{digits}f} (n={n})"
    half = (hi - lo) / 2
    return f"{mean:.{digits}f} ± {half:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] (n={n})"


def results_table_markdown(
    summary_records: Iterable[Mapping],
    metrics: Iterable[str] = ("valid_bpc", "test_bpc"),
    by: str = "config",
    digits: int = 3,
) -> str:
    """A Markdown table: one row per `by` value (in first-seen order), one column per metric,
    cells as `format_ci` writes them; a metric a row lacks shows as an em dash."""
    metrics = list(metrics)
    rows: dict[str, dict[str, str]] = {}
    for rec in summary_records:
        row = rows.setdefault(str(rec[by]), {})
        if rec["metric"] in metrics:
            row[rec["metric"]] = format_ci(rec, digits)
    lines = [
        "| " + " | ".join([by, *metrics]) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(metrics)) + "|",
    ]
    for name, cells in rows.items():
        lines.append("| " + " | ".join([name, *(cells.get(m, "—") for m in metrics)]) + " |")
    return "\n".join(lines) + "\n"


def replace_block(text: str, name: str, body: str) -> str:
    """Replace what lies between `<!-- name:start -->` and `<!-- name:end -->` in `text`
    (README and docs sections are regenerated from committed results this way, never by hand)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < 0 or j < i:
        raise ValueError(f"markers {start} ... {end} not found in order")
    return text[: i + len(start)] + "\n" + body.strip("\n") + "\n" + text[j:]
