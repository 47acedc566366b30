"""Widgets that redraw a figure as their controls move, readable without a kernel too.

`explore(draw, **controls)` shows the controls above an output area holding ``draw(**values)``
(a matplotlib Figure, or any displayable object), redrawn on every change. The display carries
a PNG of the default state beside the widget, so a notebook read without a kernel (GitHub, a
static viewer) shows what the widget shows at first, and JupyterLab with a kernel shows the live
widget. Controls are ipywidgets (`slider`, `choice`, `toggle` build the common ones).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import ipywidgets as w


def slider(value: int | float, lo: int | float, hi: int | float, step: int | float | None = None,
           description: str = "", log: bool = False) -> w.Widget:
    """An integer or float slider (float if any bound is a float); `log`: a log-scale float slider."""
    kw = dict(value=value, description=description, continuous_update=False,
              style={"description_width": "initial"}, layout=w.Layout(width="360px"))
    if log:
        import math

        return w.FloatLogSlider(base=10, min=math.log10(lo), max=math.log10(hi), step=step or 0.1, **kw)
    if all(isinstance(v, int) for v in (value, lo, hi)) and (step is None or isinstance(step, int)):
        return w.IntSlider(min=lo, max=hi, step=step or 1, **kw)
    return w.FloatSlider(min=lo, max=hi, step=step or (hi - lo) / 100, **kw)


def choice(options, value=None, description: str = "") -> w.Widget:
    """A drop-down over `options` (a list, or a dict label -> value)."""
    return w.Dropdown(options=options, value=value if value is not None else _first(options), description=description,
                      style={"description_width": "initial"})


def many(options, value=None, description: str = "") -> w.Widget:
    """A multiple choice over `options` (all selected by default)."""
    opts = list(options)
    return w.SelectMultiple(options=opts, value=tuple(value if value is not None else opts), description=description,
                            rows=min(8, len(opts)), style={"description_width": "initial"})


def toggle(value: bool = False, description: str = "") -> w.Widget:
    return w.Checkbox(value=value, description=description, style={"description_width": "initial"})


def _first(options):
    return next(iter(options.values())) if isinstance(options, dict) else next(iter(options))


def _png(obj) -> bytes | None:
    from matplotlib.figure import Figure

    if isinstance(obj, Figure):
        buf = io.BytesIO()
        obj.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
        return buf.getvalue()
    return None


def explore(draw: Callable, **controls: w.Widget) -> None:
    """Display `controls` and an output area with ``draw(**values)``, redrawn when a control changes."""
    from IPython.display import display

    out = w.Output()

    def render(**values):
        out.clear_output(wait=True)
        with out:
            display(draw(**values))

    defaults = {k: c.value for k, c in controls.items()}
    first = draw(**defaults)
    with out:
        display(first)
    for c in controls.values():
        c.observe(lambda change: render(**{k: x.value for k, x in controls.items()}), names="value")
    box = w.VBox([w.HBox(list(controls.values()), layout=w.Layout(flex_flow="row wrap")), out])
    bundle = {"text/plain": "(a widget: open the notebook in JupyterLab with a kernel to use it)",
              "application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                           "model_id": box.model_id}}
    png = _png(first)
    if png is not None:
        bundle["image/png"] = base64.b64encode(png).decode()
    display(bundle, raw=True)
