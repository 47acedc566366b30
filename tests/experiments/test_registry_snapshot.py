"""The registry resolves to the committed configurations: every experiment, mode, label and seed
trains exactly the `TrainConfig` of `fixtures/registry_configs.json` (see registry_snapshot.py)."""

from __future__ import annotations

import json

import pytest
from registry_snapshot import FIXTURE, registry_inputs, resolve

SNAPSHOT = json.loads(FIXTURE.read_text())
INPUTS = registry_inputs()


def test_the_registry_runs_the_snapshotted_runs():
    assert sorted(INPUTS) == sorted(SNAPSHOT)  # same experiments, modes, labels and seeds


@pytest.mark.parametrize("key", sorted(SNAPSHOT))
def test_every_registered_run_resolves_to_its_snapshot(key):
    if key not in INPUTS:
        pytest.fail(f"{key} is no longer registered")
    got = resolve(INPUTS[key]["preset"], INPUTS[key]["overrides"])
    want = SNAPSHOT[key]["config"]
    assert json.loads(json.dumps(got)) == want  # tuples as JSON lists
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)  # and 1 is not 1.0
