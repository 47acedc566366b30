"""Fill the generated blocks of README.md and docs/*.md from the repository's files; never type them by hand.

    python scripts/readme_tables.py            # rewrite the blocks of README.md and docs/*.md (make docs)
    python scripts/readme_tables.py --check    # exit 1 if a file is stale; write nothing (a test runs it)
    python scripts/readme_tables.py --readme F # only the file F

A block is whatever lies between `<!-- name:start -->` and `<!-- name:end -->`; a file may hold any
of the blocks below, and a marker with an unknown name is an error. Links inside a block are written
relative to the file that holds it.

- `index`: one item per `notebooks/NN_name.py`: its title and question (the title cell's blockquote)
  and its finding (`FINDINGS` below: prose, no numbers).
- `models`: the README's one short table: the 06 models' held-out bpc (`results/06_hope_titans`).
- `main_number`: the number the `seed` preset's full run ends on (`results/01_cms`, `default`).
- `headline`, `hope`, `results`: the full results tables (`results/*/summary.json`).
- `gallery`: every committed figure `figures/<stem>/*.png`, grouped by notebook.
- `bench`, `memory_paths`: the committed speed reports (`results/bench/*.json`).
- `reproduce`: every committed results folder, the command that writes it, and its GPU time as its
  files record it (run `meta.json` wall times, dynamic-evaluation JSONs, report `wall_s`).
- `series_time`: the whole series' runtime in the committed and smoke views, from the same timing
  files (summed over the notebooks; kept from the file where they are missing).
- `notebooks`: one row per notebook with its smoke and full runtimes, measured by the notebook
  runner (`build/{smoke,full}/timings.json`; runs that trained, not `--reuse` re-plots). Where no
  timing file has a measurement, the value already in the file is kept, so a runtime measured once
  on the GPU machine survives a regeneration elsewhere. `--check` ignores the runtime columns.

Intervals are read from `summary.json` (`ci_low`, `ci_high`) and labelled by its `ci_method`; this
script computes none.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere, without installing

import pandas as pd  # noqa: E402

from nlcore.report.notebook.continual import UNLEARNED_BPC, unlearned  # noqa: E402
from nlcore.results import format_ci, replace_block, results_table_markdown  # noqa: E402

METRICS = ("valid_bpc", "test_bpc")
STANDARD_KEYS = {"config", "metric", "mean", "std", "ci_low", "ci_high", "n_seeds", "ci_method"}
NOTEBOOK_HEADER = "| notebook | question | smoke (CPU) | full (GPU) |"
MARKER = re.compile(r"^<!-- ([A-Za-z0-9_-]+):start -->$", re.M)  # a whole line: prose may quote one


def files() -> list[Path]:
    """The files whose blocks `make docs` fills: README.md and every docs/*.md."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


class Page:
    """The file a block is written into: `link(path)` turns a repository path into a link from it."""

    def __init__(self, path: Path, text: str, build: Path | None):
        self.text, self.build = text, build
        try:
            self.root = os.path.relpath(REPO, path.resolve().parent).replace(os.sep, "/")
            path.resolve().relative_to(REPO)
        except ValueError:  # a file outside the repository (tests): links as from the root
            self.root = "."
        self.prefix = "" if self.root == "." else self.root + "/"

    def link(self, path: str) -> str:
        return self.prefix + path


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- intervals


def ci_name(method: str | None) -> str:
    """'bootstrap95' -> '95 % percentile-bootstrap interval', 't95' -> '95 % Student-t interval'."""
    if not method:
        return "interval of unstated method"
    m = re.fullmatch(r"([a-z_-]*?)[_-]?(\d+)", method)
    kind, level = (m.group(1), m.group(2)) if m else (method, None)
    kind = {"bootstrap": "percentile-bootstrap", "t": "Student-t", "student": "Student-t",
            "student_t": "Student-t", "studentt": "Student-t"}.get(kind, kind)
    return f"{level} % {kind} interval" if level else f"{kind} interval"


def ci_label(records) -> str:
    """The interval names of these summary records, one per `ci_method` among them."""
    methods = sorted({r.get("ci_method") or "" for r in records})
    return " / ".join(ci_name(m) for m in methods) or ci_name(None)


def compact(r: dict | None, digits: int = 3) -> str:
    """`mean [low, high]` from a summary record; `mean` alone when it has no interval."""
    if not r or r.get("mean") is None:
        return "—"
    lo, hi = r.get("ci_low"), r.get("ci_high")
    if lo is None or hi is None or lo != lo or hi != hi:
        return f"{r['mean']:.{digits}f}"
    return f"{r['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def summary(stem: str) -> list[dict]:
    path = REPO / "results" / stem / "summary.json"
    return _json(path) if path.exists() else []


def budget(run_dir: Path) -> str:
    """`steps x rows x characters` of a run, from the config its meta.json records."""
    metas = sorted(run_dir.glob("seed*/meta.json"))
    if not metas:
        return "—"
    cfg = _json(metas[0])["config"]
    return f"{cfg['steps']} steps x {cfg['data']['batch_size']} rows x {cfg['data']['seq_len']} characters"


# ---------------------------------------------------------------------------- notebooks


