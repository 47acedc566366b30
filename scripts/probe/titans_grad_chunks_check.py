"""`model.mem_grad_chunks` as nlcore builds it, on the weights and windows of the state-Jacobian probe.

    NLCORE_DATA=... PYTHONPATH=$PWD python scripts/probe/titans_grad_chunks_check.py --out FILE.json \
        --ckpt NAME=PATH [NAME=PATH ...] [--chunk 16] [--k 0 1 4]

For each checkpoint (a `python -m nlcore train` run of 06's `titans_cap` size) and each k, the model
is built from its config with `model.mem_chunk` and `model.mem_grad_chunks=k` (no monkeypatching:
the library's own truncated backward), the checkpoint's weights loaded, and, in float64 on the
probe's windows (`titans_state_jacobian.windows`: two WikiText-2 valid rows, one 512-character
window read without gradient, then one with the loss), the loss and the gradient norm over all
parameters and over the memories' are measured. The probe replaced the memory's loop with its own
copy to truncate it; equal numbers here show the library computes what the probe measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from titans_state_jacobian import LN2, SIZE, windows  # noqa: E402

from nlcore.accel.precision import fp32_cross_entropy  # noqa: E402
from nlcore.config import apply_overrides, preset  # noqa: E402
from nlcore.training.trainer import load_data, model_for  # noqa: E402


def measure(model, x, y, T: int) -> dict:
    """The loss (bpc) and gradient norms of the second window, the first read without gradient."""
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        _, state = model(x[:, :T], None)
    logits, _ = model(x[:, T:], state)
    loss = fp32_cross_entropy(logits, y[:, T:])
    loss.backward()
    grads = {n: p.grad.double() for n, p in model.named_parameters() if p.grad is not None}
    norm = lambda keep: torch.sqrt(sum(g.square().sum() for n, g in grads.items() if keep(n))).item()  # noqa: E731
    return {"loss_bpc": loss.item() / LN2, "grad_norm": norm(lambda n: True),
            "grad_norm_memory_params": norm(lambda n: n.startswith("mems."))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the JSON report")
    ap.add_argument("--ckpt", nargs="+", required=True, help="NAME=PATH of trained checkpoints")
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--k", type=int, nargs="+", default=[0, 1, 4], help="model.mem_grad_chunks values (0: full)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    T = 512
    base = apply_overrides(preset("seed"), [*SIZE, f"data.seq_len={T}", f"model.mem_chunk={args.chunk}"])
    corpus = load_data(base)
    x, y = windows(corpus.ids["valid"], 2, T, 1, 0)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = {"code": rev, "torch": torch.__version__, "dtype": "float64", "chunk": args.chunk, "results": []}
    for name, path in (s.split("=", 1) for s in args.ckpt):
        weights = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["model"]
        for k in args.k:
            cfg = apply_overrides(base, [f"model.mem_grad_chunks={k}"])
            model = model_for(cfg, corpus.tokenizer.vocab_size)
            model.load_state_dict(weights)
            r = {"weights": name, "k": k, **measure(model.double(), x, y, T)}
            print(json.dumps(r), flush=True)
            report["results"].append(r)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
