"""The continual-learning probe: train on corpus A, then continue the same model on corpus B.

Phase A is an ordinary run (nlcore.training.trainer) on corpus A, read with a vocabulary shared
by both corpora (nlcore.data.joint_tokenizer) so that one embedding and one head serve both.
Phase B is a second run of `steps_b` steps on corpus B that starts from phase A's final
checkpoint (`Trainer.start_from`): the same weights and every CMS level's optimizer state
(moments and their step counts). Phase B's configuration is phase A's with corpus B, its own
number of steps and no intermediate evaluation of its own (`phase_b_config`), so its
learning-rate schedule is A's run again over B's steps: warm-up, then decay.

The carried recurrent state is reset (zero) at the switch. The rows of corpus B do not continue
the rows of corpus A, so carrying A's final state would hand B the context of an unrelated text;
starting from zero is what a fresh run on B does, and it leaves only the learned weights (and
the optimizer states) to carry what phase A learned.

Held-out bpc on A's and B's valid splits is measured at point 0 (the end of phase A) and at K
points of phase B, after steps round(k * steps_b / K), k = 1..K; the last point is taken after
phase B's run ends, on the model its checkpoint holds (a final partial CMS chunk applied). Both
test splits are measured at point 0 and at the end. From these recorded numbers:

    forgetting = bpc_A(end) - bpc_A(point 0)   (a rise on A: what phase B overwrote)
    learning   = bpc_B(point 0) - bpc_B(end)   (a fall on B: what phase B learned)

The run directory (never silently reused, as nlcore.training.rundir):

    meta.json        from the start: both configurations, the probe's numbers, the command, the
                     files of both corpora (path, size, SHA-256), the joint tokenizer
    phase_a/         phase A's run directory (meta.json, metrics.jsonl, checkpoint.pt, summary.json)
    phase_b/         phase B's run directory
    continual.jsonl  one line per evaluation point
    summary.json     how the probe ended, every point, forgetting and learning

Phase B writes its checkpoint at each evaluation point, right after the point is recorded (its
own `ckpt_every` is off), and once more when it ends. `resume=True` continues phase A from its
checkpoint (a finished phase A is kept), then phase B from its last checkpoint: the points up to
that step are kept and the ones after it come again, and a finished phase B only takes the last
point again. Phase B without a checkpoint, or without point 0, starts over from phase A's. A
SIGTERM (what `timeout` sends) stops phase A at its next logged step and phase B at its next
evaluation point, each with its checkpoint there, and the probe's summary reads "stopped". One
process only.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from nlcore import repro
from nlcore.accel import ddp
from nlcore.config import TrainConfig, apply_overrides, to_dict
from nlcore.data import joint_tokenizer
from nlcore.errors import NonFiniteError, RunDirError, StoppedError
from nlcore.results import append_metrics, read_json, read_metrics, trim_metrics
from nlcore.training import checkpoint as ckpt
from nlcore.training import rundir
from nlcore.training.checkpoint import CHECKPOINT_NAME
from nlcore.training.evaluate import evaluate
from nlcore.training.trainer import Trainer, load_data, make_stream

PROBE_FILES = ("meta.json", "summary.json", "continual.jsonl", "phase_a", "phase_b")


def phase_b_config(cfg_a: TrainConfig, corpus_b: str, steps_b: int, set_b: tuple[str, ...] = ()) -> TrainConfig:
    """Phase A's configuration on corpus B for `steps_b` steps (evaluated by the probe only), then `set_b`."""
    return apply_overrides(cfg_a, [f"name={cfg_a.name}_phase_b", f"data.corpus={corpus_b}", f"steps={steps_b}",
                                   "eval_every=0", "ckpt_every=0", *set_b])  # the probe checkpoints at its points


def eval_steps(steps_b: int, k: int) -> list[int]:
    """The phase-B steps after which the probe evaluates: round(i * steps_b / k), i = 1..k."""
    if not 1 <= k <= steps_b:
        raise ValueError(f"eval_points: need 1 <= K <= steps_b={steps_b}, got {k}")
    return [round(i * steps_b / k) for i in range(1, k + 1)]


