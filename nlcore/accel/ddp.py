r"""Data-parallel training over torch.distributed: ``torchrun --nproc_per_node N -m nlcore train ...``.

N processes (ranks) train ONE model on the global batch of ``data.batch_size`` = B rows: the same
computation as one process training on those B rows, spread out. Launch with torchrun (or any
launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). The trainer calls
`from_env`, which initialises the process group (NCCL on CUDA, one GPU per rank, cuda:LOCAL_RANK;
gloo on CPU) and returns a `DataParallel`; in one process it returns `OneProcess`, which has the
same interface and communicates nothing. Everything goes through torch.distributed collectives.

Data. The stream keeps the global B-row layout of ``nlcore.data.streams`` (row length from B, not
B/N) and rank k reads rows [k·B/N, (k+1)·B/N) of every window (``CharStream(rows=...)``), so each
row's persistent recurrent state lives on one rank for the whole run, as in one process. B (and the
eval batch) must be divisible by N (checked, with a clear error).

Gradients: CMS-aware, one bucketed all-reduce per level update, no DistributedDataParallel wrapper.
A CMS level with chunk C accumulates C gradients in ``.grad`` and updates at steps divisible by C;
its gradients are needed on the other ranks only then, so `DataParallel.sync_level` (the CMS's
``grad_sync``) runs right before the level's aggregation, clipping and optimizer step: the level's
``.grad`` tensors are flattened into ONE bucket, all-reduced (SUM) and multiplied by 1/N, i.e.
AVERAGED (each rank's loss is the mean over its B/N·T characters, so the mean of the N rank
gradients is the gradient of the global mean loss), then copied back in place. The slow level
(C = 256) communicates 1/256 as often as the fast one; every collective is counted (`counts` per
level, `calls`). A partial chunk discarded at the end communicates nothing; a frozen level never
does. Why not DDP: (1) DDP all-reduces every trainable gradient in every backward, and its no_sync /
ignored-parameter switches would have to be toggled per level and per step; (2) DDP's reducer hooks
would run inside the backward that the CUDA-graph step (nlcore.accel.cuda_graph) captures, while
here the captured region holds no communication: the all-reduce is eager, between replays, on the
static ``.grad`` buffers (copied back in place, so they stay the graph's buffers); (3) what DDP
adds, overlapping the all-reduce with the backward, is worth little for a few MB of gradients per
level. The parameters are broadcast from rank 0 once at start (equal anyway: same seed).

A level's bucket (in the order of the level's parameters, the same on every rank): every trainable
parameter's gradient (zeros where a rank has none), one presence flag per parameter (a gradient no
rank produced stays None; one some ranks produced is averaged with zeros for the others, as the
global mean loss requires) and, for a delta-rule level (nlcore.optim.delta_rule.DeltaRule), the
pending statistics A = Σ x̂x̂ᵀ and B = Σ g x̂ᵀ (mode "summed") or Σ x (mode "batch_mean") of every
delta weight, SUMMED (not averaged) across ranks: the one-process statistics sum over all tokens.
Their token count becomes N × the rank's (equal shards: every rank records the same number of
tokens per call; plus `carried` after a resume on another N, see Checkpoints). The hooks record
g = ∇_yL_global = ∇_yL_rank / N, and grad_scale="per_token" multiplies it by the global token
count of the call (DeltaRule's `world_size`). Mode "sequential" keeps per-token records and is
refused.

Surprise (nlcore.surprise): the target is clip(∇_y L_global) with ∇_y L_global = ∇_y L_rank / N
on the rank's rows (the trainer builds `Surprise` with ``grad_scale = 1/N``); the injected gradient
2λ/numel(y_global)·(y−t) on the global scale is, times N (the rank's backward is N × the global
one), 2λ/numel(y_rank)·(y−t), which is what the rank's hook already adds. No communication.

Logging and evaluation. Per-step losses are averaged across ranks at log time (one all-reduce per
log interval, which also makes the finiteness check agree on every rank); the CMS telemetry is
computed on the averaged gradients, so it is the same everywhere. Evaluation runs each rank on its
rows of the eval stream and sums the nats and target counts (and the per-position sums) across
ranks: bpc = Σ nats / (Σ targets · ln 2), the one-process number. The recurrent-state and surprise
metrics in the log are rank 0's (its rows). Only rank 0 writes (metrics, summary, checkpoints) and
shows a progress bar; chars/s counts the global batch.

Checkpoints (written by rank 0; every rank takes part in one ``gather_object``). The payload has
the one-process format with every per-rank quantity in its global, N-independent form: the carried
state of all B rows (concatenated in rank order), the pending gradients of every level averaged
across ranks, the delta statistics summed, rank 0's RNG state. A one-process run or a run on any
N' dividing B resumes from it (each rank loads the averaged pending gradients: the average over N'
ranks of "average + new" is "average + average of new", exact; rank 0 takes the summed delta
statistics and the others none, while every rank remembers their token count in `carried`, so the
count at the update is carried + N' × the rank's; each rank slices its rows of the state). The
payload also keeps every rank's own part under ``"distributed"``; a resume on the same N loads
those and continues bit-identically on CPU. RNG: rank 0 continues the one-process stream (so N-rank
training equals one process exactly when nothing draws random numbers); ranks > 0 are reseeded
from (seed, rank) after initialisation, so their dropout masks are independent of rank 0's
(dropout is the only random draw in training; with dropout N ranks and one process agree in
distribution, not bitwise). Resuming on another N reseeds ranks > 0 from (seed, rank, step).

The 1-vs-N GPU check (throughput and loss agreement) is ``python -m nlcore.bench.ddp_check``.
NVLink multicast (NCCL NVLS, symmetric memory) is off by default (`ENV_DEFAULTS`): the buckets are
small and some hosts fail to initialise it.
"""

