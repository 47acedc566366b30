"""Config validation names the field; --set overrides are typed; presets differ only in numbers."""

from __future__ import annotations

import dataclasses

import pytest

from nlcore.config import (
    PRESETS,
    TrainConfig,
    apply_overrides,
    from_dict,
    override,
    preset,
    to_dict,
)


@pytest.mark.parametrize("pair, field", [
    ("cms.levels.slow.chunk=0", "cms.levels.slow.chunk"),
    ("cms.levels.fast.lr=-1", "cms.levels.fast.lr"),
    ("data.seq_len=1", "data.seq_len"),
    ("data.batch_size=0", "data.batch_size"),
    ("model.embed_level=turbo", "model.embed_level"),
    ("surprise.weights.turbo=0.1", "surprise.weights.turbo"),
    ("cms.aggregation=median", "cms.aggregation"),
    ("state.reset=sometimes", "state.reset"),
    ("steps=0", "steps"),
])
def test_invalid_values_name_the_field(pair, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        apply_overrides(preset("smoke"), [pair])


@pytest.mark.parametrize("pair, match", [
    ("cms.levels.turbo.lr=1", "unknown level 'turbo'"),
    ("model.width=3", "unknown key 'width'"),
    ("cms.levels=3", "group"),
])
def test_unknown_keys_name_the_key(pair, match):
    with pytest.raises(KeyError, match=match):
        apply_overrides(preset("smoke"), [pair])


def test_bad_value_type_names_key():
    with pytest.raises(ValueError, match="data.batch_size"):
        apply_overrides(preset("smoke"), ["data.batch_size=many"])


def test_overrides_are_typed():
    cfg = apply_overrides(preset("seed"), ["cms.levels.slow.lr=1e-3", "steps=10", "model.norm_residual=false",
                                           "surprise.weights.fast=0.05", "data.eval_batch_size=none"])
    assert cfg.cms.level("slow").lr == 1e-3 and cfg.steps == 10 and cfg.model.norm_residual is False
    assert cfg.surprise.weights == {"fast": 0.05} and cfg.data.eval_batch_size is None
    cfg2 = override(cfg, "surprise.weights.fast", "0")
    assert cfg2.surprise.weights == {}


def test_round_trip_through_dict():
    for name in PRESETS:
        cfg = preset(name)
        assert from_dict(to_dict(cfg)) == cfg


def _shape(cfg) -> object:
    """The structure of a config with every number erased."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: _shape(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple):
        return tuple(_shape(c) for c in cfg)
    return type(cfg).__name__


def test_smoke_is_seed_with_other_numbers():
    seed, smoke = preset("seed"), preset("smoke")
    assert _shape(seed)["cms"] == _shape(smoke)["cms"]
    assert [lv.name for lv in seed.cms.levels] == [lv.name for lv in smoke.cms.levels]
    assert seed.model.kind == smoke.model.kind and seed.cms.aggregation == smoke.cms.aggregation
    assert seed.state == smoke.state and seed.schedule == smoke.schedule


def test_prototype_compat_is_never_default():
    assert TrainConfig().compat == "none"
    assert all(preset(n).compat == "none" for n in PRESETS if n != "seed_prototype")
