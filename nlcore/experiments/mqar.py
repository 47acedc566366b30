r"""Train and test any nlcore sequence model on multi-query associative recall (MQAR).

The task (`nlcore.data.mqar`, after Zoology, Arora et al. ICLR 2024, §3): P key-value pairs,
then each key queried once; the model must emit the paired value at the query. Every
training batch is fresh and every row starts from the zero state (`model.init_state`), so
a model can only answer from what it stored within the row. Training minimises the
cross-entropy at the query positions Q only,

    \mathcal{L} = -\frac{1}{|Q|} \sum_{(b,t) \in Q} \log p_\theta(y_{b,t} \mid x_{b,\le t}),

and the test metric is the query accuracy on a fixed held-out set,
(1/|Q|) Σ_Q [argmax_v logits_{b,t,v} = y_{b,t}] (chance: 1/n_values).

A step (`train_step`) is built from the trainer's parts: its autocast and float32 loss
(`nlcore.accel.precision`; targets outside Q are `IGNORE`, that cross-entropy's ignore index),
its learning-rate schedule (`nlcore.training.schedule`, warm-up then cosine) and the CMS's
global-norm clip (`nlcore.optim.sliced.clip_grad_norm`). The `Trainer` class does not fit the
task: it reads a character corpus as carried windows (`CharStream`, `StateCarrier`), steps the
model's CMS levels and scores bits per character, whereas MQAR draws fresh rows from a seeded
generator, resets every row and scores query accuracy. Nor does a CMS level fit the optimizer:
a level decays all its parameters alike, and MQAR's AdamW decays only the matrices. HOPE's
in-forward writes learn from each row's next tokens (no `targets` are passed): the query labels
exist only at Q.

`run_mqar(cfg)` is one run (summary.json + meta.json when given a folder); `run_mqar_grid`
runs models x sequence lengths x seeds, skipping finished runs, and writes the runs.csv,
summary.json and meta.json of `nlcore.results`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from nlcore import repro
from nlcore.accel.precision import autocast_ctx, fp32_cross_entropy
from nlcore.config import ModelConfig, override
from nlcore.data.mqar import IGNORE, MQARSpec, generate, held_out, split_generator
from nlcore.models import build_model
from nlcore.optim.sliced import clip_grad_norm
from nlcore.training.schedule import lr_multiplier

GRID_METRICS = ("accuracy", "train_loss", "train_accuracy", "chars_per_s", "wall_time_s", "params")


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{name}: {msg}")


def _small_model(kind: str = "lstm_lm") -> ModelConfig:
    return ModelConfig(kind=kind, d_model=128, d_ff=256, n_layers=2, n_heads=2)


@dataclass(frozen=True)
class MQARConfig:
    """One MQAR run: the model, the task's shape, the optimizer's numbers, the seed and the device."""

    model: ModelConfig = field(default_factory=_small_model)
    seq_len: int = 256  # L
    n_pairs: int = 16  # P pairs per row, each queried once
    n_keys: int = 256
    n_values: int = 256  # chance accuracy = 1 / n_values
    n_noise: int = 1  # filler ids
    batch_size: int = 64  # B fresh rows per step
    eval_batch_size: int | None = None  # None: batch_size
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.1  # on matrices (ndim >= 2) only
    warmup: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0  # global gradient norm; 0 disables
    eval_sequences: int = 1000  # rows of the fixed test set
    log_every: int = 50
    seed: int = 0  # model init (torch.manual_seed) and the train/test data streams
    device: str = "auto"
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | off

    def spec(self) -> MQARSpec:
        return MQARSpec(self.seq_len, self.n_pairs, self.n_keys, self.n_values, self.n_noise)

    def validate(self) -> MQARConfig:
        for name in ("batch_size", "steps", "eval_sequences", "log_every"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _check(self.eval_batch_size is None or self.eval_batch_size >= 1, "eval_batch_size",
               f"must be >= 1 or None, got {self.eval_batch_size}")
        _check(self.lr > 0.0, "lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0.0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(0 <= self.warmup <= self.steps, "warmup", f"must be in [0, steps={self.steps}], got {self.warmup}")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.grad_clip >= 0.0, "grad_clip", f"must be >= 0, got {self.grad_clip}")
        _check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        _check(self.amp in ("auto", "bf16", "off"), "amp", f"must be 'auto', 'bf16' or 'off', got {self.amp!r}")
        self.spec()  # the task's own checks: seq_len, n_pairs, n_keys, n_values, n_noise
        self.model.validate("model")
        return self


def smoke(kind: str = "lstm_lm") -> MQARConfig:
    """Seconds on a CPU: the full preset's code path with smaller numbers."""
    return MQARConfig(model=replace(_small_model(kind), d_model=32, d_ff=64, mem_chunk=16, cms_chunks="16,64"),
                      seq_len=64, n_pairs=4, n_keys=32, n_values=32, batch_size=16, steps=30,
                      warmup=5, lr=3e-3, eval_sequences=64, log_every=10, device="cpu", amp="off")


