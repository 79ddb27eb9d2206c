"""The run's resource use: CPU time, peak memory, disk of the run folder and the store (psutil)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from pipeline.report import readable


@dataclass(frozen=True)
class ResourceUse:
    """What this process (and its finished children) used, and what the run left on disk.

    Attributes:
        cpu_s: user + system CPU seconds of this process and its waited-for children.
        peak_rss_bytes: the highest resident memory of this process so far (current RSS where the OS keeps
            no peak).
        run_folder_bytes: bytes of the files under the run folder.
        store_bytes: bytes of the files under the response store (None when it has no folder).
    """

    cpu_s: float
    peak_rss_bytes: int
    run_folder_bytes: int
    store_bytes: int | None

    def to_json(self) -> dict[str, Any]:
        """Full precision, for metadata/run_summary.json."""
        return asdict(self)

    def sentence(self) -> str:
        """One line of the report."""
        store = f", store {readable.megabytes(self.store_bytes)}" if self.store_bytes is not None else ""
        return (
            f"- resources: CPU {readable.seconds(self.cpu_s)}, peak memory {readable.megabytes(self.peak_rss_bytes)}, "
            f"run folder {readable.megabytes(self.run_folder_bytes)}{store}"
        )


def folder_bytes(folder: Path) -> int:
    """Total size of the regular files under `folder` (0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed while we walked (gc, a spill being renamed)
                continue
    return total


def peak_rss_bytes(process: psutil.Process) -> int:
    """Peak resident memory: the kernel's high-water mark where psutil exposes one, else the current RSS."""
    memory = process.memory_info()
    peak = getattr(memory, "peak_wset", None)  # Windows
    if peak is None:
        try:
            import resource

            # ru_maxrss is KiB on Linux, bytes on macOS.
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = maxrss if psutil.MACOS else maxrss * 1024
        except ImportError:
            peak = None
    return int(max(peak or 0, memory.rss))


def measure(run_folder: Path, store_root: Path | None) -> ResourceUse:
    """The resource use now, for a run whose outputs are in `run_folder`."""
    process = psutil.Process()
    times = process.cpu_times()
    cpu = times.user + times.system + times.children_user + times.children_system
    return ResourceUse(
        cpu_s=cpu,
        peak_rss_bytes=peak_rss_bytes(process),
        run_folder_bytes=folder_bytes(run_folder),
        store_bytes=folder_bytes(store_root) if store_root is not None and store_root.is_dir() else None,
    )
