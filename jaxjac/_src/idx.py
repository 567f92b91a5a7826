"""The IDX file format, read with bounded memory and hashed by content.

An unsigned-byte IDX file is a 4-byte big-endian magic number ``0x0000 08 ndim``,
then ``ndim`` big-endian uint32 dimensions, then ``prod(dims)`` bytes in C order.
A file that starts with the gzip magic bytes ``1f 8b`` is decompressed as a
stream (every member, CRC-32 and length checked); any other file is read as raw
IDX. Nothing in the gzip header (file name, time stamp) matters.

Reading is bounded by the header: the header is decompressed first, the payload
is read into a preallocated array of the declared size, and one more byte is
requested to detect trailing data. A gzip bomb therefore costs at most the size
its header declares plus one byte, and a caller can refuse a header before any
payload is inflated (``max_size``, or :func:`read_idx_header` first).

The SHA-256 of the decompressed content (header and payload) is computed in the
same pass: it identifies the data whatever the compression.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import math
import os
import zlib
from collections.abc import Iterator

import numpy as np

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


@contextlib.contextmanager
def _open(path: str) -> Iterator[io.BufferedIOBase]:
  """The decompressed byte stream of `path`; read errors become errors naming it."""
  try:
    raw = open(path, "rb")  # noqa: SIM115 (closed below)
  except FileNotFoundError:
    raise FileNotFoundError(f"IDX file not found: {path}") from None
  except OSError as e:
    raise ValueError(f"cannot read IDX file {path}: {e}") from e
  with raw:
    compressed = raw.read(2) == _GZIP_MAGIC
    raw.seek(0)
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
    try:
      yield stream
    except EOFError as e:
      raise ValueError(f"truncated gzip stream in {path}: {e}") from e
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError.
      what = "corrupt gzip data in" if compressed else "cannot read IDX file"
      raise ValueError(f"{what} {path}: {e}") from e


def _read_up_to(stream: io.BufferedIOBase, n: int) -> bytes:
  """At most `n` bytes, fewer only at the end of the stream."""
  parts, got = [], 0
  while got < n:
    part = stream.read(n - got)
    if not part:
      break
    parts.append(part)
    got += len(part)
  return b"".join(parts)


def _parse_header(
  stream: io.BufferedIOBase, path: str, magic: int | None
) -> tuple[tuple[int, ...], bytes]:
  """The dimensions and the raw header bytes; raises ValueError naming `path`."""
  head = _read_up_to(stream, 4)
  if len(head) < 4:
    raise ValueError(f"{path} is not an IDX file: {len(head)} bytes, no 4-byte magic number.")
  found = int.from_bytes(head, "big")
  if head[:2] != b"\x00\x00" or head[2] != 0x08 or head[3] < 1:
    expected = f"0x{magic:08x}" if magic is not None else "0x00000800 + ndim"
    raise ValueError(
      f"{path} is not an unsigned-byte IDX file: magic number 0x{found:08x}, expected {expected}."
    )
  if magic is not None and found != magic:
    raise ValueError(f"{path}: wrong IDX magic number 0x{found:08x}, expected 0x{magic:08x}.")
  ndim = head[3]
  dims_bytes = _read_up_to(stream, 4 * ndim)
  if len(dims_bytes) < 4 * ndim:
    raise ValueError(
      f"{path}: truncated IDX header: {4 + len(dims_bytes)} bytes, the {ndim} dimensions "
      f"need {4 + 4 * ndim}."
    )
  dims = tuple(int.from_bytes(dims_bytes[i : i + 4], "big") for i in range(0, 4 * ndim, 4))
  return dims, head + dims_bytes


def read_idx_header(path: str | os.PathLike, *, magic: int | None = None) -> tuple[int, ...]:
  """The shape an IDX file's header declares, without reading its payload.

  Only the first ``4 + 4 * ndim`` bytes are decompressed, so a caller can check
  the shape (and that images and labels agree) before inflating anything.

  Args:
    path: the file, gzip-compressed or plain.
    magic: the expected magic number (``None``: any unsigned-byte IDX file).

  Returns:
    The declared dimensions, e.g. ``(60000, 28, 28)``.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: not an unsigned-byte IDX file, the wrong magic number, a
      truncated header or corrupt gzip data; the message names the file.
  """
  path = os.fspath(path)
  with _open(path) as stream:
    return _parse_header(stream, path, magic)[0]


def read_idx_digest(
  path: str | os.PathLike, *, magic: int | None = None, max_size: int | None = None
) -> tuple[np.ndarray, str]:
  """:func:`read_idx` and the SHA-256 (hex) of the decompressed content, in one pass."""
  path = os.fspath(path)
  with _open(path) as stream:
    dims, header = _parse_header(stream, path, magic)
    size = math.prod(dims)
    declared = f"the header declares shape {dims}, i.e. {len(header) + size} bytes with the header"
    if max_size is not None and size > max_size:
      raise ValueError(
        f"{path}: {declared}, more than the {max_size} payload bytes expected here; "
        "refusing to decompress it."
      )
    digest = hashlib.sha256(header)
    try:
      out = np.empty(size, np.uint8)
    except (MemoryError, ValueError) as e:
      raise ValueError(f"{path}: {declared}, which cannot be allocated ({e}).") from e
    view = out.data  # a writable memoryview of the 1-D uint8 buffer
    got = 0
    while got < size:
      n = stream.readinto(view[got : got + _CHUNK])
      if not n:
        break
      digest.update(view[got : got + n])
      got += n
    if got < size:
      raise ValueError(
        f"{path}: truncated: {declared}, but the (decompressed) file has {len(header) + got} bytes."
      )
    if stream.read(1):
      raise ValueError(
        f"{path}: trailing bytes after the data: {declared}, but the (decompressed) file "
        "has more; stopped reading there."
      )
  out.flags.writeable = False
  return out.reshape(dims), digest.hexdigest()


def read_idx(
  path: str | os.PathLike, *, magic: int | None = None, max_size: int | None = None
) -> np.ndarray:
  """Reads one unsigned-byte IDX file (gzip-compressed or plain) into a uint8 array.

  The IDX format is a 4-byte big-endian magic number ``0x0000 08 ndim`` (``0x08``
  for unsigned bytes), then ``ndim`` big-endian uint32 dimensions ``d_i``, then
  the payload of

  .. math::
    \\prod_{i=1}^{\\mathrm{ndim}} d_i

  bytes in C order. Decompression stops one byte after the declared payload, so
  memory and time are bounded by the header, not by what a gzip stream inflates
  to.

  Args:
    path: the file. A file starting with the gzip magic bytes ``1f 8b`` is
      decompressed (every member, CRC and length checked), any other is read
      as raw IDX.
    magic: the expected magic number, e.g. ``0x00000803`` for MNIST images or
      ``0x00000801`` for labels; ``None`` accepts any unsigned-byte IDX file.
    max_size: the largest payload (product of the dimensions) to accept; a
      header declaring more is an error before the payload is read.

  Returns:
    A read-only uint8 array of the shape the header declares.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: corrupt or truncated gzip data, a wrong magic number, a header
      declaring more than `max_size`, or a payload whose length differs from
      the header's (truncated, or trailing bytes); the message names the file.

  Example:
    >>> import gzip, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.gz")
    >>> with open(path, "wb") as f:
    ...   _ = f.write(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])))
    >>> read_idx(path, magic=LABELS_MAGIC)
    array([7, 2, 1], dtype=uint8)
  """
  return read_idx_digest(path, magic=magic, max_size=max_size)[0]
