"""Several experiments at once: collect their runs, name the lever each configuration moves, tabulate."""

from __future__ import annotations

import time

import pandas as pd

from nlcore import paths
from nlcore.report.notebook.experiment import load_experiment
from nlcore.report.notebook.setup import Context, relpath

ABLATION_STEMS = ("01_cms", "02_surprise", "03_persistent_state", "04_delta_rule")
_CMS_LEVER = "CMS: chunks, lr policy, optimizer"
_LEVER_OF = {  # (experiment, configuration without corpus prefix) -> the lever it moves
    "01_cms": {"zero_init_ffn": "baseline", "default": "FFN output init", "no_norm_residual": "LayerNorm + residual"},
    "02_surprise": {"none": "baseline"},
    "03_persistent_state": {"persistent": "baseline", "persistent_surprise": "surprise objective"},
    "04_delta_rule": {"sgd_default": "baseline", "adamw": _CMS_LEVER},
}
_LEVER_DEFAULT = {"01_cms": _CMS_LEVER, "02_surprise": "surprise objective", "03_persistent_state": "state policy",
                  "04_delta_rule": "delta rule"}


def ablation_lever(stem: str, config: str, prototype: bool = False) -> str:
    """The lever a configuration of experiment `stem` moves (the baseline: none)."""
    if prototype:
        return "the prototype's settings"
    name = config.split("_", 1)[1] if stem == "02_surprise" and "_" in config else config
    return _LEVER_OF.get(stem, {}).get(name, _LEVER_DEFAULT.get(stem, stem))


def collect_experiments(ctx: Context, stems=ABLATION_STEMS, metrics=("valid_bpc", "test_bpc"),
                        mode: str | None = None) -> pd.DataFrame:
    """The per-seed results of several registered experiments as one tidy frame, read from the
    results root of `mode` (default `ctx.mode`; full: the committed `results/`, smoke:
    `build/smoke/results/`).

    In smoke mode (without `reuse_results`) an experiment with no results yet is run first
    through the registry (`experiments.run_experiment(stem, "smoke")`, in-process: seconds); in
    full mode a missing experiment is an error (run `python -m nlcore experiment <stem> --mode full`).
    Columns: experiment, config, seed, metric, value, and per configuration (from its first
    run's meta.json) corpus, prototype (compat=prototype), steps, batch_size, seq_len, chars
    (characters read in training = steps·B·T).
    """
    from nlcore.experiments import run_experiment
    from nlcore.results import read_json

    mode = paths.check_mode(mode or ctx.mode)
    root = paths.results_root(mode)
    missing = [s for s in stems if not (root / s / "summary.json").exists()]
    if missing and (mode != "smoke" or ctx.reuse_results):
        raise FileNotFoundError(f"no results for {missing} under {relpath(root)}: run `python -m nlcore experiment "
                                f"<stem> --mode {mode}` first")
    for stem in missing:
        t0 = time.perf_counter()
        run_experiment(stem, "smoke", out=root / stem, echo=False)
        print(f"  no smoke results for {stem}: ran its registry grid in {time.perf_counter() - t0:.1f} s")
    frames = []
    for stem in stems:
        res = load_experiment(root / stem, stem)
        for config in res.configs:
            dirs = res.run_dirs(config)
            if not dirs:
                continue
            cfg = read_json(dirs[0] / "meta.json")["config"]
            d = res.runs[(res.runs["config"] == config) & res.runs["metric"].isin(metrics)]
            frames.append(d[["config", "seed", "metric", "value"]].assign(
                experiment=stem, corpus=cfg["data"]["corpus"], prototype=cfg.get("compat") == "prototype",
                steps=cfg["steps"], batch_size=cfg["data"]["batch_size"], seq_len=cfg["data"]["seq_len"]))
        print(f"  {stem}: {len(res.configs)} configuration(s), seeds {res.meta.get('seeds')} <- {relpath(res.exp_dir)}")
    df = pd.concat(frames, ignore_index=True)
    df["seed"] = df["seed"].astype(int)
    df["chars"] = df["steps"] * df["batch_size"] * df["seq_len"]
    cols = ["experiment", "config", "seed", "metric", "value", "corpus", "prototype", "steps", "batch_size",
            "seq_len", "chars"]
    return df[cols]


