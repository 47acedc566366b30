"""What trained models write, side by side: the committed samples or ones drawn live from this view's runs.

`model_samples(ctx, res)` returns a samples record (`nlcore.training.sampling.sample_table`'s
format): in the committed view the one committed in the experiment's results folder,
under `samples/`, or None when there is none; in the smoke and full views it samples each
configuration's first finished run with the committed record's settings. `samples_html(data,
prompt)` renders one prompt's texts as a table, best model first.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

# The committed record's prompts: a WikiText-2 section heading and the start of a sentence.
PROMPTS = ("\n = = Early life = = \n \n ", " The city of")
SETTINGS = {"chars": 240, "temperature": 0.8, "seeds": (0,)}


def samples_path(results_dir: Path) -> Path:
    return Path(results_dir) / "samples" / "samples.json"


def model_samples(ctx, res, prompts=None, chars: int | None = None) -> dict | None:
    """The committed samples (committed view; None when none are committed), or a fresh record
    from the first finished run of each configuration in `res` (smoke, full). `prompts` default to
    `PROMPTS`, those whose characters the runs' vocabulary holds (the smoke corpus has no '=')."""
    if not ctx.trains:
        path = samples_path(ctx.results_dir)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    from nlcore.training.sampling import load, sample_table

    runs = [dirs[0] for dirs in (res.run_dirs(c) for c in res.configs) if dirs]
    if not runs:
        return None
    known = set(load(runs[0]).tokenizer.chars)  # one experiment's runs share its corpus's vocabulary
    prompts = [p for p in (prompts or PROMPTS) if set(p) <= known] or ["".join(sorted(known))[:8]]
    device = "cuda" if ctx.device == "cuda" else "cpu"
    return sample_table(runs, prompts, chars=chars or SETTINGS["chars"], temperature=SETTINGS["temperature"],
                        seeds=SETTINGS["seeds"], device=device)


def samples_html(data: dict, prompt: str | None = None) -> str:
    """One prompt's texts (default: the record's first prompt), one row per run, lowest test bpc
    first: configuration, test bpc, the prompt (grey) and what the model wrote."""
    prompt = data["settings"]["prompts"][0] if prompt is None else prompt
    rows = [r for r in data["samples"] if r["prompt"] == prompt]
    rows.sort(key=lambda r: (r["test_bpc"] is None, r["test_bpc"] or 0.0))
    cell = "padding:4px 8px;vertical-align:top;text-align:left"
    out = [f'<table style="border-collapse:collapse;font-size:12px"><tr><th style="{cell}">model</th>'
           f'<th style="{cell}">test bpc</th><th style="{cell}">prompt, then the model\'s text</th></tr>']
    for r in rows:
        bpc = "no summary" if r["test_bpc"] is None else f"{r['test_bpc']:.3f}"
        text = (f'<span style="color:#999">{html.escape(r["prompt"])}</span>'
                f'{html.escape(r["text"])}')
        out.append(f'<tr style="border-top:1px solid #ddd"><td style="{cell}"><code>{html.escape(r["config"])}</code>'
                   f'</td><td style="{cell}">{bpc}</td><td style="{cell};font-family:monospace;white-space:pre-wrap">'
                   f'{text}</td></tr>')
    s = data["settings"]
    out.append(f'</table><p style="font-size:11px">{len(rows)} runs, {s["chars"]} characters each, temperature '
               f'{s["temperature"]}, seed {s["seeds"][0]}; test bpc from each run\'s summary.</p>')
    return "".join(out)
