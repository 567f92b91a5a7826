"""The metrics file of a run (``metrics.jsonl``) and the logger that fills it.

One JSON record a line: ``"start"``; ``"train"`` every ``log_every`` steps
with the interval's mean step metrics, ``lr`` and ``examples_per_sec``;
``"heldout"`` with the mean exact ``||J||_F`` on held-out test examples;
``"epoch"`` with the epoch's mean step metrics, the test accuracy and the
last held-out norm; ``"final"``. :class:`MetricsLogger` keeps the running
values these records need; :meth:`MetricsLogger.state_dict` goes into every
checkpoint so that a resumed run writes the records of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxjac._src.metrics import to_jsonable
from jaxjac._src.training.checkpoint import host_array, write_atomic
from jaxjac._src.training.step import check_finite

METRICS_FILE = "metrics.jsonl"
TIMING_FIELDS = ("examples_per_sec", "compile_s")


def _read_records(path: str) -> list[dict[str, Any]]:
  """The records of `path`; a partial last line (a write cut short) is dropped with a warning."""
  with open(path) as f:
    lines = f.read().split("\n")
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as err:
      if i == len(lines) - 1:  # no newline after it: the last write was interrupted
        warnings.warn(f"{path}: dropping the partial last line {line[:60]!r}.", stacklevel=3)
        continue
      raise ValueError(
        f"{path} line {i + 1} is not a JSON record ({err}); the file is damaged."
      ) from None
  return records


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of ``workdir/metrics.jsonl``, in order (a partial last line dropped)."""
  return _read_records(os.path.join(workdir, METRICS_FILE))


class MetricsWriter:
  """Appends JSON records, one a line, to ``path`` (on the first process only).

  With ``truncate_after=s`` it first drops the records whose ``step``
  exceeds ``s`` (written after the checkpoint a resumed run restarts from),
  rewriting the file atomically: a temporary file, ``fsync``, ``os.replace``.
  """

  def __init__(self, path: str, *, truncate_after: int | None = None):
    self.path = path
    self._file = None
    if jax.process_index() != 0:
      return
    if truncate_after is not None and os.path.exists(path):
      kept = [r for r in _read_records(path) if r.get("step", 0) <= truncate_after]
      write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    self._file = open(path, "a")  # noqa: SIM115

  def write(self, record: Mapping[str, Any]) -> None:
    if self._file is not None:
      self._file.write(json.dumps(to_jsonable(record)) + "\n")
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()


class MetricsLogger:
  """Collects the step metrics of a run and writes its train, heldout and epoch records.

  Args:
    writer: the :class:`MetricsWriter`.
    batch_size: global batch size (for ``examples_per_sec``).
    steps_per_epoch: for the ``epoch`` field of the records.
    on_record: called with each ``train`` record's means (a progress bar).
  """

  def __init__(
    self,
    writer: MetricsWriter,
    *,
    batch_size: int,
    steps_per_epoch: int,
    on_record: Callable[[dict[str, float]], None] | None = None,
  ):
    self.writer = writer
    self.batch_size = batch_size
    self.steps_per_epoch = steps_per_epoch
    self.on_record = on_record
    self.pending: list[tuple[int, Any]] = []
    self.epoch_sums: dict[str, float] = {}
    self.epoch_count = 0
    self.last_train: dict[str, float] = {}
    self.heldout_fro: float | None = None
    self.test_accuracy: float | None = None
    self.train_time = 0.0
    self.train_steps = 0
    self.restart_timer()

  def state_dict(self) -> dict[str, Any]:
    """The running values the next records depend on (JSON-able; saved with checkpoints)."""
    return {
      "epoch_sums": dict(self.epoch_sums),
      "epoch_count": self.epoch_count,
      "last_train": dict(self.last_train),
      "heldout_fro": self.heldout_fro,
      "test_accuracy": self.test_accuracy,
      "train_time": self.train_time,
      "train_steps": self.train_steps,
    }

  def load_state_dict(self, state: Mapping[str, Any]) -> None:
    """Restores :meth:`state_dict` (from a checkpoint)."""
    self.epoch_sums = dict(state["epoch_sums"])
    self.epoch_count = int(state["epoch_count"])
    self.last_train = dict(state["last_train"])
    self.heldout_fro = state["heldout_fro"]
    self.test_accuracy = state["test_accuracy"]
    self.train_time = float(state["train_time"])
    self.train_steps = int(state["train_steps"])

  def restart_timer(self) -> None:
    self._t0, self._steps = time.perf_counter(), 0

  def add(self, step: int, metrics: Any) -> None:
    """Queues the (device) metrics of `step`; they are fetched at the next :meth:`flush`."""
    self.pending.append((step, metrics))
    self._steps += 1

  def flush(self, step: int) -> None:
    """Checks the queued metrics for NaN/inf and writes their means as a ``train`` record."""
    if not self.pending:
      return
    fetched = [jax.tree.map(host_array, m) for _, m in self.pending]
    elapsed = time.perf_counter() - self._t0
    for (s, _), m in zip(self.pending, fetched, strict=True):
      check_finite(m, step=s)
    means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    for m in fetched:
      for k, v in m.items():
        self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + float(v)
    self.epoch_count += len(fetched)
    rate = self._steps * self.batch_size / elapsed if elapsed > 0 else float("nan")
    self.train_time += elapsed
    self.train_steps += self._steps
    means["lr"] = float(fetched[-1]["lr"])
    self.last_train = means
    self.writer.write(
      {
        "kind": "train",
        "step": step,
        "epoch": step / self.steps_per_epoch,
        **means,
        "examples_per_sec": rate,
      }
    )
    if self.on_record is not None:
      self.on_record(means)
    self.pending.clear()
    self.restart_timer()

  def heldout(self, step: int, value: float) -> None:
    self.heldout_fro = value
    self.writer.write({"kind": "heldout", "step": step, "heldout_jacobian_fro": value})
    self.restart_timer()

  def epoch(self, step: int, test_accuracy: float) -> None:
    """Writes the ``epoch`` record ending at `step` and starts the next epoch's sums."""
    self.test_accuracy = test_accuracy
    n = self.epoch_count
    means = {k: v / n for k, v in self.epoch_sums.items()} if n else {}
    self.writer.write(
      {
        "kind": "epoch",
        "step": step,
        "epoch": step // self.steps_per_epoch,
        **means,
        "test_accuracy": test_accuracy,
        "heldout_jacobian_fro": self.heldout_fro,
      }
    )
    self.epoch_sums.clear()
    self.epoch_count = 0
    self.restart_timer()

  def examples_per_sec(self) -> float | None:
    return self.train_steps * self.batch_size / self.train_time if self.train_time else None
