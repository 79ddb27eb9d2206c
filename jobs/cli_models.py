"""`assay models`: the model zoo as a table (prices, limits, fallbacks, whether each key is set; never the key)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from pipeline.config import ModelConfig, ModelZoo, load_model_zoo
from pipeline.secrets import DEFAULT_KEY_ENV

KEY_SET = "set"
KEY_MISSING = "missing"
KEY_NOT_NEEDED = "not needed"
COLUMNS = ("alias", "model", "pin", "$/1M in", "$/1M out", "limits", "fallbacks", "key")


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `assay models` on the `assay` parser."""
    models = sub.add_parser("models", help="list the model zoo: prices, limits, fallbacks and which keys are set")
    models.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="models.<alias>.<field>=...")


def run(args: argparse.Namespace) -> int | None:
    """Run `assay models`; None when `args` is not it."""
    if args.command != "models":
        return None
    zoo = load_model_zoo(overrides=args.set)
    print(render_zoo(zoo, os.environ))
    return 0


def key_state(config: ModelConfig, environ: Mapping[str, str]) -> str:
    """'set', 'missing (VAR)' or 'not needed': whether the variable the alias reads its key from has a value."""
    if not config.needs_key:
        return KEY_NOT_NEEDED
    env_name = config.api_key_env or DEFAULT_KEY_ENV.get(config.provider)
    if env_name is None:
        return f"{KEY_MISSING} (set api_key_env)"
    return f"{KEY_SET} ({env_name})" if environ.get(env_name) else f"{KEY_MISSING} ({env_name})"


def _price(value: float | None) -> str:
    return "litellm" if value is None else f"{value:g}"


def _limits(config: ModelConfig) -> str:
    limits = config.limits
    parts = [f"{limits.max_concurrent} conc"]
    if limits.rpm is not None:
        parts.append(f"{limits.rpm:,} rpm")
    if limits.tpm is not None:
        parts.append(f"{limits.tpm:,} tpm")
    return ", ".join(parts)


def zoo_rows(zoo: ModelZoo, environ: Mapping[str, str]) -> list[tuple[str, ...]]:
    """One row of text per alias, in the file's order (the default alias marked with '*')."""
    rows: list[tuple[str, ...]] = []
    for alias, config in zoo.models.items():
        price = config.price
        rows.append(
            (
                f"{alias}*" if alias == zoo.default else alias,
                config.model,
                config.version or "-",
                _price(price.input_per_mtok if price else None),
                _price(price.output_per_mtok if price else None),
                _limits(config),
                ", ".join(config.fallbacks) or "-",
                key_state(config, environ),
            )
        )
    return rows


def render_zoo(zoo: ModelZoo, environ: Mapping[str, str]) -> str:
    """The zoo as an aligned text table; only whether a key is set is shown, never its value."""
    rows: list[tuple[str, ...]] = [COLUMNS, *zoo_rows(zoo, environ)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append(f"* default alias. Prices in USD per 1M tokens. {len(zoo.models)} aliases.")
    return "\n".join(lines)
