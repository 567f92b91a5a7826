"""The IDX reader: the format, gzip handling, bounded decompression and content hashes."""

import doctest
import gzip
import hashlib
import os
import tracemalloc

import numpy as np
import pytest
from conftest import idx_bytes, write_file

from jaxjac import data
from jaxjac._src import batches, datasets, idx

MIB = 1 << 20


def gzip_bomb(path, head: bytes, *, inflated_mib: int) -> str:
  """`head` then `inflated_mib` MiB of zeros as a multi-member gzip file (~1 KB per MiB).

  Each MiB of zeros is one 1051-byte gzip member, compressed once and repeated,
  so a 1 MB bomb that inflates to 1 GiB is written in milliseconds.
  """
  zeros = gzip.compress(bytes(MIB), mtime=0)
  with open(path, "wb") as f:
    f.write(gzip.compress(head, mtime=0))
    for _ in range(inflated_mib):
      f.write(zeros)
  return os.fspath(path)


def peak_bytes(fn):
  """Runs `fn` and returns the peak of Python-tracked allocations (NumPy's included)."""
  tracemalloc.start()
  try:
    fn()
  finally:
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
  return peak


# ----------------------------------------------------------------------------- format


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 28, 28)])
def test_round_trip_and_content_digest(tmp_path, compress, shape):
  arr = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  content = idx_bytes(arr)
  path = write_file(tmp_path / "f", content, compress=compress)
  out, digest = idx.read_idx_digest(path)
  np.testing.assert_array_equal(out, arr)
  assert out.dtype == np.uint8 and not out.flags.writeable
  assert digest == hashlib.sha256(content).hexdigest()  # The decompressed bytes.
  assert data.read_idx_header(path) == shape


def test_gzip_header_and_members_do_not_matter(tmp_path):
  """The same content under any gzip header, level or member split reads and hashes the same."""
  arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  content = idx_bytes(arr)
  paths = [
    write_file(tmp_path / "plain", content, compress=False),
    write_file(tmp_path / "a.gz", content, mtime=0),
    write_file(tmp_path / "b", content, mtime=1234567),  # No .gz suffix.
  ]
  with open(tmp_path / "named.gz", "wb") as raw, gzip.GzipFile("some-name", "wb", 1, raw) as f:
    f.write(content)
  paths.append(os.fspath(tmp_path / "named.gz"))
  with open(tmp_path / "members.gz", "wb") as f:  # Two members, split inside the header.
    f.write(gzip.compress(content[:6]) + gzip.compress(content[6:], compresslevel=1))
  paths.append(os.fspath(tmp_path / "members.gz"))
  assert len({open(p, "rb").read() for p in paths}) == len(paths)  # All files differ.
  for path in paths:
    out, digest = idx.read_idx_digest(path, magic=data.IMAGES_MAGIC)
    np.testing.assert_array_equal(out, arr)
    assert digest == hashlib.sha256(content).hexdigest()


def test_wrong_magic(tmp_path):
  images = write_file(tmp_path / "images.gz", idx_bytes(np.zeros((5, 28, 28), np.uint8)))
  with pytest.raises(ValueError, match="wrong IDX magic number 0x00000803, expected 0x00000801"):
    data.read_idx(images, magic=data.LABELS_MAGIC)
  with pytest.raises(ValueError, match=images):
    data.read_idx_header(images, magic=data.LABELS_MAGIC)
  text = write_file(tmp_path / "text", b"hello world, not IDX", compress=False)
  with pytest.raises(ValueError, match=f"{text} is not an unsigned-byte IDX file"):
    data.read_idx(text)
  floats = write_file(tmp_path / "floats", b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + b"abcd")
  with pytest.raises(ValueError, match="not an unsigned-byte IDX file: magic number 0x00000d01"):
    data.read_idx(floats)
  empty = write_file(tmp_path / "empty", b"", compress=False)
  with pytest.raises(ValueError, match=f"{empty} is not an IDX file: 0 bytes"):
    data.read_idx(empty)


