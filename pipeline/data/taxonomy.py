"""A two-level category taxonomy loaded from XML, validated with line numbers.

The file format (see ``datasets/assign-cat/taxonomy.xml``)::

    <taxonomy name="dietary-supplements" version="1">
      <category id="immune-support" name="Immune Support">
        <description>...</description>
        <subcategory id="daily-immune" name="Daily Immune"><description>...</description></subcategory>
      </category>
    </taxonomy>

Category ids are unique among categories and subcategory ids are unique across the whole taxonomy, so
a subcategory id alone names one pair. Parsing uses ``xml.parsers.expat`` directly (stdlib) because it
reports the line of every element, which ``xml.etree`` does not; every problem in the file is reported
at once, one ``<source> line N: ...`` line each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, NoReturn
from xml.parsers import expat

__all__ = [
    "Category",
    "Subcategory",
    "Taxonomy",
    "TaxonomyError",
    "TaxonomyPair",
    "TaxonomyProblem",
    "load_taxonomy",
    "parse_taxonomy_xml",
]

# Ids end up as JSON enum values and in prompt text: no spaces, no punctuation that needs quoting.
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Which attributes each element takes, and which of them are required.
_ATTRIBUTES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "taxonomy": (("name", "version"), ("name", "version")),
    "category": (("id", "name"), ("id", "name")),
    "subcategory": (("id", "name"), ("id", "name")),
    "description": ((), ()),
}

# Which child elements each element may contain.
_CHILDREN: dict[str, tuple[str, ...]] = {
    "taxonomy": ("category",),
    "category": ("description", "subcategory"),
    "subcategory": ("description",),
    "description": (),
}

# Where each known element belongs, to explain a misplaced one.
_PLACE: dict[str, str] = {
    "taxonomy": "a <taxonomy> is the root element and appears once",
    "category": "a <category> belongs directly inside <taxonomy>",
    "subcategory": "a <subcategory> belongs directly inside a <category>",
    "description": "a <description> belongs directly inside a <category> or a <subcategory>",
}


class TaxonomyPair(NamedTuple):
    """One valid answer: a category id and the id of one of its subcategories."""

    category: str
    subcategory: str


@dataclass(frozen=True)
class TaxonomyProblem:
    """One problem found in a taxonomy file."""

    line: int
    """1-based line in the XML text where the problem is."""
    message: str
    """What is wrong, with the bad value, and how to fix it."""


class TaxonomyError(ValueError):
    """A taxonomy file (or a Taxonomy built in code) is invalid.

    The message has one line per problem, each like
    ``taxonomy.xml line 14: duplicate subcategory id 'daily-immune' (first defined on line 9); ...``.
    """

    def __init__(self, message: str, problems: tuple[TaxonomyProblem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems
        """The problems with their line numbers; empty for a Taxonomy built in code."""


@dataclass(frozen=True)
class Subcategory:
    """A leaf of the taxonomy."""

    id: str
    """Unique across the whole taxonomy, e.g. ``daily-immune``."""
    name: str
    """Human-readable name, e.g. ``Daily Immune``."""
    description: str = ""
    """What belongs here; shown to the model in the prompt."""


@dataclass(frozen=True)
class Category:
    """A top-level category and its subcategories."""

    id: str
    """Unique among categories, e.g. ``immune-support``."""
    name: str
    """Human-readable name, e.g. ``Immune Support``."""
    description: str
    """What belongs here; shown to the model in the prompt."""
    subcategories: tuple[Subcategory, ...]
    """At least one; in file order."""

    def subcategory_ids(self) -> list[str]:
        """The ids of this category's subcategories, in file order."""
        return [sub.id for sub in self.subcategories]


