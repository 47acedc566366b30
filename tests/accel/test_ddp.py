"""Data-parallel training (nlcore.accel.ddp) on the CPU: 2 gloo ranks equal 1 process on the
global batch (losses, parameters, evaluation), with CMS updates of every level and one gradient
all-reduce per level update, also with surprise and with delta-rule levels; checkpoints resume on
the same and on a different number of ranks.

The ranks are plain subprocesses given the environment torchrun gives (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so the trainer's own torchrun code path runs. One launch
runs every 2-rank scenario (a torch start-up per rank, once); the 1-process references run here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nlcore.accel import ddp as distributed
from nlcore.config import apply_overrides, preset
from nlcore.paths import REPO_ROOT
from nlcore.training.trainer import Trainer

# smoke shrunk: chunks 1/2/4 over 8 steps (8, 4 and 2 updates), float32 on the CPU
BASE = ["data.synth_chars=20000", "data.batch_size=8", "data.seq_len=16", "data.eval_batch_size=4",
        "cms.levels.medium.chunk=2", "cms.levels.slow.chunk=4", "steps=8", "log_every=1",
        "eval_every=4", "eval_windows=3", "ckpt_every=0", "warmup=2",
        "min_lr_ratio=0.1"]  # the cosine schedule must not zero the last step's updates
ADAM_EPS = "cms.levels.fast.eps=1e-6"  # where AdamW's eps=1e-8 amplifies rounding (see "doc")
SCENARIOS = {
    # document resets inside windows, on each rank's own rows. A rank splits its LSTM only at its
    # own rows' document starts, one process at every row's: the same arithmetic, other float
    # rounding, and AdamW with eps=1e-8 turns 1e-12 gradient noise on near-zero LSTM gradients into
    # 1e-5 parameter moves (one process with one extra no-op split moves them 7e-6): ADAM_EPS here.
    "doc": ["state.reset=doc", ADAM_EPS],
    # the static-buffer path (CUDA graph emulated); 10 steps: flushed partial chunks; no clipping and
    # SGD on medium/slow, so the gradients' scale (the average over ranks, not the sum) shows
    "graph": ["cuda_graph=on", "steps=10", "cms.grad_clip=0", "cms.levels.medium.lr=0.5",
              "cms.levels.slow.lr=0.5"],
    "surprise": ["surprise.weights.fast=0.5", "surprise.weights.medium=0.2", "surprise.weights.slow=0.2",
                 ADAM_EPS],  # eps=1e-8 amplifies rounding here too (see "doc")
    "surprise_ref": ["surprise.weights.fast=0.5", "surprise.weights.medium=0.2", "surprise.impl=reference",
                     "surprise.clip=1e-3", ADAM_EPS],  # the clip bites: on ∇_y of the GLOBAL loss
    "delta": ["cms.levels.medium.optimizer=delta", "cms.levels.slow.optimizer=delta_batch_mean",
              "cms.levels.medium.lr=0.5", "cms.levels.slow.lr=0.5", "surprise.weights.medium=0.01"],
    # dynamic evaluation at the end (nlcore.training.dynamic_eval): one gradient all-reduce per held-out window
    "dynamic": ["dynamic_eval_lr=0.5", "dynamic_eval_decay=0.1", "state.reset=doc", ADAM_EPS],
}
# checkpoints every 3 steps, interrupted after 7 and resumed from 6: mid-chunk for medium (a delta
# rule, chunk 10: pending statistics) and slow (SGD, chunk 4: pending gradients)
RESUME = ["ckpt_every=3", "log_every=1", "steps=12", "cms.levels.medium.chunk=10", "cms.levels.medium.optimizer=delta",
          "cms.levels.medium.lr=0.5"]
STOP = 7
TOL = 1e-6


def cfg_of(extra):
    return apply_overrides(preset("smoke"), BASE + list(extra))


def outcome(t: Trainer, summary: dict) -> dict:
    return {"losses": [h["train_loss"] for h in t.history], "params": {k: v.detach().clone() for k, v in
                                                                        t.model.state_dict().items()},
            "valid_bpc": summary["valid_bpc"], "test_bpc": summary["test_bpc"],
            "valid_targets": summary["valid_targets"], "by_position": summary["valid_bpc_by_position"],
            "evals": [h.get("valid_bpc") for h in t.history], "updates": dict(t.cms.updates),
            "grad_norms": [h["grad_norm"] for h in t.history],
            "dynamic": [summary.get(k) for k in ("valid_bpc_dynamic", "test_bpc_dynamic")]}


# ----------------------------------------------------------------------------- the 2-rank side
def _worker(spec_path: str) -> None:
    """One rank: every scenario of the spec, results to OUT/rank{r}.pt."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    calls: list[int] = []
    real = dist.all_reduce

    def counting(t, *a, **kw):  # every all-reduce anybody makes, to compare with the module's log
        calls.append(t.numel())
        return real(t, *a, **kw)

    dist.all_reduce = counting
    res = {}
    for name, extra in SCENARIOS.items():
        calls.clear()
        t = Trainer(cfg_of(extra), out / "runs" / name, progress=False)
        s = t.run()
        res[name] = outcome(t, s) | {"counts": dict(t.world.counts), "calls": list(t.world.calls),
                                     "n_all_reduce": len(calls), "graph": t.graph.telemetry() if t.graph else None,
                                     "rows": t.train_stream.rows, "summary_world": s.get("world_size"),
                                     "eval_windows": sum(len(st) for st, _ in t.eval_streams.values())}
    # checkpoints: interrupted 2-rank run; its resume on 2 ranks; a 1-rank checkpoint resumed on 2
    t = Trainer(cfg_of(RESUME), out / "straight2", progress=False)
    res["straight_2"] = outcome(t, t.run())
    run_dir = out / "ckpt2"
    t = Trainer(cfg_of(RESUME), run_dir, progress=False)
    assert t.run(stop_after=STOP) == {"stopped_at": STOP}
    if dist.get_rank() == 0:  # a copy of the interrupted run, resumed in one process by the test
        shutil.copytree(run_dir, out / "ckpt2_for_1")
    t = Trainer(cfg_of(RESUME), run_dir, progress=False)
    s = t.run(resume=True)
    res["resume_2_on_2"] = outcome(t, s)
    # the 1-process checkpoint (step 6) on 2 ranks, interrupted again (checkpoint 9: the medium
    # statistics of steps 1-6 still pending, carried), copied for the test, then resumed on 2 ranks
    t = Trainer(cfg_of(RESUME), out / "ckpt1", progress=False)
    assert t.run(resume=True, stop_after=10) == {"stopped_at": 10}
    if dist.get_rank() == 0:
        shutil.copytree(out / "ckpt1", out / "ckpt1_2_for_1")
    t = Trainer(cfg_of(RESUME), out / "ckpt1", progress=False)
    s = t.run(resume=True)
    res["resume_1_on_2"] = outcome(t, s)
    torch.save(res, out / f"rank{dist.get_rank()}.pt")
    distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, out: Path, timeout: float = 150) -> None:
    spec = out / "spec.json"
    spec.write_text(json.dumps({"out": str(out)}))
    port = _free_port()
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import test_ddp as t; t._worker({str(spec)!r})")
    procs = []
    for r in range(world):
        env = dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NLCORE_DIST_TIMEOUT_S="90",
                   OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=out, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed:\n{log[-6000:]}"


