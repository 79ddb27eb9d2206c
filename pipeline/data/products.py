"""Products to classify, loaded from CSV, and their gold labels.

A products file has a header with at least ``product_id`` and ``title``; ``description`` is
optional and every other column is kept in ``Product.extra`` (``gold_category`` and
``gold_subcategory`` are read by :func:`load_gold_labels`). A wrong header stops the load with
``ProductInputError``; a bad row is reported in ``ProductLoad.errors`` with its line number and the
other rows still load, so one typo does not sink a whole dataset.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.loaders import raise_csv_field_limit
from pipeline.data.taxonomy import Taxonomy, TaxonomyPair

__all__ = [
    "GOLD_CATEGORY_COLUMN",
    "GOLD_SUBCATEGORY_COLUMN",
    "REQUIRED_COLUMNS",
    "Product",
    "ProductInputError",
    "ProductLoad",
    "RowError",
    "gold_labels_from",
    "load_gold_labels",
    "load_products_csv",
    "single_product",
]

REQUIRED_COLUMNS: tuple[str, ...] = ("product_id", "title")
"""Columns every products CSV must have."""
DESCRIPTION_COLUMN = "description"
GOLD_CATEGORY_COLUMN = "gold_category"
"""Column holding the gold category id."""
GOLD_SUBCATEGORY_COLUMN = "gold_subcategory"
"""Column holding the gold subcategory id."""


class ProductInputError(ValueError):
    """The products input cannot be used at all (bad header, unreadable file, bad gold labels)."""


@dataclass(frozen=True)
class Product:
    """One product to classify."""

    product_id: str
    """Unique within its dataset, e.g. ``P0001``."""
    title: str
    """Product title; never empty."""
    description: str = ""
    """Free-text description; may be empty."""
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Every other CSV column by header name (e.g. ``gold_category``), values stripped."""


@dataclass(frozen=True)
class RowError:
    """A CSV record that was skipped, and why."""

    row_number: int
    """1-based line of the file where the record starts (the header is line 1)."""
    reason: str
    """What is wrong with the record and how to fix it."""
    raw: str
    """The record's text as it appears in the file (all its lines, without the final newline)."""


@dataclass(frozen=True)
class ProductLoad:
    """The result of loading a products CSV: the good rows and the skipped ones."""

    products: list[Product]
    """Good rows, in file order."""
    errors: list[RowError]
    """Skipped rows, in file order."""
    columns: tuple[str, ...] = ()
    """Header column names, stripped, in file order."""
    source: str = ""
    """Path the products were read from."""


def _split_lines(text: str) -> list[str]:
    # Split on "\n" only, keeping the ends: csv.reader counts exactly these lines in line_num,
    # so the record's raw text can be cut back out of this list (str.splitlines would also
    # split on form feeds and U+2028, and the numbering would drift).
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def _check_header(header: list[str], source: str, line: int) -> tuple[str, ...]:
    columns = tuple(name.strip() for name in header)
    found = ", ".join(repr(c) for c in columns)
    for index, name in enumerate(columns, start=1):
        if not name:
            raise ProductInputError(
                f"{source} line {line}: column {index} of the header has no name (columns found: {found}); "
                "name it or remove the trailing comma"
            )
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise ProductInputError(
            f"{source} line {line}: duplicate header column(s) {', '.join(map(repr, duplicates))} "
            f"(columns found: {found}); each column name must appear once"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        hints = []
        for name in missing:
            close = difflib.get_close_matches(name, [c.lower().replace(" ", "_") for c in columns], n=1)
            if close:
                original = next(c for c in columns if c.lower().replace(" ", "_") == close[0])
                hints.append(f"rename {original!r} to {name!r}")
        hint = "; " + ", ".join(hints) if hints else ""
        raise ProductInputError(
            f"{source} line {line}: missing required column(s) {', '.join(map(repr, missing))}; "
            f"columns found: {found}. The header must include "
            f"{', '.join(REQUIRED_COLUMNS)} (description and other columns are optional){hint}"
        )
    return columns


def load_products_csv(path: str | Path) -> ProductLoad:
    """Load products from a UTF-8 CSV file with a header line.

    Raises ``ProductInputError`` if the file is empty, not UTF-8, or its header lacks
    ``product_id``/``title``. Rows with an empty ``product_id`` or ``title``, a ``product_id``
    seen earlier, a different number of fields than the header, or broken quoting go to
    ``errors`` with the line they start on; the first row with a given ``product_id`` is kept,
    and a quote that is never closed costs only its own line. Blank lines and rows whose fields
    are all empty (spreadsheet padding) are skipped silently.
    """
    path = Path(path)
    source = str(path)
    data = path.read_bytes()
    try:
        # utf-8-sig: spreadsheet programs often write a byte-order mark.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ProductInputError(
            f"{source} line {line}: the file is not valid UTF-8 (byte {data[exc.start]:#04x} at offset "
            f"{exc.start}); re-save it as UTF-8 (in a spreadsheet: 'CSV UTF-8'; from the shell: "
            f"iconv -f cp1252 -t utf-8)"
        ) from None

    raise_csv_field_limit()
    lines = _split_lines(text)
    # strict: a quote left open at the end of the file, or text after a closing quote, is an error
    # instead of being silently glued into one giant field.
    reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                header = row
                break
    except csv.Error as exc:
        raise ProductInputError(
            f"{source} line {reader.line_num}: the header line is not valid CSV ({exc}); fix its quoting"
        ) from None
    if header is None:
        raise ProductInputError(
            f"{source}: the file is empty; expected a header line with at least {', '.join(REQUIRED_COLUMNS)}"
        )
    columns = _check_header(header, source, reader.line_num)
    extra_columns = [c for c in columns if c not in (*REQUIRED_COLUMNS, DESCRIPTION_COLUMN)]

    products: list[Product] = []
    errors: list[RowError] = []
    first_line_of: dict[str, int] = {}
    base = 0  # lines before the current reader's input; the reader is restarted after an open quote
    end = reader.line_num
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            end = base + reader.line_num
            if end > start:
                # A quote opened on line `start` swallowed the lines after it: report that line and
                # parse again from the next one, so one stray quote costs one row, not the rest.
                errors.append(
                    RowError(
                        start,
                        f"unreadable CSV record ({exc}): a double quote opened on this line runs on to "
                        f"line {end} without closing cleanly; close the quote, or double it inside a field",
                        lines[start - 1].rstrip("\r\n"),
                    )
                )
                base = end = start
                reader = csv.reader(lines[start:], strict=True)
            else:
                raw = lines[start - 1].rstrip("\r\n")
                errors.append(RowError(start, f"unreadable CSV record ({exc}); check its quoting", raw))
            continue
        end = base + reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        raw = "".join(lines[start - 1 : end]).rstrip("\r\n")
        if len(row) != len(columns):
            reason = (
                f"has {len(row)} fields but the header has {len(columns)} ({', '.join(columns)}); "
                "quote fields that contain commas or quotes"
            )
            if end > start:
                reason += f" (this record runs from line {start} to {end}: look for an unclosed double quote)"
            errors.append(RowError(start, reason, raw))
            continue
        values = dict(zip(columns, (cell.strip() for cell in row), strict=True))
        product_id, title = values["product_id"], values["title"]
        problems = []
        if not product_id:
            problems.append("product_id is empty; give every product a unique id")
        if not title:
            problems.append("title is empty; every product needs a title to classify")
        if product_id and product_id in first_line_of:
            problems.append(
                f"duplicate product_id {product_id!r} (first on line {first_line_of[product_id]}); "
                "product ids must be unique, the first row was kept"
            )
        if problems:
            errors.append(RowError(start, "; ".join(problems), raw))
            continue
        first_line_of[product_id] = start
        products.append(
            Product(
                product_id=product_id,
                title=title,
                description=values.get(DESCRIPTION_COLUMN, ""),
                extra={c: values[c] for c in extra_columns},
            )
        )
    return ProductLoad(products=products, errors=errors, columns=columns, source=source)


