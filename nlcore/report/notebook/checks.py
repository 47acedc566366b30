"""Reference levels and sanity checks on an experiment's runs: unigram bpc, update counts, finiteness."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from nlcore.report.notebook.experiment import ExperimentResults


def unigram_bpc(run_dir: str | Path, split: str = "valid") -> float:
    """Bits per character of the unigram model (train-split character frequencies, add-one
    smoothed) on `split` of the corpus a run used: the level any trained model must beat.

    Reads `unigram_bpc` from the run's summary when the trainer wrote it; otherwise loads the
    corpus named in the run's `meta.json` config (needs the data for real corpora).
    """
    from nlcore.config import from_dict
    from nlcore.results import read_json
    from nlcore.training.evaluate import unigram_bpc as _unigram
    from nlcore.training.trainer import load_data

    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json")
    if summary.get("unigram_bpc") is not None and split == "valid":
        return float(summary["unigram_bpc"])
    cfg = from_dict(read_json(run_dir / "meta.json")["config"])
    return _unigram(load_data(cfg), split)


def expected_updates(steps: int, chunk: int, partial: str = "flush", optimizer: str = "sgd") -> int:
    """Updates a level with chunk C makes in `steps` steps: floor(steps / C), plus one for a
    flushed final partial chunk; 0 for a frozen level (optimizer "none")."""
    if optimizer == "none":
        return 0
    return steps // chunk + (1 if steps % chunk and partial == "flush" else 0)


def updates_check(res: ExperimentResults) -> pd.DataFrame:
    """Per run and level: chunk, steps, updates made (summary) and updates expected (Eq. 31)."""
    from nlcore.results import read_json

    rows = []
    for config in res.configs:
        for run in res.run_dirs(config):
            summary = read_json(run / "summary.json")
            cms = read_json(run / "meta.json")["config"]["cms"]
            for lv in cms["levels"]:
                made = summary.get("updates_by_level", {}).get(lv["name"])
                rows.append({"config": config, "seed": int(run.name[4:]), "level": lv["name"],
                             "chunk": lv["chunk"], "steps": summary["steps"], "updates": made,
                             "expected": expected_updates(summary["steps"], lv["chunk"], cms["partial"],
                                                          lv["optimizer"])})
    df = pd.DataFrame(rows, columns=["config", "seed", "level", "chunk", "steps", "updates", "expected"])
    df["ok"] = df["updates"] == df["expected"]
    return df


def all_finite(res: ExperimentResults) -> bool:
    """True when every value in runs.csv and every logged training loss is finite."""
    from nlcore.results import read_metrics

    if not all(math.isfinite(v) for v in res.runs["value"]):
        return False
    for config in res.configs:
        for run in res.run_dirs(config):
            if (run / "metrics.jsonl").exists():
                losses = [r.get("train_loss") for r in read_metrics(run / "metrics.jsonl")]
                if not all(v is not None and math.isfinite(v) for v in losses):
                    return False
    return True


def corpus_summary(corpus: str = "wikitext2") -> dict:
    """A prepared corpus' committed `results/data/<corpus>/summary.json` (written by `python -m
    nlcore data --out`): split sizes, vocabulary, unigram bpc; no data files needed."""
    from nlcore import paths
    from nlcore.results import read_json

    path = paths.REPO_ROOT / "results" / "data" / corpus / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"no committed corpus summary at {path}: run `python -m nlcore data --out` for it")
    return read_json(path)


def corpus_unigram_bpc(corpus: str = "wikitext2", split: str = "valid") -> float:
    """The unigram level of a prepared corpus, from its committed summary (`corpus_summary`)."""
    return float(corpus_summary(corpus)["unigram_bpc"][split])


def unigram_reference(res: ExperimentResults, split: str = "valid") -> float:
    """The unigram level of the corpus `res`'s first run used: the committed corpus summary where
    there is one (a CPU without the data re-plots committed results), else computed from the corpus."""
    from nlcore import paths
    from nlcore.results import read_json

    run = res.run_dirs(res.configs[0])[0]
    corpus = read_json(run / "meta.json")["config"]["data"]["corpus"]
    if (paths.REPO_ROOT / "results" / "data" / corpus / "summary.json").is_file():
        return corpus_unigram_bpc(corpus, split)
    return unigram_bpc(run, split)
