"""nlcore.report.plotting: the style, slug rules, byte-identical figure files, the CI band."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from nlcore.report import plotting

OKABE_ITO = {"#000000", "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00",
             "#cc79a7"}


def new_figure(seed: int = 0) -> Figure:
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    x = np.arange(20)
    mean = np.cumsum(rng.normal(size=20))
    plotting.band(ax, x, mean, mean - 1, mean + 1, label="cms", n=3)
    ax.set(xlabel="step", ylabel="bpc", title="a figure")
    ax.legend()
    return fig


def test_palette_is_okabe_ito():
    assert {c.lower() for c in plotting.PALETTE.values()} == OKABE_ITO
    assert len(plotting.CYCLE) == 8


def test_apply_style_sets_the_cycle_and_grid():
    with mpl.rc_context():
        plotting.apply_style()
        colors = [to_hex(c) for c in mpl.rcParams["axes.prop_cycle"].by_key()["color"]]
        assert colors == [c.lower() for c in plotting.CYCLE]
        assert mpl.rcParams["axes.grid"] is True
        assert mpl.rcParams["font.size"] >= 10


@pytest.mark.parametrize("slug", ["Bad", "a b", "", "x.png", "../x", "a/b", "é", "a-b", None])
def test_save_figure_rejects_bad_slugs(slug, tmp_out):
    with pytest.raises(ValueError, match="slug"):
        plotting.save_figure(new_figure(), slug, tmp_out)
    assert list(tmp_out.iterdir()) == []


def test_save_figure_rejects_unknown_formats(tmp_out):
    with pytest.raises(ValueError, match="formats"):
        plotting.save_figure(new_figure(), "ok", tmp_out, formats=("jpg",))


def test_save_figure_writes_png_and_pdf(tmp_out):
    paths = plotting.save_figure(new_figure(), "recall_vs_len", tmp_out / "04_delta_rule")
    assert [p.name for p in paths] == ["recall_vs_len.png", "recall_vs_len.pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG")
    assert paths[1].read_bytes().startswith(b"%PDF")
    assert b"CreationDate" not in paths[1].read_bytes()
    assert b"matplotlib" not in paths[0].read_bytes().lower()


@pytest.mark.parametrize("styled", [False, True])
def test_saving_the_same_figure_twice_gives_identical_bytes(tmp_out, styled):
    with mpl.rc_context():
        if styled:
            plotting.apply_style()
        fmts = ("png", "pdf", "svg")
        first = plotting.save_figure(new_figure(), "fig_1", tmp_out / "a", formats=fmts)
        again = plotting.save_figure(new_figure(), "fig_1", tmp_out / "b", formats=fmts)
    for p, q in zip(first, again):
        assert p.read_bytes() == q.read_bytes(), p.name
    other = plotting.save_figure(new_figure(seed=1), "fig_1", tmp_out / "c", formats=("png",))
    assert other[0].read_bytes() != first[0].read_bytes()


def test_band_labels_n_and_shades_in_the_line_colour():
    fig = Figure()
    ax = fig.add_subplot()
    x = np.arange(5.0)
    line = plotting.band(ax, x, x, x - 0.5, x + 0.5, label="lstm", n=3, color="#D55E00")
    assert line.get_label() == "lstm (n=3)"
    (poly,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert to_hex(poly.get_facecolor()[0][:3]) == "#d55e00"
    assert ax.get_legend_handles_labels()[1] == ["lstm (n=3)"]


def test_band_with_a_single_seed_draws_no_band():
    fig = Figure()
    ax = fig.add_subplot()
    nan = np.full(3, np.nan)
    line = plotting.band(ax, [0, 1, 2], [1.0, 2.0, 3.0], nan, nan, label="one", n=1)
    assert line.get_label() == "one (n=1)"
