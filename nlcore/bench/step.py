"""Step-time benchmark: steady-state training step time of named configurations.

Every configuration is built through the real `Trainer` (so what is timed is exactly
`Trainer.train_step`: forward, loss, surprise objective, backward, CMS updates, state carry).
Per configuration: build, warm up W steps (its memory is measured here, alone), then time K
windows of M steps each. Windows are interleaved across configurations in alternating order
(A B C, C B A, A B C, ...), so a slow drift of the machine (clocks, temperature, other load)
hits every configuration alike and cancels from the paired ratios. On CUDA a window is timed
with CUDA events after a device synchronisation; on CPU with `time.perf_counter`.

Reported per configuration: step time (median, min, max, IQR over the K windows, ms),
characters/s = B·T / median step, peak memory (CUDA only), and two paired ratios with their
spread over the K repeats: `ratio_to_baseline` (step time / the baseline's, same repeat) and
`overhead_vs_persistent` (ratio to `seed_persistent` minus one): for example the surprise
objective's cost, `seed_surprise_hooks` against `seed_surprise_reference`.
For every configuration whose model has an LSTM, also `floor_ms`, the LSTM's own forward +
backward at the same shape and precision (`nlcore.bench.floor`), and `ratio_to_floor` = step / floor.

Configurations: the names in `NAMED` (overrides on the `seed` preset, or on `smoke` with
``--smoke``), custom ``name=key=v,key=v`` (``name=@named,key=v`` starts from a named one), or a
registered experiment's configuration ``STEM:LABEL`` (``07_scaling:hope_8.2M``: the run's own
overrides in the full mode, or the smoke mode with ``--smoke``).
The bench-only key ``surprise.create_graph=false`` runs the reference without the unused
second-order graph. Entry points: ``python -m nlcore bench`` (cli) or ``python -m nlcore.bench.step``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

SURPRISE = ["surprise.weights.fast=0.05", "surprise.weights.medium=0.01"]
NAMED: dict[str, list[str]] = {
    "seed_reset": ["state.reset=every_batch"],
    "seed_persistent": [],
    "seed_surprise_hooks": [*SURPRISE, "surprise.impl=hooks"],
    "seed_surprise_reference": [*SURPRISE, "surprise.impl=reference"],
    "plain_lstm": ["model.kind=lstm_lm", "cms.levels.medium.chunk=1", "cms.levels.slow.chunk=1"],
    "seed_surprise_reference_nocg": [*SURPRISE, "surprise.impl=reference", "surprise.create_graph=false"],
}
NAMED.update({  # the plain eager step (no graph, nothing compiled): what the graph and compile add
    "seed_persistent_eager": ["cuda_graph=off", "compile=off"],
    "seed_surprise_hooks_eager": [*SURPRISE, "surprise.impl=hooks", "cuda_graph=off", "compile=off"],
    "seed_nocompile": ["compile=off"],  # graphed but not compiled: compile's own gain
    "seed_batch256": ["data.batch_size=256"],  # a saturating batch (not in DEFAULT: too big for --smoke)
    "seed_delta": ["cms.levels.medium.optimizer=delta", "cms.levels.slow.optimizer=delta",
                   "cms.levels.medium.lr=0.5", "cms.levels.slow.lr=0.5"],  # eager (auto: no graph)
    "plain_lstm_eager": [*NAMED["plain_lstm"], "cuda_graph=off", "compile=off"],
})
# The 06 models at matched parameters (~3.3 M) and the 06 shapes (16 x 512): results/bench/models_06.json
_S06 = ["data.seq_len=512", "data.batch_size=16"]
_T4 = ["model.d_model=256", "model.n_layers=4", "model.n_heads=4"]
MODELS_06 = {
    "nested_lstm": [*_S06, "model.d_model=416", "model.d_ff=1024"],
    "transformer": [*_S06, "model.kind=transformer", *_T4, "model.d_ff=1024"],
    "transformer_eager": [*_S06, "model.kind=transformer", *_T4, "model.d_ff=1024", "cuda_graph=off"],
    "titans": [*_S06, "model.kind=titans", *_T4, "model.d_ff=768"],
    "titans_linear": [*_S06, "model.kind=titans", "model.memory=linear", *_T4, "model.d_ff=768"],
    "hope": [*_S06, "model.kind=hope", *_T4, "model.d_ff=448"],
    "hope_outer": [*_S06, "model.kind=hope", *_T4, "model.d_ff=448", "model.cms_mode=outer"],
}
NAMED.update(MODELS_06)
# more 06 rows, benched in a report of their own beside the Transformer and HOPE
MODELS_06_TEACH = {
    "titans_cap": [*MODELS_06["titans"], "model.mem_retention=init", "model.mem_normalize=true",
                   "model.mem_step_max=0.5", "model.mem_state_max=0.5"],
    "hope_layer_teach": [*MODELS_06["hope"], "model.cms_teach=layer"],
}
NAMED.update(MODELS_06_TEACH)
DEFAULT = ["seed_reset", "seed_persistent", "seed_surprise_hooks", "seed_surprise_reference", "seed_delta",
           "plain_lstm", "seed_nocompile", "seed_persistent_eager", "seed_surprise_hooks_eager", "plain_lstm_eager"]
# Scaling sweeps (python -m nlcore bench --scaling): one knob at a time around the seed preset.
SCALING = {
    "batch": [("data.batch_size", v) for v in (32, 64, 128, 256, 512)],
    "width": [("model.d_model", v) for v in (256, 512, 1024)],
    "window": [("data.seq_len", v) for v in (256, 512, 1024, 2048)],
}


def scaling_specs() -> list[str]:
    """`name=key=v` specs of the scaling sweeps (d_ff follows the width at 2x)."""
    out = []
    for knob, pairs in SCALING.items():
        for key, v in pairs:
            extra = f",model.d_ff={2 * v}" if key == "model.d_model" else ""
            out.append(f"{knob}_{v}={key}={v}{extra}")
    return out


PERSISTENT = "seed_persistent"
SMOKE_OVERRIDES = ["data.synth_chars=20000"]  # on top of the smoke preset: build in a blink
BENCH_KEYS = {"surprise.create_graph"}  # applied to the built Trainer, not to the config


def experiment_config(spec: str, smoke: bool = False) -> tuple[str, list[str]]:
    """`STEM:LABEL` -> (`STEM:LABEL`, the overrides its runs train with in the experiment's full (or
    smoke) mode), so a step time belongs to exactly the configuration of a committed run."""
    from nlcore.experiments.registry import EXPERIMENTS

    stem, _, label = spec.partition(":")
    if stem not in EXPERIMENTS:
        raise KeyError(f"bench --configs: {spec!r}: unknown experiment {stem!r}; experiments are {sorted(EXPERIMENTS)}")
    gcs, _, common = EXPERIMENTS[stem].grid("smoke" if smoke else "full")
    found = {g.label: g for g in gcs}
    if label not in found:
        raise KeyError(f"bench --configs: {spec!r}: {stem} has no configuration {label!r}; it has {sorted(found)}")
    if found[label].preset != ("smoke" if smoke else "seed"):
        raise ValueError(f"bench --configs: {spec!r} trains on the {found[label].preset!r} preset, not the bench's")
    return spec, [*common, *found[label].overrides]


def parse_config(spec: str, smoke: bool = False) -> tuple[str, list[str]]:
    """`name` (in NAMED), `name=key=v,key=v` / `name=@named,key=v` or `STEM:LABEL` (experiment_config)
    -> (name, overrides). A comma starts a new item only before `key=` or `@`, so values may hold
    commas (`model.cms_chunks=128,256`)."""
    if ":" in spec and "=" not in spec:
        return experiment_config(spec, smoke)
    if "=" not in spec:
        if spec not in NAMED:
            raise KeyError(f"bench --configs: unknown configuration {spec!r}; named ones are {sorted(NAMED)}")
        return spec, list(NAMED[spec])
    name, rest = spec.split("=", 1)
    if not name.isidentifier():
        raise ValueError(f"bench --configs: {spec!r}: the name before '=' must be an identifier")
    items = [s.strip() for s in re.split(r",(?=\s*(?:@|[\w.]+=))", rest) if s.strip()]
    out: list[str] = []
    for it in items:
        if it.startswith("@"):
            out += parse_config(it[1:])[1]
        elif "=" not in it:
            raise ValueError(f"bench --configs: {spec!r}: expected key=value, got {it!r}")
        else:
            out.append(it)
    return name, out


def build_trainer(overrides: list[str], *, smoke: bool, steps: int, device: str | None = None):
    """A `Trainer` of the seed (or smoke) preset with `overrides`; bench-only keys applied after."""
    from nlcore.config import apply_overrides, preset
    from nlcore.training.trainer import Trainer

    bench = {k: v for k, _, v in (o.partition("=") for o in overrides) if k.strip() in BENCH_KEYS}
    pairs = [o for o in overrides if o.partition("=")[0].strip() not in BENCH_KEYS]
    base = (SMOKE_OVERRIDES if smoke else []) + ([f"device={device}"] if device else [])
    cfg = apply_overrides(preset("smoke" if smoke else "seed"),
                          base + pairs + [f"steps={steps}", "eval_every=0", "ckpt_every=0"])
    trainer = Trainer(cfg, None, progress=False, command="bench")
    if "surprise.create_graph" in bench:
        if trainer.surprise is None:
            raise ValueError("bench: surprise.create_graph needs surprise weights")
        trainer.surprise.create_graph = bench["surprise.create_graph"].strip().lower() in ("1", "true", "yes", "on")
    return trainer


def _steps(trainer, n: int) -> None:
    for _ in range(n):
        trainer.step += 1
        trainer.train_step(trainer.step)


def _drain(trainer) -> None:  # untimed: keep telemetry buffers short (and check finiteness)
    trainer.cms.drain_telemetry()
    if trainer.surprise is not None:
        trainer.surprise.drain_metrics()


def time_window(trainer, m: int) -> float:
    """Seconds per step over one window of `m` steps (device-synchronised)."""
    from nlcore.bench.floor import ms_per_call

    return ms_per_call(lambda: _steps(trainer, 1), m, trainer.device) / 1e3


def _quantiles(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "q25": q[0], "q75": q[2],
            "iqr": q[2] - q[0]}


def run(specs: list[str] | None = None, *, smoke: bool = False, warmup: int = 20, windows: int = 10,
        steps: int = 50, baseline: str | None = None, device: str | None = None) -> dict:
    """Benchmark the configurations `specs` (default: DEFAULT) and return the JSON-ready report."""
    import torch

    from nlcore import repro
    from nlcore.bench.floor import recurrence_floor

    parsed = [parse_config(s, smoke) for s in (specs or DEFAULT)]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"bench --configs: duplicate names {names}")
    baseline = baseline or (PERSISTENT if PERSISTENT in names else names[0])
    if baseline not in names:
        raise ValueError(f"bench --baseline: {baseline!r} is not among the configurations {names}")
    total = warmup + windows * steps + 1
    trainers, info = {}, {}
    for name, ov in parsed:  # build and warm up one at a time: memory is measured alone
        base_mem = 0
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            base_mem = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        t = build_trainer(ov, smoke=smoke, steps=total, device=device)
        _steps(t, warmup)
        _drain(t)
        peak = step_mem = None
        if t.device.type == "cuda":
            torch.cuda.synchronize(t.device)
            peak = torch.cuda.max_memory_allocated(t.device) - base_mem
            torch.cuda.reset_peak_memory_stats(t.device)
            before = torch.cuda.memory_allocated(t.device)
            _steps(t, 1)
            torch.cuda.synchronize(t.device)
            step_mem = torch.cuda.max_memory_allocated(t.device) - before
        d = t.cfg.data
        info[name] = {"overrides": ov, "batch_size": d.batch_size, "seq_len": d.seq_len,
                      "d_model": t.cfg.model.d_model, "cuda_graph": t.cuda_graph,
                      "params": sum(p.numel() for p in t.model.parameters()),
                      "peak_mem_bytes": peak, "step_mem_bytes": step_mem}
        trainers[name] = t
    per = {n: [] for n in names}  # seconds per step, one entry per window
    for r in range(windows):
        for n in (names if r % 2 == 0 else names[::-1]):  # A B C, C B A, ...: drift cancels in pairs
            per[n].append(time_window(trainers[n], steps))
            _drain(trainers[n])
    dev = next(iter(trainers.values())).device
    configs = {}
    for n in names:
        ms = [s * 1e3 for s in per[n]]
        q = _quantiles(ms)
        rb = _quantiles([a / b for a, b in zip(per[n], per[baseline])])
        rec = {**info[n], "step_ms_windows": ms, "step_ms_median": q["median"], "step_ms_min": q["min"],
               "step_ms_max": q["max"], "step_ms_iqr": q["iqr"],
               "chars_per_s": info[n]["batch_size"] * info[n]["seq_len"] / (q["median"] / 1e3),
               "ratio_to_baseline": rb["median"],
               "ratio_to_baseline_spread": {k: rb[k] for k in ("min", "q25", "q75", "max")},
               "overhead_vs_persistent": None, "overhead_vs_persistent_spread": None}
        if PERSISTENT in per:
            op = _quantiles([a / b - 1.0 for a, b in zip(per[n], per[PERSISTENT])])
            rec["overhead_vs_persistent"] = op["median"]
            rec["overhead_vs_persistent_spread"] = {k: op[k] for k in ("min", "q25", "q75", "max")}
        configs[n] = rec
    floors: dict[tuple, dict] = {}  # the LSTM alone, per shape (nlcore.bench.floor)
    for n in names:
        t, c = trainers[n], configs[n]
        lstm = getattr(t.model, "lstm", None)
        if isinstance(lstm, torch.nn.LSTM):
            key = (c["batch_size"], c["seq_len"], lstm.input_size, lstm.hidden_size, t.amp)
            if key not in floors:
                floors[key] = recurrence_floor(lstm, c["batch_size"], c["seq_len"], amp=t.amp,
                                               windows=windows, steps=steps)
            c["floor_ms"] = floors[key]["ms_median"]
            c["ratio_to_floor"] = c["step_ms_median"] / c["floor_ms"]
    env = repro.capture_environment(dev)
    return {
        "schema": "nlcore.bench.step/1", "command": repro.command_line(), "git": repro.git_info(),
        "device": str(dev), "device_name": env["gpu_name"] if dev.type == "cuda" else env["machine"],
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": env["cudnn"], "environment": env,
        "settings": {"smoke": smoke, "warmup": warmup, "windows": windows, "steps_per_window": steps,
                     "baseline": baseline, "order": "interleaved, alternating direction per repeat",
                     "timer": "cuda_events" if dev.type == "cuda" else "perf_counter"},
        "configs": configs, "floors": list(floors.values()),
    }


def table(report: dict) -> str:
    """A short fixed-width summary of a report."""
    head = (f"{'config':<30} {'ms/step':>9} {'IQR':>7} {'chars/s':>11} {'peak MB':>8} {'ratio':>6} {'overhead':>17}"
            f" {'/floor':>7}")
    lines = [f"device: {report['device_name']} ({report['device']}), baseline {report['settings']['baseline']}", head]
    for n, c in report["configs"].items():
        mem = f"{c['peak_mem_bytes'] / 2**20:8.1f}" if c["peak_mem_bytes"] is not None else f"{'-':>8}"
        ov = c["overhead_vs_persistent"]
        sp = c["overhead_vs_persistent_spread"]
        ovs = f"{100 * ov:+6.1f}% [{100 * sp['q25']:+.1f},{100 * sp['q75']:+.1f}]" if ov is not None else "-"
        fl = f"{c['ratio_to_floor']:7.3f}" if c.get("ratio_to_floor") is not None else f"{'-':>7}"
        lines.append(f"{n:<30} {c['step_ms_median']:9.3f} {c['step_ms_iqr']:7.3f} {c['chars_per_s']:11.0f} "
                     f"{mem} {c['ratio_to_baseline']:6.3f} {ovs:>17} {fl}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("--configs", nargs="*", default=None,
                   help=f"named ({', '.join(NAMED)}) or name=key=v,key=v (name=@named,key=v)")
    p.add_argument("--smoke", action="store_true", help="smoke preset and sizes (CPU, seconds)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps per configuration")
    p.add_argument("--windows", type=int, default=10, help="timed windows per configuration (K)")
    p.add_argument("--steps", type=int, default=50, help="steps per window (M)")
    p.add_argument("--baseline", default=None, help=f"ratio_to_baseline reference (default {PERSISTENT})")
    p.add_argument("--device", default=None, help="override the preset's device (cpu, cuda)")
    p.add_argument("--scaling", action="store_true",
                   help="benchmark the scaling sweeps (batch, width, window) instead of --configs")
    return p


def main(args: argparse.Namespace) -> int:
    """`python -m nlcore bench`: options missing from `args` take `add_arguments`' defaults."""
    defaults = vars(add_arguments(argparse.ArgumentParser()).parse_args([]))
    opt = {k: getattr(args, k, v) for k, v in defaults.items()}
    for k in ("warmup", "windows", "steps"):
        if opt[k] < (0 if k == "warmup" else 1):
            raise ValueError(f"bench --{k}: must be >= {0 if k == 'warmup' else 1}, got {opt[k]}")
    specs = scaling_specs() if opt["scaling"] else opt["configs"]
    if opt["scaling"] and opt["baseline"] is None:
        opt["baseline"] = "batch_32"
    report = run(specs, smoke=opt["smoke"], warmup=opt["warmup"], windows=opt["windows"],
                 steps=opt["steps"], baseline=opt["baseline"], device=opt["device"])
    if opt["out"]:
        out = Path(opt["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(add_arguments(argparse.ArgumentParser(prog="python -m nlcore.bench.step")).parse_args()))
