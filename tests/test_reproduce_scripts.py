"""The GPU scripts ask for what exists: run with a stand-in `python3` that only records its
arguments, every experiment, configuration, seed and bench label they would pass is checked
against the registry, so a typo fails here instead of in a call to the GPU machine."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from nlcore.bench.step import parse_config
from nlcore.experiments.registry import EXPERIMENTS

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "reproduce"


def calls(script: str, *args: str, tmp_path: Path) -> list[list[str]]:
    """The `python3` command lines `script` runs with `args` (the stand-in writes each as one line)."""
    stub, log = tmp_path / "bin", tmp_path / "calls.log"
    stub.mkdir()
    # one append per call: the scripts run several at once
    (stub / "python3").write_text('#!/usr/bin/env bash\nline=$(printf "%q " "$@")\necho "$line" >> "$LOG"\n')
    (stub / "python3").chmod(0o755)
    env = dict(os.environ, PATH=f"{stub}:{os.environ['PATH']}", WORK=str(tmp_path / "work"), LOG=str(log))
    done = subprocess.run(["bash", str(SCRIPTS / script), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def option(argv: list[str], name: str) -> list[str]:
    """The values after `name` up to the next option."""
    if name not in argv:
        return []
    rest = argv[argv.index(name) + 1:]
    return rest[:next((i for i, a in enumerate(rest) if a.startswith("--")), len(rest))]


def check_experiment(argv: list[str]) -> str:
    stem = argv[argv.index("experiment") + 1]
    gcs, seeds, _ = EXPERIMENTS[stem].grid("full")
    assert set(option(argv, "--configs")) <= {g.label for g in gcs}, argv
    assert {int(s) for s in option(argv, "--seeds")} <= set(seeds), argv
    return stem


def test_scaling_07_names_registered_configurations_and_benches_before_training(tmp_path):
    argv = calls("scaling_07.sh", "abc1234", str(tmp_path / "out"), "5", "bench", "8.2M=hope,hope_outer",
                 "33M", "shakespeare=nested_lstm,transformer", "width", "context", "bench_wide", tmp_path=tmp_path)
    verbs = [a[a.index("nlcore") + 1] for a in argv]
    assert verbs[:2] == ["bench", "bench"] and sorted(verbs[2:]) == ["experiment"] * 4, verbs
    for bench in argv[:2]:
        specs = option(bench, "--configs")
        for spec in [*specs, *option(bench, "--baseline")]:
            parse_config(spec)  # raises on an unknown experiment or label
        assert len(specs) == 6 and option(bench, "--baseline")[0] in specs
    stems = [check_experiment(a) for a in argv[2:]]
    assert sorted(stems) == ["07_scaling", "07_scaling", "07_shakespeare", "07_width"]
    assert ["hope_8.2M", "hope_outer_8.2M"] in [option(a, "--configs") for a in argv]


def test_scaling_07_refuses_an_unknown_part(tmp_path):
    stub = tmp_path / "x"
    done = subprocess.run(["bash", str(SCRIPTS / "scaling_07.sh"), "abc", str(stub), "5", "65M"],
                          env=dict(os.environ, WORK=str(tmp_path / "work")), capture_output=True, text=True)
    assert done.returncode == 2 and "unknown PART 65M" in done.stderr


@pytest.mark.parametrize("script,args", [
    ("sample_06.sh", ("abc1234", "OUT", "5", "hope_no_momentum:0", "titans_norm:2", "titans_norm:1")),
    ("titans_cap_06.sh", ("abc1234", "OUT", "5")),
])
def test_06_scripts_train_and_sample_registered_configurations(tmp_path, script, args):
    args = tuple(str(tmp_path / a) if a == "OUT" else a for a in args)
    argv = calls(script, *args, tmp_path=tmp_path)
    trained = [a for a in argv if "experiment" in a]
    assert trained and all(check_experiment(a) == "06_hope_titans" for a in trained)
    outs = [option(a, "--out")[0] for a in trained]
    assert len(set(outs)) == len(outs)  # every training process has its own experiment folder
    sampled = [a for a in argv if "sample" in a]
    assert {option(a, "--run")[0] for a in sampled} <= {f"{o}/runs/{c}/seed{s}" for a, o in zip(trained, outs)
                                                        for c in option(a, "--configs") for s in option(a, "--seeds")}


@pytest.mark.parametrize("round_", ["1", "2", "3", "4", "5", "6", "7"])
def test_the_titans_search_sets_only_keys_the_config_has(tmp_path, round_):
    from nlcore.config import apply_overrides, preset

    (argv,) = calls("titans_mlp_search.sh", "abc1234", str(tmp_path / "out"), "5", round_, tmp_path=tmp_path)
    base = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    configs = [argv[i + 1] for i, a in enumerate(argv) if a == "--config"]
    assert len(configs) == int(option(argv, "--jobs")[0]) > 0
    for c in configs:
        _, _, overrides = c.partition(":")
        apply_overrides(preset(option(argv, "--preset")[0]), [*base, *overrides.split()])  # raises on a bad key
