"""Does the Titans MLP memory carry context? Train small Titans models on a CPU, then score valid with
the memory's writes on and off (a probe for choosing a parameterisation, not a result).

    PYTHONPATH=$PWD python3 scripts/probe/titans_mlp_writes.py [steps] [seeds] [variant | key=value ...]

seeds: a count N (seeds 0..N-1) or a comma list (2,3; one seed: 3,); key=value arguments override the probe's size
for every variant (e.g. model.mem_chunk=64). Each variant trains on the synthetic key-recall corpus
of the smoke preset (`nlcore.data.synthetic`: a key opens an episode and closes it 40-80 characters
later, beyond one memory chunk and often beyond one window),
so a model without attention can predict the closing key only through its memories. Printed per
variant and seed: valid bpc with writes, valid bpc with writes off (write step 0, retention 1: each
memory keeps its initial weights), their difference, and the memory's weights after the valid text
relative to their initial weights (|θ| / |θ_init|; 0 is the fixed point where the MLP memory's
gradient vanishes).
"""

from __future__ import annotations

import sys
import time

from nlcore.config import apply_overrides, preset
from nlcore.errors import NonFiniteError
from nlcore.models.memory_layers import TitansMemory, writes_off
from nlcore.training.trainer import Trainer

SIZE = ["data.seq_len=128", "data.batch_size=8", "model.mem_chunk=16", "model.d_model=64", "model.n_layers=2",
        "model.n_heads=4", "model.d_ff=128", "model.kind=titans", "eval_every=0", "ckpt_every=0", "log_every=100",
        "warmup=30", "cms.levels.fast.lr=3e-3", "data.synth_chars=200000"]
VARIANTS = {
    "linear": ["model.memory=linear"],
    "mlp_default": ["model.memory=mlp"],
    "mlp_init": ["model.memory=mlp", "model.mem_retention=init"],
    "mlp_init_norm": ["model.memory=mlp", "model.mem_retention=init", "model.mem_normalize=true"],
    "mlp_init_norm_x4": ["model.memory=mlp", "model.mem_retention=init", "model.mem_normalize=true",
                         "model.mem_step_max=0.25"],
    **{f"norm_s{x:g}": ["model.memory=mlp", "model.mem_retention=init", "model.mem_normalize=true",
                        f"model.mem_step_max={x:g}"] for x in (0.25, 0.5, 1.0, 2.0)},
    "normzero_s1": ["model.memory=mlp", "model.mem_retention=zero", "model.mem_normalize=true",
                    "model.mem_step_max=1"],
}


def memory_ratio(tr) -> float:
    """|θ| / |θ_init| of the first MLP memory after 4 valid windows (NaN for a linear memory)."""
    if not any(isinstance(m, TitansMemory) and m.memory == "mlp" for m in tr.model.modules()):
        return float("nan")
    T = tr.cfg.data.seq_len
    return tr.model.memory_ratio(tr.corpus.ids["valid"][: 4 * T].view(1, -1).to(tr.device), T)


def main(steps: int, seeds: list[int], args: list[str]) -> None:
    names, extra = [a for a in args if "=" not in a], [a for a in args if "=" in a]
    for name, ov in VARIANTS.items():
        if names and name not in names:
            continue
        for seed in seeds:
            t0 = time.perf_counter()
            cfg = apply_overrides(preset("smoke"), [*SIZE, *ov, *extra, f"steps={steps}", f"seed={seed}",
                                                    "device=cpu"])
            tr = Trainer(cfg, None, progress=False, command="probe")
            try:
                tr.run()
            except NonFiniteError as e:
                print(f"{name:18s} seed {seed}: {e} [{time.perf_counter() - t0:.0f} s]", flush=True)
                continue
            on, ratio = tr.evaluate("valid")["bpc"], memory_ratio(tr)
            with writes_off(tr.model):
                off = tr.evaluate("valid")["bpc"]
            print(f"{name:18s} seed {seed}: valid {on:.4f}, writes off {off:.4f} (cost {off - on:+.4f}), "
                  f"|theta|/|theta_init| {ratio:.3f} [{time.perf_counter() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    seeds_arg = sys.argv[2] if len(sys.argv) > 2 else "1"
    seed_list = [int(x) for x in seeds_arg.split(",") if x] if "," in seeds_arg else list(range(int(seeds_arg)))
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 600, seed_list, sys.argv[3:])
