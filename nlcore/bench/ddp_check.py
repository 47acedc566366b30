"""The 1 vs N GPU check of data-parallel training (nlcore.accel.ddp).

`python -m nlcore.bench.ddp_check check --out PART.json [...]`, once alone and once under
`torchrun --nproc_per_node 2`; then `python -m nlcore.bench.ddp_check report OUT.json PART1 PART2`.
scripts/reproduce/ddp_check.sh runs all three. --smoke: the smoke preset on the CPU (gloo), to test it.
Throughput of both world sizes at several global batches, and the 50-step losses and held-out
bpc of both, which must agree (the same computation, spread out).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from nlcore.accel.ddp import ENV_DEFAULTS, env_world_size, shutdown

CHECK_CASES = {  # name -> overrides: every level updates within the 50 steps (chunks 1/4/16)
    "seed_bf16": [],
    "seed_fp32": ["amp=off"],
    "surprise_bf16": ["surprise.weights.fast=0.05", "surprise.weights.medium=0.01"],
    "delta_fp32": ["amp=off", "cms.levels.medium.optimizer=delta", "cms.levels.slow.optimizer=delta",
                   "cms.levels.medium.lr=0.5", "cms.levels.slow.lr=0.5"],
}
CHECK_CHUNKS = ["cms.levels.medium.chunk=4", "cms.levels.slow.chunk=16"]


def _check_trainer(overrides: list[str], smoke: bool, steps: int):
    from nlcore.config import apply_overrides, preset
    from nlcore.training.trainer import Trainer

    base = ["data.synth_chars=20000"] if smoke else []
    cfg = apply_overrides(preset("smoke" if smoke else "seed"),
                          base + overrides + [f"steps={steps}", "eval_every=0", "ckpt_every=0"])
    return Trainer(cfg, None, progress=False, command="ddp_check")


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _throughput(overrides: list[str], smoke: bool, warmup: int, windows: int, steps: int) -> dict:
    t = _check_trainer(overrides, smoke, warmup + windows * steps + 1)
    dp = t.world if t.world.world_size > 1 else None
    for _ in range(warmup):
        t.step += 1
        t.train_step(t.step)
    t.cms.drain_telemetry()
    per = []
    for _ in range(windows):
        _sync(t.device)
        if dp is not None:
            dp.mean_across_ranks(torch.zeros(1, device=t.device), "barrier")
            _sync(t.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            t.step += 1
            t.train_step(t.step)
        _sync(t.device)
        dt = torch.tensor([time.perf_counter() - t0], dtype=torch.float64, device=t.device)
        if dp is not None:  # the slowest rank's time
            dist.all_reduce(dt, op=dist.ReduceOp.MAX)
        per.append(float(dt) / steps)
        t.cms.drain_telemetry()
    per.sort()  # median below
    med = per[len(per) // 2]
    d = t.cfg.data
    out = {"global_batch": d.batch_size, "rows_per_rank": t.train_stream.batch_size, "seq_len": d.seq_len,
           "step_ms_median": med * 1e3, "step_ms_windows": [x * 1e3 for x in per],
           "chars_per_s": d.batch_size * d.seq_len / med, "cuda_graph": t.cuda_graph,
           "cuda_graph_counts": t.graph.telemetry() if t.graph is not None else None,
           "grad_allreduces": dict(dp.counts) if dp is not None else None}
    _free(t)
    return out


def _free(t) -> None:
    t.graph = None  # GraphedStep <-> Trainer is a reference cycle holding the graphs' memory
    del t
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _losses(overrides: list[str], smoke: bool, steps: int, eval_windows: int) -> dict:
    t = _check_trainer(overrides, smoke, steps)
    losses = [t.train_step(s) for s in range(1, steps + 1)]
    t.step = steps
    vals = torch.stack(losses).float()
    vals = t.world.mean_across_ranks(vals)
    tele = t.cms.drain_telemetry()  # every update's gradient norm (of the averaged gradient under DDP)
    ev = t.evaluate("valid", eval_windows)
    out = {"losses": vals.cpu().tolist(), "valid_bpc": ev["bpc"], "valid_targets": ev["targets"],
           "grad_norms": {n: [v for _, v in d["grad_norms"]] for n, d in tele.items()},
           "updates": dict(t.cms.updates), "cuda_graph": t.cuda_graph,
           "cuda_graph_counts": t.graph.telemetry() if t.graph is not None else None,
           "grad_allreduces": dict(t.world.counts) if t.world.world_size > 1 else None,
           "param_norm": float(torch.linalg.vector_norm(torch.cat([p.detach().float().reshape(-1)
                                                                    for p in t.model.parameters()])))}
    _free(t)
    return out


def _check(args) -> int:
    from nlcore import repro

    world = env_world_size()
    t_start = time.perf_counter()
    part: dict = {"world_size": world, "smoke": args.smoke, "throughput": {}, "losses": {}, "errors": []}
    rank0 = int(os.environ.get("RANK", "0")) == 0
    dev = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    env = repro.capture_environment(dev)
    part.update(device_name=env.get("gpu_name") or env.get("machine"), torch=torch.__version__)

    def save() -> None:  # after every measurement: a part cut short by a time limit still reports
        if rank0:
            part["wall_s"] = time.perf_counter() - t_start
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(part, indent=2) + "\n")

    def guarded(what, fn, *a):
        try:
            return fn(*a)
        except Exception as e:  # noqa: BLE001 - record and go on (a rank-symmetric failure)
            import traceback

            traceback.print_exc()
            part["errors"].append({"what": what, "error": f"{type(e).__name__}: {e}"})
            return None

    base = list(args.set or [])
    if not args.smoke:  # the seed preset's WikiText-2 where its files are, else a synthetic corpus
        try:
            from nlcore.config import preset
            from nlcore.training.trainer import load_data

            load_data(preset("seed"))
        except Exception as e:  # noqa: BLE001
            print(f"wikitext2 not available ({type(e).__name__}: {e}); using the synthetic corpus", flush=True)
            base = ["data.corpus=synthetic", "data.synth_chars=4000000"] + base
    part["overrides"] = base
    for B in args.batches:
        ov = base + [f"data.batch_size={B}", f"data.eval_batch_size={max(2, world) * 4}"]
        r = guarded(f"throughput B={B}", _throughput, ov, args.smoke, args.warmup, args.windows, args.steps)
        if r is not None:
            part["throughput"][str(B)] = r
            save()
            if rank0:
                print(f"[{world} rank(s)] B={B}: {r['chars_per_s'] / 1e6:.2f} M chars/s "
                      f"({r['step_ms_median']:.2f} ms/step, cuda_graph={r['cuda_graph']})", flush=True)
    for name, ov in CHECK_CASES.items():
        ov = base + CHECK_CHUNKS + ov + [f"data.batch_size={args.loss_batch}"]
        r = guarded(f"losses {name}", _losses, ov, args.smoke, args.loss_steps, args.eval_windows)
        if r is not None:
            part["losses"][name] = r
            save()
            if rank0:
                print(f"[{world} rank(s)] {name}: loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}, "
                      f"valid bpc {r['valid_bpc']:.4f}", flush=True)
    save()
    shutdown()
    return 0


def _read_part(path: str, world: int) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        return {"world_size": world, "throughput": {}, "losses": {},
                "errors": [{"what": f"part {path}", "error": f"{type(e).__name__}: {e}"}]}


def _report(args) -> int:
    one, two = _read_part(args.one, 1), _read_part(args.two, 2)
    rep: dict = {"schema": "nlcore.ddp_check/1", "world_sizes": [one["world_size"], two["world_size"]],
                 "device_name": two.get("device_name"), "torch": two.get("torch"),
                 "env": {k: os.environ.get(k) for k in ENV_DEFAULTS},
                 "throughput": {}, "losses": {}, "errors": one["errors"] + two["errors"],
                 "parts": {"one": one, "two": two}}
    n = two["world_size"] / max(one["world_size"], 1)
    label = f"{two['world_size']} GPU M/s"
    print(f"{'global B':>9} {'1 GPU M/s':>10} {label:>10} {'speedup':>8} {'weak eff.':>9}")
    for B, a in one["throughput"].items():
        b = two["throughput"].get(B)
        if b is None:
            continue
        s = b["chars_per_s"] / a["chars_per_s"]
        half = one["throughput"].get(str(int(B) // int(n)))  # same rows per GPU on one GPU
        weak = b["chars_per_s"] / (n * half["chars_per_s"]) if half else None
        rep["throughput"][B] = {"one_chars_per_s": a["chars_per_s"], "two_chars_per_s": b["chars_per_s"],
                                "speedup": s, "weak_scaling_efficiency": weak,
                                "one_cuda_graph": a["cuda_graph"], "two_cuda_graph": b["cuda_graph"]}
        print(f"{B:>9} {a['chars_per_s'] / 1e6:10.2f} {b['chars_per_s'] / 1e6:10.2f} {s:8.2f}x "
              f"{'' if weak is None else f'{100 * weak:8.1f}%'}")
    fp = [v.get("cuda_graph_counts") for v in two["throughput"].values()]
    rep["two_rank_cuda_graph"] = fp
    if rep["throughput"]:
        # the batch that saturates one GPU: the smallest whose 1-GPU throughput is within 10 % of the best
        best1 = max(v["one_chars_per_s"] for v in rep["throughput"].values())
        sat = min((B for B, v in rep["throughput"].items() if v["one_chars_per_s"] >= 0.9 * best1), key=int)
        rep["speedup"] = rep["throughput"][sat]["speedup"]
        rep["speedup_at_global_batch"] = int(sat)
        rep["saturation_rule"] = "smallest global batch with 1-GPU chars/s >= 0.9 x the best measured"
        rep["speedup_at_largest_batch"] = rep["throughput"][max(rep["throughput"], key=int)]["speedup"]
        rep["speedup_best"] = max(v["speedup"] for v in rep["throughput"].values())
        rep["speedup_target"] = 1.8
        rep["speedup_pass"] = rep["speedup"] >= 1.8
    # bf16: other batch shapes per GPU, other rounding, growing over 50 steps; fp32: cuDNN's RNN may
    # use TF32. A scaling bug (summed instead of averaged gradients, a surprise target N times too
    # large) moves the gradient norms by O(1): they are compared at 10x the loss tolerance.
    tol = {"bf16": 2e-2, "fp32": 2e-3}
    ok_all = True
    for name, a in one["losses"].items():
        b = two["losses"].get(name)
        if b is None:
            continue
        la, lb = a["losses"], b["losses"]
        rel = [abs(x - y) / max(abs(x), 1e-12) for x, y in zip(la, lb)]
        t = tol["bf16" if name.endswith("bf16") else "fp32"]
        gn = max((abs(x - y) / max(abs(x), 1e-12) for lv in a["grad_norms"]
                  for x, y in zip(a["grad_norms"][lv], b["grad_norms"].get(lv, []))), default=0.0)
        ok = max(rel) <= t and a["updates"] == b["updates"] and gn <= 10 * t and \
            abs(a["valid_bpc"] - b["valid_bpc"]) <= t * abs(a["valid_bpc"]) and a["valid_targets"] == b["valid_targets"]
        ok_all &= ok
        rep["losses"][name] = {"max_rel_loss_diff": max(rel), "step1_rel_loss_diff": rel[0], "tolerance": t,
                               "max_rel_grad_norm_diff": gn, "grad_norm_tolerance": 10 * t,
                               "valid_bpc": [a["valid_bpc"], b["valid_bpc"]], "updates": [a["updates"], b["updates"]],
                               "cuda_graph": [a["cuda_graph"], b["cuda_graph"]], "pass": ok}
        print(f"{name:>14}: max rel loss diff {max(rel):.2e} (step 1 {rel[0]:.2e}, tol {t:g}), grad norms "
              f"{gn:.1e}, valid bpc "
              f"{a['valid_bpc']:.5f} vs {b['valid_bpc']:.5f}, updates {b['updates']}: {'PASS' if ok else 'FAIL'}")
    rep["correctness_pass"] = ok_all and bool(rep["losses"])
    if "speedup" in rep:
        print(f"speedup at global batch {rep['speedup_at_global_batch']} (saturates 1 GPU): {rep['speedup']:.2f}x "
              f"(target >= 1.8: {'PASS' if rep['speedup_pass'] else 'FAIL'}); at the largest batch "
              f"{rep['speedup_at_largest_batch']:.2f}x, best {rep['speedup_best']:.2f}x")
    print(f"correctness: {'PASS' if rep['correctness_pass'] else 'FAIL'}; errors: {len(rep['errors'])}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rep, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nlcore.bench.ddp_check", description="the 1 vs N GPU check")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="throughput and 50-step losses of this world size (run under torchrun)")
    c.add_argument("--out", required=True)
    c.add_argument("--smoke", action="store_true", help="smoke preset on the CPU (tests this check)")
    c.add_argument("--batches", type=int, nargs="+", default=[512, 1024, 2048, 4096],
                   help="global batches timed")
    c.add_argument("--warmup", type=int, default=15)
    c.add_argument("--windows", type=int, default=3)
    c.add_argument("--steps", type=int, default=15, help="steps per timed window")
    c.add_argument("--loss-steps", type=int, default=50)
    c.add_argument("--loss-batch", type=int, default=64)
    c.add_argument("--eval-windows", type=int, default=20)
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra overrides for every run")
    r = sub.add_parser("report", help="compare the parts of 1 and N ranks, write the JSON")
    r.add_argument("out")
    r.add_argument("one")
    r.add_argument("two")
    args = p.parse_args(argv)
    return _check(args) if args.cmd == "check" else _report(args)


if __name__ == "__main__":
    sys.exit(main())