from __future__ import annotations

import datetime
import functools
import math
import os
from collections import deque

import torch
import torch.distributed as dist

from nlcore import repro

# NVLink multicast off (module docstring); defaults only: an explicit setting wins.
ENV_DEFAULTS = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
TIMEOUT_ENV = "NLCORE_DIST_TIMEOUT_S"  # collective timeout in seconds (default: torch's)
_OWNED = False  # True when this module created the default process group (shutdown destroys it)


# ----------------------------------------------------------------------------- set-up
def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_divisible(cfg, world_size: int) -> None:
    """Equal shards: B rows (and the eval batch) must split evenly over the ranks."""
    d = cfg.data
    for key, b in (("data.batch_size", d.batch_size), ("data.eval_batch_size", d.eval_batch_size)):
        if b is not None and b % world_size != 0:
            raise ValueError(f"{key}={b} is not divisible by the {world_size} ranks: each rank reads B/N "
                             f"contiguous rows of the global B-row layout; use a multiple of {world_size}")


def from_env(cfg) -> DataParallel | OneProcess:
    """The run's `DataParallel` under torchrun with more than one process (initialising the
    default process group if needed) or in an initialised group of > 1 ranks; else `OneProcess`."""
    global _OWNED
    if not dist.is_available():
        return OneProcess(repro.pick_device(cfg.device))
    if not dist.is_initialized():
        world = env_world_size()
        if world <= 1:
            return OneProcess(repro.pick_device(cfg.device))
        check_divisible(cfg, world)  # before any collective: every rank fails alike
        local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
        device = _rank_device(repro.pick_device(cfg.device), local)
        for k, v in ENV_DEFAULTS.items():
            os.environ.setdefault(k, v)
        kw = {}
        if os.environ.get(TIMEOUT_ENV):
            kw["timeout"] = datetime.timedelta(seconds=float(os.environ[TIMEOUT_ENV]))
        if device.type == "cuda":
            kw["device_id"] = device
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **kw)
        _OWNED = True
    elif dist.get_world_size() <= 1:
        return OneProcess(repro.pick_device(cfg.device))
    else:
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        device = _rank_device(repro.pick_device(cfg.device), local)
    check_divisible(cfg, dist.get_world_size())
    return DataParallel(device)


def _rank_device(device: torch.device, local_rank: int) -> torch.device:
    """Under torchrun a CUDA device spec means this rank's GPU, cuda:LOCAL_RANK."""
    if device.type != "cuda":
        return device
    n = torch.cuda.device_count()
    if local_rank >= n:
        raise RuntimeError(f"LOCAL_RANK={local_rank} but only {n} CUDA device(s) are visible: "
                           f"run at most {n} processes per node")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def shutdown(sync: bool = False) -> None:
    """Destroy the process group if `from_env` created it (idempotent). sync: first wait for every
    rank (after a run that ended well on all of them; never after an error, where a peer may be gone),
    so that no rank tears down gloo while a peer still writes its results."""
    global _OWNED
    if _OWNED and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()
    _OWNED = False


