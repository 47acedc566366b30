"""Regenerate the README's generated blocks from the repository's files; never type them by hand.

    python scripts/readme_tables.py            # rewrite the blocks in README.md
    python scripts/readme_tables.py --check    # exit 1 if README.md is stale (CI)

Blocks (between `<!-- name:start -->` and `<!-- name:end -->`):

- `notebooks`: one row per `notebooks/NN_name.py`: its title, its question (the title cell's
  blockquote), and the smoke and full runtimes measured by the notebook runner
  (`build/{smoke,full}/timings.json`; runs that trained, not `--reuse` re-plots). Where no timing file has a measurement, the value already in the README is kept, so
  a runtime measured once on the GPU box survives a regeneration elsewhere. `--check` ignores the
  runtime columns (they depend on the machine).
- `gallery`: every committed FULL figure `figures/<stem>/*.png`, grouped by notebook.
- `results`: one table per `results/<stem>/summary.json` (`nlcore.results.results_table_markdown`):
  mean ± half-width [low, high] (n seeds) of validation and test bits per character.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere, without installing

from nlcore.results import replace_block, results_table_markdown  # noqa: E402

METRICS = ("valid_bpc", "test_bpc")
STANDARD_KEYS = {"config", "metric", "mean", "std", "ci_low", "ci_high", "n_seeds", "ci_method"}
NOTEBOOK_HEADER = "| notebook | question | smoke (CPU) | full (GPU) |"


# ---------------------------------------------------------------------------- notebooks


def notebook_info(path: Path) -> tuple[str, str]:
    """(title, question) from the title cell: the `# NN · Title` line and its first blockquote."""
    title, question = path.stem, ""
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line[2:] if line.startswith("# ") else ("" if line.strip() == "#" else None)
        if text is None:
            if title != path.stem:  # the markdown title cell has ended
                break
            continue
        if text.startswith("# ") and title == path.stem:
            title = text[2:].strip()
        elif text.startswith("> ") and not question:
            question = text[2:].strip()
    return title, question


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
        for stem, entry in json.loads(path.read_text(encoding="utf-8")).items():
            if entry.get("status") != "ok" or entry.get("reuse"):  # a re-plot is not a runtime
                continue
            out.setdefault(stem, {})[mode] = _duration(float(entry["seconds"]))
    return out


def existing_runtimes(readme: str) -> dict[str, dict[str, str]]:
    """The runtime cells of the notebook table currently in the README, by notebook stem."""
    out: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"^\| \[[^\]]*\]\(notebooks/([0-9]{2}_[a-z0-9_]+)\.py\) \|.*\| ([^|]*) \| ([^|]*) \|$",
                         readme, re.M):
        out[m.group(1)] = {"smoke": m.group(2).strip(), "full": m.group(3).strip()}
    return out


def notebooks_block(readme: str, build: Path | None) -> str:
    measured = measured_runtimes(build) if build is not None else {}
    kept = existing_runtimes(readme)
    rows = [NOTEBOOK_HEADER, "|---|---|---:|---:|"]
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py")):
        title, question = notebook_info(path)
        times = {m: measured.get(path.stem, {}).get(m) or kept.get(path.stem, {}).get(m) or "—"
                 for m in ("smoke", "full")}
        q = question.replace("|", "\\|")
        rows.append(f"| [{title}](notebooks/{path.name}) | {q} | {times['smoke']} | {times['full']} |")
    if len(rows) == 2:
        return "_No notebooks yet._"
    note = ("Runtimes are measured by `python -m nlcore notebooks` (smoke: 2 CPU cores; "
            "full: one GPU, training included).")
    return "\n".join(rows) + "\n\n" + note


# ---------------------------------------------------------------------------- gallery


def gallery_block() -> str:
    parts = []
    for folder in sorted(p for p in (REPO / "figures").glob("*") if p.is_dir()):
        pngs = sorted(folder.glob("*.png"))
        if not pngs:
            continue
        imgs = " ".join(f'<img src="figures/{folder.name}/{p.name}" alt="{folder.name}/{p.stem}" width="360">'
                        for p in pngs)
        parts.append(f"**{folder.name}**\n\n{imgs}")
    return "\n\n".join(parts) if parts else "_No FULL figures committed yet: run `make figures` on a GPU._"


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


def results_block() -> str:
    parts = []
    for path in sorted((REPO / "results").glob("*/summary.json")):
        stem = path.parent.name
        records = _labelled(_order(stem, json.loads(path.read_text(encoding="utf-8"))))
        metrics = [m for m in METRICS if any(r["metric"] == m for r in records)]
        if not metrics:
            metrics = sorted({r["metric"] for r in records})
        meta_path = path.parent / "meta.json"
        rev = ""
        if meta_path.exists():
            git = json.loads(meta_path.read_text(encoding="utf-8")).get("git") or {}
            if git.get("revision"):
                rev = f", code at `{git['revision'][:7]}`" + (" (dirty)" if git.get("dirty") else "")
        parts.append(f"<details><summary><b>{stem}</b> (<code>results/{stem}/summary.json</code>{rev})</summary>\n\n"
                     + results_table_markdown(records, metrics=metrics).rstrip("\n") + "\n\n</details>")
    return "\n\n".join(parts) if parts else "_No FULL results committed yet._"


# ---------------------------------------------------------------------------- headline

# (experiment, configuration, what it is): the rows of the README's headline table. Same budget
# everywhere: 2000 steps x 32 rows x 256 characters of WikiText-2 (512 where marked).
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


def headline_block() -> str:
    from nlcore.results import format_ci

    rows = ["| configuration | experiment | valid bpc | test bpc | training \"PPL\" |", "|---|---|---|---|---|"]
    for stem, config, what in HEADLINE:
        path = REPO / "results" / stem / "summary.json"
        if not path.exists():
            continue
        recs = {r["metric"]: r for r in json.loads(path.read_text(encoding="utf-8")) if r["config"] == config}
        if "valid_bpc" not in recs:
            continue
        cells = [format_ci(recs[m], 3) if m in recs else "—" for m in ("valid_bpc", "test_bpc")]
        ppl = f"{recs['train_ppl_last100']['mean']:.1f}" if "train_ppl_last100" in recs else "—"
        rows.append(f"| {what} | [{stem}](results/{stem}/) `{config}` | {cells[0]} | {cells[1]} | {ppl} |")
    if len(rows) == 2:
        return "_No FULL results committed yet._"
    note = ("Held-out bits per character over the whole valid and test splits, mean ± half-width of the "
            "bootstrap 95 % interval across seeds [low, high] (n). Training \"PPL\" is exp of the mean "
            "training loss over the last 100 steps: the number the prototype reported.")
    return "\n".join(rows) + "\n\n" + note


# ---------------------------------------------------------------------------- bench


def bench_block() -> str:
    parts = []
    for path in sorted((REPO / "results" / "bench").glob("*.json")):
        rep = json.loads(path.read_text(encoding="utf-8"))
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


# ---------------------------------------------------------------------------- HOPE / Titans (06)

HOPE_ROWS = (  # (configuration in results/06_hope_titans, bench configuration, what it is)
    ("nested_lstm", "nested_lstm", "nested LSTM (the seed's CMS policy), d 416"),
    ("transformer", "transformer", "causal Transformer, 4 layers, RoPE"),
    ("titans_linear", "titans_linear", "Titans, linear memory (gated delta rule + momentum)"),
    ("titans", "titans", "Titans, 2-layer MLP memory (Titans' chunk-start gradients)"),
    ("titans_alpha0.999", None, "... MLP memory retained longer (alpha0 0.999)"),
    ("hope", "hope", "HOPE: self-modifying memory + CMS chain written in the forward pass"),
    ("hope_no_momentum", None, "... without momentum in the memories"),
    ("hope_static", None, "HOPE without in-forward writes and without CMS"),
    ("hope_outer", "hope_outer", "HOPE, chain MLPs updated by the outer CMS engine (16 / 256 steps)"),
    ("hope_outer_adamw", None, "... the same with AdamW 2e-3 for the chain levels"),
    ("hope_outer_no_momentum", None, "... the outer reading without momentum in the memories"),
)


def hope_block() -> str:
    from nlcore.results import format_ci

    root = REPO / "results" / "06_hope_titans"
    if not (root / "summary.json").exists():
        return "_No FULL results committed yet._"
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    bench_path = REPO / "results" / "bench" / "models_06.json"
    bench = json.loads(bench_path.read_text(encoding="utf-8"))["configs"] if bench_path.exists() else {}
    rows = ["| model | configuration | params | valid bpc | test bpc | chars / s (H100, graphed) | step time vs Transformer |",
            "|---|---|---:|---|---|---:|---:|"]
    for config, bname, what in HOPE_ROWS:
        run_dir = root / "runs" / config
        if not run_dir.exists():
            continue
        recs = {r["metric"]: r for r in summary if r["config"] == config}
        done = sorted(run_dir.glob("seed*/summary.json"))
        params = json.loads(done[0].read_text(encoding="utf-8"))["params"] if done else None
        cells = [format_ci(recs[m], 3) if m in recs else "diverged (every seed)" for m in ("valid_bpc", "test_bpc")]
        lost = [p.name for p in sorted(run_dir.glob("seed*")) if p.is_dir() and not (p / "summary.json").exists()]
        if done and lost:  # say which seeds the mean leaves out, and why
            from nlcore.report.figures.hope import run_status

            why = "; ".join(f"{p} {run_status(run_dir / p)}" for p in lost)
            cells = [c[:-1] + f"; {why})" if c.endswith(")") else c for c in cells]
        b = bench.get(bname) if bname else None
        speed = f"{b['chars_per_s'] / 1e6:.2f} M" if b else "—"
        ratio = f"{b['ratio_to_baseline']:.2f}x" if b and b.get("ratio_to_baseline") else "—"
        rows.append(f"| {what} | `{config}` | {params / 1e6:.2f} M | {cells[0]} | {cells[1]} | {speed} | {ratio} |"
                    if params else f"| {what} | `{config}` | — | {cells[0]} | {cells[1]} | {speed} | {ratio} |")
    speed_path = REPO / "results" / "bench" / "memory_paths.json"
    tail = ""
    if speed_path.exists():
        rep = json.loads(speed_path.read_text(encoding="utf-8"))
        def path(r: dict, key: str, what: str) -> str:
            return (f"{r['speedup' + key]:.1f}x {what} ({r['token' + key + '_s'] * 1e3:.0f} ms token, "
                    f"{r['chunk' + key + '_s'] * 1e3:.0f} ms chunk)")
        parts = [f"{r['memory']} " + path(r, "", "eager") + ("; " + path(r, "_graph", "CUDA-graphed")
                                                           if r.get("speedup_graph") else "") for r in rep["rows"]]
        tail = (f"\n\nChunk-parallel vs token-by-token reference, forward + backward of one {rep['rows'][0]['window']}"
                f"-token window (`results/bench/memory_paths.json`): " + " | ".join(parts) + ".")
    note = ("\n\nWikiText-2 characters, 1000 steps x 16 rows x 512 characters (8.2 M characters) for every model, "
            "3 seeds, held-out bpc on the whole valid and test splits with state carried: mean ± half-width "
            "of the bootstrap 95 % interval [low, high] (n). Speed: `results/bench/models_06.json`.")
    return "\n".join(rows) + note + tail


# ---------------------------------------------------------------------------- main


def render(readme: str, build: Path | None) -> str:
    text = replace_block(readme, "notebooks", notebooks_block(readme, build))
    text = replace_block(text, "gallery", gallery_block())
    if "<!-- headline:start -->" in text:
        text = replace_block(text, "headline", headline_block())
    if "<!-- hope:start -->" in text:
        text = replace_block(text, "hope", hope_block())
    if "<!-- bench:start -->" in text:
        text = replace_block(text, "bench", bench_block())
    return replace_block(text, "results", results_block())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the README is stale; write nothing")
    p.add_argument("--readme", default=str(REPO / "README.md"))
    p.add_argument("--build", default=str(REPO / "build"), help="where the runner's timings.json files are")
    args = p.parse_args(argv)
    path = Path(args.readme)
    current = path.read_text(encoding="utf-8")
    if args.check:  # runtimes depend on the machine: compare with the README's own values
        fresh = render(current, build=None)
        if fresh != current:
            import difflib

            diff = difflib.unified_diff(current.splitlines(), fresh.splitlines(), "README.md", "generated",
                                        lineterm="", n=1)
            print("\n".join(list(diff)[:80]))
            print(f"\n{path.name} is stale: run `python scripts/readme_tables.py`", file=sys.stderr)
            return 1
        print(f"{path.name} is up to date")
        return 0
    fresh = render(current, build=Path(args.build))
    if fresh != current:
        path.write_text(fresh, encoding="utf-8")
        print(f"updated {path}")
    else:
        print(f"{path.name} already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