def changes(points: list[dict]) -> dict:
    """Forgetting (the rise on A) and learning (the fall on B) between the first and the last
    recorded point, on valid and, where both points hold it, on test."""
    first, last = points[0], points[-1]
    out = {"forgetting_bpc": last["a_valid_bpc"] - first["a_valid_bpc"],
           "learning_bpc": first["b_valid_bpc"] - last["b_valid_bpc"]}
    if "a_test_bpc" in first and "a_test_bpc" in last:
        out.update(forgetting_test_bpc=last["a_test_bpc"] - first["a_test_bpc"],
                   learning_test_bpc=first["b_test_bpc"] - last["b_test_bpc"])
    return out


class Probe:
    """Held-out bpc of a trainer's model on both corpora, streamed as the trainer evaluates its own
    (same batch rows, window and reset policy), so point 0 on A equals phase A's own final valid bpc."""

    def __init__(self, trainer: Trainer, corpora: dict[str, object]) -> None:
        d = trainer.cfg.data
        eb = d.eval_batch_size or d.batch_size
        self.trainer = trainer
        self.streams = {(key, split): make_stream(c, split, eb, d.seq_len, trainer.device, rows=trainer.world.rows(eb))
                        for key, c in corpora.items() for split in ("valid", "test")}

    def __call__(self, point: int, step_b: int, *, test: bool = False) -> dict:
        t = self.trainer
        rec = {"point": point, "step_b": step_b, "chars_b": step_b * t.chars_per_step}
        for (key, split), (stream, cuts) in self.streams.items():
            if split == "valid" or test:
                rec[f"{key}_{split}_bpc"] = evaluate(t.model, stream, t.cfg.state, device=t.device, amp=t.amp,
                                                     doc_cuts=cuts, graph=t.eval_graph(stream))["bpc"]
        return rec


def resumed_points(jsonl: Path, dir_b: Path) -> list[dict]:
    """The points a resumed phase B keeps: those up to its checkpoint's step, rewritten into `jsonl`
    (the ones after it come again); none, so that phase B starts over, without a checkpoint or
    without point 0."""
    if not (dir_b / CHECKPOINT_NAME).is_file() or not jsonl.is_file():
        return []
    at = int(ckpt.load(dir_b / CHECKPOINT_NAME)["step"])
    trim_metrics(jsonl, at, step_key="step_b")
    kept = read_metrics(jsonl)
    return kept if kept and kept[0]["step_b"] == 0 else []


def prepare_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Check `out` before a probe starts in it; `overwrite` removes a probe already there."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file: give a folder for the run")
    if resume and overwrite:
        raise RunDirError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    present = [n for n in PROBE_FILES if (out / n).exists()]
    if resume and not present:
        raise RunDirError(f"nothing to resume in {out}: drop --resume to start a new run there")
    if present and not (resume or overwrite):
        raise RunDirError(f"{out} already holds a run ({', '.join(present)}): pass --resume to continue it, "
                          f"--overwrite to replace it, or choose another --out")
    if overwrite:
        for n in present:
            shutil.rmtree(out / n) if (out / n).is_dir() else (out / n).unlink()


