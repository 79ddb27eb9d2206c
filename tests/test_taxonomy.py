"""Tests for pipeline.data.taxonomy: the shipped taxonomy, validation messages, prompt text and schema."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from pipeline.data.products import load_products_csv
from pipeline.data.taxonomy import (
    Category,
    Subcategory,
    Taxonomy,
    TaxonomyError,
    TaxonomyPair,
    load_taxonomy,
    parse_taxonomy_xml,
)

DATASET = Path(__file__).resolve().parent.parent / "datasets" / "assign-cat"
TAXONOMY_XML = DATASET / "taxonomy.xml"
PRODUCTS_CSV = DATASET / "products.csv"

SMALL = """\
<taxonomy name="tiny" version="2">
  <category id="sleep" name="Sleep">
    <description>Things for
       sleeping.</description>
    <subcategory id="melatonin" name="Melatonin"><description>Melatonin aids.</description></subcategory>
    <subcategory id="herbal" name="Herbal"/>
  </category>
  <category id="sport" name="Sport">
    <subcategory id="protein" name="Protein"><description>Powders.</description></subcategory>
  </category>
</taxonomy>
"""


@pytest.fixture(scope="module")
def shipped() -> Taxonomy:
    return load_taxonomy(TAXONOMY_XML)


@pytest.fixture()
def small() -> Taxonomy:
    return parse_taxonomy_xml(SMALL)


# --- the shipped data ------------------------------------------------------------------------------


def test_shipped_taxonomy_counts_and_ids(shipped: Taxonomy) -> None:
    assert shipped.name == "dietary-supplements"
    assert shipped.version == "1"
    assert len(shipped.categories) >= 9
    assert len(shipped.pairs()) >= 34
    kebab = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
    for cat in shipped.categories:
        assert 3 <= len(cat.subcategories) <= 5, cat.id
        assert kebab.match(cat.id) and cat.name and cat.description
        for sub in cat.subcategories:
            assert kebab.match(sub.id) and sub.name and sub.description
    sub_ids = [pair.subcategory for pair in shipped.pairs()]
    assert len(sub_ids) == len(set(sub_ids))
    descriptions = [sub.description for cat in shipped.categories for sub in cat.subcategories]
    assert len(descriptions) == len(set(descriptions))


def test_shipped_gold_pairs_exist_and_cover_every_subcategory(shipped: Taxonomy) -> None:
    load = load_products_csv(PRODUCTS_CSV)
    assert load.errors == []
    assert len(load.products) >= 130
    used: Counter[TaxonomyPair] = Counter()
    for product in load.products:
        pair = TaxonomyPair(product.extra["gold_category"], product.extra["gold_subcategory"])
        assert shipped.has_pair(*pair), (product.product_id, pair)
        used[pair] += 1
    for pair in shipped.pairs():
        assert used[pair] >= 2, f"{pair} is used {used[pair]} times; every subcategory needs >= 2 products"


def test_shipped_file_is_marked_illustrative() -> None:
    head = TAXONOMY_XML.read_text(encoding="utf-8")[:600]
    assert "ILLUSTRATIVE" in head.upper()


# --- the Taxonomy API --------------------------------------------------------------------------------


def test_pairs_and_lookups(small: Taxonomy) -> None:
    assert small.name == "tiny" and small.version == "2"
    assert small.pairs() == [
        TaxonomyPair("sleep", "melatonin"),
        TaxonomyPair("sleep", "herbal"),
        TaxonomyPair("sport", "protein"),
    ]
    assert small.has_pair("sleep", "herbal")
    assert not small.has_pair("sport", "herbal")
    assert not small.has_pair("sleep", "nope")
    assert small.category("sport").subcategory_ids() == ["protein"]
    assert small.category_of("melatonin") == "sleep"
    with pytest.raises(KeyError, match="unknown category id 'nope'.*known ids: sleep, sport"):
        small.category("nope")
    with pytest.raises(KeyError, match="unknown subcategory id 'nope'"):
        small.category_of("nope")


def test_descriptions_are_collapsed_and_optional(small: Taxonomy) -> None:
    sleep = small.category("sleep")
    assert sleep.description == "Things for sleeping."
    assert sleep.subcategories[1] == Subcategory("herbal", "Herbal", "")
    assert small.category("sport").description == ""


def test_path_and_text_parse_the_same(tmp_path: Path, small: Taxonomy) -> None:
    path = tmp_path / "t.xml"
    path.write_text(SMALL, encoding="utf-8")
    assert parse_taxonomy_xml(path) == small
    assert parse_taxonomy_xml(str(path)) == small
    assert load_taxonomy(path) == small


def test_prompt_text(small: Taxonomy) -> None:
    assert small.to_prompt_text() == (
        "sleep (Sleep): Things for sleeping.\n"
        "  - melatonin (Melatonin): Melatonin aids.\n"
        "  - herbal (Herbal)\n"
        "sport (Sport)\n"
        "  - protein (Protein): Powders."
    )


def test_prompt_text_of_shipped_taxonomy_lists_every_id(shipped: Taxonomy) -> None:
    text = shipped.to_prompt_text()
    assert len(text.splitlines()) == len(shipped.categories) + len(shipped.pairs())
    for cat in shipped.categories:
        assert f"\n{cat.id} (" in "\n" + text
        for sub in cat.subcategories:
            assert f"\n  - {sub.id} (" in text


def test_taxonomy_built_in_code_is_validated() -> None:
    sub = Subcategory("a", "A")
    with pytest.raises(TaxonomyError, match="duplicate subcategory id 'a'"):
        Taxonomy("t", "1", (Category("x", "X", "", (sub,)), Category("y", "Y", "", (sub,))))
    with pytest.raises(TaxonomyError, match="category 'x' has no subcategories"):
        Taxonomy("t", "1", (Category("x", "X", "", ()),))


# --- JSON schema -------------------------------------------------------------------------------------


def test_json_schema_admits_only_existing_pairs(shipped: Taxonomy) -> None:
    schema = shipped.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert len(schema["anyOf"]) == len(shipped.categories)
    validator = jsonschema.Draft202012Validator(schema)  # one instance: validate() re-checks the schema
    for pair in shipped.pairs():
        validator.validate(pair._asdict())
    bad_answers = [
        {"category": "immune-support", "subcategory": "melatonin-sleep"},  # mismatched pair
        {"category": "immune-support", "subcategory": "no-such-sub"},
        {"category": "no-such-cat", "subcategory": "daily-immune"},
        {"category": "immune-support"},
        {"category": "immune-support", "subcategory": "daily-immune", "confidence": 0.9},
    ]
    for answer in bad_answers:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(answer, schema)


def test_flat_json_schema_is_object_rooted_but_weaker(shipped: Taxonomy) -> None:
    schema = shipped.flat_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object"
    mismatched = {"category": "immune-support", "subcategory": "melatonin-sleep"}
    jsonschema.validate(mismatched, schema)  # the flat schema cannot express pairs ...
    assert not shipped.has_pair(**mismatched)  # ... so has_pair must check them after
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"category": "immune-support", "subcategory": "nope"}, schema)


# --- validation errors, each with its line number ----------------------------------------------------

DUPLICATE_SUB = """\
<taxonomy name="t" version="1">
  <category id="immune-support" name="Immune">
    <subcategory id="daily-immune" name="Daily"/>
  </category>
  <category id="other" name="Other">
    <subcategory id="daily-immune" name="Again"/>
  </category>
