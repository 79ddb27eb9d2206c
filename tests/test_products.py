"""Tests for pipeline.data.products: the CSV loader, row errors, gold labels, single products."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.data.products import (
    Product,
    ProductInputError,
    RowError,
    gold_labels_from,
    load_gold_labels,
    load_products_csv,
    single_product,
)
from pipeline.data.taxonomy import TaxonomyPair, load_taxonomy, parse_taxonomy_xml

DATASET = Path(__file__).resolve().parent.parent / "datasets" / "assign-cat"

TINY_TAXONOMY = """\
<taxonomy name="tiny" version="1">
  <category id="sleep" name="Sleep"><subcategory id="melatonin" name="Melatonin"/></category>
  <category id="sport" name="Sport"><subcategory id="protein" name="Protein"/></category>
</taxonomy>
"""


def write(tmp_path: Path, text: str, name: str = "products.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_shipped_products_load_cleanly() -> None:
    load = load_products_csv(DATASET / "products.csv")
    assert load.errors == []
    assert len(load.products) >= 130
    assert load.columns == ("product_id", "title", "description", "gold_category", "gold_subcategory")
    first = load.products[0]
    assert first.product_id == "P0001"
    assert set(first.extra) == {"gold_category", "gold_subcategory"}
    ids = [p.product_id for p in load.products]
    assert len(ids) == len(set(ids))
    assert all(p.title and p.description for p in load.products)


def test_shipped_gold_labels_match_the_taxonomy() -> None:
    taxonomy = load_taxonomy(DATASET / "taxonomy.xml")
    labels = load_gold_labels(DATASET / "products.csv", taxonomy)
    assert len(labels) == len(load_products_csv(DATASET / "products.csv").products)
    assert all(taxonomy.has_pair(*pair) for pair in labels.values())


BAD_ROWS = (
    "product_id,title,description,gold_category\n"  # 1 header
    "P1,Melatonin 3mg,Fast dissolve,sleep\n"  # 2 good
    ",No Id Product,desc,sleep\n"  # 3 empty product_id
    "P3,   ,desc,sleep\n"  # 4 empty title
    "P1,Duplicate,desc,sleep\n"  # 5 duplicate of line 2
    "P5,Too,many,fields,here\n"  # 6 too many fields
    '"P6","Whey, Vanilla","A description\n'  # 7 good, multi-line quoted field ...
    'on two lines",sport\n'  # 8 ... ends here
    "\n"  # 9 blank: skipped
    "P7,Short row\n"  # 10 too few fields
    ",,,\n"  # 11 spreadsheet padding: skipped
    "P8,Creatine,,sport\n"  # 12 good, empty description
)


def test_bad_rows_are_reported_with_line_numbers_and_good_rows_kept(tmp_path: Path) -> None:
    load = load_products_csv(write(tmp_path, BAD_ROWS))
    assert [p.product_id for p in load.products] == ["P1", "P6", "P8"]
    assert [e.row_number for e in load.errors] == [3, 4, 5, 6, 10]
    by_line = {e.row_number: e for e in load.errors}
    assert "product_id is empty" in by_line[3].reason
    assert "title is empty" in by_line[4].reason
    assert "duplicate product_id 'P1' (first on line 2)" in by_line[5].reason
    assert "has 5 fields but the header has 4" in by_line[6].reason
    assert "has 2 fields but the header has 4" in by_line[10].reason
    assert by_line[6].raw == "P5,Too,many,fields,here"
    assert by_line[3] == RowError(3, by_line[3].reason, ",No Id Product,desc,sleep")


def test_good_rows_keep_their_fields(tmp_path: Path) -> None:
    load = load_products_csv(write(tmp_path, BAD_ROWS))
    whey = load.products[1]
    assert whey == Product("P6", "Whey, Vanilla", "A description\non two lines", {"gold_category": "sport"})
    assert load.products[2].description == ""


def test_crlf_and_byte_order_mark(tmp_path: Path) -> None:
    text = "\ufeffproduct_id,title\r\nP1,One\r\n,Missing id\r\nP3,Three\r\n"
    load = load_products_csv(write(tmp_path, text))
    assert [p.product_id for p in load.products] == ["P1", "P3"]
    assert load.products[0].description == ""
    assert load.errors == [RowError(3, load.errors[0].reason, ",Missing id")]


def test_unclosed_quote_costs_one_row(tmp_path: Path) -> None:
    text = 'product_id,title\nP1,"Unclosed title\nP2,Two\nP3,"Text" after quote\nP4,Four\n'
    load = load_products_csv(write(tmp_path, text))
    assert [p.product_id for p in load.products] == ["P2", "P4"]
    assert [e.row_number for e in load.errors] == [2, 4]
    # The stray quote on line 2 pairs with the first quote on line 4; parsing restarts on line 3.
    assert "a double quote opened on this line runs on to line 4" in load.errors[0].reason
    assert load.errors[0].raw == 'P1,"Unclosed title'
    assert "unreadable CSV record" in load.errors[1].reason

    at_end = load_products_csv(write(tmp_path, 'product_id,title\nP1,One\nP2,"Open\nP3,Three\n', "end.csv"))
    assert [p.product_id for p in at_end.products] == ["P1", "P3"]
    assert [(e.row_number, "unexpected end of data" in e.reason) for e in at_end.errors] == [(3, True)]


def test_multiline_record_with_wrong_field_count_gets_a_hint(tmp_path: Path) -> None:
    text = 'product_id,title\nP1,"Two\nlines",extra\nP2,Two\n'
    load = load_products_csv(write(tmp_path, text))
    assert [p.product_id for p in load.products] == ["P2"]
    (error,) = load.errors
    assert error.row_number == 2
    assert "runs from line 2 to 3" in error.reason
    assert error.raw == 'P1,"Two\nlines",extra'


def test_missing_required_column_raises_naming_found_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "Product ID,name,description\nP1,x,y\n")
    with pytest.raises(ProductInputError) as info:
        load_products_csv(path)
    message = str(info.value)
    assert "line 1: missing required column(s) 'product_id', 'title'" in message
    assert "columns found: 'Product ID', 'name', 'description'" in message
    assert "rename 'Product ID' to 'product_id'" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "the file is empty"),
        ("\n\n", "the file is empty"),
        ("product_id,title,title\n", "duplicate header column(s) 'title'"),
        ("product_id,title,\n", "column 3 of the header has no name"),
    ],
)
def test_bad_header_raises(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ProductInputError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_products_csv(write(tmp_path, text))


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("product_id,title\nP1,Café\n".encode("latin-1"))
    with pytest.raises(ProductInputError, match="line 2: the file is not valid UTF-8"):
        load_products_csv(path)


def test_gold_labels(tmp_path: Path) -> None:
    taxonomy = parse_taxonomy_xml(TINY_TAXONOMY)
    text = (
        "product_id,title,gold_category,gold_subcategory\n"
        "P1,Melatonin,sleep,melatonin\n"
        "P2,Unlabelled,,\n"
        "P3,Whey,sport,protein\n"
    )
    labels = load_gold_labels(write(tmp_path, text), taxonomy)
    assert labels == {"P1": TaxonomyPair("sleep", "melatonin"), "P3": TaxonomyPair("sport", "protein")}


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ("P1,Melatonin,sleep,\n", "product 'P1': gold_category='sleep', gold_subcategory=''"),
        ("P1,Melatonin,sport,melatonin\n", "gold pair ('sport', 'melatonin') is not in taxonomy 'tiny'"),
    ],
)
def test_bad_gold_labels_raise(tmp_path: Path, rows: str, fragment: str) -> None:
    path = write(tmp_path, "product_id,title,gold_category,gold_subcategory\n" + rows)
    with pytest.raises(ProductInputError) as info:
        load_gold_labels(path, parse_taxonomy_xml(TINY_TAXONOMY))
    assert fragment in str(info.value)


def test_gold_columns_required(tmp_path: Path) -> None:
    load = load_products_csv(write(tmp_path, "product_id,title,gold_category\nP1,x,sleep\n"))
    with pytest.raises(ProductInputError, match="missing gold label column\\(s\\) 'gold_subcategory'"):
        gold_labels_from(load)


def test_single_product() -> None:
    product = single_product("  Echinacea Immune Support ", "Herbal capsules")
    expected = "single-" + hashlib.sha1(b"Echinacea Immune Support").hexdigest()[:8]
    assert product == Product(expected, "Echinacea Immune Support", "Herbal capsules")
    assert single_product("Echinacea Immune Support").product_id == expected
    with pytest.raises(ProductInputError, match="title is empty"):
        single_product("   ")