@dataclass(frozen=True)
class Taxonomy:
    """A named, versioned two-level taxonomy: categories, each with subcategories."""

    name: str
    """Taxonomy name, e.g. ``dietary-supplements``."""
    version: str
    """Version string from the file; part of what identifies an experiment's label space."""
    categories: tuple[Category, ...]
    """In file order."""
    _by_category: dict[str, Category] = field(init=False, repr=False, compare=False)
    _category_of_sub: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems: list[str] = []
        by_category: dict[str, Category] = {}
        category_of_sub: dict[str, str] = {}
        if not self.categories:
            problems.append(f"taxonomy {self.name!r} has no categories; add at least one category")
        for cat in self.categories:
            if cat.id in by_category:
                problems.append(f"duplicate category id {cat.id!r}; ids must be unique")
            by_category.setdefault(cat.id, cat)
            if not cat.subcategories:
                problems.append(
                    f"category {cat.id!r} has no subcategories; every category needs at least one "
                    "so that a (category, subcategory) answer exists"
                )
            for sub in cat.subcategories:
                if sub.id in category_of_sub:
                    problems.append(
                        f"duplicate subcategory id {sub.id!r} (in {category_of_sub[sub.id]!r} and "
                        f"{cat.id!r}); subcategory ids must be unique across the taxonomy"
                    )
                category_of_sub.setdefault(sub.id, cat.id)
        if problems:
            raise TaxonomyError("\n".join(problems))
        # Frozen dataclass: the lookup indexes are derived once here, hence object.__setattr__.
        object.__setattr__(self, "_by_category", by_category)
        object.__setattr__(self, "_category_of_sub", category_of_sub)

    def pairs(self) -> list[TaxonomyPair]:
        """Every valid (category id, subcategory id) answer, in file order."""
        return [TaxonomyPair(cat.id, sub.id) for cat in self.categories for sub in cat.subcategories]

    def has_pair(self, category: str, subcategory: str) -> bool:
        """Whether ``subcategory`` exists and belongs to ``category``."""
        return self._category_of_sub.get(subcategory) == category

    def category(self, category_id: str) -> Category:
        """The category with this id; KeyError naming the known ids if there is none."""
        try:
            return self._by_category[category_id]
        except KeyError:
            known = ", ".join(self._by_category)
            raise KeyError(
                f"unknown category id {category_id!r} in taxonomy {self.name!r}; known ids: {known}"
            ) from None

    def category_of(self, subcategory_id: str) -> str:
        """The id of the category that owns this subcategory; KeyError if the id is unknown."""
        try:
            return self._category_of_sub[subcategory_id]
        except KeyError:
            raise KeyError(
                f"unknown subcategory id {subcategory_id!r} in taxonomy {self.name!r}; "
                "see Taxonomy.pairs() for the valid ids"
            ) from None

    def to_prompt_text(self) -> str:
        """A compact listing for an LLM prompt: one line per category, indented lines per subcategory.

        Example::

            immune-support (Immune Support): Products taken to support the immune system...
              - daily-immune (Daily Immune): Everyday immune formulas built on vitamin C...
        """
        lines: list[str] = []
        for cat in self.categories:
            lines.append(_prompt_line(cat.id, cat.name, cat.description))
            for sub in cat.subcategories:
                lines.append("  - " + _prompt_line(sub.id, sub.name, sub.description))
        return "\n".join(lines)

    def json_schema(self) -> dict[str, Any]:
        """A JSON Schema for ``{"category": ..., "subcategory": ...}`` that admits only existing pairs.

        One ``anyOf`` branch per category fixes ``category`` with ``const`` and restricts
        ``subcategory`` to that category's ids, so a constrained decoder (llama.cpp grammars,
        outlines, vLLM guided JSON) cannot emit a subcategory from another category.
        Providers that require an object at the root (OpenAI strict structured outputs reject a
        root-level ``anyOf``) should use :meth:`flat_json_schema` and check :meth:`has_pair` after.
        """
        return {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "category": {"const": cat.id},
                        "subcategory": {"enum": cat.subcategory_ids()},
                    },
                    "required": ["category", "subcategory"],
                    "additionalProperties": False,
                }
                for cat in self.categories
            ]
        }

    def flat_json_schema(self) -> dict[str, Any]:
        """An object-rooted schema with independent enums for category and subcategory.

        Weaker than :meth:`json_schema` (it admits mismatched pairs; check them with
        :meth:`has_pair`), but accepted by providers whose structured-output mode needs
        ``"type": "object"`` at the root.
        """
        return {
            "type": "object",
            "properties": {
                "category": {"type": "string", "enum": [cat.id for cat in self.categories]},
                "subcategory": {"type": "string", "enum": [pair.subcategory for pair in self.pairs()]},
            },
            "required": ["category", "subcategory"],
            "additionalProperties": False,
        }


def _prompt_line(item_id: str, name: str, description: str) -> str:
    head = f"{item_id} ({name})"
    return f"{head}: {description}" if description else head


# --------------------------------------------------------------------------------------------------
# XML parsing


@dataclass
class _Node:
    """One element as expat saw it, with the line it starts on."""

    tag: str
    attrs: dict[str, str]
    line: int
    children: list[_Node] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    text_line: int | None = None  # line of the first non-blank text directly inside this element

    def label(self) -> str:
        """``<category id='x'>`` style label for messages."""
        item_id = self.attrs.get("id")
        return f"<{self.tag} id={item_id!r}>" if item_id else f"<{self.tag}>"