def notebook_info(path: Path) -> tuple[str, str]:
    """(title, question) from the title cell: the `# NN · Title` line and its first blockquote
    (all its lines)."""
    title, question, quoting = path.stem, "", None
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line[2:] if line.startswith("# ") else ("" if line.strip() == "#" else None)
        if text is None:
            if title != path.stem:  # the markdown title cell has ended
                break
            continue
        if text.startswith("# ") and title == path.stem:
            title = text[2:].strip()
        elif text.startswith("> ") and quoting is not False:
            question, quoting = (question + " " + text[2:].strip()).strip(), True
        elif quoting:
            quoting = False
    return title, question


def notebook_paths() -> list[Path]:
    """The lessons `NN_name.py` in order, then the appendices `A1_name.py`."""
    found = (REPO / "notebooks").glob("[0-9A-Z][0-9]_*.py")
    return sorted(found, key=lambda p: (not p.stem[0].isdigit(), p.stem))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def measured_runtimes(build: Path) -> dict[str, dict[str, str]]:
    """{stem: {"smoke": "19 s", "full": "42 min"}} from the runner's timing files."""
    out: dict[str, dict[str, str]] = {}
    for mode in ("smoke", "full"):
        path = build / mode / "timings.json"
        if not path.exists():
            continue
        for stem, entry in _json(path).items():
            if entry.get("status") != "ok" or entry.get("reuse"):  # a re-plot is not a runtime
                continue
            out.setdefault(stem, {})[mode] = _duration(float(entry["seconds"]))
    return out


def existing_runtimes(text: str) -> dict[str, dict[str, str]]:
    """The runtime cells of the notebook table currently in the file, by notebook stem."""
    out: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"^\| \[[^\]]*\]\((?:\.\./)*notebooks/([0-9A-Z][0-9]_[a-z0-9_]+)\.(?:py|ipynb)\) \|.*"
                         r"\| ([^|]*) \| ([^|]*) \|$",
                         text, re.M):
        out[m.group(1)] = {"smoke": m.group(2).strip(), "full": m.group(3).strip()}
    return out


def notebooks_block(page: Page) -> str:
    measured = measured_runtimes(page.build) if page.build is not None else {}
    kept = existing_runtimes(page.text)
    rows = [NOTEBOOK_HEADER, "|---|---|---:|---:|"]
    for path in notebook_paths():
        title, question = notebook_info(path)
        times = {m: measured.get(path.stem, {}).get(m) or kept.get(path.stem, {}).get(m) or "—"
                 for m in ("smoke", "full")}
        q = question.replace("|", "\\|")
        rows.append(f"| [{title}]({page.link('notebooks/' + path.stem + '.ipynb')}) | {q} | {times['smoke']} "
                    f"| {times['full']} |")
    if len(rows) == 2:
        return "_No notebooks yet._"
    note = ("Runtimes are measured by `python -m nlcore notebooks` (smoke: 2 CPU cores; "
            "full: one GPU, training included).")
    return "\n".join(rows) + "\n\n" + note


SERIES_TIME = re.compile(r"runs in (?P<committed>[^*]+?) in the committed view .* and "
                         r"(?P<smoke>[^*]+?) in the smoke view", re.S)


def series_time_block(page: Page) -> str:
    """How long the whole series takes in the committed and smoke views, summed from the runner's
    last timings of every notebook (`build/{committed,smoke}/timings.json`); without them, the
    values already in the file."""
    kept = SERIES_TIME.search(page.text)
    times = {v: (kept.group(v) if kept else "—") for v in ("committed", "smoke")}
    stems = {p.stem for p in notebook_paths()}
    for view in times if page.build is not None else ():
        path = page.build / view / "timings.json"
        entries = _json(path) if path.exists() else {}
        if stems and stems <= set(entries) and all(entries[s].get("status") == "ok" for s in stems):
            times[view] = _duration(sum(float(entries[s]["seconds"]) for s in stems))
    return (f"On a 2-core CPU the whole series runs in {times['committed']} in the committed view "
            f"(`make figures`) and {times['smoke']} in the smoke view (`make smoke`).")


# What each notebook found, in words (the numbers are in its takeaways and in docs/results.md).
FINDINGS = {
    "01_cms": "At this budget slow levels cost held-out bits: CMS off beats every CMS policy, separated by its "
              "paired interval; the prototype's lr/C is the worst.",
    "02_surprise": "On WikiText-2 most settings' paired intervals include zero; the objective acts as an "
                   "activation penalty, its target a tiny fraction of the output.",
    "03_persistent_state": "Carried state helps, mostly in a window's first characters. With the prototype's "
                           "settings (embedding and head untrained) the model is worse than a unigram model on "
                           "held-out text: its reported perplexity was a training loss.",
    "00_orientation": "Start here.",
    "04_delta_rule": "As a memory write the delta rule is the stable choice; as the optimizer of the FFN "
                     "levels it is worse than a plain gradient step.",
    "05_ablations": "The prototype's settings and removing LayerNorm + residual dwarf every other lever; "
                    "the best rows are not CMS rows.",
    "A1_performance": "The engineering behind the lessons, each model against the Transformer's step.",
    "06_hope_titans": "HOPE has the lowest held-out bpc, also against baselines given test-time learning; "
                      "its gain comes from the in-forward writes, and Titans' MLP memory lags even where it trains stably.",
    "07_scaling": "HOPE leads at 8.2 M and 33 M characters and on Tiny Shakespeare, and only its loss keeps "
                  "falling past the training window; at equal GPU time Titans-linear beats its smallest budget. "
                  "Not run yet: 131 M, 4x width.",
    "08_continual": "HOPE forgets WikiText-2 least and ends lowest on both corpora; in the nested LSTM, CMS's "
                    "effect on forgetting is not separated from zero.",
}


