"""Numbers quoted in a notebook's text, taken from committed results and never typed.

    q = nl.notebook.Quote(ctx, "01_cms")       # reads results/01_cms/summary.json
    nl.notebook.takeaways(ctx, f'''
    - CMS off scores {q.ci("cms_off")} valid bpc, the default {q.ci("default")}.
    ''')

Every number a `Quote` renders is recorded (the file, the record, the field, the text), and
`takeaways` writes that ledger to `build/cited/<stem>.json` beside displaying the Markdown; a test
re-reads each cited record from its file and checks every number in the displayed text is one of
them. Takeaways always quote the committed full results, whatever the notebook's view: the
sentences around them describe those results.
"""

from __future__ import annotations

import json
import math
import re

from nlcore import paths
from nlcore.results import read_json
from nlcore.stats import paired_diff_ci

_LEDGER: dict[str, list[dict]] = {}  # notebook stem -> cited numbers, in citation order
_SHOWN: dict[str, list[str]] = {}  # notebook stem -> the takeaway Markdown displayed


class Quote:
    """Numbers of one committed experiment, rendered for prose (see the module docstring)."""

    def __init__(self, ctx, folder: str) -> None:
        self.notebook = ctx.stem
        self.dir = paths.REPO_ROOT / "results" / folder
        self.file = self.dir / "summary.json"
        if not self.file.is_file():
            raise FileNotFoundError(f"no committed results at {self.file}")
        self.records = read_json(self.file)

    def record(self, config: str, metric: str = "valid_bpc", **keys) -> dict:
        hits = [r for r in self.records if r.get("config") == config and r.get("metric") == metric
                and all(r.get(k) == v for k, v in keys.items())]
        if len(hits) != 1:
            raise KeyError(f"{self.file}: {len(hits)} records for config={config!r}, metric={metric!r}, {keys}")
        return hits[0]

    def _cite(self, text: str, config: str, metric: str, field: str, value, keys: dict) -> str:
        _LEDGER.setdefault(self.notebook, []).append({
            "file": str(self.file.relative_to(paths.REPO_ROOT)), "config": config, "metric": metric,
            "keys": keys, "field": field, "value": value, "text": text})
        return text

    def mean(self, config: str, metric: str = "valid_bpc", digits: int = 3, **keys) -> str:
        """The mean over seeds, e.g. `1.698`."""
        v = self.record(config, metric, **keys)["mean"]
        return self._cite(f"{v:.{digits}f}", config, metric, "mean", v, keys)

    def ci(self, config: str, metric: str = "valid_bpc", digits: int = 3, **keys) -> str:
        """The mean with its interval and n, e.g. `1.698 [1.692, 1.703] (n = 3)`."""
        r = self.record(config, metric, **keys)
        lo, hi = r.get("ci_low"), r.get("ci_high")
        text = f"{r['mean']:.{digits}f}"
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
        text += f" (n = {r['n_seeds']})"
        return self._cite(text, config, metric, "ci", [r["mean"], lo, hi, r["n_seeds"]], keys)

    def diff(self, a: str, b: str, metric: str = "valid_bpc", digits: int = 3) -> str:
        """The paired difference a − b over the seeds both ran, with its t interval and n, read from
        runs.csv, e.g. `−0.039 [−0.042, −0.036] (paired, n = 3)`."""
        import pandas as pd

        runs = pd.read_csv(self.dir / "runs.csv")
        runs = runs[runs["metric"] == metric]
        pa, pb = (runs[runs["config"] == c].set_index("seed")["value"] for c in (a, b))
        seeds = sorted(set(pa.index) & set(pb.index))
        m, lo, hi = paired_diff_ci(pa.loc[seeds].to_numpy(), pb.loc[seeds].to_numpy())
        text = f"{m:+.{digits}f}"
        if math.isfinite(lo) and math.isfinite(hi):
            text += f" [{lo:+.{digits}f}, {hi:+.{digits}f}]"
        text += f" (paired, n = {len(seeds)})"
        _LEDGER.setdefault(self.notebook, []).append({
            "file": str((self.dir / "runs.csv").relative_to(paths.REPO_ROOT)), "config": f"{a} - {b}",
            "metric": metric, "keys": {}, "field": "diff", "value": [m, lo, hi, len(seeds)], "text": text})
        return text

    def number(self, value: float, what: str, digits: int = 3) -> str:
        """A number derived from this experiment's files by the notebook (say what it is)."""
        text = f"{value:.{digits}f}"
        _LEDGER.setdefault(self.notebook, []).append({
            "file": str(self.file.relative_to(paths.REPO_ROOT)), "config": what, "metric": "", "keys": {},
            "field": "derived", "value": value, "text": text})
        return text


NUMBER = re.compile(r"[−+-]?\d+\.\d+")


def takeaways(ctx, markdown: str) -> None:
    """Display `markdown` (whose numbers came from a `Quote`) and write the notebook's ledger."""
    from IPython.display import Markdown, display

    _SHOWN.setdefault(ctx.stem, []).append(markdown)
    out = paths.BUILD / "cited" / f"{ctx.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"entries": _LEDGER.get(ctx.stem, []), "markdown": _SHOWN[ctx.stem]}, indent=1))
    display(Markdown(markdown))


def reset(stem: str) -> None:
    """Forget what a notebook cited (its setup cell runs this: a rerun starts a new ledger)."""
    _LEDGER.pop(stem, None)
    _SHOWN.pop(stem, None)
    (paths.BUILD / "cited" / f"{stem}.json").unlink(missing_ok=True)