class _Parsed(NamedTuple):
    root: _Node | None
    problems: list[TaxonomyProblem]


class _StopParsing(Exception):
    """Raised from an expat handler to abandon a document that must not be parsed further."""


def _read_tree(data: str | bytes) -> _Parsed:
    """Build the element tree with line numbers; a syntax error becomes a single problem."""
    parser = expat.ParserCreate()
    # Taxonomy files need no DTD; refusing one also rules out entity-expansion tricks.
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Node] = []
    root: list[_Node] = []
    problems: list[TaxonomyProblem] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        parent = stack[-1] if stack else None
        node = _Node(tag=tag, attrs=dict(attrs), line=parser.CurrentLineNumber)
        if parent is None:
            root.append(node)
        else:
            parent.children.append(node)
        stack.append(node)

    def end(tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        # Unbuffered expat calls this per chunk, so CurrentLineNumber is the chunk's own line.
        if not stack:
            return
        node = stack[-1]
        node.text.append(data)
        if node.text_line is None and data.strip():
            node.text_line = parser.CurrentLineNumber

    def doctype(name: str, *_: object) -> None:
        problems.append(
            TaxonomyProblem(
                parser.CurrentLineNumber,
                f"<!DOCTYPE {name}> is not allowed; remove the DOCTYPE declaration "
                "(taxonomy files use no DTD or entities)",
            )
        )
        raise _StopParsing

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.StartDoctypeDeclHandler = doctype
    try:
        parser.Parse(data, True)
    except _StopParsing:
        return _Parsed(None, problems)
    except expat.ExpatError as exc:
        reason = expat.errors.messages[exc.code] if exc.code is not None else str(exc)
        unclosed = (
            expat.errors.codes[expat.errors.XML_ERROR_TAG_MISMATCH],
            expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS],
        )
        if stack and exc.code in unclosed:
            # The innermost open element is usually the one whose closing tag is missing or misspelled.
            reason += f" ({stack[-1].label()} opened on line {stack[-1].line} is still open)"
        return _Parsed(
            None,
            [
                TaxonomyProblem(
                    exc.lineno,
                    f"malformed XML at column {exc.offset + 1}: {reason}; fix the XML syntax there "
                    "(often an unclosed or misspelled tag, or a bare '&' or '<' in text: "
                    "write &amp; or &lt;)",
                )
            ],
        )
    return _Parsed(root[0] if root else None, problems)


def _clean_text(node: _Node) -> str:
    # Descriptions are wrapped across lines in the file; prompts want them on one line.
    return " ".join("".join(node.text).split())


