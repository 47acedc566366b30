"""GPU self-check of HOPE's writes taught by each layer's own loss (`model.cms_teach=layer`).

Usage, from the repository root on the GPU machine:

    python scripts/reproduce/check_layer_teach.py OUT.json [--device cuda]

In float32 (no autocast) on a HOPE of 2 layers, d_model 64, memory chunk 64 and chain chunks 64
and 128, over windows of 4 x 256 characters with a carried state, one training step's logits, new
state and parameter gradients are compared between:

- the window's outer pass and the segments' own graphs (`outer_pass`);
- the compiled parts (`torch.compile`, inductor) and the eager model;
- the memory's chunked path (on CUDA its kernels) and its token-by-token reference;
- one layer under the layer teach and under the global teach (the same model).

Each comparison reports the largest difference relative to the largest magnitude of the reference
(logits, state, gradients) and passes below 1e-5 (2e-4 for the compiled parts, whose fused kernels
sum in another order). The record goes to OUT.json; the exit status is 1 if any comparison fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nlcore.accel.compile import compiler  # noqa: E402
from nlcore.config import ModelConfig  # noqa: E402
from nlcore.models import build_model  # noqa: E402

V = 97


def build(device, **kw):
    cfg = ModelConfig(**{**dict(kind="hope", d_model=64, d_ff=96, n_layers=2, n_heads=2, mem_chunk=64,
                                cms_chunks="64,128", cms_lr=0.01, cms_teach="layer"), **kw})
    torch.manual_seed(0)
    return build_model(cfg, V).to(device)


def step(model, x, y, state):
    model.zero_grad(set_to_none=True)
    logits, new = model(x, state, None, targets=y)
    F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {"logits": {"": logits.detach()}, "state": {k: v.detach() for k, v in new.items()}, "grads": grads}


def relative(a: dict, b: dict) -> dict[str, float]:
    """Per part, max |a - b| over the part's tensors divided by max |b|."""
    out = {}
    for part in b:
        diff = max((a[part][k].double() - b[part][k].double()).abs().max().item() for k in b[part])
        scale = max(b[part][k].double().abs().max().item() for k in b[part])
        out[part] = diff / max(scale, 1e-30)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(1)
    xy = torch.randint(0, V, (4, 257), generator=g).to(dev)
    x, y = xy[:, :-1], xy[:, 1:]
    ref = build(dev)
    state = {k: 0.1 * torch.randn(v.shape, generator=g).to(dev) for k, v in ref.init_state(4).items()}
    base = step(ref, x, y, state)
    checks = {}

    ref.outer_pass = "segments"
    checks["window_vs_segments"] = (relative(base, step(ref, x, y, state)), 1e-5)
    ref.outer_pass = "window"

    if dev.type == "cuda":
        compiled = build(dev)
        compiled.compile_parts(compiler("inductor"))
        checks["compiled_vs_eager"] = (relative(step(compiled, x, y, state), base), 2e-4)

    token = build(dev, mem_impl="token")
    checks["chunk_vs_token_memory"] = (relative(base, step(token, x, y, state)), 1e-5)

    one = {t: build(dev, n_layers=1, cms_teach=t) for t in ("layer", "global")}
    st1 = {k: v for k, v in state.items() if k.startswith("0.")}
    checks["one_layer_layer_vs_global"] = (relative(step(one["layer"], x, y, st1), step(one["global"], x, y, st1)), 1e-5)

    record = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
              "checks": {name: {"relative": rel, "tolerance": tol, "pass": all(v < tol for v in rel.values())}
                         for name, (rel, tol) in checks.items()}}
    Path(args.out).write_text(json.dumps(record, indent=1))
    for name, c in record["checks"].items():
        print(f"{name:28s} {'PASS' if c['pass'] else 'FAIL'}  " + "  ".join(f"{k} {v:.2e}" for k, v in c["relative"].items()))
    return 0 if all(c["pass"] for c in record["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
