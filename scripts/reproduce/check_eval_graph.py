"""GPU self-check of the graphed evaluation window (nlcore.accel.cuda_graph.GraphedEval).

Usage, from the repository root on the GPU machine:

    python scripts/reproduce/check_eval_graph.py OUT.json [--steps 30] [--windows 40] [--configs NAME ...] [--smoke]

For each configuration (default: the 06 models of `nlcore.bench.step.MODELS_06`, built as the bench
builds them), train `--steps` steps, then evaluate the first `--windows` valid windows three times:
eagerly, from the evaluation graph (its first use captures it; timed on a second pass), and
eagerly again. Reports each bpc, the graph's difference from the eager one against the
eager-to-eager difference (the GPU's own noise floor), the milliseconds per window of each path
and the graph's telemetry (windows replayed, capture error). PASS when the graphed bpc is within
max(1e-4, 3 x the noise floor) of the eager one and every window was replayed. `--smoke`: the smoke
preset on this machine's device (on a CPU the capture is emulated). Each configuration is
guarded: a failure is printed with its traceback, recorded under "errors", and the others run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nlcore import repro  # noqa: E402
from nlcore.bench import step as bench  # noqa: E402
from nlcore.training.evaluate import evaluate  # noqa: E402

CONFIGS = [c for c in bench.MODELS_06 if c != "transformer_eager"]
# --smoke: the same models small enough for the smoke corpus and a CPU
SMOKE = ["data.seq_len=64", "data.batch_size=4", "data.synth_chars=60000", "model.d_model=32", "model.n_layers=1",
         "model.n_heads=2", "model.d_ff=64", "model.mem_chunk=16", "model.cms_chunks=16,32", "cuda_graph=on"]


def timed(trainer, stream, cuts, windows: int, graph) -> tuple[float, float]:
    """(bpc, ms per window) of the first `windows` windows, with `graph` or eagerly."""
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = evaluate(trainer.model, stream, trainer.cfg.state, device=trainer.device, amp=trainer.amp,
                   max_windows=windows, doc_cuts=cuts, graph=graph)
    sync()
    return out["bpc"], 1e3 * (time.perf_counter() - t0) / out["windows"]


def check(name: str, steps: int, windows: int, smoke: bool) -> dict:
    t = bench.build_trainer(bench.NAMED[name] + (SMOKE if smoke else []), smoke=smoke, steps=steps)
    bench._steps(t, steps)
    stream, cuts = t.eval_streams["valid"]
    windows = min(windows, len(stream))
    eager, eager_ms = timed(t, stream, cuts, windows, None)
    graph = t.eval_graph(stream)
    if graph is None:
        raise RuntimeError(f"{name}: cuda_graph is {t.cuda_graph!r}: no evaluation graph to check")
    graphed, capture_ms = timed(t, stream, cuts, windows, graph)  # captures at its first window
    graphed2, graph_ms = timed(t, stream, cuts, windows, graph)
    eager2, _ = timed(t, stream, cuts, windows, None)
    noise = abs(eager2 - eager)
    diff = max(abs(graphed - eager), abs(graphed2 - eager))
    ok = diff <= max(1e-4, 3 * noise) and graph.failed is None and graph.graph_windows == 2 * windows
    return {"config": name, "windows": windows, "bpc_eager": eager, "bpc_eager_again": eager2,
            "bpc_graph": graphed, "bpc_graph_again": graphed2, "diff": diff, "noise": noise,
            "ms_per_window_eager": eager_ms, "ms_per_window_graph": graph_ms,
            "ms_per_window_first_graph_pass": capture_ms, "graph_windows": graph.graph_windows,
            "capture_error": graph.failed, "pass": ok}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--windows", type=int, default=40)
    p.add_argument("--configs", nargs="+", default=CONFIGS)
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(argv)
    rows, errors = [], {}
    for name in a.configs:
        try:
            r = check(name, a.steps, a.windows, a.smoke)
            rows.append(r)
            print(f"{name:14s} bpc eager {r['bpc_eager']:.6f} graph {r['bpc_graph']:.6f} diff {r['diff']:.2e} "
                  f"(noise {r['noise']:.2e})  ms/window eager {r['ms_per_window_eager']:8.2f} graph "
                  f"{r['ms_per_window_graph']:8.2f}  {'PASS' if r['pass'] else 'FAIL'}", flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on with the next configuration
            traceback.print_exc()
            errors[name] = f"{type(e).__name__}: {e}"
    record = {"command": repro.command_line(), "git": repro.git_info(), "environment": repro.capture_environment(),
              "settings": vars(a), "checks": rows, "errors": errors}
    Path(a.out).write_text(json.dumps(record, indent=2) + "\n")
    ok = not errors and all(r["pass"] for r in rows)
    print(f"{'PASS' if ok else 'FAIL'}: {sum(r['pass'] for r in rows)} of {len(a.configs)} configurations; wrote {a.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
