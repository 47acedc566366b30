"""GPU self-check of ``fast_path="graph"`` (nlcore.accel.cuda_graph) on the seed preset.

Usage, from the repository root on the GPU machine:

    python scripts/reproduce/check_fastpath.py OUT.json [--steps 300] [--corpus auto|wikitext2|synthetic]

1. Agreement: the seed preset (and seed + surprise fast on fast/medium) trained N steps from the
   same seed with fast_path off, off again, and graph. Reports the max relative per-step loss
   difference, the step-1 difference (same kernels: should be ~0) and the max relative parameter
   difference (‖Δp‖/‖p‖ over tensors). off-vs-off is the noise floor (the eager GPU step is not
   bitwise reproducible: atomics in the embedding backward); PASS when graph-vs-off is within
   max(1e-3, 3 x noise) for losses and max(5e-3, 3 x noise) for parameters, and the run used
   graphs (telemetry: graph steps, eager reasons, capture errors).
2. Timing, as `nlcore bench` does (Trainer.train_step, CUDA events, warm-up, K windows of M
   steps interleaved in alternating order, median ms/step): seed off/graph, seed+surprise
   off/graph, plain LSTM LM off/graph, seed at batch 256 off/graph; plus the recurrence floor,
   nn.LSTM(256, 256) under bf16 autocast, fwd + bwd of out.sum() on a (B, 256, 256) input with
   requires_grad, eager and graphed, B = 32 and 256; plus the replay of the seed graph alone.
3. One table (ms/step, chars/s, ratio to the graphed floor, ratio to the plain eager LSTM) and
   the issue's targets; the full record goes to OUT.json. Every part is guarded: a failure is
   printed with its traceback, recorded under "errors", and the other parts still run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nlcore import repro  # noqa: E402
from nlcore.bench import step as bench
from nlcore.bench.floor import ms_per_call, recurrence_floor  # noqa: E402

SURPRISE = ["surprise.weights.fast=0.05", "surprise.weights.medium=0.01", "surprise.impl=fast"]
PLAIN = ["model.kind=lstm_lm", "cms.levels.medium.chunk=1", "cms.levels.slow.chunk=1"]
GRAPH = ["fast_path=graph"]
B256 = ["data.batch_size=256", "data.eval_batch_size=32"]  # eval is never run here
CONFIGS = {  # name -> overrides on the seed preset
    "seed_off": [], "seed_graph": GRAPH,
    "surprise_off": SURPRISE, "surprise_graph": SURPRISE + GRAPH,
    "plain_lstm_off": PLAIN, "plain_lstm_graph": PLAIN + GRAPH,
    "seed_b256_off": B256, "seed_b256_graph": B256 + GRAPH,
}
ERRORS: list[dict] = []
SMOKE = False  # --cpu-smoke: the smoke preset on the CPU, to test this script itself (no floors)


def guarded(what: str, fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except Exception as e:  # noqa: BLE001 - report and go on with the other measurements
        print(f"\n!! {what} failed: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc()
        ERRORS.append({"what": what, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        try:
            torch.cuda.synchronize()
        except Exception:  # noqa: BLE001
            pass
        return None


def corpus_overrides(choice: str) -> list[str]:
    if choice == "synthetic":
        return ["data.corpus=synthetic", "data.synth_chars=2000000"]
    if choice == "wikitext2":
        return []
    try:  # auto: the seed's corpus when its files are there
        from nlcore.config import preset
        from nlcore.training.trainer import load_data

        load_data(preset("seed"))
        return []
    except Exception as e:  # noqa: BLE001
        print(f"wikitext2 not available ({type(e).__name__}: {e}); using the synthetic corpus", flush=True)
        return corpus_overrides("synthetic")


def build(overrides: list[str], steps: int):
    return bench.build_trainer(overrides, smoke=SMOKE, steps=steps, device="cpu" if SMOKE else None)


def sync() -> None:
    if not SMOKE:
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- 1. agreement
def agreement(name: str, overrides: list[str], steps: int) -> dict:
    runs = {}
    for tag, extra in (("off", []), ("off_again", []), ("graph", GRAPH)):
        t = build(overrides + extra, steps)
        losses = torch.stack([t.train_step(s) for s in range(1, steps + 1)]).double().cpu()
        params = {k: v.detach().double().cpu().clone() for k, v in t.model.state_dict().items()}
        sm = t.surprise.drain_metrics() if t.surprise is not None else {}
        runs[tag] = (losses, params, t.fast.telemetry() if t.fast is not None else None, dict(t.cms.updates), sm)
        del t
        if not SMOKE:
            torch.cuda.empty_cache()

    def diff(a: str, b: str) -> dict:
        la, pa = runs[a][0], runs[a][1]
        lb, pb = runs[b][0], runs[b][1]
        rel = ((la - lb).abs() / la.abs().clamp_min(1e-12))
        prel = max(float((pa[k] - pb[k]).norm() / pa[k].norm().clamp_min(1e-12)) for k in pa)
        return {"loss_rel_max": float(rel.max()), "loss_rel_step": int(rel.argmax()) + 1,
                "step1_abs": float((la[0] - lb[0]).abs()), "param_rel_max": prel,
                "finite": bool(torch.isfinite(lb).all())}

    noise, got = diff("off", "off_again"), diff("off", "graph")
    tele = runs["graph"][2]
    ok = (got["finite"] and got["loss_rel_max"] <= max(1e-3, 3 * noise["loss_rel_max"])
          and got["param_rel_max"] <= max(5e-3, 3 * noise["param_rel_max"])
          and tele["graph_steps"] > 0 and not tele["capture_errors"])
    sm_off, sm_graph = runs["off"][4], runs["graph"][4]  # surprise metrics over the whole run
    got["surprise_metric_rel_max"] = max((abs(sm_graph[n][m] - v) / max(abs(v), 1e-30)
                                          for n in sm_off for m, v in sm_off[n].items() if m != "steps"),
                                         default=None)
    rec = {"steps": steps, "off_vs_off": noise, "graph_vs_off": got, "fast_path": tele,
           "surprise_metrics": {"off": sm_off, "graph": sm_graph},
           "updates": runs["graph"][3], "loss_first_last_off": [float(runs["off"][0][0]), float(runs["off"][0][-1])],
           "pass": bool(ok)}
    print(f"[agree] {name:<10} {'PASS' if ok else 'FAIL'}  loss rel max {got['loss_rel_max']:.2e} "
          f"(noise {noise['loss_rel_max']:.2e}), step-1 |d| {got['step1_abs']:.1e}, param rel max "
          f"{got['param_rel_max']:.2e} (noise {noise['param_rel_max']:.2e}); graph steps {tele['graph_steps']}, "
          f"eager {tele['eager_reasons']}, capture errors {tele['capture_errors']}", flush=True)
    return rec


# ----------------------------------------------------------------------------- 2. timing
def event_ms(fn, iters: int) -> float:
    return ms_per_call(fn, iters, "cpu" if SMOKE else "cuda")


def lstm_floor(batch: int, graphed: bool, windows: int = 10, iters: int = 20) -> dict:
    """The recurrence floor of the seed shape (nlcore.bench.floor), eager or graphed."""
    lstm = torch.nn.LSTM(256, 256, batch_first=True).cuda()
    return recurrence_floor(lstm, batch, 256, amp=True, windows=windows, steps=iters, graphed=graphed)


def time_trainers(names: list[str], corpus: list[str], warmup: int, windows: int, per: int) -> dict:
    total = warmup + windows * per + 10
    trainers, shape, out = {}, {}, {}
    for n in names:  # warm-up covers a surprise recording step (log_every 50): all graphs captured
        t = guarded(f"build+warmup {n}", lambda n=n: _warm(build(corpus + CONFIGS[n], total), warmup))
        if t is not None:
            trainers[n] = t
            shape[n] = (t.cfg.data.batch_size, t.cfg.data.seq_len)
    per_ms = {n: [] for n in trainers}
    for r in range(windows):
        for n in (list(trainers) if r % 2 == 0 else list(trainers)[::-1]):
            if n in trainers:
                v = guarded(f"time {n}", bench.time_window, trainers[n], per)
                if v is None:
                    trainers.pop(n)
                    continue
                per_ms[n].append(v * 1e3)
                bench._drain(trainers[n])
    for n, ms in per_ms.items():
        if not ms:
            continue
        t = trainers.get(n)
        med = statistics.median(ms)
        rec = {"ms_median": med, "ms_min": min(ms), "ms_max": max(ms), "ms_windows": ms,
               "batch_size": shape[n][0], "seq_len": shape[n][1],
               "chars_per_s": shape[n][0] * shape[n][1] / (med / 1e3)}
        if t is not None and t.fast is not None:
            rec["fast_path"] = t.fast.telemetry()
            key = next((k for k in ("surprise", "plain") if k in t.fast.graphs), None)
            if key is not None:  # the captured fwd+bwd alone (no CMS, no staging)
                g = t.fast.graphs[key][0]
                rec["graph_replay_ms"] = guarded(f"replay {n}", lambda g=g: statistics.median(
                    [event_ms(g.replay, per) for _ in range(5)]))
        out[n] = rec
    return out


def _warm(t, steps: int):
    bench._steps(t, steps)
    bench._drain(t)
    sync()
    return t


# ----------------------------------------------------------------------------- 3. report
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="JSON report path")
    p.add_argument("--steps", type=int, default=300, help="agreement steps (300: every CMS level updates)")
    p.add_argument("--corpus", default="auto", choices=["auto", "wikitext2", "synthetic"])
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--windows", type=int, default=10)
    p.add_argument("--per-window", type=int, default=50)
    p.add_argument("--skip-agreement", action="store_true")
    p.add_argument("--cpu-smoke", action="store_true", help="test this script on the CPU (smoke preset)")
    args = p.parse_args()
    global SMOKE
    SMOKE = args.cpu_smoke
    if not SMOKE and not torch.cuda.is_available():
        print("CUDA is not available: this check is for the GPU machine (--cpu-smoke tests the script)")
        return 2
    t0 = time.time()
    env = repro.capture_environment("cpu" if SMOKE else "cuda")
    print(f"{env['gpu_name']}  torch {env['torch']}  cuda {env['cuda']}  cudnn {env['cudnn']}", flush=True)
    corpus = [] if SMOKE else corpus_overrides(args.corpus)
    report: dict = {"schema": "nlcore.check_fastpath/1", "command": repro.command_line(), "git": repro.git_info(),
                    "environment": env, "corpus_overrides": corpus,
                    "settings": vars(args), "agreement": {}, "timing": {}, "floor": {}, "errors": ERRORS}
    if not args.skip_agreement:
        for name, ov in (("seed", []), ("surprise", SURPRISE)):
            r = guarded(f"agreement {name}", agreement, name, corpus + ov, args.steps)
            if r is not None:
                report["agreement"][name] = r
    for b in () if SMOKE else (32, 256):
        for graphed in (False, True):
            key = f"lstm_b{b}_{'graph' if graphed else 'eager'}"
            r = guarded(f"floor {key}", lstm_floor, b, graphed)
            if r is not None:
                report["floor"][key] = r
    report["timing"] = time_trainers(list(CONFIGS), corpus, args.warmup, args.windows, args.per_window) or {}

    tm, fl = report["timing"], report["floor"]

    def floor_ms(b: int):
        for k in (f"lstm_b{b}_graph", f"lstm_b{b}_eager"):
            if k in fl:
                return fl[k]["ms_median"]
        return None

    plain = tm.get("plain_lstm_off", {}).get("ms_median")
    lines = [f"{'config':<18} {'ms/step':>8} {'chars/s':>11} {'x floor':>8} {'x plain':>8} {'replay ms':>9}  fast path"]
    for n, r in tm.items():
        f = floor_ms(256 if "b256" in n else 32)
        xf = f"{r['ms_median'] / f:8.2f}" if f else f"{'-':>8}"
        xp = f"{r['ms_median'] / plain:8.2f}" if plain and "b256" not in n else f"{'-':>8}"
        rp = f"{r['graph_replay_ms']:9.3f}" if r.get("graph_replay_ms") else f"{'-':>9}"
        fp = r.get("fast_path")
        fps = "" if fp is None else f"graph {fp['graph_steps']} eager {fp['eager_reasons']} " + \
            (f"ERR {list(fp['capture_errors'])}" if fp["capture_errors"] else "")
        lines.append(f"{n:<18} {r['ms_median']:8.3f} {r['chars_per_s']:11.0f} {xf} {xp} {rp}  {fps}")
    for k, r in fl.items():
        chars = (32 if "_b32_" in k else 256) * 256
        lines.append(f"{k:<18} {r['ms_median']:8.3f} {chars / (r['ms_median'] / 1e3):11.0f}  (recurrence floor)")
    targets = {}
    sg, so = tm.get("seed_graph"), tm.get("surprise_graph")
    if sg:
        targets["seed_graph_chars_per_s>=3e6"] = sg["chars_per_s"] >= 3e6
        if plain:
            targets["seed_graph_speedup_vs_plain_eager>=1.5"] = plain / sg["ms_median"] >= 1.5
        if floor_ms(32):
            targets["seed_graph_over_floor<=1.2"] = sg["ms_median"] / floor_ms(32) <= 1.2
        if so:
            targets["surprise_graph_overhead<=5%"] = so["ms_median"] / sg["ms_median"] - 1 <= 0.05
    report["targets"] = targets
    report["agreement_pass"] = {k: v["pass"] for k, v in report["agreement"].items()}
    report["wall_s"] = time.time() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + "\n".join(lines))
    print("targets:", json.dumps(targets), "| agreement:", json.dumps(report["agreement_pass"]),
          f"| errors: {len(ERRORS)} | {report['wall_s']:.0f} s")
    return 0 if not ERRORS and all(report["agreement_pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
