"""Files of the model cache: its folder, atomic writes and a cross-process lock.

Every model ragc prepares once per machine (the converted MPNet graphs, a reassembled GGUF)
lives under :func:`default_model_dir`. A file is written to a temporary name beside its target
and renamed into place, so a reader never sees half of one; preparation runs under an exclusive
``fcntl`` lock, so two processes starting together do the work once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from schemas.errors import PermanentError

__all__ = [
    "default_model_dir",
    "locked",
    "package_file",
    "replace_atomically",
    "write_atomically",
]


def default_model_dir() -> Path:
    """``$RAGC_MODEL_DIR`` if set, else ``~/.cache/ragc/models``."""
    configured = os.environ.get("RAGC_MODEL_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "ragc" / "models"


def package_file(package: str, relative: str, *, missing: str, hint: str) -> Path:
    """A data file shipped inside an installed package, located without importing it;
    :class:`~schemas.errors.PermanentError` saying ``missing`` when the package is absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise PermanentError(missing, hint=hint)
    return Path(spec.origin).parent / relative


def replace_atomically(path: Path, fill: Callable[[Path], None]) -> None:
    """Have ``fill`` write a temporary file beside ``path``, then rename it into place."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    written = Path(temporary)
    try:
        fill(written)
        written.chmod(0o644)  # a cache other users' processes may read
        with written.open("rb+") as out:
            os.fsync(out.fileno())
        written.replace(path)
    except BaseException:
        written.unlink(missing_ok=True)
        raise


def write_atomically(path: Path, chunks: Iterable[bytes]) -> str:
    """Write ``chunks`` to ``path`` through a temporary file renamed into place; their sha256."""
    digest = hashlib.sha256()

    def fill(temporary: Path) -> None:
        with temporary.open("wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)

    replace_atomically(path, fill)
    return digest.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block."""
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