def run_continual(cfg_a: TrainConfig, steps_b: int, out_dir: str | Path, *, corpus_b: str = "tinyshakespeare",
                  eval_points: int = 4, set_b: tuple[str, ...] = (), resume: bool = False, overwrite: bool = False,
                  command: str | None = None, progress: bool = True, stop_after: int | None = None) -> dict:
    """Run the probe (the module docstring) into `out_dir` and return its summary. `stop_after`:
    stop phase B after that many steps without writing anything more, as a kill would (the tests'
    interruption)."""
    out = Path(out_dir)
    if ddp.env_world_size() > 1:
        raise ValueError("continual: the probe runs in one process: start it without torchrun")
    cfg_a = cfg_a.validate()
    cfg_b = phase_b_config(cfg_a, corpus_b, steps_b, set_b)
    steps = eval_steps(steps_b, eval_points)
    prepare_dir(out, resume=resume, overwrite=overwrite)
    if resume and rundir.status(out) == "finished":
        print(f"{out} holds a finished run: nothing to resume", file=sys.stderr)
        return read_json(out / "summary.json")
    command = command if command is not None else " ".join(sys.argv)
    own = {"a": load_data(cfg_a), "b": load_data(cfg_b)}  # each with its own train vocabulary
    tok = joint_tokenizer(own.values())
    corpora = {k: load_data(c, tok) for k, c in (("a", cfg_a), ("b", cfg_b))}
    files = list(dict.fromkeys((*corpora["a"].files, *corpora["b"].files)))
    probe_cfg = {"corpus_a": corpora["a"].name, "corpus_b": corpora["b"].name, "steps_a": cfg_a.steps,
                 "steps_b": steps_b, "eval_points": eval_points, "eval_steps_b": steps, "set_b": list(set_b)}
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_start(out, config={"probe": probe_cfg, "phase_a": to_dict(cfg_a), "phase_b": to_dict(cfg_b)},
                       command=command, device=repro.pick_device(cfg_a.device), data=rundir.data_files(files))
    t_start = time.perf_counter()
    points: list[dict] = []
    base = {"status": "finished", **probe_cfg, "vocab_size": tok.vocab_size,
            "unknown": {k: {s: c.stats[s]["unknown"] for s in ("train", "valid", "test")} for k, c in corpora.items()}}

    def end(status: str, **info) -> dict:
        summary = {**base, "status": status, **info, "points": points}
        rundir.write_end(out, summary, wall_time_s=time.perf_counter() - t_start, tokenizer=tok.to_dict())
        return summary

    phase = "a"
    try:
        dir_a = out / "phase_a"
        resume_a = resume and (dir_a / CHECKPOINT_NAME).is_file()
        summary_a = Trainer(cfg_a, dir_a, command=command, progress=progress, tokenizer=tok).run(
            resume=resume_a, overwrite=not resume_a)
        phase = "b"
        dir_b, jsonl = out / "phase_b", out / "continual.jsonl"
        points += resumed_points(jsonl, dir_b) if resume else []
        resume_b = bool(points)
        if not resume_b:
            jsonl.unlink(missing_ok=True)  # phase B starts over, and its points with it

        def record(rec: dict) -> None:
            points.append(rec)
            append_metrics(jsonl, rec)

        def after_step(trainer: Trainer) -> None:
            if trainer.step in steps[:-1]:
                record(probe(steps.index(trainer.step) + 1, trainer.step))
                trainer.save_checkpoint()  # a resume keeps every point up to here
                if sigterm.asked:
                    raise StoppedError(f"stopped by SIGTERM at phase B's step {trainer.step} of {steps_b} (a probe "
                                       f"point), its checkpoint saved in {out}: continue with --resume")

        # a SIGTERM in phase B stops it at its next probe point, the only place a resume continues from
        trainer_b = Trainer(cfg_b, dir_b, command=command, progress=progress, tokenizer=tok, after_step=after_step,
                            stop_on_signal=False)
        probe = Probe(trainer_b, corpora)
        with rundir.StopSignal() as sigterm:
            if not resume_b:
                trainer_b.start_from(dir_a / CHECKPOINT_NAME)
                record(probe(0, 0, test=True))
            if resume_b and rundir.status(dir_b) == "finished":  # phase B ended: the final model, its last point
                trainer_b.load_checkpoint(dir_b / CHECKPOINT_NAME)
                summary_b = read_json(dir_b / "summary.json")
            else:
                summary_b = trainer_b.run(resume=resume_b, overwrite=not resume_b, stop_after=stop_after)
                if "stopped_at" in summary_b:
                    return summary_b
            if points[-1]["step_b"] != steps_b:  # the last point, unless a run stopped after taking it
                record(probe(len(steps), steps_b, test=True))  # a signal here lets the probe finish
    except NonFiniteError as e:
        end("diverged", phase=phase, ended_at_step=e.step, level=e.level, message=str(e))
        raise
    except (KeyboardInterrupt, StoppedError):  # a SIGTERM stop keeps a checkpoint to resume from
        end("stopped", phase=phase)
        raise
    first, last = points[0], points[-1]
    return end("finished", **{f"{k}_after_a": first[k] for k in first if k.endswith("_bpc")},
               **{f"{k}_end": last[k] for k in last if k.endswith("_bpc")}, **changes(points),
               phase_a={k: summary_a.get(k) for k in ("valid_bpc", "test_bpc", "train_loss_last100")},
               phase_b={k: summary_b.get(k) for k in ("valid_bpc", "test_bpc", "train_loss_last100")})