def ablation_table(frame: pd.DataFrame, corpus: str, metric: str = "valid_bpc") -> pd.DataFrame:
    """One row per DISTINCT configuration of `frame` (as `collect_experiments` returns it) on
    `corpus`: configurations whose per-seed `metric` values are identical to the last digit are
    the same runs (e.g. 01 zero_init_ffn, 02 <corpus>_none, 03 persistent, 04 sgd_default) and
    appear once, under the first experiment's name, with the others in `same_as`.

    Columns: experiment, config, label (`NN_config`), lever, same_as, prototype, n, mean,
    ci_low, ci_high (95 % t interval over seeds, as in each summary.json), chars_ratio
    (characters read in training / the baseline's), steps, batch_size, seq_len.
    """
    from nlcore import stats

    d = frame[(frame["corpus"] == corpus) & (frame["metric"] == metric)]
    keys: dict[tuple, list[tuple[str, str]]] = {}
    for (stem, config), g in d.groupby(["experiment", "config"], sort=False):
        key = tuple(sorted(zip(g["seed"].astype(int), g["value"].astype(float))))
        keys.setdefault(key, []).append((stem, config))
    rows = []
    for key, members in keys.items():
        stem, config = members[0]
        g = d[(d["experiment"] == stem) & (d["config"] == config)].iloc[0]
        mean, lo, hi = stats.t_ci([v for _, v in key])
        rows.append({"experiment": stem, "config": config, "label": f"{stem[:2]}_{config}",
                     "lever": ablation_lever(stem, config, bool(g["prototype"])),
                     "same_as": ", ".join(f"{s[:2]} {c}" for s, c in members[1:]), "prototype": bool(g["prototype"]),
                     "n": len(key), "mean": mean, "ci_low": lo, "ci_high": hi, "chars": int(g["chars"]),
                     "steps": int(g["steps"]), "batch_size": int(g["batch_size"]), "seq_len": int(g["seq_len"])})
    t = pd.DataFrame(rows)
    base = t[t["lever"] == "baseline"]
    ref = base["chars"].iloc[0] if len(base) else t["chars"].median()
    t["chars_ratio"] = t["chars"] / ref
    return t.drop(columns="chars")


def ablation_runs(frame: pd.DataFrame, table: pd.DataFrame, metrics=("valid_bpc", "test_bpc")) -> pd.DataFrame:
    """The tidy runs (config = the table's label, lever, seed, metric, value) of the distinct
    configurations in `table`, for `nlcore.results.write_experiment`."""
    keep = table.set_index(["experiment", "config"])
    d = frame[frame["metric"].isin(metrics)].merge(keep[["label", "lever"]].reset_index(), on=["experiment", "config"])
    return d.assign(config=d["label"])[["config", "lever", "seed", "metric", "value"]]


def select_levers(table: pd.DataFrame, levers) -> pd.DataFrame:
    """The rows of an `ablation_table` whose lever is in `levers`, plus the baseline row always
    (the reference every other row is read against)."""
    keep = set(levers) | {"baseline"}
    return table[table["lever"].isin(keep)].reset_index(drop=True)


def separation(diffs: pd.DataFrame) -> pd.Series:
    """Per row of a `paired_differences` frame: "lower" when the whole paired 95 % t interval
    lies below zero, "higher" when it lies above, else "not separated" (the interval holds zero,
    or there is none: one seed)."""
    lo, hi = diffs["ci_low"].astype(float), diffs["ci_high"].astype(float)
    verdict = pd.Series("not separated", index=diffs.index)
    verdict[hi < 0] = "lower"
    verdict[lo > 0] = "higher"
    return verdict
