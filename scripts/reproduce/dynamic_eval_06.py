"""Dynamic evaluation of the 06 baselines: test-time learning for the models that lack it.

    PYTHONPATH=$PWD python3 scripts/reproduce/dynamic_eval_06.py OUTDIR [LABEL ...]
    (DYN_LRS=0.3,1,3 in the environment replaces the lr grid LRS)

HOPE writes its memories and CMS chain inside the forward pass, so its held-out bpc already
includes test-time learning; the baselines' static bpc does not. For each LABEL (default: the
nested LSTM, the Transformer and Titans with a linear memory) and each seed of the experiment,
this trains the run exactly as `results/06_hope_titans` did (the experiment's full config, on
one GPU), then
  1. scores valid and test statically (the trainer's own evaluation);
  2. picks the dynamic-evaluation lr from LRS (decay 0) by bpc on the first SWEEP_WINDOWS
     windows of valid (a choice made on valid only);
  3. scores the whole of valid and test with dynamic evaluation at that lr (nlcore.training.dynamic_eval:
     score each window, then one SGD step on its loss).
One JSON per run: OUTDIR/<label>/seed<k>.json with the config, the sweep and all four numbers.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from nlcore import repro
from nlcore.config import apply_overrides, preset
from nlcore.experiments import EXPERIMENTS
from nlcore.training.dynamic_eval import dynamic_evaluate
from nlcore.training.trainer import Trainer

LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)  # a first run (1e-4 .. 3e-2) chose its top, 3e-2, every time
if os.environ.get("DYN_LRS"):
    LRS = tuple(float(x) for x in os.environ["DYN_LRS"].split(","))
SWEEP_WINDOWS = 32
DEFAULT = ("nested_lstm", "transformer", "titans_linear")


def run(label: str, seed: int, gc, common, out: Path) -> dict:
    cfg = apply_overrides(preset(gc.preset), [*common, *gc.overrides, f"seed={seed}", "ckpt_every=0"])
    t0 = time.perf_counter()
    tr = Trainer(cfg, None, progress=False, command="scripts/reproduce/dynamic_eval_06.py")
    summary = tr.run()
    train_s = time.perf_counter() - t0

    def dyn(split: str, lr: float, windows: int | None) -> float:
        stream, cuts = tr.eval_streams[split]
        return dynamic_evaluate(tr.model, stream, cfg.state, lr=lr, decay=0.0, device=tr.device, amp=tr.amp,
                                max_windows=windows, doc_cuts=cuts)["bpc"]

    sweep = {lr: dyn("valid", lr, SWEEP_WINDOWS) for lr in (0.0, *LRS)}
    best = min(LRS, key=lambda lr: sweep[lr])
    rec = {"label": label, "seed": seed, "overrides": [*common, *gc.overrides, f"seed={seed}"],
           "valid_bpc": summary["valid_bpc"], "test_bpc": summary["test_bpc"],
           "sweep_valid_windows": SWEEP_WINDOWS, "sweep": {str(k): v for k, v in sweep.items()},
           "dynamic_lr": best, "valid_bpc_dynamic": dyn("valid", best, None),
           "test_bpc_dynamic": dyn("test", best, None), "train_s": train_s,
           "total_s": time.perf_counter() - t0, "git": repro.git_info(), "environment": repro.capture_environment(tr.device)}
    path = out / label / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=1))
    print(f"{label} seed {seed}: valid {rec['valid_bpc']:.4f} -> {rec['valid_bpc_dynamic']:.4f}, test "
          f"{rec['test_bpc']:.4f} -> {rec['test_bpc_dynamic']:.4f} (lr {best:g}; {rec['total_s']:.0f} s)", flush=True)
    return rec


def main(out: Path, labels: list[str]) -> None:
    gcs, seeds, common = EXPERIMENTS["06_hope_titans"].grid("full")
    by = {g.label: g for g in gcs}
    for label in labels:
        for seed in seeds:
            run(label, seed, by[label], common, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:] or list(DEFAULT))