def full(kind: str = "lstm_lm") -> MQARConfig:
    """The GPU preset: a 2-layer d_model=128 model, L = 256 with 16 pairs."""
    return MQARConfig(model=_small_model(kind), seq_len=256, n_pairs=16, batch_size=128, steps=4000,
                      warmup=200, eval_sequences=2000, log_every=100)


PRESETS: dict[str, Callable[[str], MQARConfig]] = {"smoke": smoke, "full": full}


def preset(mode: str, kind: str = "lstm_lm", sets: Sequence[str] = ()) -> MQARConfig:
    """The `mode` preset for model `kind`, with `key=value` overrides (`model.d_model=64`, `lr=3e-4`)."""
    if mode not in PRESETS:
        raise ValueError(f"mode: must be one of {sorted(PRESETS)}, got {mode!r}")
    cfg = PRESETS[mode](kind)
    for pair in sets:
        key, eq, value = pair.partition("=")
        if not eq:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        cfg = override(cfg, key.strip(), value.strip())
    return cfg.validate()


# ----------------------------------------------------------------------------- metric


def query_hits(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, queries) as device scalars: argmax over the whole vocabulary at every position
    whose target is not IGNORE; logits (B, L, V), y (B, L). No host synchronisation."""
    mask = y != IGNORE  # (B, L) query positions
    correct = (logits.argmax(dim=-1) == y) & mask  # (B, L)
    return correct.sum(), mask.sum()


def query_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    correct, total = query_hits(logits, y)
    return float(correct) / max(int(total), 1)


# ----------------------------------------------------------------------------- one run


def _optimizer(model: torch.nn.Module, cfg: MQARConfig) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on the matrices only."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]  # matrices and embeddings
    rest = [p for p in params if p.ndim < 2]  # biases, norm gains
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.98))


def train_step(model, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], x: torch.Tensor,
               y: torch.Tensor, *, lr: float, grad_clip: float, device: torch.device,
               amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One step on the rows x, y (B, L): forward from the zero state under autocast, the trainer's
    float32 cross-entropy over the query positions, backward, then AdamW at learning rate `lr`
    on the gradients clipped to global norm `grad_clip` (0: unclipped). Returns (loss, logits
    (B, L, V)); the gradients are dropped for the next step."""
    with autocast_ctx(device, amp):
        logits, _ = model(x, model.init_state(x.shape[0], device))  # (B, L, V)
    loss = fp32_cross_entropy(logits, y)  # IGNORE is its ignore index: the mean over Q
    loss.backward()
    for group in opt.param_groups:
        group["lr"] = lr
    if grad_clip > 0:
        clip_grad_norm(params, grad_clip)  # the CMS's clip: torch's total 2-norm rule
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss, logits


