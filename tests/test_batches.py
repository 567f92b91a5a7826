"""Example orders: the stratified split, the epoch permutation and the batch iterator."""

import numpy as np
import pytest

from jaxjac import data


def ordered(n):
  """Images whose pixels encode the example index, and labels = index."""
  images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 2, 2, 1))
  return images, np.arange(n, dtype=np.int32)


def test_stratified_split_partition():
  labels = np.repeat(np.arange(3), [10, 20, 7])
  train, test = data.stratified_split(labels, test_fraction=0.3, seed=5)
  np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(37))
  assert np.bincount(labels[test]).tolist() == [3, 6, 2]  # round(0.3 * n_c).
  train2, test2 = data.stratified_split(labels, test_fraction=0.3, seed=5)
  np.testing.assert_array_equal(test, test2)
  # The rule: per class in increasing order, the first round(f * n_c) of one generator's
  # permutations of the class indices.
  rng = np.random.default_rng(5)
  expected = np.sort(
    np.concatenate(
      [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in enumerate([3, 6, 2])]
    )
  )
  np.testing.assert_array_equal(test, expected)
  with pytest.raises(ValueError, match="each class needs at least one test"):
    data.stratified_split(labels, test_fraction=0.01, seed=0)
  with pytest.raises(ValueError, match="`test_fraction` must be in \\(0, 1\\)"):
    data.stratified_split(labels, test_fraction=1.0, seed=0)
  with pytest.raises(TypeError, match="`seed` must be a Python int >= 0"):
    data.stratified_split(labels, test_fraction=0.5, seed="0")


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


@pytest.mark.parametrize(
  "n,bs,drop,expected",
  [
    (100, 10, True, 10),
    (103, 10, True, 10),
    (103, 10, False, 11),
    (5, 5, False, 1),
    (4, 5, False, 1),
  ],
)
def test_steps_per_epoch(n, bs, drop, expected):
  assert data.steps_per_epoch(n, bs, drop_remainder=drop) == expected
  x, y = ordered(n)
  assert len(list(data.batches(x, y, bs, seed=0, drop_remainder=drop))) == expected


def test_batches_bad_arguments():
  x, y = ordered(10)
  with pytest.raises(ValueError, match="same leading length"):
    data.batches(x, y[:9], 2, seed=0)
  with pytest.raises(TypeError, match="`images` and `labels` must be arrays, got list"):
    data.batches(x.tolist(), y, 2, seed=0)
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
  with pytest.raises(ValueError, match="`epoch` must be >= 0"):
    data.batches(x, y, 2, shuffle=False, epoch=-1)
