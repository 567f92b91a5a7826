"""Example orders: the stratified train/test split, the epoch permutation and batches.

Every order is a function of non-negative integer seeds through NumPy's
:class:`numpy.random.Generator`, so it is the same on every machine and every
process: an epoch's order is ``np.random.default_rng([seed, epoch]).permutation(N)``
and resuming inside an epoch (``start=``) continues exactly that order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from jaxjac._src import checks


def check_seed(seed: Any, name: str = "seed") -> int:
  """Returns `seed` as an int if it is a Python or NumPy int >= 0, else raises."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f"`{name}` must be a Python int >= 0, got {seed!r}.")
  if seed < 0:
    raise ValueError(f"`{name}` must be >= 0, got {seed}.")
  return int(seed)


def check_fraction(value: Any, name: str) -> float:
  """Returns `value` as a float if it is a real number in (0, 1), else raises."""
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise TypeError(f"`{name}` must be a float in (0, 1), got {value!r}.")
  if not 0.0 < float(value) < 1.0:
    raise ValueError(f"`{name}` must be in (0, 1), got {value}.")
  return float(value)


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

  Example:
    >>> train, test = stratified_split(np.array([0, 0, 0, 0, 1, 1]), test_fraction=0.5, seed=0)
    >>> len(train), len(test)
    (3, 3)
  """
  check_fraction(test_fraction, "test_fraction")
  seed = check_seed(seed)
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


def steps_per_epoch(num_examples: int, batch_size: int, *, drop_remainder: bool = True) -> int:
  """Number of batches :func:`batches` yields per epoch.

  ``num_examples // batch_size`` with `drop_remainder`, else
  ``ceil(num_examples / batch_size)``.

  Raises:
    ValueError: `drop_remainder` and fewer examples than `batch_size` (no
      batch at all), or `num_examples` < 1.

  Example:
    >>> steps_per_epoch(103, 10), steps_per_epoch(103, 10, drop_remainder=False)
    (10, 11)
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
  seed = check_seed(seed)
  epoch = check_seed(epoch, "epoch")
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

  Example:
    >>> x, y = np.zeros((5, 2)), np.arange(5)
    >>> [b.tolist() for _, b in batches(x, y, 2, shuffle=False, drop_remainder=False)]
    [[0, 1], [2, 3], [4]]
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
  if (
    isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not (0 <= start <= steps)
  ):
    raise ValueError(f"`start` must be an int in [0, {steps}], got {start!r}.")
  if shuffle:
    if seed is None:
      raise ValueError("`seed` is required when `shuffle=True`, e.g. `seed=0`.")
    order = epoch_permutation(n, seed=seed, epoch=epoch)
  else:
    if seed is not None:
      check_seed(seed)
    check_seed(epoch, "epoch")
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
