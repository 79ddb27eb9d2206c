"""The report's Markdown made self-contained for the Dagster UI: its plots inlined as data URIs.

The UI renders Markdown metadata in the browser, which cannot open files next to the report; a plot's
relative link is replaced by its bytes (base64), or by its absolute path when it is too large to inline.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

MAX_INLINE_BYTES = 300_000
"""Larger plots stay links: the Markdown is stored in the Dagster event log with every materialization."""

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def inline_images(markdown: str, folder: Path) -> str:
    """`markdown` with each relative image link (resolved in `folder`) inlined or made absolute."""

    def _replace(match: re.Match[str]) -> str:
        alt, target = match.group(1), match.group(2)
        if ":" in target or target.startswith("/"):
            return match.group(0)  # already absolute, a URL or a data URI
        path = folder / target
        mime = _MIME.get(path.suffix.lower())
        if mime is None or not path.is_file():
            return match.group(0)
        if path.stat().st_size > MAX_INLINE_BYTES:
            return f"![{alt}]({path.resolve()})"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"![{alt}](data:{mime};base64,{data})"

    return _IMAGE.sub(_replace, markdown)
