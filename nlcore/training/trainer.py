"""The one training loop every nlcore experiment uses.

Per step i = 1..num_steps: read window (i-1) mod n_windows of the train stream, feed the
carried recurrent state (``nlcore.state``), compute the mean cross-entropy over the window's
B*T characters (plus any surprise objective), backpropagate, and let the CMS schedule
(``nlcore.cms``) update the levels that are due. Nothing in the step synchronises with the
device: losses and norms stay on the device and are read at log intervals, where the run also
checks that they are finite (a non-finite value stops the run, naming the step and the level;
the last good checkpoint is kept because checkpoints are only written after that check).

Outputs in ``out_dir`` (nlcore.training.rundir): ``meta.json`` from the first step,
``metrics.jsonl`` (one line per log interval), ``checkpoint.pt`` (atomic, parameters checked
finite) and ``summary.json`` saying how the run ended (finished, diverged at step N in level L,
stopped). ``resume=True`` continues from the checkpoint bit-identically on CPU (model, every
level's optimizer and pending gradients, recurrent state, RNG states, data position), after
checking that the configuration, the tokenizer and the data files are the ones it was written
with.

Extensions, each owned by the trainer and built in its constructor:

- ``world`` (nlcore.accel.ddp): one process, or N data-parallel ranks under torchrun
  (``torchrun --nproc_per_node N -m nlcore train ...``), equal to one process on the global batch.
  It gives this process's rows of every stream, the CMS's per-level gradient all-reduce, the
  surprise objective's gradient scale, and the reductions of losses, evaluations and
  checkpoints; only its main process writes.
- ``graph`` (nlcore.accel.cuda_graph, ``cfg.cuda_graph``): forward + loss + backward replayed
  from a CUDA graph instead of `forward_backward` run eagerly; ``eval_graphs`` do the same for
  the evaluation windows (`eval_graph`).
- ``surprise`` (nlcore.surprise, ``cfg.surprise``): the auxiliary objective around the backward.
- compiled parts (nlcore.accel.compile, ``cfg.compile``): the loss and the model's marked parts.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from nlcore import repro
from nlcore.accel import compile as compiling
from nlcore.accel import ddp
from nlcore.accel.cuda_graph import GraphedEval, GraphedStep
from nlcore.accel.precision import autocast_ctx, fp32_cross_entropy
from nlcore.cms import CMS
from nlcore.config import LevelConfig, TrainConfig, from_dict, to_dict
from nlcore.errors import CheckpointError, DataError, NonFiniteError, StoppedError
from nlcore.models import build_model
from nlcore.results import append_metrics, read_metrics, trim_metrics
from nlcore.state import DocCuts, StateCarrier
from nlcore.training import checkpoint as ckpt
from nlcore.training import rundir
from nlcore.training.evaluate import evaluate, window_nll
from nlcore.training.schedule import lr_multiplier

LN2 = math.log(2)


def resolve_compat(cfg: TrainConfig) -> TrainConfig:
    """compat="prototype": reproduce the prototype's untrained embedding and head by putting
    them in an explicit frozen level (optimizer "none"); never a default."""
    if cfg.compat != "prototype":
        return cfg
    names = [lv.name for lv in cfg.cms.levels]
    levels = cfg.cms.levels if "untrained" in names else (*cfg.cms.levels, LevelConfig("untrained", optimizer="none"))
    return replace(cfg, cms=replace(cfg.cms, levels=levels),
                   model=replace(cfg.model, embed_level="untrained", head_level="untrained")).validate()


def model_for(cfg: TrainConfig, vocab_size: int):
    """The model `cfg` trains: its CMS chunks set the nested LSTM's summary timescales, and its
    non-fast levels own HOPE's chain MLPs under cms_mode=outer."""
    chunks = tuple(cfg.cms.level(n).chunk if n in {lv.name for lv in cfg.cms.levels} else 1
                   for n in ("medium", "slow"))
    chain = tuple(lv.name for lv in cfg.cms.levels if lv.name != "fast")
    return build_model(cfg.model, vocab_size, chunks, chain_levels=chain)