def gold_labels_from(load: ProductLoad, taxonomy: Taxonomy | None = None) -> dict[str, TaxonomyPair]:
    """Gold (category, subcategory) per product_id from an already loaded products file.

    Products with both gold columns empty are unlabelled and left out. Raises
    ``ProductInputError`` if the gold columns are missing, if a product has only one of the two,
    or (when ``taxonomy`` is given) if a pair does not exist in it. Rows in ``load.errors`` are
    not products, so they have no gold label either.
    """
    wanted = (GOLD_CATEGORY_COLUMN, GOLD_SUBCATEGORY_COLUMN)
    missing = [c for c in wanted if c not in load.columns]
    if missing:
        raise ProductInputError(
            f"{load.source}: missing gold label column(s) {', '.join(map(repr, missing))}; "
            f"columns found: {', '.join(map(repr, load.columns))}. Add {' and '.join(wanted)} columns"
        )
    labels: dict[str, TaxonomyPair] = {}
    problems: list[str] = []
    for product in load.products:
        category = product.extra[GOLD_CATEGORY_COLUMN]
        subcategory = product.extra[GOLD_SUBCATEGORY_COLUMN]
        if not category and not subcategory:
            continue
        if not category or not subcategory:
            problems.append(
                f"product {product.product_id!r}: gold_category={category!r}, "
                f"gold_subcategory={subcategory!r}; fill in both or leave both empty"
            )
            continue
        if taxonomy is not None and not taxonomy.has_pair(category, subcategory):
            problems.append(
                f"product {product.product_id!r}: gold pair ({category!r}, {subcategory!r}) is not in "
                f"taxonomy {taxonomy.name!r}; use a subcategory listed under that category"
            )
            continue
        labels[product.product_id] = TaxonomyPair(category, subcategory)
    if problems:
        raise ProductInputError(f"{load.source}: bad gold labels:\n" + "\n".join(problems))
    return labels


def load_gold_labels(path: str | Path, taxonomy: Taxonomy | None = None) -> dict[str, TaxonomyPair]:
    """Gold (category, subcategory) per product_id from the gold_category/gold_subcategory columns.

    See :func:`gold_labels_from`; rows the products loader rejects are left out.
    """
    return gold_labels_from(load_products_csv(path), taxonomy)


def single_product(title: str, description: str = "") -> Product:
    """A one-off product (e.g. from the command line) with a stable id ``single-<sha1(title)[:8]>``."""
    title = title.strip()
    if not title:
        raise ProductInputError("title is empty; pass the product title to classify")
    digest = hashlib.sha1(title.encode("utf-8"), usedforsecurity=False).hexdigest()[:8]
    return Product(product_id=f"single-{digest}", title=title, description=description.strip())
