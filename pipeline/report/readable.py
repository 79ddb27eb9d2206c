"""Numbers as a person reads them: the Markdown report and the progress line round, JSON files never do."""

from __future__ import annotations

import math

NOT_AVAILABLE = "n/a"


def seconds(value: float | None) -> str:
    """A duration in seconds, three significant figures at most: '0.0123 s', '4.92 s', '52.6 s', '1234 s'."""
    if value is None or not math.isfinite(value):
        return NOT_AVAILABLE
    if value >= 100:
        return f"{value:.0f} s"
    return f"{value:.3g} s" if value >= 0.001 else f"{value * 1000:.2g} ms"


def duration(value: float | None) -> str:
    """A longer duration as a person says it: '45s', '3m20s', '2h05m'."""
    if value is None or not math.isfinite(value) or value < 0:
        return "?"
    total = round(value)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def usd(value: float | None) -> str:
    """Dollars: cents for sums over $1, four decimals below (a run on a cheap model costs fractions of a cent)."""
    if value is None or not math.isfinite(value):
        return NOT_AVAILABLE
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4f}"


def percent(fraction: float | None) -> str:
    """A fraction 0..1 as a percentage with one decimal: 0.87654 -> '87.7%'."""
    if fraction is None or not math.isfinite(fraction):
        return NOT_AVAILABLE
    return f"{fraction * 100:.1f}%"


def megabytes(size_bytes: int | float | None) -> str:
    """A size in MB with one decimal ('12.3 MB'), or KB below 0.1 MB."""
    if size_bytes is None:
        return NOT_AVAILABLE
    if size_bytes < 100_000:
        return f"{size_bytes / 1000:.1f} KB"
    return f"{size_bytes / 1e6:.1f} MB"