def load_data(cfg: TrainConfig, tokenizer=None):
    """The corpus `cfg.data` names, encoded with `tokenizer` (a CharTokenizer; default: its train split's own)."""
    from nlcore.data import prepare

    d = cfg.data
    kw = {}
    if d.corpus == "synthetic":
        kw = dict(seed=d.synth_seed, n_chars=(d.synth_chars, d.synth_chars // 10, d.synth_chars // 10),
                  gap_min=d.synth_gap_min, gap_max=d.synth_gap_max)
    return prepare(d.corpus, data_root=d.data_root, tokenizer=tokenizer, **kw)


def make_stream(corpus, split: str, batch_size: int, seq_len: int, device, drop_last: bool = True,
                rows: tuple[int, int] | None = None):
    """The stream of `split` and its document cuts; `rows=(r0, r1)`: a data-parallel rank's rows only."""
    from nlcore.data.streams import CharStream

    ids, ds = corpus.ids[split], corpus.doc_starts[split]
    stream = CharStream(ids, batch_size, seq_len, ds, drop_last=drop_last, device=device, rows=rows)
    row_len = (ids.numel() - 1) // batch_size
    r0 = 0 if rows is None else rows[0]  # the cuts of this rank's rows (DocCuts reads B x L from ds)
    ds = ds if ds is None or r0 == 0 else ds[r0 * row_len:]
    return stream, DocCuts(ds, stream.batch_size, seq_len, row_len)


class Trainer:
    """Builds data, model, CMS and state from a config; `run()` trains and evaluates.

    `tokenizer`: encode the corpus with this CharTokenizer instead of its train split's own (a
    vocabulary shared with another corpus, nlcore.data.joint_tokenizer). `after_step`: called as
    ``after_step(trainer)`` after every training step (its logging and checkpoint included), with
    ``trainer.step`` the step just taken; it may evaluate the model but must not change it.
    `stop_on_signal`: a SIGTERM during `run` stops training at the next logged step with a
    checkpoint there (`nlcore.training.rundir.StopSignal`); off, the signal kills the process."""

    def __init__(self, cfg: TrainConfig, out_dir: str | Path | None = None, *, command: str | None = None,
                 progress: bool = True, tokenizer=None, after_step=None, stop_on_signal: bool = True) -> None:
        self.cfg = cfg = resolve_compat(cfg.validate())
        self.stop_on_signal = stop_on_signal
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.command = command if command is not None else " ".join(sys.argv)
        self.progress = progress
        self.world = ddp.from_env(cfg)  # one process, or this rank of N
        self.device = self.world.device
        repro.set_determinism(cfg.deterministic)
        repro.seed_everything(cfg.seed)
        self.amp = cfg.amp == "bf16" or (cfg.amp == "auto" and self.device.type == "cuda")
        delta = any(lv.optimizer in ("delta", "delta_batch_mean") for lv in cfg.cms.levels)
        self.cuda_graph = cfg.cuda_graph if cfg.cuda_graph != "auto" else \
            ("on" if self.device.type == "cuda" and not delta else "off")
        self.corpus = load_data(cfg, tokenizer)
        self.after_step = after_step
        self.vocab_size = self.corpus.tokenizer.vocab_size
        self.model = model_for(cfg, self.vocab_size).to(self.device)
        self.loss_fn = fp32_cross_entropy
        # a torch.compile backend, or None ("auto" leaves the delta optimizers' module hooks uncompiled)
        self.compile = compiling.resolve("off" if delta and cfg.compile == "auto" else cfg.compile, self.device)
        if self.compile is not None:  # fused pointwise/norm/loss kernels (nlcore.accel.compile)
            self.model.compile_parts(compiling.compiler(self.compile))
            self.loss_fn = compiling.compiler(self.compile)(fp32_cross_entropy)
        self.schedule = lr_multiplier(cfg.schedule, cfg.steps, cfg.warmup, cfg.min_lr_ratio)
        self.cms = CMS(cfg.cms, self.model.levels(), model=self.model, lr_scale=self.schedule,
                       fused=True if self.device.type == "cuda" else None,
                       zero_grad="inplace" if self.cuda_graph == "on" else "none",  # the graph's static .grad
                       change_every=cfg.log_every,  # change norms only where the log reads them
                       grad_sync=self.world.grad_sync, world_size=self.world.world_size)
        if self.compile is not None:  # Adam(W) as foreach ops, fused by the compiler (nlcore.optim.adam_foreach)
            for opt in self.cms.optimizers.values():
                if hasattr(opt, "compile_update"):
                    opt.compile_update(compiling.compiler(self.compile))
        d = cfg.data
        shard = self.world.rows  # this process's rows of a B-row batch
        self.train_stream, self.train_cuts = make_stream(self.corpus, "train", d.batch_size, d.seq_len, self.device,
                                                         rows=shard(d.batch_size))
        eb = d.eval_batch_size or d.batch_size
        self.eval_streams = {s: make_stream(self.corpus, s, eb, d.seq_len, self.device, rows=shard(eb))
                             for s in ("valid", "test")}
        self.carrier = StateCarrier(self.model, cfg.state, self.train_stream.batch_size, self.device, self.train_cuts)
        self.surprise = None
        if cfg.surprise.weights:
            from nlcore.surprise import Surprise

            self.surprise = Surprise(cfg.surprise, self.model, record_every=cfg.log_every,
                                     compile_fn=compiling.compiler(self.compile) if self.compile else None,
                                     grad_scale=1.0 / self.world.world_size)
        self.graph = GraphedStep(self) if self.cuda_graph == "on" else None
        self.eval_graphs: dict[tuple[int, int], GraphedEval] = {}  # (rows, T) -> graph (`eval_graph`)
        self.world.prepare(self.model, cfg.seed)  # equal parameters, per-rank RNG
        self.is_main = self.world.is_main  # only the main process writes
        self.step = 0
        self.wall_train = 0.0
        self.chars_per_step = d.batch_size * d.seq_len  # the global batch, over every rank
        self.history: list[dict] = []
        self.last_valid = float("nan")
        self.data = rundir.data_files(self.corpus.files)  # path, size and SHA-256 of each file read

    # -------------------------------------------------------------- checkpoints
    def _payload(self) -> dict:
        return {"step": self.step, "config": to_dict(self.cfg), "model": self.model.state_dict(),
                "cms": self.cms.state_dict(), "carrier": self.carrier.state_dict(),
                "rng": repro.rng_state(), "wall_train": self.wall_train,
                "tokenizer": self.corpus.tokenizer.to_dict(), "data": self.data}

    def save_checkpoint(self) -> None:
        if self.out_dir is not None:
            payload = self.world.checkpoint_payload(self._payload(), self.step, self.cms.optimizers)
            if self.is_main:
                ckpt.save(self.out_dir / ckpt.CHECKPOINT_NAME, payload)

    def load_checkpoint(self, path: str | Path) -> None:
        """Continue from the checkpoint at `path`, which must belong to this run: the same training
        configuration, tokenizer and data files (each mismatch is a one-line error naming it)."""
        p = ckpt.load(path, map_location=self.device)
        saved, now = _training_config(p["config"]), _training_config(to_dict(self.cfg))
        if saved != now:
            diff = sorted(k for k in _flat(saved).keys() | _flat(now).keys() if _flat(saved).get(k) != _flat(now).get(k))
            raise CheckpointError(f"checkpoint {path} was written with other settings ({', '.join(diff[:6])}"
                                  f"{', ...' if len(diff) > 6 else ''}): resume with the settings it was written "
                                  f"with, or start a new run with --overwrite or another --out")
        if p.get("tokenizer") is not None and p["tokenizer"] != self.corpus.tokenizer.to_dict():
            raise DataError(f"checkpoint {path} was written with another vocabulary than the corpus read now "
                            f"({self.corpus.name}): resume with the data it was trained on")
        changed = [d["path"] for d, e in zip(p.get("data") or [], self.data) if d["sha256"] != e["sha256"]]
        if p.get("data") is not None and (changed or len(p["data"]) != len(self.data)):
            raise DataError(f"the data changed since checkpoint {path} was written ({', '.join(changed) or 'other files'}): "
                            f"resume with the original files, or start a new run with --overwrite")
        self.model.load_state_dict(p["model"])
        self.world.load_checkpoint(p, cms=self.cms, carrier=self.carrier, batch_size=self.cfg.data.batch_size,
                                   seed=self.cfg.seed)  # this process's share, from any number of ranks
        self.step, self.wall_train = int(p["step"]), float(p["wall_train"])

    def start_from(self, path: str | Path) -> None:
        """Start this run from another run's final checkpoint at `path`: its model weights and every
        CMS level's optimizer state (moments and their step counts) are taken over; this run's step,
        data position, recurrent state (zero), RNG and update counters start fresh. The model
        configuration and the tokenizer must be the checkpoint's (one-line errors otherwise)."""
        p = ckpt.load(path, map_location=self.device)
        saved, now = from_dict(p["config"]), self.cfg
        for what, a, b in (("model", saved.model, now.model),
                           ("cms.levels", [lv.name for lv in saved.cms.levels], [lv.name for lv in now.cms.levels])):
            if a != b:
                raise CheckpointError(f"checkpoint {path} holds another {what} configuration than this run's: "
                                      f"start from a checkpoint of the same model")
        if p.get("tokenizer") != self.corpus.tokenizer.to_dict():
            raise DataError(f"checkpoint {path} was written with another vocabulary than this run's "
                            f"({self.corpus.name}): encode both corpora with one tokenizer (nlcore.data.joint_tokenizer)")
        self.model.load_state_dict(p["model"])
        self.cms.load_optimizer_states(p["cms"])

    # -------------------------------------------------------------- one step
    def train_step(self, step: int) -> torch.Tensor:
        n = len(self.train_stream)
        w = (step - 1) % n
        if w == 0 and step > 1:  # the stream wrapped: rows no longer continue, start clean
            self.carrier.reset()
        batch = self.train_stream[w]
        state, resets = self.carrier.begin(w, batch.doc_start)
        if self.graph is not None:  # a replay of forward_backward
            loss, new_state = self.graph.step(step, batch, state, resets)
        else:
            loss, new_state = self.forward_backward(step, batch.x, batch.y, state, resets)
        self.cms.after_backward(step)
        self.carrier.end(new_state)
        return loss.detach()

    def forward_backward(self, step: int, x: torch.Tensor, y: torch.Tensor, state, resets):
        """Forward (autocast), fp32 cross-entropy, surprise objective, backward into `.grad`:
        the part of a step the CUDA-graph step captures. Returns (loss, new state)."""
        if self.surprise is not None:
            self.surprise.begin(step)
        with autocast_ctx(self.device, self.amp):
            kw = {"targets": y} if self.model.uses_targets else {}
            logits, new_state = self.model(x, state, resets, **kw)
        loss = self.loss_fn(logits, y)  # mean nats per char, in float32
        total = self.surprise.total_loss(loss) if self.surprise is not None else loss
        total.backward()
        if self.surprise is not None:
            self.surprise.end()
        return loss, new_state

    # -------------------------------------------------------------- evaluation
    def evaluate(self, split: str, max_windows: int | None = None, by_position: bool = False) -> dict:
        stream, cuts = self.eval_streams[split]
        out = evaluate(self.model, stream, self.cfg.state, device=self.device, amp=self.amp,
                       max_windows=max_windows, doc_cuts=cuts, by_position=by_position,
                       graph=self.eval_graph(stream))
        return self.world.reduce_eval(out)  # sums over ranks

    def eval_graph(self, stream) -> GraphedEval | None:
        """The evaluation graph for windows of `stream`'s shape when the step is graphed
        (cuda_graph on), one per shape, made at first use; None otherwise."""
        if self.cuda_graph != "on":
            return None
        key = (stream.batch_size, stream.seq_len)
        if key not in self.eval_graphs:
            forward = functools.partial(window_nll, self.model, resets=None, device=self.device, amp=self.amp)
            self.eval_graphs[key] = GraphedEval(self.model, *key, self.device, forward=forward)
        return self.eval_graphs[key]

    def evaluate_dynamic(self, split: str, max_windows: int | None = None) -> dict:
        """Dynamic evaluation of `split` (nlcore.training.dynamic_eval) with cfg.dynamic_eval_lr / _decay,
        on a copy of the model (the trained model is untouched)."""
        from nlcore.training.dynamic_eval import dynamic_evaluate

        stream, cuts = self.eval_streams[split]
        out = dynamic_evaluate(self.model, stream, self.cfg.state, lr=self.cfg.dynamic_eval_lr,
                               decay=self.cfg.dynamic_eval_decay, device=self.device, amp=self.amp,
                               max_windows=max_windows, doc_cuts=cuts, grad_sync=self.world.average_in_place)
        return self.world.reduce_eval(out)

    # -------------------------------------------------------------- the loop
    def _log(self, step: int, losses: list[torch.Tensor], t0: float, valid: dict | None) -> dict:
        vals = self.world.mean_across_ranks(torch.stack(losses).float())  # the global loss
        finite = self._finite_levels()  # (L,): whether each level's parameters are all finite
        vals = torch.cat([vals, finite.to(vals.dtype)]).cpu().tolist()  # the one sync of the interval
        vals, finite = vals[:len(losses)], dict(zip(self.cms.params, vals[len(losses):]))
        self._check_finite(step, vals, [n for n, ok in finite.items() if not ok])
        tele = self.cms.drain_telemetry()
        rec = {"step": step, "train_loss": sum(vals) / len(vals), "train_bpc": sum(vals) / len(vals) / LN2,
               "chars_per_s": len(vals) * self.chars_per_step / max(time.perf_counter() - t0, 1e-9),
               "lr": self.cms.lr_table(step),
               "updates": {n: t["updates"] for n, t in tele.items()},
               "grad_norm": {n: t["grad_norm"] for n, t in tele.items()},
               "change_norm": {n: t["change_norm"] for n, t in tele.items()}}
        rec.update(self.carrier.telemetry())
        if self.graph is not None:
            rec["cuda_graph"] = self.graph.telemetry()
        if self.surprise is not None:
            rec["surprise"] = self.surprise.drain_metrics()
        if valid is not None:
            rec["valid_bpc"] = valid["bpc"]
        return rec

    def _check_finite(self, step: int, losses: list[float], bad: list[str]) -> None:
        """Raise NonFiniteError if the interval ending at `step` diverged, naming the first step with a
        non-finite loss and the level whose update made its parameters non-finite before it (a level
        updated at or after that step may only have taken in the non-finite gradients that followed)."""
        first = next((step - len(losses) + 1 + k for k, v in enumerate(losses) if not math.isfinite(v)), None)
        last = self.cms.last_update
        culprits = [n for n in bad if first is None or last[n] < first]
        if culprits:
            n = max(culprits, key=lambda name: last[name]) if first is not None else min(culprits, key=last.get)
            where = f"the loss at step {first} is non-finite: " if first is not None else ""
            raise NonFiniteError(f"training diverged: {where}level {n!r} has non-finite parameters after its update "
                                 f"at step {last[n]}: lower cms.levels.{n}.lr or clip gradients (cms.grad_clip)",
                                 step=last[n], level=n)
        if first is not None:
            raise NonFiniteError(f"training diverged: non-finite loss at step {first} with finite parameters (an "
                                 f"overflow in the forward pass): lower the learning rates", step=first)

    def _finite_levels(self) -> torch.Tensor:
        """(levels,) bool on the device: whether every parameter of each CMS level is finite."""
        flags = [torch.stack([torch.isfinite(p.detach()).all() for p in ps]).all() if ps else
                 torch.ones((), dtype=torch.bool, device=self.device) for ps in self.cms.params.values()]
        return torch.stack([f.to(self.device) for f in flags])

    def run(self, *, resume: bool = False, overwrite: bool = False, stop_after: int | None = None) -> dict:
        """Train to cfg.steps, then evaluate valid and test on the whole splits and write the summary.

        `resume`: continue the run in out_dir from its checkpoint (a finished run is returned as it
        is); `overwrite`: replace a run already in out_dir; `stop_after`: stop after that many steps
        without writing anything more, as a kill would (the tests' interruption)."""
        cfg, out = self.cfg, self.out_dir
        write = out is not None and self.is_main
        metrics_path = out / "metrics.jsonl" if out is not None else None
        if out is not None:
            if self.is_main:
                rundir.prepare(out, resume=resume, overwrite=overwrite)
            if resume and rundir.status(out) == "finished":
                print(f"{out} holds a finished run: nothing to resume", file=sys.stderr)
                return json.loads((out / "summary.json").read_text())
            if resume:
                self.load_checkpoint(out / ckpt.CHECKPOINT_NAME)
                if write and metrics_path.exists():
                    trim_metrics(metrics_path, self.step)  # lines logged after the checkpoint come again
                if metrics_path.exists():
                    self.history = [r for r in read_metrics(metrics_path) if "train_loss" in r]
            if write:
                out.mkdir(parents=True, exist_ok=True)
                rundir.write_start(out, config=to_dict(cfg), command=self.command, device=self.device,
                                   data=self.data, resumed_at=self.step if resume else None)
        t_start = time.perf_counter()
        try:
            on = self.stop_on_signal and self.world.world_size == 1  # N ranks: torchrun stops them
            with rundir.StopSignal(enabled=on) as signal:
                ended = self._loop(metrics_path if write else None, stop_after, signal)
            if ended == "stop_after":
                return {"stopped_at": self.step}
            if ended == "signal":
                raise StoppedError(f"stopped by SIGTERM at step {self.step} of {cfg.steps}, its checkpoint saved"
                                   + (f" in {out}: continue with --resume" if out is not None else ""))
        except StoppedError:  # here, or from after_step (a continual probe's phase B stops at a probe point)
            if write:
                rundir.write_end(out, self._ended("stopped", self.step, message="stopped by SIGTERM"),
                                 wall_time_s=time.perf_counter() - t_start)
            raise
        except NonFiniteError as e:
            if write:
                rundir.write_end(out, self._ended("diverged", e.step or self.step, level=e.level, message=str(e)),
                                 wall_time_s=time.perf_counter() - t_start)
            raise
        except KeyboardInterrupt:
            if write:
                rundir.write_end(out, self._ended("stopped", self.step), wall_time_s=time.perf_counter() - t_start)
            raise
        self.cms.finish(cfg.steps)
        self.cms.drain_telemetry()
        valid = self.evaluate("valid", by_position=True)
        test = self.evaluate("test")
        dynamic = {s: self.evaluate_dynamic(s) for s in ("valid", "test")} if cfg.dynamic_eval_lr > 0 else None
        summary = self._summary(valid, test, time.perf_counter() - t_start, dynamic)
        summary.update(self.world.summary())  # N ranks: the world size and each level's all-reduces
        if out is not None:
            self.save_checkpoint()
        if write:
            rundir.write_end(out, summary, wall_time_s=summary["wall_time_s"],
                             extra={"corpus": self.corpus.stats, "tokenizer": self.corpus.tokenizer.to_dict()})
        return summary

    def _loop(self, metrics_path: Path | None, stop_after: int | None,
              signal: rundir.StopSignal | None = None) -> str | None:
        """Train to cfg.steps, logging, evaluating and checkpointing on the way. Returns
        "stop_after" when `stop_after` stopped it, "signal" when `signal` was asked: then at the
        first logged step after the request (its finite checks passed), with a checkpoint there."""
        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (self.progress and self.is_main), desc=cfg.name,
                   unit="step", dynamic_ncols=True)
        losses: list[torch.Tensor] = []
        t0 = time.perf_counter()
        last = self.step
        try:
            while self.step < cfg.steps:
                if stop_after is not None and self.step >= stop_after:
                    return "stop_after"
                self.step += 1
                losses.append(self.train_step(self.step))
                bar.update(1)
                s = self.step
                do_eval = cfg.eval_every > 0 and s % cfg.eval_every == 0 and s < cfg.steps
                if s % cfg.log_every == 0 or do_eval or s == cfg.steps:
                    self.wall_train += time.perf_counter() - t0
                    valid = self.evaluate("valid", cfg.eval_windows) if do_eval else None
                    rec = self._log(s, losses, t0, valid)  # raises NonFiniteError on a diverged step
                    self.history.append(rec)
                    if metrics_path is not None:
                        append_metrics(metrics_path, rec)
                    if valid is not None:
                        self.last_valid = valid["bpc"]
                    bar.set_postfix(loss=f"{rec['train_loss']:.3f}", valid_bpc=f"{self.last_valid:.3f}",
                                    cps=f"{rec['chars_per_s'] / 1e3:.0f}k")
                    if cfg.ckpt_every > 0 and s - last >= cfg.ckpt_every:  # after the finite checks
                        self.save_checkpoint()
                        last = s
                    if signal is not None and signal.asked and s < cfg.steps:
                        if last != s:
                            self.save_checkpoint()
                        return "signal"
                    losses = []
                    t0 = time.perf_counter()
                if self.after_step is not None:
                    t_hook = time.perf_counter()
                    self.after_step(self)
                    t0 += time.perf_counter() - t_hook  # the hook's time is no training time
        finally:
            bar.close()
        return None

    def _train_stats(self) -> dict:
        """Training loss over the last 100 steps (from every logged interval, resumed runs included)
        and its exp, the number the prototype reported as perplexity."""
        tail = [h["train_loss"] for h in self.history[-max(1, 100 // self.cfg.log_every):]]
        loss = sum(tail) / len(tail) if tail else float("nan")
        return {"train_loss_last100": loss, "train_ppl_last100": math.exp(loss) if loss < 700 else float("inf")}

    def _ended(self, status: str, step: int, **info) -> dict:
        """The summary of a run that did not finish: how and where it ended, what it had trained."""
        return {"status": status, "name": self.cfg.name, "seed": self.cfg.seed, "steps": self.step,
                "ended_at_step": step, **{k: v for k, v in info.items() if v is not None}, **self._train_stats(),
                "train_time_s": self.wall_train, "updates_by_level": dict(self.cms.updates)}

    def _summary(self, valid: dict, test: dict, wall: float, dynamic: dict | None = None) -> dict:
        last = self.history[-1] if self.history else {}
        out = {
            "status": "finished", "name": self.cfg.name, "seed": self.cfg.seed, "steps": self.step,
            "valid_bpc": valid["bpc"], "test_bpc": test["bpc"],
            "valid_targets": valid["targets"], "test_targets": test["targets"],
            "valid_bpc_by_position": valid.get("bpc_by_position"),
            **self._train_stats(),
            "chars_per_s": self.step * self.chars_per_step / max(self.wall_train, 1e-9),
            "wall_time_s": wall, "train_time_s": self.wall_train,
            "params": sum(p.numel() for p in self.model.parameters()),
            "params_by_level": self.cms.params_by_level(),
            "trainable_params": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "updates_by_level": dict(self.cms.updates),
            "entropy_rate_bits": getattr(self.corpus, "entropy_rate_bits", None),
            "final_lr": last.get("lr"), "cuda_graph": self.cuda_graph,
            "cuda_graph_counts": self.graph.telemetry() if self.graph is not None else None,
            "eval_graphs": {f"{r}x{t}": {"windows": g.graph_windows, "capture_error": g.failed}
                            for (r, t), g in self.eval_graphs.items()},  # evaluation windows replayed
        }
        if dynamic is not None:  # dynamic evaluation, beside the static numbers
            out.update(valid_bpc_dynamic=dynamic["valid"]["bpc"], test_bpc_dynamic=dynamic["test"]["bpc"])
        # training ended normally, yet the model may still blow up on held-out text (a carried state
        # that grows over a long split): say so beside the numbers, which stay non-finite (null)
        bad = [k for k in ("valid_bpc", "test_bpc", "valid_bpc_dynamic", "test_bpc_dynamic")
               if k in out and not math.isfinite(out[k])]
        out["non_finite_evaluation"] = bad
        return out


EVAL_ONLY = ("cuda_graph", "dynamic_eval_lr", "dynamic_eval_decay")  # speed or final evaluation only


def _training_config(config: dict) -> dict:
    """The fields a checkpoint must agree on to resume, in today's names (`from_dict`)."""
    return {k: v for k, v in to_dict(from_dict(config)).items() if k not in EVAL_ONLY}


def _flat(d: dict, prefix: str = "") -> dict:
    """{"a.b": v} for nested dicts; tuples of levels keyed by their names."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, dict) and "name" in x for x in v):
            for x in v:
                out.update(_flat(x, f"{key}.{x['name']}."))
        else:
            out[key] = v
    return out


def train(cfg: TrainConfig, out_dir: str | Path | None = None, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True, command: str | None = None) -> dict:
    """Train one run and return its summary (writing results when out_dir is given)."""
    return Trainer(cfg, out_dir, command=command, progress=progress).run(resume=resume, overwrite=overwrite)
