"""`assay audit verify` and `assay store stats | verify | gc | export`: the store and its tamper evidence."""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

from pipeline.config import assay_home, list_experiments
from pipeline.store import ResponseStore


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the admin commands on the `assay` parser."""
    audit = sub.add_parser("audit", help="check an experiment's hash-chained audit log against the store")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="detect edited or deleted log lines and altered records")
    verify.add_argument("experiment")

    store = sub.add_parser("store", help="the response store: stats, verify, gc, export")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    store_sub.add_parser("stats", help="records, bytes, cost and models in the store")
    store_sub.add_parser("verify", help="check every record's checksum (nothing is moved)")
    gc = store_sub.add_parser("gc", help="delete old records that no current plan needs")
    gc.add_argument("--older-than", type=float, required=True, metavar="DAYS", help="age in days")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    export = store_sub.add_parser("export", help="copy an experiment's records (verified) into another store")
    export.add_argument("experiment")
    export.add_argument("dest", help="folder of the destination store")


def run(args: argparse.Namespace) -> int | None:
    """Run an admin command; None when `args` is not one."""
    if args.command == "audit":
        return _audit_verify(args.experiment)
    if args.command == "store":
        store = ResponseStore(assay_home() / "store")
        if args.store_command == "stats":
            return _stats(store)
        if args.store_command == "verify":
            return _verify(store)
        if args.store_command == "gc":
            return _gc(store, args.older_than, args.dry_run)
        if args.store_command == "export":
            return _export(store, args.experiment, Path(args.dest))
    return None


def _audit_verify(experiment: str) -> int:
    from pipeline.audit import audit_log_path, verify_audit
    from pipeline.context import ExperimentContext

    context = ExperimentContext(experiment)
    path = audit_log_path(context.home, context.config.name)
    if not path.exists():
        print(f"assay: no audit log for {context.config.name} yet ({path}): assay run {experiment}")
        return 2
    verdict = verify_audit(path, context.store)
    for problem in verdict.problems:
        print(f"  {problem}")
    state = "intact" if verdict.ok else f"{len(verdict.problems)} problem(s)"
    print(f"{context.config.name}: audit log {path}: {verdict.entries} entries, {state}, head {verdict.head_hash[:16]}")
    return 0 if verdict.ok else 1


def _stats(store: ResponseStore) -> int:
    from pipeline.store_admin import store_stats

    stats = store_stats(store)
    print(f"store {store.root}: {stats.records} records ({stats.record_bytes / 1e6:.1f} MB), {stats.traces} traces")
    print(f"  cost ${stats.cost_usd:.4f}, quarantined {stats.quarantined}, stored {stats.oldest} .. {stats.newest}")
    for alias, count in sorted(stats.by_alias.items()):
        print(f"  {alias}: {count} records")
    return 0


def _verify(store: ResponseStore) -> int:
    from pipeline.store_admin import verify_store

    verdict = verify_store(store)
    for line in [*verdict.corrupt, *(f"{path}: written by a newer Assay" for path in verdict.too_new)]:
        print(f"  {line}")
    print(f"store {store.root}: {verdict.ok}/{verdict.checked} records verified")
    return 0 if verdict.clean else 1


def _needed_by_current_plans() -> set[str]:
    from pipeline.call_stages import needed_call_ids
    from pipeline.context import ExperimentContext

    needed: set[str] = set()
    for name in list_experiments():
        needed |= needed_call_ids(ExperimentContext(name))
    return needed


def _gc(store: ResponseStore, days: float, dry_run: bool) -> int:
    from pipeline.store_admin import gc

    result = gc(store, timedelta(days=days), _needed_by_current_plans(), dry_run=dry_run)
    verb = "would delete" if result.dry_run else "deleted"
    print(
        f"store {store.root}: {verb} {len(result.deleted)} records ({result.bytes_freed / 1e6:.1f} MB); kept "
        f"{result.kept_needed} a current plan needs and {result.kept_recent} younger than {days:g} days"
    )
    return 0


def _export(store: ResponseStore, experiment: str, dest: Path) -> int:
    from pipeline.call_stages import needed_call_ids
    from pipeline.context import ExperimentContext
    from pipeline.store_admin import export

    result = export(store, sorted(needed_call_ids(ExperimentContext(experiment))), dest)
    print(f"exported {len(result.exported)} records of {experiment} to {result.dest}; missing {len(result.missing)}")
    return 0 if not result.missing else 1
