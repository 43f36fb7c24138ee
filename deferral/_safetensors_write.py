"""Writing safetensors files atomically: a private temporary file, fsynced, renamed over the target.

The temporary file is created by :func:`tempfile.mkstemp` in the target's directory
(``O_CREAT | O_EXCL``, mode 0600, a random name): it is never a file or link that someone
planted, and two saves never share one. The data is streamed tensor by tensor (no second copy
of the model in memory), flushed and fsynced; then ``os.replace`` swaps it in (on POSIX the
directory is fsynced too), so a reader sees the old file or the new one, whole. On any
failure, an interrupt included, the temporary file is removed.

The ``safetensors`` package can write files too, but only from one ``bytes`` object holding
everything or to a path it opens itself, not to a file descriptor created exclusively.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._safetensors_format import CODES
from .errors import CheckpointError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["write_safetensors"]


def _header(tensors: Mapping[str, tuple[str, np.ndarray]], metadata: Mapping[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, (dtype, array) in tensors.items():
        header[name] = {"dtype": CODES[dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    return blob + b" " * (-len(blob) % 8)


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return 0o022


def _mode(target: str) -> int:
    """The permissions of the file being replaced, else those ``open()`` would give a new one."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; its rename is already durable
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _write(fd: int, tensors: Mapping[str, tuple[str, np.ndarray]], blob: bytes) -> None:
    import numpy as np

    with os.fdopen(fd, "wb", closefd=False) as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for _, array in tensors.values():
            little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
            f.write(little.reshape(-1).view(np.uint8).data)
        f.flush()
        os.fsync(f.fileno())


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, tuple[str, np.ndarray]],
                      metadata: Mapping[str, str]) -> None:
    """Write ``{name: (dtype, host array)}`` (bfloat16 as uint16 bits) and string metadata to ``path``.

    Raises:
        CheckpointError: naming ``path`` when the file cannot be written (the target is then
            unchanged and no temporary file is left).
    """
    target = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(target)
    blob = _header(tensors, metadata)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name[:100]}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise CheckpointError(f"cannot save to {os.fspath(path)!r}: {exc.strerror or exc}") from exc
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, _mode(target))
            _write(fd, tensors, blob)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise CheckpointError(f"cannot save to {os.fspath(path)!r}: {exc.strerror or exc}") from exc
        raise
    _fsync_directory(directory)