# ----------------------------------------------------------------------------- helpers
def close(a: dict, b: dict, tol: float = TOL) -> None:
    """b equals a to `tol` (a resumed b logged only its last steps: compared with a's last ones)."""
    n = len(b["losses"])
    la, lb = torch.tensor(a["losses"][-n:]), torch.tensor(b["losses"])
    assert la.shape == lb.shape and torch.allclose(la, lb, rtol=tol, atol=0), (la - lb).abs().max()
    for k, v in a["params"].items():
        d = (v - b["params"][k]).abs().max().item()
        assert d <= tol, f"{k}: max |diff| {d:.2e}, max |value| {v.abs().max().item():.2e}"
    for key in ("valid_bpc", "test_bpc"):
        assert abs(a[key] - b[key]) <= tol * abs(a[key]), (key, a[key], b[key])
    assert a["valid_targets"] == b["valid_targets"]
    for x, y in zip(a["dynamic"], b["dynamic"]):
        assert (x is None) == (y is None) and (x is None or abs(x - y) <= tol * x), (x, y)
    assert [e is None for e in a["evals"][-n:]] == [e is None for e in b["evals"]]
    for x, y in zip(a["evals"][-n:], b["evals"]):
        assert x is None or abs(x - y) <= tol * x
    if a["by_position"] is not None:
        assert torch.allclose(torch.tensor(a["by_position"]), torch.tensor(b["by_position"]), rtol=tol, atol=0)
    assert a["updates"] == b["updates"]
    for x, y in zip(a["grad_norms"][-n:], b["grad_norms"]):  # each level's gradient: the global one
        assert x.keys() == y.keys() and all((x[k] is None) == (y[k] is None) for k in x)
        assert all(x[k] is None or abs(x[k] - y[k]) <= 1e-5 * x[k] for k in x), (x, y)


