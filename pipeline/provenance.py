"""Provenance: git commit, environment fingerprint and package versions, recorded with every run."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any

from pipeline.config import REPO_ROOT

PACKAGES = (
    "assay",
    "dagster",
    "litellm",
    "pydantic",
    "pandas",
    "numpy",
    "scipy",
    "llama_cpp_python",
    "torch",
    "transformers",
    "peft",
)


def git_commit() -> str | None:
    """HEAD commit of the repository (with '+dirty' if the work tree has changes), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results (absent ones are left out)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def system_info() -> dict[str, Any]:
    """Machine, Python, packages and a fingerprint of them (no environment variables: they may hold keys)."""
    packages = package_versions()
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "git_commit": git_commit(),
        "packages": packages,
    }
    python_version = sys.version.split()[0]
    fingerprint = hashlib.sha256(repr(sorted(packages.items())).encode() + python_version.encode()).hexdigest()[:16]
    info["environment_fingerprint"] = fingerprint
    return info