class _Validator:
    """Walks the element tree, collecting problems and building the Taxonomy."""

    def __init__(self) -> None:
        self.problems: list[TaxonomyProblem] = []
        self.category_lines: dict[str, int] = {}
        self.subcategory_lines: dict[str, int] = {}

    def add(self, line: int, message: str) -> None:
        self.problems.append(TaxonomyProblem(line, message))

    def check_attributes(self, node: _Node) -> None:
        allowed, required = _ATTRIBUTES[node.tag]
        for attr in node.attrs:
            if attr not in allowed:
                expected = ", ".join(repr(a) for a in allowed) or "none"
                self.add(
                    node.line,
                    f"unknown attribute {attr!r} on {node.label()}; allowed attributes: {expected}",
                )
        for attr in required:
            value = node.attrs.get(attr)
            if value is None:
                self.add(node.line, f'{node.label()} is missing the {attr!r} attribute; add {attr}="..."')
            elif not value.strip():
                self.add(node.line, f"{node.label()} has an empty {attr!r} attribute; give it a value")
        item_id = node.attrs.get("id")
        if item_id and item_id.strip() and not _ID_PATTERN.match(item_id):
            self.add(
                node.line,
                f"id {item_id!r} on <{node.tag}> is not a valid id; use letters, digits, '-', '_' or '.' "
                "with no spaces, e.g. 'daily-immune'",
            )

    def check_children(self, node: _Node) -> None:
        """Report unknown or misplaced children and stray text; known children are walked elsewhere."""
        allowed = _CHILDREN[node.tag]
        for child in node.children:
            if child.tag in allowed:
                continue
            if child.tag in _CHILDREN:
                where = f"opened on line {node.line}"
                self.add(
                    child.line,
                    f"<{child.tag}> is not allowed inside {node.label()} ({where}); {_PLACE[child.tag]}",
                )
            else:
                expected = ", ".join(f"<{tag}>" for tag in allowed) or "only text"
                self.add(
                    child.line,
                    f"unknown element <{child.tag}> inside {node.label()}; expected {expected}",
                )
        if node.tag != "description" and node.text_line is not None:
            snippet = _clean_text(node)[:40]
            self.add(
                node.text_line,
                f"unexpected text {snippet!r} inside {node.label()}; "
                "put descriptions inside <description>...</description>",
            )

    def description(self, node: _Node) -> str:
        descriptions = [child for child in node.children if child.tag == "description"]
        for extra in descriptions[1:]:
            self.add(
                extra.line,
                f"second <description> in {node.label()} (first on line {descriptions[0].line}); "
                "keep one <description> per element",
            )
        if not descriptions:
            return ""
        desc = descriptions[0]
        self.check_attributes(desc)
        self.check_children(desc)
        text = _clean_text(desc)
        if not text:
            self.add(desc.line, f"empty <description> in {node.label()}; write one or remove the element")
        return text

    def subcategory(self, node: _Node) -> Subcategory:
        self.check_attributes(node)
        self.check_children(node)
        sub_id = node.attrs.get("id", "")
        if sub_id.strip():
            first = self.subcategory_lines.setdefault(sub_id, node.line)
            if first != node.line:
                self.add(
                    node.line,
                    f"duplicate subcategory id {sub_id!r} (first defined on line {first}); ids must be unique",
                )
        name = node.attrs.get("name", "").strip()
        return Subcategory(id=sub_id, name=name, description=self.description(node))

    def category(self, node: _Node) -> Category:
        self.check_attributes(node)
        self.check_children(node)
        cat_id = node.attrs.get("id", "")
        if cat_id.strip():
            first = self.category_lines.setdefault(cat_id, node.line)
            if first != node.line:
                self.add(
                    node.line,
                    f"duplicate category id {cat_id!r} (first defined on line {first}); ids must be unique",
                )
        subs = tuple(self.subcategory(child) for child in node.children if child.tag == "subcategory")
        if not subs:
            self.add(
                node.line,
                f"{node.label()} has no <subcategory>; every category needs at least one "
                "so that a (category, subcategory) answer exists",
            )
        return Category(
            id=cat_id,
            name=node.attrs.get("name", "").strip(),
            description=self.description(node),
            subcategories=subs,
        )

    def taxonomy(self, root: _Node) -> Taxonomy | None:
        if root.tag != "taxonomy":
            self.add(
                root.line,
                f'root element is <{root.tag}>; expected <taxonomy name="..." version="...">',
            )
            return None
        self.check_attributes(root)
        self.check_children(root)
        categories = tuple(self.category(child) for child in root.children if child.tag == "category")
        if not categories:
            self.add(root.line, "<taxonomy> has no <category>; add at least one category")
        if self.problems:
            return None
        return Taxonomy(name=root.attrs["name"].strip(), version=root.attrs["version"].strip(), categories=categories)


def _raise(source: str, problems: list[TaxonomyProblem]) -> NoReturn:
    ordered = tuple(sorted(problems, key=lambda p: p.line))
    message = "\n".join(f"{source} line {p.line}: {p.message}" for p in ordered)
    raise TaxonomyError(message, ordered)


def parse_taxonomy_xml(path_or_text: str | Path, *, source: str | None = None) -> Taxonomy:
    """Parse and validate a taxonomy from a file path or from XML text.

    A ``Path``, or a ``str`` without ``<``, is read as a file; any other ``str`` is the XML itself.
    ``source`` names the input in error messages (default: the path, or ``<taxonomy text>``).
    Raises ``TaxonomyError`` listing every problem with its line number.
    """
    data: str | bytes
    if isinstance(path_or_text, str) and not path_or_text.strip():
        raise TaxonomyError("taxonomy input is an empty string; pass a file path or the XML text")
    if isinstance(path_or_text, Path) or "<" not in path_or_text:
        path = Path(path_or_text)
        # Bytes, so that expat honours the encoding named in the XML declaration.
        data = path.read_bytes()
        label = source or str(path)
    else:
        data = path_or_text
        label = source or "<taxonomy text>"
    root, problems = _read_tree(data)
    if problems:
        _raise(label, problems)
    if root is None:  # pragma: no cover - expat reports an empty document as malformed
        _raise(label, [TaxonomyProblem(1, "no root element; expected <taxonomy>")])
    validator = _Validator()
    taxonomy = validator.taxonomy(root)
    if validator.problems or taxonomy is None:
        _raise(label, validator.problems)
    return taxonomy


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Load and validate the taxonomy XML file at ``path``; see :func:`parse_taxonomy_xml`."""
    return parse_taxonomy_xml(Path(path))