@torch.no_grad()  # not inference_mode: memory models may differentiate inside their forward
def evaluate(model, data, *, batch_size: int, device: torch.device, amp: bool) -> dict:
    """Query accuracy of `model` on the rows of `data` (an MQARBatch), each from the zero state."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    total = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, data.x.shape[0], batch_size):
        x, y = data.x[i:i + batch_size], data.y[i:i + batch_size]  # (b, L) each
        with autocast_ctx(device, amp):
            logits, _ = model(x, model.init_state(x.shape[0], device))  # (b, L, V)
        c, n = query_hits(logits, y)
        correct += c
        total += n
    model.train(was_training)
    n_queries = int(total)
    return {"accuracy": int(correct) / max(n_queries, 1), "queries": n_queries}


def run_mqar(cfg: MQARConfig, out_dir: str | Path | None = None, progress: bool = True,
             command: str | None = None) -> dict:
    """Train `cfg.model` on fresh MQAR batches for `cfg.steps` steps, then test it on the fixed
    held-out set; return the summary (and write summary.json + meta.json into `out_dir`)."""
    cfg.validate()
    t_start = time.perf_counter()
    device = repro.pick_device(cfg.device)
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    spec = cfg.spec()
    repro.seed_everything(cfg.seed)
    model = build_model(cfg.model, spec.vocab_size).to(device)
    model.train()
    opt = _optimizer(model, cfg)
    mult = lr_multiplier("cosine", cfg.steps, cfg.warmup, cfg.min_lr_ratio)
    g_train = split_generator(cfg.seed, "train", device)
    test = held_out(spec, cfg.eval_sequences, cfg.seed, device)
    params = [p for p in model.parameters() if p.requires_grad]

    history: list[dict] = []
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)  # over the log interval
    hits = torch.zeros((), dtype=torch.long, device=device)
    queries = torch.zeros((), dtype=torch.long, device=device)
    n_in_interval, diverged_at = 0, None
    train_time, t0 = 0.0, time.perf_counter()
    bar = tqdm(total=cfg.steps, disable=not progress, desc=f"mqar {cfg.model.kind} L={cfg.seq_len}",
               unit="step", dynamic_ncols=True)
    step = 0
    while step < cfg.steps:
        step += 1
        x, y = generate(spec, cfg.batch_size, g_train)  # (B, L) each, fresh every step
        loss, logits = train_step(model, opt, params, x, y, lr=cfg.lr * mult(step), grad_clip=cfg.grad_clip,
                                  device=device, amp=amp)
        loss_sum += loss.detach().float()
        c, n = query_hits(logits.detach(), y)
        hits += c
        queries += n
        n_in_interval += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            train_time += time.perf_counter() - t0
            tot_loss, tot_hits, tot_q = torch.stack([loss_sum, hits.float(), queries.float()]).tolist()  # one sync
            rec = {"step": step, "train_loss": tot_loss / n_in_interval,
                   "train_accuracy": tot_hits / max(tot_q, 1.0), "lr": cfg.lr * mult(step)}
            history.append(rec)
            bar.set_postfix(loss=f"{rec['train_loss']:.3f}", acc=f"{rec['train_accuracy']:.3f}")
            loss_sum.zero_()
            hits.zero_()
            queries.zero_()
            n_in_interval = 0
            if not math.isfinite(rec["train_loss"]):  # stop, but still test and report it
                diverged_at = step
                break
            t0 = time.perf_counter()
    bar.close()
    ev = evaluate(model, test, batch_size=cfg.eval_batch_size or cfg.batch_size, device=device, amp=amp)
    wall = time.perf_counter() - t_start
    summary = {
        "accuracy": ev["accuracy"], "test_queries": ev["queries"], "chance_accuracy": 1.0 / cfg.n_values,
        "train_loss": history[-1]["train_loss"], "train_accuracy": history[-1]["train_accuracy"],
        "steps": step, "diverged_at_step": diverged_at, "wall_time_s": wall, "train_time_s": train_time,
        "chars_per_s": step * cfg.batch_size * cfg.seq_len / max(train_time, 1e-9),  # tokens per second
        "params": sum(p.numel() for p in model.parameters()),
        "model": cfg.model.kind, "seq_len": cfg.seq_len, "n_pairs": cfg.n_pairs, "seed": cfg.seed,
        "device": str(device), "amp": amp, "history": history, "config": dataclasses.asdict(cfg),
    }
    if out_dir is not None:
        from nlcore.results import write_run  # the only module that writes results

        write_run(out_dir, config=cfg, summary=summary, command=command, wall_time_s=wall, device=device,
                  extra={"experiment": "mqar", "vocab_size": spec.vocab_size})
    return summary


# ----------------------------------------------------------------------------- grid


def pairs_for(seq_len: int, n_pairs: int | str | None, base: int) -> int:
    """P for a length: `base` (None), a fixed int, or "scale" (L / 16: 16 pairs at L = 256)."""
    if n_pairs is None:
        return base
    if n_pairs == "scale":
        return max(1, seq_len // 16)
    if isinstance(n_pairs, int) and not isinstance(n_pairs, bool):
        return n_pairs
    raise ValueError(f"n_pairs: must be an int, 'scale' or None, got {n_pairs!r}")


def run_mqar_grid(models: Mapping[str, ModelConfig], lengths: Sequence[int], seeds: Sequence[int],
                  out_root: str | Path, *, base: MQARConfig | None = None, n_pairs: int | str | None = None,
                  progress: bool = False, command: str | None = None, echo: bool = True) -> pd.DataFrame:
    """Every (model label, seq_len, seed) into `<out_root>/runs/<label>/L<seq_len>/seed<k>/`, skipping
    runs whose summary.json exists; then runs.csv (tidy: config = the model label, seq_len,
    n_pairs, seed, metric, value), summary.json and meta.json in `out_root`. Returns the runs table."""
    from nlcore.results import jsonable, read_json, write_experiment

    base = base or full()
    out_root = Path(out_root)
    rows = []
    for label in models:
        _check(bool(label) and "/" not in label and label not in (".", ".."), "models", f"bad label {label!r}")
    for label, model_cfg in models.items():
        for L in lengths:
            for seed in seeds:
                cfg = replace(base, model=model_cfg, seq_len=L, seed=seed,
                              n_pairs=pairs_for(L, n_pairs, base.n_pairs)).validate()
                run_dir = out_root / "runs" / label / f"L{L}" / f"seed{seed}"
                if (run_dir / "summary.json").exists():
                    s = read_json(run_dir / "summary.json")
                    _check(s.get("config") == jsonable(cfg), "out_root",
                           f"{run_dir} holds a run of another configuration; use a new folder")
                else:
                    s = run_mqar(cfg, run_dir, progress=progress, command=command)
                if echo:
                    print(f"[mqar] {label} L={L} P={cfg.n_pairs} seed {seed}: accuracy {s['accuracy']:.3f} "
                          f"(loss {s['train_loss']:.3f}, {s['wall_time_s']:.0f} s)", flush=True)
                rows += [{"config": label, "seq_len": L, "n_pairs": cfg.n_pairs, "seed": seed, "metric": m,
                          "value": float("nan") if s.get(m) is None else float(s[m])} for m in GRID_METRICS]
    runs = pd.DataFrame(rows, columns=["config", "seq_len", "n_pairs", "seed", "metric", "value"])
    device = str(repro.pick_device(base.device))
    meta = {"experiment": "mqar", "command": command, "device": device, "seeds": list(seeds),
            "lengths": list(lengths), "n_pairs": n_pairs, "base": dataclasses.asdict(base),
            "models": {k: dataclasses.asdict(v) for k, v in models.items()}}
    write_experiment(out_root, runs, meta=meta)
    return runs
