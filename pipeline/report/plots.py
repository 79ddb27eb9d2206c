"""Plots for reports, written as PNG files.

matplotlib is imported inside each function, and figures are built with the object-oriented
``matplotlib.figure.Figure`` API, which renders PNG through Agg without touching pyplot. So importing
this module has no side effects, calling it works without a display, and it never switches the
backend or closes the figures of a notebook that happens to call it.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.stats.metrics import ConfusionMatrix

__all__ = ["plot_confusion_matrix"]

_MAX_LABEL_CHARS = 28


def _short(label: object) -> str:
    text = str(label)
    return text if len(text) <= _MAX_LABEL_CHARS else text[: _MAX_LABEL_CHARS - 1] + "…"


def plot_confusion_matrix(cm: ConfusionMatrix, path: str | Path, title: str = "Confusion matrix") -> Path:
    """Draw ``cm`` as an annotated heat map and write it to ``path`` (PNG); returns the path.

    Cell colour is the fraction of the row (of items with that true label), so small classes stay
    visible next to large ones; the number in each cell is the raw count. The figure grows with
    the number of labels and stays readable up to about 40.
    """
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(cm.counts, dtype=float).reshape(len(cm.labels), len(cm.columns))
    n_rows, n_cols = counts.shape
    if n_rows == 0:
        raise ValueError("cannot plot an empty confusion matrix (no labels); score at least one item.")
    row_totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)

    size = max(n_rows, n_cols)
    # About half an inch per cell plus room for tick labels, so fonts never have to shrink below
    # ~7 pt (40 labels give a ~23 x 23 inch, ~2300 px figure).
    width = max(6.0, 0.5 * n_cols + 3.5)
    height = max(5.0, 0.5 * n_rows + 3.0)
    cell_font = 10 if size <= 10 else (9 if size <= 20 else 7)
    tick_font = 10 if size <= 10 else (9 if size <= 20 else 8)

    # Not pyplot: pyplot keeps every figure in global state until closed, and matplotlib.use("Agg")
    # would close and replace the backend of an interactive session that calls this.
    fig = Figure(figsize=(width, height), dpi=100)
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, aspect="equal")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, shrink=0.6 if size > 10 else 1.0)
    colorbar.set_label("fraction of true label")
    ax.set_xticks(range(n_cols), [_short(c) for c in cm.columns], rotation=90, fontsize=tick_font)
    ax.set_yticks(range(n_rows), [_short(label) for label in cm.labels], fontsize=tick_font)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(f"{title}\n(n = {int(counts.sum())})")
    # Many zeros in a big matrix drown the signal; below 100 cells every count is shown.
    show_zeros = n_rows * n_cols <= 100
    for i in range(n_rows):
        for j in range(n_cols):
            value = int(counts[i, j])
            if value == 0 and not show_zeros:
                continue
            colour = "white" if fractions[i, j] > 0.5 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=colour, fontsize=cell_font)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", bbox_inches="tight")
    return out
