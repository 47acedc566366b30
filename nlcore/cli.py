"""`python -m nlcore <command>`: train, continual, grid, experiment, recall, mqar, data, summarize, notebooks,
sample, bench.

Each sub-command parses its arguments here and calls one function of the package; nothing
heavy is imported until a command runs, so `--help` is instant. Every failure prints one line,
``error: <what is wrong>: <what to do>``, and exits non-zero (2 for a configuration mistake,
1 otherwise, 130 on Ctrl-C); ``--debug`` or ``NLCORE_DEBUG=1`` shows the traceback instead.
On a CPU, torch uses ``--threads`` threads (default 1, or $NLCORE_THREADS): two processes each
spinning several threads on a small machine slow each other down many times over.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from nlcore.accel import ddp as distributed
    from nlcore.config import apply_overrides, preset
    from nlcore.training import rundir
    from nlcore.training.trainer import Trainer

    cfg = apply_overrides(preset(args.preset), args.set or [])
    command = "python -m nlcore " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if distributed.env_world_size() <= 1 and not args.overwrite:  # before building anything
        rundir.prepare(Path(args.out), resume=args.resume, overwrite=False)
    try:  # under torchrun the Trainer joins the process group (nlcore.accel.ddp)
        trainer = Trainer(cfg, args.out, command=command, progress=not args.no_progress)
        summary = trainer.run(resume=args.resume, overwrite=args.overwrite)
        distributed.shutdown(sync=True)  # every rank done (rank 0 wrote its results), then leave together
    finally:
        distributed.shutdown()  # destroy the process group the Trainer created
    keys = ("valid_bpc", "test_bpc", "valid_bpc_dynamic", "test_bpc_dynamic", "train_ppl_last100", "chars_per_s",
            "updates_by_level", "params_by_level")
    if trainer.is_main:  # one process prints
        print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=2))
        if summary.get("non_finite_evaluation"):
            print(f"warning: training finished, but {', '.join(summary['non_finite_evaluation'])} is not finite: "
                  f"the model diverges on held-out text (see {args.out}/summary.json)", file=sys.stderr)
    return 0


def _continual(args: argparse.Namespace) -> int:
    from nlcore.config import apply_overrides, preset
    from nlcore.training.continual import run_continual

    cfg = apply_overrides(preset(args.preset), args.set or [])
    command = "python -m nlcore " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    summary = run_continual(cfg, args.steps_b, args.out, corpus_b=args.corpus_b, eval_points=args.eval_points,
                            set_b=tuple(args.set_b or ()), resume=args.resume, overwrite=args.overwrite,
                            command=command, progress=not args.no_progress)
    keys = ("a_valid_bpc_after_a", "a_valid_bpc_end", "b_valid_bpc_after_a", "b_valid_bpc_end", "forgetting_bpc",
            "learning_bpc")
    print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=2))
    return 0


def _grid(args: argparse.Namespace) -> int:
    from nlcore.experiments import parse_config_arg, run_grid

    configs = [parse_config_arg(c, args.preset) for c in args.config]
    df = run_grid(args.name, configs, args.seeds, Path(args.out), jobs=args.jobs, common=tuple(args.set or []))
    from nlcore.results import read_experiment

    _, summary, _ = read_experiment(Path(args.out))
    from nlcore.results import format_ci

    for r in summary:
        if r["metric"] in ("valid_bpc", "test_bpc"):
            print(f"{r['config']:>24s} {r['metric']:>10s} {format_ci(r, 4)}")
    return 0 if len(df) else 1


def _experiment(args: argparse.Namespace) -> int:
    from nlcore.experiments import run_experiment

    run_experiment(args.stem, args.mode, out=Path(args.out) if args.out else None, jobs=args.jobs,
                   only=args.configs, only_seeds=args.seeds, aggregate_only=args.aggregate_only)
    return 0


def _recall(args: argparse.Namespace) -> int:
    import pandas as pd

    from nlcore import repro
    from nlcore.experiments.recall import run_recall_benchmark
    from nlcore.results import write_experiment

    device = repro.pick_device(args.device)
    frames = []
    for d in args.d:
        for spread in args.key_norm_spread:
            for eta in args.eta:
                df = run_recall_benchmark(d=d, seeds=tuple(args.seeds), device=device, eta=eta,
                                          key_norm_spread=spread, correlation=args.correlation,
                                          overwrite_frac=args.overwrite_frac)
                frames.append(df.assign(d=d, key_norm_spread=spread, eta=eta))
    runs = pd.concat(frames).rename(columns={"method": "config"})
    write_experiment(Path(args.out), runs, meta={"experiment": "recall", "command": repro.command_line(),
                                                  "device": str(device), "args": vars(args) | {"func": None}})
    print(runs.groupby(["d", "key_norm_spread", "eta", "config", "load"])["value"].mean().unstack("load").round(3))
    return 0


def _mqar(args: argparse.Namespace) -> int:
    from nlcore import repro
    from nlcore.experiments.mqar import preset, run_mqar_grid
    from nlcore.results import format_ci, read_experiment

    n_pairs = args.n_pairs
    if n_pairs is not None and n_pairs != "scale":
        if not n_pairs.isdigit():
            raise ValueError(f"--n-pairs: expected an int or 'scale', got {n_pairs!r}")
        n_pairs = int(n_pairs)
    sets = [*(args.set or []), *([f"device={args.device}"] if args.device else [])]
    bases = {kind: preset(args.mode, kind, sets) for kind in args.model_kind}
    base = next(iter(bases.values()))
    run_mqar_grid({k: b.model for k, b in bases.items()}, args.seq_len or [base.seq_len], args.seeds,
                  Path(args.out), base=base, n_pairs=n_pairs, progress=not args.no_progress,
                  command=repro.command_line())
    _, summary, _ = read_experiment(Path(args.out))
    for r in summary:
        if r["metric"] == "accuracy":
            print(f"{r['config']:>16s} L={r['seq_len']:<5d} P={r['n_pairs']:<4d} accuracy {format_ci(r, 3)}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from nlcore.data import prepare
    from nlcore.training.evaluate import unigram_bpc

    corpus = prepare(args.corpus, data_root=args.data_root)
    info = {"name": corpus.name, "source": corpus.source, "split_note": corpus.split_note,
            "entropy_rate_bits": corpus.entropy_rate_bits, "stats": corpus.stats,
            "unigram_bpc": {s: unigram_bpc(corpus, s) for s in ("valid", "test")},
            "tokenizer": corpus.tokenizer.to_dict()}
    print(json.dumps({k: v for k, v in info.items() if k != "tokenizer"}, indent=2, default=str))
    if args.out:
        from nlcore import repro
        from nlcore.results import write_json

        out = Path(args.out)
        write_json(out / "summary.json", info)
        write_json(out / "meta.json", {"command": repro.command_line(), "git": repro.git_info(),
                                       "environment": repro.capture_environment()})
    return 0


def _summarize(args: argparse.Namespace) -> int:
    from nlcore.results import resummarize

    for d in args.dirs:
        changed = resummarize(Path(d))
        print(f"{d}/summary.json {'rewritten' if changed else 'unchanged'}")
    return 0


def _notebooks(args: argparse.Namespace) -> int:
    from nlcore.report.runner import run_notebooks

    return run_notebooks(view=args.view, only=args.only, verbose=args.verbose, publish=args.publish,
                         write_ipynb=args.write_ipynb)


def _sample(args: argparse.Namespace) -> int:
    from nlcore import repro
    from nlcore.results import write_json
    from nlcore.training.sampling import sample, sample_table

    if args.merge:
        from nlcore.results import read_json
        from nlcore.training.sampling import merge_tables

        if args.run or not args.out:
            raise ValueError("sample --merge joins records written by --out: give the records and --out, no --run")
        merged = merge_tables([read_json(p) for p in args.merge])
        write_json(args.out, merged)
        print(f"wrote {args.out}: {len(merged['samples'])} samples from {len(merged['sources'])} calls")
        return 0
    if not args.run:
        raise ValueError("sample: give --run (the runs to sample) or --merge (sample records to join)")
    prompts, device = args.prompt or ["\n"], repro.pick_device(args.device)
    if args.out is None and len(args.run) == 1 and len(prompts) == 1:
        s = sample(args.run[0], prompt=prompts[0], chars=args.chars, temperature=args.temperature,
                   top_k=args.top_k, seed=args.seed, write=not args.freeze, device=device,
                   progress=not args.no_progress, unfinished=args.unfinished)
        print(s.prompt + s.text)
        return 0
    table = sample_table(args.run, prompts, chars=args.chars, temperature=args.temperature, top_k=args.top_k,
                         seeds=(args.seed,), write=not args.freeze, device=device, progress=not args.no_progress,
                         unfinished=args.unfinished)
    for row in table["samples"]:
        bpc = "no summary" if row["test_bpc"] is None else f"test bpc {row['test_bpc']:.4f}"
        print(f"--- {row['run']} ({bpc}), seed {row['seed']}\n{row['prompt']}{row['text']}")
    if args.out:
        write_json(args.out, table)
        print(f"wrote {args.out}")
    return 0


def _evaluate_context(args: argparse.Namespace) -> int:
    from nlcore.errors import NlcoreError
    from nlcore.experiments.scaling import context_of_run

    for run in args.run:
        try:
            r = context_of_run(run, args.split, device=args.device, rows=args.rows, overwrite=args.overwrite)
        except NlcoreError as e:
            if not args.skip:
                raise
            print(f"skipped: {e}", flush=True)
            continue
        bins = " ".join(f"{e}:{b:.3f}" for e, b in zip(r["edges"], r["bpc"]) if b is not None)
        print(f"{run}: {r['bpc_mean']:.4f} bpc over {r['targets']} targets of {r['documents']} documents; "
              f"by context from (characters read) {bins}", flush=True)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from nlcore.bench.step import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nlcore",
                                description="Nested Learning, done carefully: train, run grids, inspect data, "
                                            "run the notebooks.")
    for parser, default in ((p, None), (common := argparse.ArgumentParser(add_help=False), argparse.SUPPRESS)):
        parser.add_argument("--debug", action="store_true", default=default or False,
                            help="show the traceback of a failure")
        parser.add_argument("--threads", type=int, default=default, help="torch CPU threads (default: $NLCORE_THREADS or 1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, **kw) -> argparse.ArgumentParser:  # --debug and --threads after the command too
        return sub.add_parser(name, parents=[common], **kw)


    t = command("train", help="train one run from a preset with --set overrides "
                                     "(data parallel under torchrun --nproc_per_node N)")
    t.add_argument("--preset", default="smoke", help="seed | seed_prototype | smoke (default: smoke)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field, e.g. cms.levels.slow.lr=1e-3, surprise.weights.fast=0.05")
    t.add_argument("--out", required=True, help="run directory (meta.json, metrics.jsonl, summary.json, checkpoint.pt)")
    t.add_argument("--resume", action="store_true", help="continue the run in OUT from its checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in OUT")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    c = command("continual", help="continual-learning probe: train on the preset's corpus (A), continue on "
                                  "--corpus-b (B); held-out bpc on both at K points")
    c.add_argument("--preset", default="smoke", help="phase A: seed | seed_prototype | smoke (default: smoke)")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field of phase A (and so of B)")
    c.add_argument("--corpus-b", required=True, help="wikitext2 | tinyshakespeare | synthetic | a folder")
    c.add_argument("--steps-b", type=int, required=True, help="phase B's training steps")
    c.add_argument("--eval-points", type=int, default=4, help="evaluation points during phase B (default: 4)")
    c.add_argument("--set-b", action="append", metavar="KEY=VALUE",
                   help="override a field of phase B only, e.g. data.synth_seed=1")
    c.add_argument("--out", required=True, help="run directory (meta.json, phase_a/, phase_b/, continual.jsonl, "
                                                "summary.json)")
    c.add_argument("--resume", action="store_true", help="continue the probe in OUT: phase A, then phase B from its last evaluation point")
    c.add_argument("--overwrite", action="store_true", help="replace a run already in OUT")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=_continual)

    g = command("grid", help="configurations x seeds, aggregated with Student-t intervals")
    g.add_argument("--name", required=True)
    g.add_argument("--preset", default="seed")
    g.add_argument("--config", action="append", required=True, metavar="'LABEL[@PRESET]: KEY=V ...'")
    g.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    g.add_argument("--jobs", type=int, default=1, help="runs in parallel (they share the device)")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every configuration")
    g.add_argument("--out", required=True)
    g.set_defaults(func=_grid)

    e = command("experiment", help="run a notebook's registered experiment (smoke or full) into results/")
    e.add_argument("stem", help="e.g. 01_cms")
    e.add_argument("--mode", choices=("smoke", "full"), default="smoke")
    e.add_argument("--jobs", type=int, default=0, help="parallel runs as subprocesses (0: in-process, sequential)")
    e.add_argument("--out", default=None, help="default: results/<stem> (full) or build/smoke/results/<stem>")
    e.add_argument("--configs", nargs="+", default=None, help="run only these configuration labels now")
    e.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="run (and aggregate) only these of the mode's seeds, e.g. 0")
    e.add_argument("--aggregate-only", action="store_true",
                   help="rebuild runs.csv, summary.json and meta.json from the finished run directories")
    e.set_defaults(func=_experiment)

    r = command("recall", help="associative-memory recall against load (Hebbian, GD, delta rules, least squares)")
    r.add_argument("--out", required=True)
    r.add_argument("--d", type=int, nargs="+", default=[64])
    r.add_argument("--eta", type=float, nargs="+", default=[1.0])
    r.add_argument("--key-norm-spread", type=float, nargs="+", default=[0.0])
    r.add_argument("--correlation", type=float, default=0.5)
    r.add_argument("--overwrite-frac", type=float, default=0.2)
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--device", default="auto")
    r.set_defaults(func=_recall)

    q = command("mqar", help="multi-query associative recall: train and test model kinds x lengths x seeds")
    q.add_argument("--model-kind", nargs="+", default=["lstm_lm"],
                   help="one or more of nested_lstm, lstm_lm, transformer, titans, hope (default: lstm_lm)")
    q.add_argument("--seq-len", type=int, nargs="+", default=None, help="sequence lengths L (default: the preset's)")
    q.add_argument("--n-pairs", default=None,
                   help="pairs per row: an int, or 'scale' for L // 16 (default: the preset's, at every L)")
    q.add_argument("--seeds", type=int, nargs="+", default=[0])
    q.add_argument("--mode", choices=("smoke", "full"), default="smoke")
    q.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a field of nlcore.experiments.mqar.MQARConfig, e.g. lr=3e-4, steps=300, model.d_model=64")
    q.add_argument("--device", default=None, help="auto | cpu | cuda[:N] (default: the preset's)")
    q.add_argument("--out", required=True, help="runs/<kind>/L<L>/seed<k>/ plus runs.csv, summary.json, meta.json")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_mqar)

    d = command("data", help="load a corpus and print its statistics")
    d.add_argument("corpus", nargs="?", default="synthetic")
    d.add_argument("--data-root", default=None)
    d.add_argument("--out", default=None, help="write summary.json (statistics, unigram bpc, tokenizer) + meta.json here")
    d.set_defaults(func=_data)

    m = command("summarize", help="rebuild summary.json from runs.csv (means and t intervals over seeds)")
    m.add_argument("dirs", nargs="+", help="experiment folders holding runs.csv")
    m.set_defaults(func=_summarize)

    n = command("notebooks", help="execute the notebooks with papermill in a view (committed, smoke, full)")
    n.add_argument("--view", choices=("committed", "smoke", "full"), default="committed",
                   help="committed: re-plot the committed results (default); smoke: run small on a CPU; "
                        "full: train on a GPU into results/ and figures/")
    n.add_argument("--only", default=None, help="a notebook number, e.g. 01 or A1")
    n.add_argument("--publish", action="store_true", help="committed view: draw the figures into figures/")
    n.add_argument("--write-ipynb", action="store_true",
                   help="committed view: write the executed notebooks to notebooks/NN_name.ipynb")
    n.add_argument("--verbose", action="store_true", help="print every cell as it runs (default: one line per notebook)")
    n.set_defaults(func=_notebooks)

    s = command("sample", help="text from a trained run: its model continues a prompt")
    s.add_argument("--run", nargs="+", default=None,
                   help="run directories holding checkpoint.pt (or the files themselves)")
    s.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="instead of sampling: join records written by --out with the same settings into --out")
    s.add_argument("--prompt", action="append", default=None,
                   help="the text to continue (default: a newline); repeat for several prompts")
    s.add_argument("--chars", type=int, default=200, help="characters to write (default: 200)")
    s.add_argument("--temperature", type=float, default=1.0, help="0 takes the most likely character (default: 1)")
    s.add_argument("--top-k", type=int, default=None, help="draw only among the k most likely characters")
    s.add_argument("--seed", type=int, default=0, help="the same seed writes the same text")
    s.add_argument("--freeze", action="store_true",
                   help="the generated text writes nothing into the carried state or HOPE's chain")
    s.add_argument("--unfinished", action="store_true",
                   help="sample a run that did not finish training (its last checkpoint: the model of a step before its end)")
    s.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: cpu)")
    s.add_argument("--out", default=None, help="write every run's texts, their settings and bpc to this JSON file")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_sample)

    x = command("evaluate-context", help="held-out bpc against the characters read since the document start "
                                         "(each document read from its start, state carried)")
    x.add_argument("--run", nargs="+", required=True, help="run directories holding checkpoint.pt")
    x.add_argument("--split", default="test", choices=("valid", "test"), help="(default: test)")
    x.add_argument("--device", default="auto", help="cpu | cuda | auto (default: auto)")
    x.add_argument("--rows", type=int, default=64, help="documents read side by side (default: 64)")
    x.add_argument("--overwrite", action="store_true", help="replace a run's bpc_by_context_<split>.json")
    x.add_argument("--skip", action="store_true", help="skip a run that cannot be measured (not finished, no "
                                                       "checkpoint, measured already), saying why, and go on")
    x.set_defaults(func=_evaluate_context)

    b = command("bench", help="throughput benchmark (characters/s, step time, memory)")
    from nlcore.bench.step import (
        add_arguments,  # standard library only at its top: --help stays fast
    )

    add_arguments(b)
    b.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    debug = args.debug or os.environ.get("NLCORE_DEBUG", "").strip() not in ("", "0")
    _cap_threads(args.threads)
    from nlcore.errors import NlcoreError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print("stopped (Ctrl-C): a training run keeps its last checkpoint; continue it with --resume",
              file=sys.stderr)
        return 130
    except NlcoreError as e:
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1
    except (ValueError, KeyError) as e:  # configuration mistakes
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - anything else: one line, the traceback on request
        if debug:
            raise
        print(f"error: {type(e).__name__}: {_one_line(e)} (unexpected: rerun with --debug for the traceback "
              f"and report it)", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    msg = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    return " ".join(msg.split())


def _cap_threads(threads: int | None) -> None:
    """torch's CPU threads: --threads, else $NLCORE_THREADS, else 1 (the module docstring says why)."""
    n = threads if threads is not None else int(os.environ.get("NLCORE_THREADS", "1"))
    import torch

    torch.set_num_threads(max(1, n))