def test_truncated_and_trailing_payload(tmp_path):
  content = idx_bytes(np.ones((50, 28, 28), np.uint8))
  path = write_file(tmp_path / "images.gz", content[:-100])
  with pytest.raises(ValueError, match="truncated") as e:
    data.read_idx(path)
  msg = str(e.value)
  assert path in msg and "(50, 28, 28)" in msg
  assert str(len(content)) in msg and str(len(content) - 100) in msg
  write_file(tmp_path / "images.gz", content + b"\x00")
  with pytest.raises(ValueError, match=f"{path}: trailing bytes after the data"):
    data.read_idx(path)
  short = write_file(tmp_path / "short", content[:9], compress=False)
  with pytest.raises(ValueError, match=f"{short}: truncated IDX header: 9 bytes, the 3 "):
    data.read_idx_header(short)


def test_truncated_or_corrupt_gzip_stream(tmp_path):
  compressed = gzip.compress(idx_bytes(np.arange(7840, dtype=np.uint8).reshape(10, 28, 28)))
  path = write_file(tmp_path / "x.gz", compressed[: len(compressed) // 2], compress=False)
  with pytest.raises(ValueError, match=f"truncated gzip stream in {path}"):
    data.read_idx(path)
  broken = bytearray(compressed)
  broken[-8] ^= 0xFF  # The stored CRC-32: a corrupt file, not silently accepted.
  write_file(path, bytes(broken), compress=False)
  with pytest.raises(ValueError, match=f"corrupt gzip data in {path}: CRC check failed"):
    data.read_idx(path)
  broken = bytearray(compressed)
  broken[len(broken) // 2] ^= 0xFF  # Inside the deflate stream, after the IDX header.
  write_file(path, bytes(broken), compress=False)
  with pytest.raises(ValueError, match=f"corrupt gzip data in {path}"):
    data.read_idx(path)


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="IDX file not found: .*nope"):
    data.read_idx(tmp_path / "nope")
  with pytest.raises(ValueError, match=f"cannot read IDX file {tmp_path}"):
    data.read_idx(tmp_path)  # A directory.


# ----------------------------------------------------------------------------- bounded


def test_gzip_bomb_as_labels_fails_fast_with_bounded_memory(tmp_path):
  """A 1 MB labels file that inflates to 1 GiB stops one byte after the declared 50 labels."""
  labels = np.arange(50, dtype=np.uint8) % 10
  path = gzip_bomb(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(labels), inflated_mib=1000)
  assert 1.0e6 < os.path.getsize(path) < 1.1e6
  errors = []

  def read():
    with pytest.raises(ValueError, match="trailing bytes after the data") as e:
      data.read_idx(path, magic=data.LABELS_MAGIC)
    errors.append(str(e.value))

  assert peak_bytes(read) < 8 * MIB  # The whole stream would be 1000 MiB.
  assert path in errors[0] and "(50,)" in errors[0]


def test_header_declaring_too_much_is_refused_before_decompressing(tmp_path):
  head = idx_bytes(np.zeros((0, 28, 28), np.uint8))[:4] + b"".join(
    d.to_bytes(4, "big") for d in (10**6, 28, 28)
  )
  path = gzip_bomb(tmp_path / "images.gz", head, inflated_mib=100)
  assert data.read_idx_header(path) == (10**6, 28, 28)  # Reads the 16 header bytes only.
  peak = peak_bytes(lambda: data.read_idx_header(path))
  assert peak < MIB
  with pytest.raises(ValueError, match="more than the 47040000 payload bytes expected here"):
    data.read_idx(path, max_size=60000 * 784)
  huge = write_file(tmp_path / "huge", b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3)
  with pytest.raises(ValueError, match=f"{huge}: the header declares shape .* cannot be alloc"):
    data.read_idx(huge)


# ----------------------------------------------------------------------------- doctests


@pytest.mark.parametrize("module", [idx, datasets, batches])
def test_docstring_examples(module):
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0
  assert result.failed == 0