def one_process(extra, out: Path | None = None, **run) -> dict:
    t = Trainer(cfg_of(extra), out, progress=False)
    s = t.run(**run)
    return s if "stopped_at" in s else outcome(t, s)


# ----------------------------------------------------------------------------- the test
def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    ref = {name: one_process(extra) for name, extra in SCENARIOS.items()}
    ref_resume = one_process(RESUME)
    assert one_process(RESUME, out / "ckpt1", stop_after=STOP) == {"stopped_at": STOP}  # resumed on 2 ranks
    launch(2, out)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]

    for name in SCENARIOS:
        a, b = ranks[0][name], ranks[1][name]
        try:
            close(ref[name], a)
        except AssertionError as err:
            raise AssertionError(f"scenario {name}: {err}") from None
        for k, v in a["params"].items():  # the ranks hold one model
            assert torch.equal(v, b["params"][k]), (name, k)
        assert a["losses"] == b["losses"] and a["valid_bpc"] == b["valid_bpc"]
        assert (a["rows"], b["rows"]) == ((0, 4), (4, 8))  # each rank: B/N contiguous rows
        assert a["summary_world"] == 2
        steps = len(a["losses"])
        chunks = {"fast": 1, "medium": 2, "slow": 4}
        # one gradient all-reduce per level update: floor(steps / C) in the loop, + a flushed partial chunk
        for lv, c in chunks.items():
            loop = [s for kind, n, s in a["calls"] if kind == "level" and n == lv and s <= steps and s % c == 0]
            assert len(loop) == steps // c, (name, lv, loop)
            assert a["counts"][lv] == steps // c + (steps % c != 0), (name, lv, a["counts"])
            assert a["updates"][lv] == a["counts"][lv]
        # and nothing else communicates: the wrapped dist.all_reduce saw exactly the module's collectives
        kinds = [kind for kind, _, _ in a["calls"] if kind not in ("broadcast", "checkpoint")]
        assert a["n_all_reduce"] == len(kinds), (a["n_all_reduce"], kinds)
        dynamic = a["dynamic"][0] is not None
        assert dynamic == (name == "dynamic")
        assert kinds.count("loss") == steps and kinds.count("eval") == 2 + (steps - 1) // 4 + 2 * dynamic
        assert kinds.count("dynamic_eval") == (a["eval_windows"] if dynamic else 0)
    assert ranks[0]["graph"]["graph"]["graph_steps"] > 0 and ranks[0]["graph"]["graph"]["capture_errors"] == {}

    # resume: a 2-rank run interrupted after step 7 (checkpoint at 6) and resumed on 2 ranks, a
    # 1-process checkpoint resumed on 2 ranks, and the 2-rank checkpoint resumed in 1 process
    straight = ranks[0]["straight_2"]
    close(ref_resume, straight)
    same = ranks[0]["resume_2_on_2"]  # the same N: every rank's own part, bit-identical on CPU
    assert same["losses"] == straight["losses"] and len(same["losses"]) == 12  # the history before the resume too
    assert same["valid_bpc"] == straight["valid_bpc"] and same["by_position"] == straight["by_position"]
    for k, v in straight["params"].items():
        assert torch.equal(v, same["params"][k]), k
    close(ref_resume, ranks[0]["resume_1_on_2"])
    close(ref_resume, one_process(RESUME, out / "ckpt2_for_1", resume=True))
    close(ref_resume, one_process(RESUME, out / "ckpt1_2_for_1", resume=True))  # 1 -> 2 -> 1 process
    lines = [json.loads(x) for x in (out / "ckpt2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 13))


def test_batch_not_divisible_by_the_ranks_is_a_clear_error():
    with pytest.raises(ValueError, match=r"data.batch_size=6 is not divisible by the 4 ranks"):
        distributed.check_divisible(cfg_of(["data.batch_size=6", "data.eval_batch_size=8"]), 4)
    with pytest.raises(ValueError, match=r"data.eval_batch_size=6 is not divisible by the 4 ranks"):
        distributed.check_divisible(cfg_of(["data.batch_size=8", "data.eval_batch_size=6"]), 4)
    distributed.check_divisible(cfg_of([]), 2)


def test_one_process_is_untouched(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    t = Trainer(cfg_of([]), None, progress=False)
    assert t.world.world_size == 1 and t.cms.grad_sync is None and t.is_main
    assert t.train_stream.rows == (0, 8) and t.train_stream.batch_size == 8


@pytest.mark.parametrize("grad_scale", ["as_recorded", "per_token"])
def test_delta_statistics_of_the_ranks_sum_to_the_one_process_ones(grad_scale):
    """DeltaRule.world_size: with each rank's loss a mean over its own tokens, the statistics the
    ranks record sum to the one-process statistics of the global mean loss, for both grad_scales
    (the trainer's "per_token" and the default "as_recorded")."""
    from torch import nn

    from nlcore.optim.delta_rule import DeltaRule

    lin = nn.Linear(5, 3)
    x, target = torch.randn(4, 6, 5), torch.randn(4, 6, 3)

    def stats(rows, world):
        opt = DeltaRule(list(lin.parameters()), modules={"l": lin}, lr=0.1, grad_scale=grad_scale, fallback="sgd")
        opt.world_size = world
        ((lin(x[rows]) - target[rows]) ** 2).mean().backward()  # this rank's token-mean loss
        ((slot, _),) = opt.sync_slots()
        opt.remove_hooks()
        lin.zero_grad()
        return slot["A"], slot["B"], slot["n"]

    a1, b1, n1 = stats(slice(0, 4), 1)
    (a_r0, b_r0, n_r0), (a_r1, b_r1, n_r1) = stats(slice(0, 2), 2), stats(slice(2, 4), 2)
    assert n_r0 == n_r1 == n1 // 2  # nlcore.accel.ddp makes the count N x the rank's
    torch.testing.assert_close(a_r0 + a_r1, a1, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b_r0 + b_r1, b1, rtol=1e-6, atol=1e-7)


def test_a_shard_reads_its_rows_of_the_global_layout():
    ids = torch.randint(0, 50, (1000,))
    docs = torch.rand(1000) < 0.05
    from nlcore.data.streams import CharStream

    full = CharStream(ids, 8, 16, docs)
    parts = [CharStream(ids, 8, 16, docs, rows=(r, r + 4)) for r in (0, 4)]
    assert all(len(p) == len(full) and p.row_len == full.row_len for p in parts)  # L from the global B
    for i in (0, 3, len(full) - 1):
        for field in ("x", "y", "doc_start"):
            got = torch.cat([getattr(p[i], field) for p in parts])
            assert torch.equal(got, getattr(full[i], field)), (i, field)
    assert parts[1].batch_size == 4 and parts[1].dropped == full.dropped
    assert sum(p.targets_covered for p in parts) == full.targets_covered
    with pytest.raises(ValueError, match="rows must be"):
        CharStream(ids, 8, 16, rows=(4, 9))


def test_torchrun_cli_trains_data_parallel(tmp_path):
    """`torchrun --nproc_per_node 2 -m nlcore train`: rank 0 prints and writes; the result is the
    one-process result."""
    sets = ["steps=6", "log_every=3", "eval_every=0", "ckpt_every=0", "data.synth_chars=20000", "data.batch_size=8",
            "cms.levels.medium.chunk=2", "cms.levels.slow.chunk=3", "min_lr_ratio=0.1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nlcore", "train", "--preset", "smoke", "--out", str(tmp_path / "run"), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", NLCORE_DIST_TIMEOUT_S="90", PYTHONPATH=str(REPO_ROOT))
    r = subprocess.run(cmd + [a for s in sets for a in ("--set", s)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count('"valid_bpc"') == 1  # printed once, by rank 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["world_size"] == 2 and s["grad_allreduces_by_level"] == {"fast": 6, "medium": 3, "slow": 2}
    one = Trainer(apply_overrides(preset("smoke"), sets), None, progress=False).run()
    assert abs(one["valid_bpc"] - s["valid_bpc"]) <= TOL * one["valid_bpc"]
    assert s["updates_by_level"] == one["updates_by_level"]
