"""Reading safetensors files with plain reads: no memory map, bounded memory, changes detected.

The reference ``safetensors`` package maps the file into memory. A mapped file that another
process truncates kills the reader with SIGBUS, which Python cannot catch, and its other
entry point parses a ``bytes`` object holding the whole file. So deferral reads the file
itself: the header is checked by :mod:`deferral._safetensors_format` before any tensor is
touched, each tensor is read with ``readinto`` straight into an array of exactly its size,
and the file's size and modification time are compared before and after.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from ._fill import aligned_empty
from ._safetensors_format import Entry, Header, header_length, host_dtype, numpy_problem, parse_header
from .errors import CheckpointError

if TYPE_CHECKING:
    from types import TracebackType

    import numpy as np

__all__ = ["SafetensorsReader", "read_safetensors"]

#: Bytes read per call: a tensor arrives in pieces of at most this size.
CHUNK_BYTES = 16 * 2**20
_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def _signature(st: os.stat_result) -> tuple[int, ...]:
    # Not st_ctime: replacing or unlinking the file (a save) changes it, the bytes we read stay.
    return (st.st_size, st.st_mtime_ns)


def _refuse_irregular(st: os.stat_result, where: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "a special file")
        raise CheckpointError(f"{where} is {kind}, not a regular file: pass the path of a .safetensors file")


def _open_regular(path: str, where: str) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading if it is a regular file; never blocks on a pipe or device.

    Checked before opening (nothing but a regular file is opened) and on the open file (a
    file replaced meanwhile is fine: the one opened is the one read).
    """
    try:
        _refuse_irregular(os.stat(path), where)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise CheckpointError(f"cannot read {where}: {exc.strerror or exc}") from exc
    opened = os.fstat(fd)
    try:
        _refuse_irregular(opened, where)
    except CheckpointError:
        os.close(fd)
        raise
    return fd, opened


class SafetensorsReader:
    """An open, checked safetensors file whose tensors are read one at a time.

    Use it as a context manager: ``header`` is available at once; :meth:`read` returns one
    tensor; :meth:`check_unchanged` raises if the file changed since it was opened.

    Raises:
        CheckpointError: for a path that is not a regular file, a header that breaks the
            format, or a file that changes or shrinks while it is read.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.where = repr(os.fspath(path))
        fd, self._stat = _open_regular(os.fspath(path), self.where)
        self._file = os.fdopen(fd, "rb", buffering=0)
        try:
            self.header = self._read_header()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._file.close()

    def _read_exactly(self, out: memoryview, offset: int) -> None:
        self._file.seek(offset)
        done = 0
        while done < len(out):
            try:
                got = self._file.readinto(out[done:done + CHUNK_BYTES])
            except OSError as exc:
                raise CheckpointError(f"cannot read {self.where}: {exc.strerror or exc}") from exc
            if not got:
                raise CheckpointError(
                    f"{self.where} shrank while being read: it ends before byte {offset + len(out)}; "
                    "it was truncated or rewritten by another program"
                )
            done += got

    def _read_header(self) -> Header:
        size = self._stat.st_size
        prefix = bytearray(min(8, size))
        self._read_exactly(memoryview(prefix), 0)
        n = header_length(bytes(prefix), size, self.where)
        blob = bytearray(n)
        self._read_exactly(memoryview(blob), 8)
        return parse_header(bytes(blob), size - 8 - n, self.where)

    def read(self, entry: Entry) -> np.ndarray:
        """The tensor ``entry`` as a new native-endian array (bfloat16 as uint16 bits)."""

        problem = numpy_problem(entry)
        if problem is not None:
            raise CheckpointError(f"{self.where} cannot be read:\n  - {problem}")
        # Aligned: a backend can make it the parameter's memory as it is (TensorFlow needs that).
        raw = aligned_empty((entry.nbytes,), "uint8")
        self._read_exactly(raw.data, self.header.data_start + entry.begin)
        array = raw.view(host_dtype(entry.dtype or "")).reshape(entry.shape)
        return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))

    def check_unchanged(self) -> None:
        """Raise if the file's size or modification time changed since it was opened."""
        if _signature(os.fstat(self._file.fileno())) != _signature(self._stat):
            raise CheckpointError(
                f"{self.where} changed while being read (another program wrote to it); nothing was "
                "loaded: try again once it is complete"
            )


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, tuple[str, np.ndarray]], dict[str, str]]:
    """Read every tensor of a safetensors file: ``({name: (dtype, array)}, metadata)``.

    Arrays are new, in the file's dtype (bfloat16 as uint16 bits), in header order.

    Raises:
        CheckpointError: naming the file and listing the problems (see :class:`SafetensorsReader`),
            or naming a tensor NumPy cannot hold (an 8-bit float, more than 64 dimensions).
    """
    with SafetensorsReader(path) as reader:
        problems = [p for p in map(numpy_problem, reader.header.entries.values()) if p is not None]
        if problems:
            raise CheckpointError(f"{reader.where} cannot be read:\n  - " + "\n  - ".join(problems))
        arrays = {name: (entry.dtype or "", reader.read(entry)) for name, entry in reader.header.entries.items()}
        reader.check_unchanged()
        return arrays, reader.header.metadata
