"""One plot style, byte-deterministic figure files, and a mean-with-CI-band helper.

- `apply_style()` sets the Okabe–Ito colour-blind-safe palette (Okabe & Ito 2008) as the colour
  cycle, readable sizes and a light grid. `notebook.setup()` calls it; importing this module
  changes nothing.
- `save_figure(fig, slug, root)` writes `<root>/<slug>.png` and `.pdf` with the metadata that
  changes from run to run stripped (as pytest-mpl does), so re-rendering unchanged numbers gives
  identical bytes and git sees no change.
- `band(ax, x, mean, lo, hi, label, n)` draws a mean line with its CI band; the legend says n.

No pyplot here: figures come from the caller, so this module holds no global figure state.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
from cycler import cycler

from nlcore.results import atomic_write_bytes

# Okabe–Ito, in the order the cycle uses them; black last (it reads as "reference").
PALETTE: dict[str, str] = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "bluish_green": "#009E73",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "sky_blue": "#56B4E9",
    "yellow": "#F0E442",
    "black": "#000000",
}
CYCLE: tuple[str, ...] = tuple(PALETTE.values())

SLUG = re.compile(r"[a-z0-9_]+")
FORMATS = ("png", "pdf", "svg")

# Metadata that would otherwise carry a timestamp or a version string into the file.
_METADATA = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None},
    "svg": {"Date": None, "Creator": None},
}
# rcParams that must hold while saving, whatever style is active.
_SAVE_RC = {"svg.hashsalt": "nlcore", "pdf.compression": 6, "svg.fonttype": "path"}

STYLE: dict = {
    "axes.prop_cycle": cycler(color=list(CYCLE)),
    "figure.figsize": (6.0, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.cmap": "viridis",
    "pdf.fonttype": 42,  # TrueType in PDFs: text stays text
    "svg.hashsalt": "nlcore",
}


def apply_style() -> None:
    """Set the repository's plot style in matplotlib's rcParams."""
    mpl.rcParams.update(STYLE)


def save_figure(
    fig,
    slug: str,
    root: str | Path,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 150,
) -> list[Path]:
    """Write `fig` to `<root>/<slug>.<fmt>` for each format; return the paths written.

    `slug` must match `[a-z0-9_]+` (one name per figure, no folders, no extension). The files
    are byte-identical whenever the figure is: no timestamps, no software versions, a fixed
    SVG hash salt. Each file is written atomically.
    """
    if not isinstance(slug, str) or SLUG.fullmatch(slug) is None:
        raise ValueError(f"figure slug must match [a-z0-9_]+, got {slug!r}")
    formats = tuple(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {formats}")
    root = Path(root)
    paths = []
    with mpl.rc_context(_SAVE_RC):
        for fmt in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=dpi, metadata=_METADATA[fmt], bbox_inches="tight")
            paths.append(atomic_write_bytes(root / f"{slug}.{fmt}", buf.getvalue()))
    return paths


def band(ax, x, mean, lo, hi, label: str, n: int, color=None, alpha: float = 0.2, **line_kw):
    """Plot `mean` against `x` with a shaded `[lo, hi]` band; the legend label ends in (n=N).

    Where lo/hi are NaN (a single seed) no band is drawn there. Returns the line.
    """
    (line,) = ax.plot(x, mean, label=f"{label} (n={n})", color=color, **line_kw)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=alpha, linewidth=0)
    return line
