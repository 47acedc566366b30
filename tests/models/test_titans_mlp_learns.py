"""The Titans MLP memory is used: a trained memory sits away from the zero fixed point, and turning
its writes off costs held-out bits (the default parameterisation, which decays to zero, fails both)."""

from __future__ import annotations

import pytest
import torch

from nlcore.config import apply_overrides, preset
from nlcore.experiments.registry import TITANS_NORM
from nlcore.models import build_model
from nlcore.models.memory_layers import writes_off
from nlcore.training.trainer import Trainer

# small Titans models on the synthetic key-recall corpus: the closing key is 40-80 characters after
# the opening one, beyond a memory chunk, so only the memories can carry it
SMALL = ("data.seq_len=128", "data.batch_size=8", "model.mem_chunk=16", "model.d_model=64", "model.n_layers=2",
         "model.n_heads=4", "model.d_ff=128", "model.kind=titans", "model.memory=mlp", "eval_every=0",
         "ckpt_every=0", "log_every=100", "warmup=30", "cms.levels.fast.lr=3e-3", "steps=400", "seed=0",
         "device=cpu")
NORMALISED = ("model.mem_retention=init", "model.mem_normalize=true")  # retention to θ_init, curvature-bounded step
REGISTERED = TITANS_NORM  # 06's titans_norm: the same with the step's ceiling at 0.5
DEFAULT = ("model.mem_retention=zero",)  # 06's titans: decays to θ = 0, where its gradient vanishes


@pytest.mark.slow
@pytest.mark.parametrize("variant, learns", [(NORMALISED, True), (REGISTERED, True), (DEFAULT, False)],
                         ids=["normalised", "titans_norm", "default"])
def test_a_trained_mlp_memory_is_away_from_zero_and_its_writes_cost_bits(variant, learns):
    tr = Trainer(apply_overrides(preset("smoke"), [*SMALL, *variant]), None, progress=False, command="test")
    tr.run()
    on = tr.evaluate("valid")["bpc"]
    with writes_off(tr.model):
        off = tr.evaluate("valid")["bpc"]
    T = tr.cfg.data.seq_len
    ratio = tr.model.memory_ratio(tr.corpus.ids["valid"][: 4 * T].view(1, -1), T)
    if learns:
        assert ratio > 0.8 and off - on > 0.05, (ratio, off - on)
    else:  # on its way to θ = 0, and nothing it writes is worth a bit
        assert ratio < 0.5 and off - on < 0.02, (ratio, off - on)


def test_writes_off_keeps_every_memory_at_the_weights_it_starts_from():
    torch.manual_seed(0)
    cfg = apply_overrides(preset("smoke"), [*SMALL, *NORMALISED, "model.n_layers=1"])
    model = build_model(cfg.model, 20)
    x = torch.randint(0, 20, (2, 64))
    with torch.no_grad():
        _, moved = model(x)
        with writes_off(model):
            _, kept = model(x)
        _, again = model(x)
    assert all(float(v.abs().max()) == 0.0 for v in kept.values())  # offsets and momenta stay zero
    assert any(float(v.abs().max()) > 0.0 for v in moved.values())
    assert all(torch.equal(moved[k], again[k]) for k in moved)  # the switch is restored on exit
    x = torch.randint(0, 20, (1, 256))
    with writes_off(model):
        assert model.memory_ratio(x, 64) == pytest.approx(1.0, abs=1e-6)  # |θ| / |θ_init| of a kept memory
    with torch.no_grad():
        W1, W2 = model.mems[0].W1_init, model.mems[0].W2_init
        _, st = model(x[:, :64])
        want = torch.cat([(W1 + st["0.W1"][0]).flatten(), (W2 + st["0.W2"][0]).flatten()]).norm() / \
            torch.cat([W1.flatten(), W2.flatten()]).norm()
    assert model.memory_ratio(x[:, :64], 64) == pytest.approx(float(want), rel=1e-6)
    assert model.memory_ratio(x[:, :64], 64) != pytest.approx(1.0, abs=1e-4)  # writes move it