</taxonomy>
"""


def test_duplicate_subcategory_message_reads_as_specified() -> None:
    with pytest.raises(TaxonomyError) as info:
        parse_taxonomy_xml(DUPLICATE_SUB, source="taxonomy.xml")
    assert str(info.value) == (
        "taxonomy.xml line 6: duplicate subcategory id 'daily-immune' (first defined on line 3); ids must be unique"
    )
    assert [p.line for p in info.value.problems] == [6]


ERROR_CASES = {
    "duplicate category id": (
        '<taxonomy name="t" version="1">\n'
        '<category id="c" name="C"><subcategory id="a" name="A"/></category>\n'
        '<category id="c" name="C2"><subcategory id="b" name="B"/></category>\n'
        "</taxonomy>",
        3,
        "duplicate category id 'c' (first defined on line 2)",
    ),
    "missing id": (
        '<taxonomy name="t" version="1">\n<category name="C">\n<subcategory id="a" name="A"/>\n'
        "</category>\n</taxonomy>",
        2,
        "<category> is missing the 'id' attribute",
    ),
    "empty name": (
        '<taxonomy name="t" version="1">\n<category id="c" name="C">\n'
        '<subcategory id="a" name="  "/>\n</category>\n</taxonomy>',
        3,
        "<subcategory id='a'> has an empty 'name' attribute",
    ),
    "missing version": (
        '<taxonomy name="t">\n<category id="c" name="C"><subcategory id="a" name="A"/></category>\n</taxonomy>',
        1,
        "<taxonomy> is missing the 'version' attribute",
    ),
    "id with spaces": (
        '<taxonomy name="t" version="1">\n<category id="c" name="C">\n'
        '<subcategory id="daily immune" name="A"/>\n</category>\n</taxonomy>',
        3,
        "id 'daily immune' on <subcategory> is not a valid id",
    ),
    "unknown element": (
        '<taxonomy name="t" version="1">\n<category id="c" name="C">\n'
        '<subcategory id="a" name="A"/>\n<subcat id="b" name="B"/>\n</category>\n</taxonomy>',
        4,
        "unknown element <subcat> inside <category id='c'>; expected <description>, <subcategory>",
    ),
    "unknown attribute": (
        '<taxonomy name="t" version="1">\n<category id="c" nmae="C" name="C">\n'
        '<subcategory id="a" name="A"/>\n</category>\n</taxonomy>',
        2,
        "unknown attribute 'nmae' on <category id='c'>",
    ),
    "subcategory directly under taxonomy": (
        '<taxonomy name="t" version="1">\n'
        '<category id="c" name="C"><subcategory id="a" name="A"/></category>\n'
        '<subcategory id="b" name="B"/>\n</taxonomy>',
        3,
        "<subcategory> is not allowed inside <taxonomy> (opened on line 1); "
        "a <subcategory> belongs directly inside a <category>",
    ),
    "category inside category": (
        '<taxonomy name="t" version="1">\n<category id="c" name="C">\n<subcategory id="a" name="A"/>\n'
        '<category id="d" name="D"><subcategory id="b" name="B"/></category>\n</category>\n</taxonomy>',
        4,
        "<category> is not allowed inside <category id='c'> (opened on line 2)",
    ),
    "subcategory inside subcategory": (
        '<taxonomy name="t" version="1">\n<category id="c" name="C">\n<subcategory id="a" name="A">\n'
        '<subcategory id="b" name="B"/>\n</subcategory>\n</category>\n</taxonomy>',
        4,
        "<subcategory> is not allowed inside <subcategory id='a'> (opened on line 3)",
    ),
    "stray text": (
        '<taxonomy name="t" version="1">\n<category id="c" name="C">\n<subcategory id="a" name="A"/>\n'
        "Vitamins here\n</category>\n</taxonomy>",
        4,
        "unexpected text 'Vitamins here' inside <category id='c'>",
    ),
    "two descriptions": (
        '<taxonomy name="t" version="1">\n<category id="c" name="C">\n<description>x</description>\n'
        '<description>y</description>\n<subcategory id="a" name="A"/>\n</category>\n</taxonomy>',
        4,
        "second <description> in <category id='c'> (first on line 3)",
    ),
    "empty description": (
        '<taxonomy name="t" version="1">\n<category id="c" name="C">\n<description>  </description>\n'
        '<subcategory id="a" name="A"/>\n</category>\n</taxonomy>',
        3,
        "empty <description> in <category id='c'>",
    ),
    "category without subcategories": (
        '<taxonomy name="t" version="1">\n'
        '<category id="c" name="C"><subcategory id="a" name="A"/></category>\n'
        '<category id="d" name="D">\n<description>x</description>\n</category>\n</taxonomy>',
        3,
        "<category id='d'> has no <subcategory>",
    ),
    "no categories": ('<taxonomy name="t" version="1">\n</taxonomy>', 1, "<taxonomy> has no <category>"),
    "wrong root": (
        '<?xml version="1.0"?>\n<categories/>',
        2,
        "root element is <categories>; expected <taxonomy",
    ),
    "malformed: mismatched tag": (
        '<taxonomy name="t" version="1">\n<category id="c" name="C">\n<subcategory id="a" name="A"/>\n</taxonomy>',
        4,
        "malformed XML at column 3: mismatched tag (<category id='c'> opened on line 2 is still open)",
    ),
    "malformed: bare ampersand": (
        '<taxonomy name="t" version="1">\n<category id="c" name="C">\n'
        "<description>Skin & hair</description>\n</category>\n</taxonomy>",
        3,
        "malformed XML at column 20: not well-formed (invalid token); fix the XML syntax there",
    ),
    "malformed: truncated": (
        '<taxonomy name="t" version="1">\n<category id="c" name="C">\n',
        3,
        "malformed XML at column 1: no element found (<category id='c'> opened on line 2 is still open)",
    ),
    "doctype": (
        '<?xml version="1.0"?>\n<!DOCTYPE taxonomy [<!ENTITY x "y">]>\n<taxonomy name="t" version="1"/>',
        2,
        "<!DOCTYPE taxonomy> is not allowed",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_error_names_the_line(case: str) -> None:
    text, line, fragment = ERROR_CASES[case]
    with pytest.raises(TaxonomyError) as info:
        parse_taxonomy_xml(text, source="taxonomy.xml")
    message = str(info.value)
    assert f"taxonomy.xml line {line}: " in message, message
    assert fragment in message, message
    assert line in [p.line for p in info.value.problems]


def test_all_problems_are_reported_at_once_in_line_order() -> None:
    text = (
        '<taxonomy name="t" version="1">\n'  # 1
        '<category id="c" name="">\n'  # 2: empty name
        '<subcategory id="a" name="A"/>\n'  # 3
        '<subcategory id="a" name="A2"/>\n'  # 4: duplicate
        "</category>\n"  # 5
        "<bogus/>\n"  # 6: unknown element
        "</taxonomy>\n"
    )
    with pytest.raises(TaxonomyError) as info:
        parse_taxonomy_xml(text)
    assert [p.line for p in info.value.problems] == [2, 4, 6]
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert all(line.startswith("<taxonomy text> line ") for line in lines)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.xml"
    path.write_text(DUPLICATE_SUB, encoding="utf-8")
    with pytest.raises(TaxonomyError, match=re.escape(f"{path} line 6: duplicate subcategory id")):
        load_taxonomy(path)


def test_empty_text_is_rejected() -> None:
    with pytest.raises(TaxonomyError, match="empty string"):
        parse_taxonomy_xml("   ")