def _cpu(obj):
    """Tensors of a nested structure moved to the CPU (for gather_object and checkpoints)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _add(a, b):
    return b if a is None else (a if b is None else a + b)


# ----------------------------------------------------------------------------- one process
class OneProcess:
    """A run in one process: `DataParallel`'s interface, with nothing to communicate."""

    rank, world_size, is_main = 0, 1, True
    grad_sync = None  # the CMS updates each level from its own gradients
    average_in_place = None  # dynamic evaluation steps on this process's gradients

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.counts: dict[str, int] = {}

    def rows(self, batch_size: int) -> None:
        return None  # every row

    def prepare(self, model: torch.nn.Module, seed: int) -> None:
        pass

    def summary(self) -> dict:
        return {}

    def mean_across_ranks(self, t: torch.Tensor, kind: str = "loss") -> torch.Tensor:
        return t

    def reduce_eval(self, out: dict) -> dict:
        return out

    def checkpoint_payload(self, payload: dict, step: int, level_optimizers: dict) -> dict:
        return payload

    def load_checkpoint(self, p: dict, *, cms, carrier, batch_size: int, seed: int) -> None:
        cms.load_state_dict(p["cms"])
        carrier.load_state_dict(p["carrier"])
        repro.set_rng_state(p["rng"])


