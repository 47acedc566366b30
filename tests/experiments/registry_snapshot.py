"""The resolved `TrainConfig` of every registered run, as `run_grid` resolves it.

For every experiment, mode, configuration label and seed the fixture
(`fixtures/registry_configs.json`) holds the preset and `--set` overrides the registry hands to
`run_grid` and the config they resolve to, `to_dict(apply_overrides(preset(p), overrides))`.
It is the contract `test_registry_snapshot.py` holds the registry to.

    PYTHONPATH=. python tests/experiments/registry_snapshot.py            # snapshot the registry
    PYTHONPATH=. python tests/experiments/registry_snapshot.py --refresh  # re-resolve the stored inputs
    PYTHONPATH=. python tests/experiments/registry_snapshot.py --stems 07_scaling 07_width  # only these

`--refresh` keeps the stored presets and overrides and only resolves them again, for when the
config schema itself changes (a field renamed or added); the registry is never consulted, so
the contract stays the one that was snapshotted. `--stems` snapshots the named experiments from the
registry again (added, or changed on purpose) and keeps every other stored entry as it is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nlcore.config import apply_overrides, preset, to_dict

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "registry_configs.json"
MODES = ("smoke", "full")


def resolve(preset_name: str, overrides: list[str]) -> dict:
    """The config `run_grid` trains for these arguments (its in-process path, one line)."""
    return to_dict(apply_overrides(preset(preset_name), list(overrides)))


def registry_inputs() -> dict[str, dict]:
    """{"<stem>/<mode>/<label>/seed<k>": {"preset", "overrides"}} over the whole registry."""
    from nlcore.experiments import EXPERIMENTS

    out = {}
    for stem in sorted(EXPERIMENTS):
        for mode in MODES:
            gcs, seeds, common = EXPERIMENTS[stem].grid(mode)
            for gc in gcs:
                for seed in seeds:
                    out[f"{stem}/{mode}/{gc.label}/seed{seed}"] = {
                        "preset": gc.preset, "overrides": [*common, *gc.overrides, f"seed={seed}"]}
    return out


def snapshot(inputs: dict[str, dict]) -> dict[str, dict]:
    return {k: {**v, "config": resolve(v["preset"], v["overrides"])} for k, v in inputs.items()}


if __name__ == "__main__":
    args = sys.argv[1:]
    unknown = [a for a in (args[:args.index("--stems")] if "--stems" in args else args) if a != "--refresh"]
    if unknown or args[-1:] == ["--stems"]:
        sys.exit(__doc__.split("\n\n")[2] + f"\nunknown or incomplete arguments: {' '.join(args)}")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    if "--stems" in args:
        stems = set(args[args.index("--stems") + 1:])
        kept = {k: v for k, v in json.loads(FIXTURE.read_text()).items() if k.split("/")[0] not in stems}
        fresh = {k: v for k, v in registry_inputs().items() if k.split("/")[0] in stems}
        FIXTURE.write_text(json.dumps({**kept, **snapshot(fresh)}, indent=1, sort_keys=True) + "\n")
        print(f"wrote {FIXTURE} ({len(kept) + len(fresh)} runs, {len(fresh)} of {sorted(stems)} snapshotted again)")
        sys.exit(0)
    inputs = json.loads(FIXTURE.read_text()) if "--refresh" in args else registry_inputs()
    FIXTURE.write_text(json.dumps(snapshot(inputs), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE} ({len(inputs)} runs)")