def index_block(page: Page) -> str:
    """One item per notebook: its title (a link), then its finding (its question opens the notebook)."""
    items = []
    for path in notebook_paths():
        title, _ = notebook_info(path)
        items.append(f"- **[{title}]({page.link('notebooks/' + path.stem + '.ipynb')})**. "
                     f"{FINDINGS.get(path.stem, '')}".rstrip())
    return "\n".join(items) if items else "_No notebooks yet._"


# ---------------------------------------------------------------------------- gallery


def figure_captions(stem: str) -> dict[str, str]:
    """{figure file name: caption} for the figures the committed notebook displays: the caption is
    the heading of the section that shows it (the figure's own title states its finding)."""
    import base64

    nb_path, folder = REPO / "notebooks" / f"{stem}.ipynb", REPO / "figures" / stem
    if not nb_path.exists() or not folder.is_dir():
        return {}
    by_bytes = {p.read_bytes(): p.name for p in sorted(folder.glob("*.png"))}
    out, heading = {}, stem
    for cell in _json(nb_path)["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "markdown":
            heads = [ln.lstrip("#").strip() for ln in src.splitlines() if ln.startswith("## ")]
            heading = heads[-1] if heads else heading
            continue
        for o in cell.get("outputs", []):
            png = o.get("data", {}).get("image/png")
            name = by_bytes.get(base64.b64decode(png)) if isinstance(png, str) else None
            if name is not None and "application/vnd.jupyter.widget-view+json" not in o.get("data", {}):
                out.setdefault(name, heading)
    return out


def gallery_block(page: Page) -> str:
    """Every committed figure at full width, captioned by the notebook section that shows it."""
    parts = []
    for path in notebook_paths():
        folder = REPO / "figures" / path.stem
        pngs = sorted(folder.glob("*.png")) if folder.is_dir() else []
        if not pngs:
            continue
        title, _ = notebook_info(path)
        captions = figure_captions(path.stem)
        shown = sorted(pngs, key=lambda p: (p.name not in captions, list(captions).index(p.name)
                                            if p.name in captions else 0, p.name))
        figs = [f"![{captions.get(p.name, p.stem)}]({page.link(f'figures/{path.stem}/{p.name}')})\n"
                f"*{captions.get(p.name, p.stem)}* (`{p.name}`)" for p in shown]
        parts.append(f"### [{title}]({page.link('notebooks/' + path.stem + '.ipynb')})\n\n" + "\n\n".join(figs))
    return "\n\n".join(parts) if parts else "_No figures committed yet: run `make figures`._"


# ---------------------------------------------------------------------------- results


def _labelled(records: list[dict]) -> list[dict]:
    """Fold extra id columns (e.g. d, eta) into the row label, so rows stay distinct."""
    out = []
    for r in records:
        extra = sorted(k for k in r if k not in STANDARD_KEYS)
        label = r["config"] if not extra else f"{r['config']} ({', '.join(f'{k}={r[k]}' for k in extra)})"
        out.append({**r, "config": label})
    return out


def _order(stem: str, records: list[dict]) -> list[dict]:
    try:
        from nlcore.experiments import EXPERIMENTS

        labels = [label for label, _ in EXPERIMENTS[stem].configs]
    except (ImportError, KeyError):
        return records
    rank = {label: i for i, label in enumerate(labels)}
    return sorted(records, key=lambda r: rank.get(r["config"], len(rank)))


# experiments whose records hold no valid_bpc / test_bpc: the metrics their results table shows
RESULTS_METRICS = {"08_continual": ("forgetting_bpc", "learning_bpc", "a_valid_bpc_after_a", "b_valid_bpc_end")}


def results_block(page: Page) -> str:
    parts = []
    for path in sorted((REPO / "results").glob("*/summary.json")):
        stem = path.parent.name
        records = _labelled(_order(stem, _json(path)))
        metrics = [m for m in RESULTS_METRICS.get(stem, METRICS) if any(r["metric"] == m for r in records)]
        if not metrics:
            metrics = sorted({r["metric"] for r in records})
        meta_path = path.parent / "meta.json"
        rev = ""
        if meta_path.exists():
            git = _json(meta_path).get("git") or {}
            if git.get("revision"):
                rev = f", code at `{git['revision'][:7]}`" + (" (dirty)" if git.get("dirty") else "")
        shown = [r for r in records if r["metric"] in metrics]
        parts.append(f"<details><summary><b>{stem}</b> (<code>results/{stem}/summary.json</code>{rev})</summary>\n\n"
                     + results_table_markdown(records, metrics=metrics).rstrip("\n")
                     + f"\n\nmean ± half-width [low, high] (n seeds): {ci_label(shown)} across seeds."
                     + "\n\n</details>")
    return "\n\n".join(parts) if parts else "_No FULL results committed yet._"


# ---------------------------------------------------------------------------- headline

# (experiment, configuration, what it is): the rows of the headline table, at one budget
# (512-character windows where marked).
HEADLINE = (
    ("03_persistent_state", "prototype_persistent",
     "the prototype as it ran: embedding and head untrained, Adam with lr/C (compat switch)"),
    ("03_persistent_state", "reset_every_batch", "every part trained, state reset every window"),
    ("03_persistent_state", "persistent", "... with state carried across windows (zero-init FFN outputs)"),
    ("01_cms", "default", "`seed` preset default: as above, random-init FFN outputs"),
    ("01_cms", "all_adamw", "AdamW on every level instead of clipped SGD on the sum (Eq. 31)"),
    ("01_cms", "adam_lr_div_chunk", "AdamW with the prototype's lr/C, everything trained"),
    ("01_cms", "chunks_1_4_16", "CMS chunks 1/4/16 instead of 1/16/256"),
    ("01_cms", "cms_off", "CMS off: every level steps every window"),
    ("01_cms", "no_norm_residual", "without LayerNorm + residual around the FFN levels"),
    ("03_persistent_state", "persistent_doc_resets", "state zeroed at every article start"),
    ("03_persistent_state", "persistent_hierarchical", "slow levels carry summaries too"),
    ("03_persistent_state", "persistent_512", "512-character windows (twice the characters)"),
    ("02_surprise", "wikitext2_w0.1_0.05", "surprise objective, weights 0.1 / 0.05"),
    ("04_delta_rule", "delta", "delta rule (Eq. 29, normalised) on the FFN levels"),
    ("04_delta_rule", "delta_batch_mean", "the prototype's batch-mean delta rule"),
)


def headline_block(page: Page) -> str:
    rows = ["| configuration | experiment | valid bpc | test bpc | training \"PPL\" |", "|---|---|---|---|---|"]
    shown = []
    for stem, config, what in HEADLINE:
        recs = {r["metric"]: r for r in summary(stem) if r["config"] == config}
        if "valid_bpc" not in recs:
            continue
        shown += [recs[m] for m in METRICS if m in recs]
        cells = [format_ci(recs[m], 3) if m in recs else "—" for m in METRICS]
        ppl = f"{recs['train_ppl_last100']['mean']:.1f}" if "train_ppl_last100" in recs else "—"
        rows.append(f"| {what} | [{stem}]({page.link(f'results/{stem}/')}) `{config}` | {cells[0]} | {cells[1]} | {ppl} |")
    if len(rows) == 2:
        return "_No FULL results committed yet._"
    note = (f"Held-out bits per character over the whole valid and test splits of WikiText-2, "
            f"{budget(REPO / 'results' / '01_cms' / 'runs' / 'default')} per run: mean ± half-width of the "
            f"{ci_label(shown)} across seeds [low, high] (n). Training \"PPL\" is exp of the mean training loss "
            "over the last 100 steps: the number the prototype reported.")
    return "\n".join(rows) + "\n\n" + note


def main_number_block(page: Page) -> str:
    recs = {r["metric"]: r for r in summary("01_cms") if r["config"] == "default"}
    r = recs.get("valid_bpc")
    if r is None:
        return "_No FULL result committed yet._"
    return (f"On one GPU, `python -m nlcore train --preset seed` "
            f"({budget(REPO / 'results' / '01_cms' / 'runs' / 'default')}) ends at **{r['mean']:.3f} bits per "
            f"character** on WikiText-2's valid split ([{r['ci_low']:.3f}, {r['ci_high']:.3f}]: "
            f"{ci_name(r.get('ci_method'))} over {r['n_seeds']} seeds; "
            f"[`results/01_cms/`]({page.link('results/01_cms/')}), configuration `default`).")


# ---------------------------------------------------------------------------- bench


def bench_block(page: Page) -> str:
    parts = []
    for path in sorted((REPO / "results" / "bench").glob("*.json")):
        rep = _json(path)
        if rep.get("schema") != "nlcore.bench.step/1":
            continue
        rev = (rep.get("git") or {}).get("revision") or "unknown"
        rows = ["| configuration | ms / step (median) | IQR | characters / s | vs persistent | x LSTM floor |",
                "|---|---:|---:|---:|---:|---:|"]
        for name, c in rep["configs"].items():
            ov = c.get("overhead_vs_persistent")
            sp = c.get("overhead_vs_persistent_spread") or {}
            ovs = "—" if ov is None else (f"{100 * ov:+.1f} % [{100 * sp.get('q25', ov):+.1f}, "
                                          f"{100 * sp.get('q75', ov):+.1f}]")
            fl = f"{c['ratio_to_floor']:.2f}" if c.get("ratio_to_floor") else "—"
            rows.append(f"| `{name}` | {c['step_ms_median']:.2f} | {c['step_ms_iqr']:.2f} | "
                        f"{c['chars_per_s'] / 1e6:.2f} M | {ovs} | {fl} |")
        parts.append(f"**`results/bench/{path.name}`**: {rep['device_name']}, torch {rep['torch']}, code at "
                     f"`{rev[:7]}`, `{rep['command']}`\n\n" + "\n".join(rows))
    if not parts:
        return "_No benchmark committed yet._"
    return "\n\n".join(parts) + ("\n\nOverheads are paired per timing window (interleaved order) and given "
                                  "with their interquartile range across windows. x LSTM floor: the step "
                                  "time over the model's own LSTM forward + backward alone at the same shape "
                                  "(`nlcore/bench/floor.py`; reports before it existed have no floor).")


def memory_paths_block(page: Page) -> str:
    path = REPO / "results" / "bench" / "memory_paths.json"
    if not path.exists():
        return "_No memory-path report committed yet._"
    rep = _json(path)
    rows = ["| memory | token-by-token (ms) | chunk-parallel (ms) | speed-up | token, CUDA graph (ms) | "
            "chunk, CUDA graph (ms) | speed-up, CUDA graph |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rep["rows"]:
        g = [f"{r[k] * 1e3:.0f}" if r.get(k) else "—" for k in ("token_graph_s", "chunk_graph_s")]
        sg = f"{r['speedup_graph']:.1f}x" if r.get("speedup_graph") else "—"
        rows.append(f"| `{r['memory']}` | {r['token_s'] * 1e3:.0f} | {r['chunk_s'] * 1e3:.0f} | "
                    f"{r['speedup']:.1f}x | {g[0]} | {g[1]} | {sg} |")
    r0 = rep["rows"][0]
    rev = ((rep.get("git") or {}).get("revision") or "unknown")[:7]
    env = rep.get("environment") or {}
    return ("\n".join(rows) + f"\n\nForward + backward of one {r0['window']}-token window, batch {r0['batch']}, "
            f"{r0['heads']} heads of {r0['head_dim']}, chunk {r0['chunk']}; median over repeats "
            f"(`results/bench/memory_paths.json`: {env.get('gpu_name', 'device not recorded')}, code at `{rev}`).")


# ---------------------------------------------------------------------------- HOPE / Titans (06)

HOPE_ROWS = (  # (configuration in results/06_hope_titans, bench configuration, what it is)
    ("nested_lstm", "nested_lstm", "nested LSTM (the seed's CMS policy)"),
    ("transformer", "transformer", "causal Transformer, RoPE"),
    ("titans_linear", "titans_linear", "Titans, linear memory (gated delta rule + momentum)"),
    ("titans", "titans", "Titans, 2-layer MLP memory (Titans' chunk-start gradients)"),
    ("titans_alpha0.999", None, "... MLP memory retained longer (alpha0 0.999)"),
    ("titans_norm", None, "... MLP memory, normalised writes retained toward its initial weights"),
    ("titans_cap", "titans_cap", "... the same, its distance from the initial weights capped at each chunk's end"),
    ("hope", "hope", "HOPE: self-modifying memory + CMS chain written in the forward pass"),
    ("hope_no_momentum", None, "... without momentum in the memories"),
    ("hope_layer_teach", "hope_layer_teach", "... the writes taught by each layer's own loss"),
    ("hope_static", None, "HOPE without in-forward writes and without CMS"),
    ("hope_outer", "hope_outer", "HOPE, chain MLPs updated by the outer CMS engine"),
    ("hope_outer_adamw", None, "... the same with AdamW for the chain levels"),
    ("hope_outer_no_momentum", None, "... the outer reading without momentum in the memories"),
)
README_MODELS = ("nested_lstm", "transformer", "titans_linear", "titans", "hope")  # the README's short table
HOPE_ROOT = REPO / "results" / "06_hope_titans"


def _params(config: str) -> float | None:
    done = [d for d in map(_json, sorted((HOPE_ROOT / "runs" / config).glob("seed*/summary.json"))) if "params" in d]
    return done[0]["params"] if done else None


def hope_block(page: Page) -> str:
    records = summary("06_hope_titans")
    if not records:
        return "_No FULL results committed yet._"
    bench_path = REPO / "results" / "bench" / "models_06.json"
    bench = _json(bench_path)["configs"] if bench_path.exists() else {}
    device = _json(bench_path).get("device_name", "") if bench_path.exists() else ""
    teach_path = REPO / "results" / "bench" / "models_06_teach.json"  # rows models_06.json does not hold
    teach = {k: v for k, v in _json(teach_path)["configs"].items() if k not in bench} if teach_path.exists() else {}
    bench = {**bench, **teach}
    rows = ["| model | configuration | params | valid bpc | test bpc | chars / s (graphed) | step time vs Transformer |",
            "|---|---|---:|---|---|---:|---:|"]
    shown = []
    for config, bname, what in HOPE_ROWS:
        run_dir = HOPE_ROOT / "runs" / config
        if not run_dir.exists():
            continue
        recs = {r["metric"]: r for r in records if r["config"] == config}
        shown += [recs[m] for m in METRICS if m in recs]
        cells = [format_ci(recs[m], 3) if m in recs else "diverged (every seed)" for m in METRICS]
        lost = [p.name for p in sorted(run_dir.glob("seed*")) if p.is_dir() and (
            not (p / "summary.json").exists() or _json(p / "summary.json").get("status") == "diverged")]
        if recs and lost:  # say which seeds the mean leaves out, and why
            from nlcore.report.figures.hope import run_status

            why = "; ".join(f"{p} {run_status(run_dir / p)}" for p in lost)
            cells = [c[:-1] + f"; {why})" if c.endswith(")") else c for c in cells]
        b = bench.get(bname) if bname else None
        speed = f"{b['chars_per_s'] / 1e6:.2f} M" if b else "—"
        ratio = f"{b['ratio_to_baseline']:.2f}x" if b and b.get("ratio_to_baseline") else "—"
        params = _params(config)
        ptxt = f"{params / 1e6:.2f} M" if params else "—"
        rows.append(f"| {what} | `{config}` | {ptxt} | {cells[0]} | {cells[1]} | {speed} | {ratio} |")
    note = (f"\n\nWikiText-2 characters, {budget(HOPE_ROOT / 'runs' / 'hope')} for every model, held-out bpc "
            f"on the whole valid and test splits with state carried: mean ± half-width of the {ci_label(shown)} "
            f"across seeds [low, high] (n). Speed: `results/bench/models_06.json` ({device})"
            + (f"; {', '.join(f'`{k}`' for k in teach)} from `results/bench/models_06_teach.json` "
               f"({_json(teach_path).get('device_name', '')}), against the Transformer of the same call."
               if teach else "."))
    return "\n".join(rows) + note


def models_block(page: Page) -> str:
    records = summary("06_hope_titans")
    what = {c: w for c, _, w in HOPE_ROWS}
    rows = []
    for config in README_MODELS:
        recs = {r["metric"]: r for r in records if r["config"] == config}
        if "test_bpc" in recs:
            rows.append((recs["test_bpc"]["mean"], config, recs))
    if not rows:
        return "_No FULL results committed yet._"
    out = ["| model | params | valid bpc | test bpc | seeds |", "|---|---:|---|---|---:|"]
    shown = []
    for _, config, recs in sorted(rows):
        shown += [recs[m] for m in METRICS if m in recs]
        params = _params(config)
        out.append(f"| {what[config]} | {params / 1e6:.2f} M | {compact(recs.get('valid_bpc'))} | "
                   f"{compact(recs.get('test_bpc'))} | {recs['test_bpc']['n_seeds']} |")
    return ("\n".join(out) + f"\n\nHeld-out bits per character on WikiText-2 (lower is better), "
            f"{budget(HOPE_ROOT / 'runs' / 'hope')} for every model: mean [{ci_label(shown)}] across seeds, "
            f"from [`results/06_hope_titans/summary.json`]({page.link('results/06_hope_titans/summary.json')}). "
            f"Every configuration and its ablations: [docs/hope_titans.md]({page.link('docs/hope_titans.md')}).")


SAMPLES = REPO / "results" / "06_hope_titans" / "samples" / "samples.json"
SAMPLE_CHARS = 120  # characters of each sample shown in the README


def _cut(text: str, n: int) -> str:
    """The first n characters of text, ended at the last space before n (whole words)."""
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " …"


def samples_block(page: Page) -> str:
    """Text from the best and the worst of 06's models (by their seed-0 run's test bpc), first prompt."""
    if not SAMPLES.exists():
        return "_No samples committed yet._"
    data = _json(SAMPLES)
    prompt = data["settings"]["prompts"][0]
    rows = [r for r in data["samples"] if r["prompt"] == prompt and r["test_bpc"] is not None]
    what = {c: w for c, _, w in HOPE_ROWS}
    out = []
    for r in (min(rows, key=lambda r: r["test_bpc"]), max(rows, key=lambda r: r["test_bpc"])):
        config = r["config"]
        text = _cut(r["prompt"] + r["text"], SAMPLE_CHARS).replace("`", "'").strip("\n")
        out.append(f"**{what.get(config, config)}** (`{config}`, {r['test_bpc']:.3f} test bpc):\n\n"
                   f"```text\n{text}\n```")
    s = data["settings"]
    return ("\n\n".join(out) + f"\n\nBest and worst of {len({r['run'] for r in rows})} sampled models (sampling seed "
            f"{', '.join(map(str, s['seeds']))}, temperature {s['temperature']}); all in "
            f"[`results/06_hope_titans/samples/`]({page.link('results/06_hope_titans/samples/NOTE.md')}).")


def _unlearned_note() -> str:
    """' (`c`: phase A left k of n seeds above 3 bpc on A, not comparable)' for each configuration
    whose phase A ended no better than a model of character frequencies on some seed (`unlearned`)."""
    path = REPO / "results" / "08_continual" / "runs.csv"
    if not path.exists():
        return ""
    runs = pd.read_csv(path)
    seeds = runs[runs["metric"] == "a_valid_bpc_after_a"].groupby("config")["seed"].nunique()
    notes = [f"`{c}`: phase A left {len(bad)} of {seeds[c]} seeds above {UNLEARNED_BPC:g} bpc on A, not comparable"
             for c, bad in unlearned(runs).items()]
    return f" ({'; '.join(notes)})" if notes else ""


def continual_block(page: Page) -> str:
    """Forgetting and learning per model of 08_continual (valid bpc, mean [interval] (n))."""
    records = summary("08_continual")
    if not records:
        return "_No FULL results committed yet._"
    recs = {(r["config"], r["metric"]): r for r in records}
    configs = sorted({r["config"] for r in records}, key=lambda c: recs[(c, "forgetting_bpc")]["mean"])
    rows = ["| model | forgetting A (rise) | learning B (fall) | A at the end | B at the end | n |",
            "|---|---|---|---|---|---:|"]
    shown = []
    for c in configs:
        cells = [recs.get((c, m)) for m in ("forgetting_bpc", "learning_bpc", "a_valid_bpc_end",
                                             "b_valid_bpc_end")]
        shown += [x for x in cells if x]
        rows.append(f"| `{c}` | " + " | ".join(compact(x) for x in cells) + f" | {cells[0]['n_seeds']} |")
    return ("\n".join(rows) + "\n\nValidation bpc on WikiText-2 (A) and Tiny Shakespeare (B) of models trained on A, "
            f"then on B: forgetting is A's rise, learning B's fall{_unlearned_note()}; mean [{ci_label(shown)}] across "
            f"seeds, from [`results/08_continual/summary.json`]({page.link('results/08_continual/summary.json')}).")


# ---------------------------------------------------------------------------- reproduce


def _end(stamp: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(stamp) if stamp else None


def _intervals(pairs: list[tuple[dt.datetime | None, float]]) -> tuple[float, float | None, int]:
    """(summed seconds, seconds during which at least one of them ran, count) of (end, seconds) pairs."""
    total = sum(w for _, w in pairs)
    spans = sorted((end - dt.timedelta(seconds=w), end) for end, w in pairs if end is not None)
    if len(spans) < len(pairs):
        return total, None, len(pairs)
    busy, cur = 0.0, None
    for a, b in spans:
        if cur is None or a > cur[1]:
            busy += (cur[1] - cur[0]).total_seconds() if cur else 0.0
            cur = [a, b]
        else:
            cur[1] = max(cur[1], b)
    busy += (cur[1] - cur[0]).total_seconds() if cur else 0.0
    return total, busy, len(pairs)


def run_times(folder: str, pattern: str = "runs/**/meta.json") -> tuple[list, set[str]]:
    """(end, wall seconds) of every run meta.json under results/<folder> matching `pattern`, and devices."""
    pairs, devices = [], set()
    for path in sorted((REPO / "results" / folder).glob(pattern)):
        meta = _json(path)
        if meta.get("wall_time_s") is None:
            continue
        pairs.append((_end(meta.get("utc_time") or meta.get("utc_end")), float(meta["wall_time_s"])))
        env = meta.get("environment") or {}
        devices.add(env.get("gpu_name") or str(meta.get("device")))
    return pairs, devices


def every_run(folder: str) -> tuple[list, set[str]]:
    return run_times(folder, "**/meta.json")


def phased_runs(folder: str) -> tuple[list, set[str]]:
    """A two-phase probe's runs (08): each seed's own meta.json, which spans both phases."""
    return run_times(folder, "runs/*/seed*/meta.json")


def folder_device(folder: str) -> set[str]:
    """The device a folder's own meta.json names, when it names one more precisely than "cuda"."""
    path = REPO / "results" / folder / "meta.json"
    if not path.exists():
        return set()
    meta = _json(path)
    name = (meta.get("environment") or {}).get("gpu_name") or meta.get("device")
    return {name} if name and name not in ("cuda", "cpu") else set()


def dynamic_eval_times(folder: str) -> tuple[list, set[str]]:
    pairs, devices = [], set()
    for path in sorted((REPO / "results" / folder).glob("grid_*/*/seed*.json")):
        rec = _json(path)
        env = rec.get("environment") or {}
        pairs.append((_end(env.get("utc_time")), float(rec["total_s"])))
        devices.add(env.get("gpu_name") or "not recorded")
    return pairs, devices


def report_time(file: str) -> tuple[list, set[str]]:
    rep = _json(REPO / "results" / file)
    env = rep.get("environment") or {}
    if rep.get("wall_s") is None:
        return [], {env.get("gpu_name") or rep.get("device_name") or "not recorded"}
    return [(None, float(rep["wall_s"]))], {env.get("gpu_name") or rep.get("device_name") or "not recorded"}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


# (results path, how to write it, where its time is recorded): every committed results folder.
# `how` is Markdown; "S:" names a script under scripts/reproduce/.
REPRODUCE: tuple[tuple[str, str, Callable | None], ...] = (
    ("01_cms", "S:run_experiments.sh `REV 0 16 01_cms`", run_times),
    ("02_surprise", "S:run_experiments.sh `REV 0 16 02_surprise`", run_times),
    ("03_persistent_state", "S:run_experiments.sh `REV 0 16 03_persistent_state`", run_times),
    ("04_delta_rule", "S:run_experiments.sh `REV 0 16 04_delta_rule`", run_times),
    ("04_delta_rule/recall", "`python -m nlcore recall`, arguments in its `meta.json`", None),
    ("05_ablations", "`python -m nlcore notebooks --view full --only 05` (reads 01–04; trains nothing)", None),
    ("prototype_match", "S:run_experiments.sh `REV 0 6 prototype_match`", run_times),
    ("06_hope_titans", "S:hope_titans.sh `REV 0 OUT 06_hope_titans`; the retraining commands are in its `NOTE.md`",
     run_times),
    ("06_hope_titans/before_564ff0d", "the runs the retraining replaced (`06_hope_titans/NOTE.md`)", run_times),
    ("06_hope_titans/before_d1b0aa2", "the `hope` runs the `d1b0aa2` retraining replaced (`06_hope_titans/NOTE.md`)",
     run_times),
    ("06_hope_titans/rerun_hope_0b4f73c", "commands in its `NOTE.md`", every_run),
    ("06_hope_titans/rerun_hope_outer_19108e1", "command in `06_hope_titans/NOTE.md`", every_run),
    ("06_hope_titans/rerun_hope_outer_ef56c29", "commands in its `NOTE.md`", every_run),
    ("06_hope_titans_extra", "the `python -m nlcore grid` command in its `NOTE.md`", run_times),
    ("06_dynamic_eval", "S:dynamic_eval_06.py `OUT [LABEL ...]` (lr grids per folder in its `NOTE.md`)",
     dynamic_eval_times),
    ("06_mqar", "`python -m nlcore mqar`, commands in its `NOTE.md`", every_run),
    ("07_lr_sweep", "S:lr_sweep_07.sh `REV OUT [SECONDS] [LABEL...]`, split across calls (the calls in its "
     "`NOTE.md`)", run_times),
    ("07_scaling", "S:scaling_07.sh `REV OUT SECONDS PART[=MODEL,...]...`, split across calls (the calls in "
     "its `NOTE.md`)", run_times),
    ("07_shakespeare", "S:scaling_07.sh `REV OUT SECONDS shakespeare` (the call in its `NOTE.md`)", run_times),
    ("08_continual", "S:continual_08.sh `REV OUT [SECONDS]`, split across calls (`docs/continual.md`; "
     "the calls in its `NOTE.md`)", phased_runs),
    ("08_continual_extra", "CPU investigations, commands in each `NOTE.md`", None),
    ("seed_tuning/round1", "the `python -m nlcore grid` command in its `meta.json`", run_times),
    ("seed_tuning/round2", "S:tune_seed.sh `OUT`", run_times),
    ("seed_tuning/round3", "S:tune_seed_r3.sh `OUT`", run_times),
    ("bench/seed.json", "S:bench_final.sh `REV OUT seed`", report_time),
    ("bench/scaling.json", "S:bench_final.sh `REV OUT scaling`", report_time),
    ("bench/models_06.json", "S:hope_titans.sh `REV 0 OUT bench`", report_time),
    ("bench/memory_paths.json", "S:hope_titans.sh `REV 0 OUT speed`", report_time),
    ("bench/models_07.json", "S:scaling_07.sh `REV OUT 1 bench`", report_time),
    ("bench/models_06_each_8340818", "S:bench_06_each.sh `REV OUT`", None),
    ("bench/check_fastpath.json", "S:check_fastpath.py `OUT.json`", report_time),
    ("bench/models_06_b64.json", "`python -m nlcore bench`, the command in the file", report_time),
    ("bench/chunk_size_c3eaa60.json", "`python -m nlcore bench`, the command in the file", report_time),
    ("bench/titans_linear_710470d.json", "`python -m nlcore bench`, the command in the file", report_time),
    ("bench/history", "earlier versions of the reports above, named by their code revision", None),
    ("bench/profiles", "diagnostics (kernel tables, probes): `scripts/profile/` and its `NOTE.md`", None),
    ("distributed", "S:ddp_check.sh `OUT.json` (two GPUs)", None),
    ("data/wikitext2", "`python -m nlcore data wikitext2 --out results/data/wikitext2` (CPU)", None),
)


def reproduce_block(page: Page) -> str:
    rows = ["| results | written by | device | runs | GPU time (elapsed) | run time (summed) |",
            "|---|---|---|---:|---:|---:|"]
    for folder, how, timer in REPRODUCE:
        if not (REPO / "results" / folder).exists():
            continue
        if how.startswith("S:"):
            script, _, rest = how[2:].partition(" ")
            how = f"[`scripts/reproduce/{script}`]({page.link('scripts/reproduce/' + script)}) {rest}".rstrip()
        pairs, devices = timer(folder) if timer else ([], folder_device(folder))
        link = f"[`{folder}`]({page.link('results/' + folder)})"
        if not pairs:
            dev = ", ".join(sorted(d for d in devices if d)) or "—"
            rows.append(f"| {link} | {how} | {dev} | — | not recorded | not recorded |")
            continue
        total, busy, n = _intervals(pairs)
        dev = ", ".join(sorted(devices))
        rows.append(f"| {link} | {how} | {dev} | {n} | {_minutes(busy) if busy is not None else _minutes(total)} | "
                    f"{_minutes(total)} |")
    note = ("GPU time (elapsed): the time during which at least one of the folder's runs was running (each run's "
            "end time and wall time from its `meta.json`; a report's own `wall_s`). Run time (summed): the "
            "runs' wall times added up; runs of one call share the GPU (`--jobs`), so it exceeds the elapsed "
            "time. Neither counts set-up, data download or copying results back. \"not recorded\": no "
            "committed file records it.")
    return "\n".join(rows) + "\n\n" + note


# ---------------------------------------------------------------------------- main

BLOCKS: dict[str, Callable[[Page], str]] = {
    "index": index_block, "models": models_block, "main_number": main_number_block,
    "headline": headline_block, "hope": hope_block, "results": results_block, "gallery": gallery_block,
    "bench": bench_block, "memory_paths": memory_paths_block, "reproduce": reproduce_block,
    "notebooks": notebooks_block, "series_time": series_time_block, "samples": samples_block,
    "continual": continual_block,
}


def render(text: str, build: Path | None, path: Path = REPO / "README.md") -> str:
    """`text` with every block it holds regenerated."""
    for name in MARKER.findall(text):
        if name not in BLOCKS:
            raise ValueError(f"{path.name}: unknown generated block {name!r} (known: {', '.join(BLOCKS)})")
        text = replace_block(text, name, BLOCKS[name](Page(path, text, build)))
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a file is stale; write nothing")
    p.add_argument("--readme", "--file", dest="file", default=None,
                   help="one file to fill (default: README.md and docs/*.md)")
    p.add_argument("--build", default=str(REPO / "build"), help="where the runner's timings.json files are")
    args = p.parse_args(argv)
    paths = [Path(args.file)] if args.file else files()
    stale = []
    for path in paths:
        current = path.read_text(encoding="utf-8")
        if args.check:  # runtimes depend on the machine: compare with the file's own values
            fresh = render(current, build=None, path=path)
            if fresh != current:
                import difflib

                diff = difflib.unified_diff(current.splitlines(), fresh.splitlines(), path.name, "generated",
                                            lineterm="", n=1)
                print("\n".join(list(diff)[:80]))
                stale.append(path)
            continue
        fresh = render(current, build=Path(args.build), path=path)
        if fresh != current:
            path.write_text(fresh, encoding="utf-8")
            print(f"updated {path}")
        else:
            print(f"{path.name} already up to date")
    if stale:
        names = ", ".join(str(p) for p in stale)
        print(f"\nstale: {names}; run `make docs` (python scripts/readme_tables.py)", file=sys.stderr)
        return 1
    if args.check:
        print("generated blocks are up to date: " + ", ".join(p.name for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