# ----------------------------------------------------------------------------- N processes
class DataParallel:
    """One rank's part of a data-parallel run (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.device = device
        self.counts: dict[str, int] = {}  # level -> gradient all-reduces (one per update)
        # (kind, level, step) of every collective: the last 100k (the tests count them)
        self.calls: deque[tuple[str, str | None, int | None]] = deque(maxlen=100_000)
        self._ones: dict[str, torch.Tensor] = {}  # level -> cached presence flags (all present)
        # level -> {delta slot index: tokens} of pending statistics resumed from a checkpoint of
        # another N (held by rank 0, known to every rank): the count is then carried + N x the rank's
        self.carried: dict[str, dict[int, int]] = {}

    @property
    def grad_sync(self):
        """The CMS's per-level gradient all-reduce."""
        return self.sync_level

    def rows(self, batch_size: int) -> tuple[int, int]:
        """This rank's rows [r0, r1) of a global batch of `batch_size` rows."""
        per = batch_size // self.world_size
        return self.rank * per, (self.rank + 1) * per

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _record(self, kind: str, level: str | None = None, step: int | None = None) -> None:
        self.calls.append((kind, level, step))

    # ------------------------------------------------------------------ set-up
    def prepare(self, model: torch.nn.Module, seed: int) -> None:
        """Equal parameters on every rank (broadcast from rank 0) and, on ranks > 0, an RNG stream
        of their own (independent dropout masks; rank 0 keeps the one-process stream)."""
        with torch.no_grad():
            for t in model.state_dict().values():
                dist.broadcast(t, src=0)
                self._record("broadcast")
        if self.rank > 0:
            repro.seed_everything(self._seed(seed))

    def summary(self) -> dict:
        """What a run's summary.json records of the world: its size and each level's all-reduces."""
        return {"world_size": self.world_size, "grad_allreduces_by_level": dict(self.counts)}

    def _seed(self, seed: int, step: int = 0) -> int:
        return (seed + 0x9E3779B1 * self.rank + 0x632BE5AB * step) % 2**32

    # ------------------------------------------------------------------ gradients
    @torch.no_grad()
    def sync_level(self, name: str, params: list[torch.nn.Parameter], opt, step: int) -> None:
        """The CMS's ``grad_sync``: average level `name`'s accumulated gradients across ranks (and
        sum its delta statistics) in ONE all-reduce, in place, right before its update."""
        params = [p for p in params if p.requires_grad]
        slots = opt.sync_slots() if hasattr(opt, "sync_slots") else []
        if not params:
            return
        dtype = params[0].dtype
        for p in params:
            dtype = torch.promote_types(dtype, p.dtype)
        dtype = torch.promote_types(dtype, torch.float32)
        have = [p.grad is not None for p in params]
        pieces = [(p.grad if p.grad is not None else p.new_zeros(p.shape)).reshape(-1).to(dtype) for p in params]
        if all(have):
            ones = self._ones.get(name)
            if ones is None or ones.dtype != dtype:
                ones = self._ones[name] = torch.ones(len(params), dtype=dtype, device=params[0].device)
            pieces.append(ones)
        else:
            pieces.append(torch.tensor([float(h) for h in have], dtype=dtype, device=params[0].device))
        summed = getattr(opt, "mode", None) == "summed"
        for slot, w in slots:  # delta statistics (zeros where none are pending)
            d_out, d_in = w.shape
            if summed:
                for key, numel in (("A", d_in * d_in), ("B", d_out * d_in)):
                    t = slot[key]
                    pieces.append(t.reshape(-1).to(dtype) if t is not None else w.new_zeros(numel, dtype=dtype))
            else:
                t = slot["sum_x"]
                pieces.append(t.reshape(-1).to(dtype) if t is not None else w.new_zeros(d_in, dtype=dtype))
        flat = torch.cat(pieces)
        dist.all_reduce(flat)  # SUM
        self.counts[name] = self.counts.get(name, 0) + 1
        self._record("level", name, step)
        numels = [p.numel() for p in params]
        g_total = sum(numels)
        flat[:g_total].mul_(1.0 / self.world_size)  # gradients: the average
        views = flat[:g_total].split(numels)
        present = None if all(have) else flat[g_total:g_total + len(params)].tolist()  # (rare) host sync
        mine, new = [], []
        for i, (p, v) in enumerate(zip(params, views)):
            v = v.view(p.shape)
            if p.grad is not None:
                mine.append(p.grad)
                new.append(v.to(p.grad.dtype))
            elif present is not None and present[i] > 0:
                p.grad = v.to(p.dtype).clone()
        if mine:
            torch._foreach_copy_(mine, new)  # in place: the fast path's static .grad buffers stay
        off = g_total + len(params)
        carried = self.carried.pop(name, {})
        for i, (slot, w) in enumerate(slots):  # statistics: the sum; tokens: N x the rank's (equal shards)
            d_out, d_in = w.shape
            sdt = torch.promote_types(w.dtype, torch.float32)
            n = carried.get(i, 0) + self.world_size * slot["n"]
            keys = (("A", (d_in, d_in)), ("B", (d_out, d_in))) if summed else (("sum_x", (d_in,)),)
            for key, shape in keys:
                numel = math.prod(shape)
                if n > 0:
                    slot[key] = flat[off:off + numel].view(shape).to(sdt)
                off += numel
            slot["n"] = n

    # ------------------------------------------------------------------ logging and evaluation
    def mean_across_ranks(self, t: torch.Tensor, kind: str = "loss") -> torch.Tensor:
        """The average over ranks of a same-shaped tensor (e.g. the per-step losses at log time)."""
        t = t.detach().clone()
        dist.all_reduce(t)
        self._record(kind)
        return t.mul_(1.0 / self.world_size)

    @torch.no_grad()
    def average_in_place(self, tensors: list[torch.Tensor]) -> None:
        """Replace each rank's tensors by their average over ranks, in ONE all-reduce (dynamic
        evaluation's per-window gradients: nlcore.training.dynamic_eval, ``grad_sync``)."""
        dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors], torch.float32)
        flat = torch.cat([t.reshape(-1).to(dtype) for t in tensors])
        dist.all_reduce(flat)  # SUM
        self._record("dynamic_eval")
        views = flat.mul_(1.0 / self.world_size).split([t.numel() for t in tensors])
        torch._foreach_copy_(tensors, [v.view(t.shape).to(t.dtype) for v, t in zip(views, tensors)])

    def reduce_eval(self, out: dict) -> dict:
        """One-process evaluation numbers from every rank's (nlcore.training.evaluate.evaluate) output:
        nats and target counts summed, per-position bpc averaged (every rank has the same count
        at each position: equal rows, same windows)."""
        pos = out.get("bpc_by_position")
        vals = [out["nats"] * out["targets"], float(out["targets"])] + (list(pos) if pos is not None else [])
        t = torch.tensor(vals, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        self._record("eval")
        vals = t.cpu().tolist()
        total, count = vals[0], int(round(vals[1]))
        nats = total / max(count, 1)
        res = dict(out, bpc=nats / math.log(2), nats=nats, targets=count)
        if pos is not None:
            res["bpc_by_position"] = [v / self.world_size for v in vals[2:]]
        return res

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_payload(self, payload: dict, step: int, level_optimizers: dict) -> dict | None:
        """Collective (every rank calls it with its own one-process payload): the global payload on
        rank 0 (see the module docstring), None elsewhere. `level_optimizers`: the CMS's, by level."""
        cms = payload["cms"]
        mine = _cpu({"grads": cms["grads"], "carrier": payload["carrier"], "rng": payload["rng"],
                     "delta": {n: o["delta"]["slots"] for n, o in cms["optimizers"].items()
                               if o is not None and "delta" in o}})
        got = [None] * self.world_size if self.is_main else None
        dist.gather_object(mine, got, dst=0)
        self._record("checkpoint", None, step)
        if not self.is_main:
            return None
        grads = {}
        for n, gs in cms["grads"].items():
            per = [r["grads"][n] for r in got]
            grads[n] = [None if all(g[i] is None for g in per) else
                        sum(g[i] for g in per if g[i] is not None) / self.world_size for i in range(len(gs))]
        optimizers = dict(cms["optimizers"])
        for n in mine["delta"]:
            o = dict(optimizers[n])
            slots = {}
            for i, s in o["delta"]["slots"].items():
                s = dict(s)
                for key in ("A", "B", "sum_x"):
                    acc = None
                    for r in got:
                        acc = _add(acc, r["delta"][n][i][key])
                    s[key] = acc
                s["n"] = sum(r["delta"][n][i]["n"] for r in got) + self._carried_of(level_optimizers[n], n, i)
                slots[i] = s
            o["delta"] = dict(o["delta"], slots=slots)
            optimizers[n] = o
        carriers = [r["carrier"] for r in got]
        carrier = dict(carriers[0], state={k: torch.cat([c["state"][k] for c in carriers]) for k in carriers[0]["state"]},
                       windows_since_reset=torch.cat([torch.as_tensor(c["windows_since_reset"]) for c in carriers]))
        return dict(payload, cms=dict(cms, grads=grads, optimizers=optimizers), carrier=carrier,
                    rng=got[0]["rng"], distributed={"world_size": self.world_size, "ranks": got,
                                                    "carried": {k: dict(v) for k, v in self.carried.items()}})

    def _carried_of(self, opt, level: str, index) -> int:
        """Carried tokens of delta slot `index` (its position in the DeltaRule's saved slots)."""
        return self.carried.get(level, {}).get(self._slot_position(opt, index), 0)

    @staticmethod
    def _slot_position(opt, index) -> int:
        """Saved DeltaRule slots are keyed by parameter index; sync_slots() counts delta weights."""
        ids = [id(p) for g in opt.param_groups for p in g["params"]]
        order = [id(w) for _, w in opt.sync_slots()]
        return order.index(ids[int(index)])

    def load_checkpoint(self, p: dict, *, cms, carrier, batch_size: int, seed: int) -> None:
        """This rank's part of a checkpoint written by any number of ranks (1 included): its own
        saved part on the same N, else its share of the global form (module docstring)."""
        B = batch_size
        state = p["carrier"]["state"]
        rows = next(iter(state.values())).shape[0] if state else B
        if rows != B:
            raise ValueError(f"checkpoint carries the state of {rows} rows but data.batch_size={B}; "
                             "refusing to resume")
        saved = p.get("distributed")
        if saved is not None and saved["world_size"] == self.world_size:
            mine = saved["ranks"][self.rank]
            optimizers = dict(p["cms"]["optimizers"])
            for n, slots in mine["delta"].items():
                optimizers[n] = dict(optimizers[n], delta=dict(optimizers[n]["delta"], slots=slots))
            cms.load_state_dict(dict(p["cms"], grads=mine["grads"], optimizers=optimizers))
            carrier.load_state_dict(mine["carrier"])
            repro.set_rng_state(mine["rng"])
            self.carried = {k: {int(i): int(c) for i, c in v.items()} for k, v in saved.get("carried", {}).items()}
            return
        cms.load_state_dict(p["cms"])  # averaged gradients on every rank
        self.carried = {}
        for name, opt in cms.optimizers.items():  # the summed delta statistics: once, on rank 0;
            if opt is None or not hasattr(opt, "sync_slots"):  # their count, carried by every rank
                continue
            for i, (slot, _) in enumerate(opt.sync_slots()):
                if slot["n"] > 0:
                    self.carried.setdefault(name, {})[i] = slot["n"]
                slot["n"] = 0
                if not self.is_main:
                    slot.update(A=None, B=None, sum_x=None)
        r0, r1 = self.rows(B)
        c = p["carrier"]
        carrier.load_state_dict(dict(c, state={k: v[r0:r1] for k, v in state.items()},
                                             windows_since_reset=c["windows_since_reset"][r0:r1]))
        repro.set_rng_state(p["rng"])
        if self.rank > 0:
            repro.seed_everything(self._seed(seed, int(p["step"])))
