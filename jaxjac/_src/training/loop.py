"""The training loop: :func:`train` (``train_and_evaluate``), resumable and multi-process.

Data order: epoch ``e`` is ``jaxjac.data.epoch_permutation(N, seed=config.seed,
epoch=e)``, so a run resumed from a checkpoint at step ``s`` skips the ``s mod
steps_per_epoch`` batches already consumed; with the step keys
(:func:`jaxjac.training.step_keys`) and the metrics logger's running values
saved in the checkpoint, the resumed run reproduces the uninterrupted one:
the same parameters and the same metrics records. In a multi-process run
(``jax.process_count() > 1``, ``config.num_devices = 0``) every process walks
the same global batch order and loads only its host shard of each batch
(:func:`jaxjac.sharding.host_shard`); evaluation runs on every process on a
local copy of the replicated parameters, so its numbers are the same on all.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxjac._src import metrics as metrics_lib
from jaxjac._src import sharding as sharding_lib
from jaxjac._src.training import checkpoint as ckpt
from jaxjac._src.training.config import validate_config
from jaxjac._src.training.metrics_log import (
  METRICS_FILE,
  MetricsLogger,
  MetricsWriter,
  read_metrics,
)
from jaxjac._src.training.state import TrainState, create_train_state
from jaxjac._src.training.step import LazyTrainStep, TrainStepFn, make_train_step

SUMMARY_FILE = "summary.json"


class TrainResult(NamedTuple):
  """What :func:`train` returns: the final state and a JSON-able summary."""

  state: TrainState
  summary: dict[str, Any]


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C during :func:`train`; ``str()`` says where the run stands and how to resume."""

  def __init__(self, workdir: str, step: int, checkpoint_step: int | None):
    self.workdir, self.step, self.checkpoint_step = workdir, step, checkpoint_step
    saved = (
      f"the last checkpoint in {workdir} is at step {checkpoint_step}"
      if checkpoint_step is not None
      else f"no checkpoint in {workdir} yet"
    )
    super().__init__(
      f"training interrupted at step {step}; {saved}. To continue, run the same command "
      f"with --resume (python -m jaxjac.train --config ... --workdir {workdir} --resume), "
      "or call train(config, workdir, resume=True)."
    )


# ----------------------------------------------------------------------------- data


def _subset(n: int, size: int, *, name: str, seed: int) -> np.ndarray:
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
    raise ValueError(f"`{name}` must be an int >= 0 (0: all), got {size!r}.")
  if size > n:
    raise ValueError(f"`{name}`={size} exceeds the {n} examples available.")
  order = np.random.default_rng([seed, 0x5EB5E7]).permutation(n)
  return np.sort(order[: size or n])


def split_indices(config: ml_collections.ConfigDict, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
  """The sorted train and test example indices that :func:`train` uses for `config`.

  ``config.data.train_size`` / ``test_size`` (0: all) pick a fixed random subset
  that depends only on ``config.seed``, so evaluation code can select exactly
  the examples a run was trained and tested on. This is the library's one
  subset rule.

  Args:
    config: a training config (see :func:`default_config`).
    dataset: the loaded dataset (``num_train``, ``num_test``), e.g. from
      :func:`jaxjac.data.load_mnist`.

  Returns:
    ``(train_indices, test_indices)``, sorted int arrays.

  Raises:
    ValueError: a size is negative, not an int, or larger than the split.
  """
  seed = config.seed
  tr = _subset(dataset.num_train, config.data.train_size, name="config.data.train_size", seed=seed)
  te = _subset(dataset.num_test, config.data.test_size, name="config.data.test_size", seed=seed)
  return tr, te


class _Data(NamedTuple):
  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  heldout_x: jax.Array
  source: str


def _load_data(config: ml_collections.ConfigDict, dataset: Any) -> _Data:
  if dataset is None:
    from jaxjac import data as data_lib  # noqa: PLC0415

    dataset = data_lib.load_mnist(
      config.data.source, data_dir=config.data.data_dir or None, dataset=config.data.dataset
    )
  tr, te = split_indices(config, dataset)
  test_x, test_y = dataset.test_images[te], dataset.test_labels[te]
  if config.heldout_size > test_x.shape[0]:
    raise ValueError(
      f"`config.heldout_size`={config.heldout_size} exceeds the {test_x.shape[0]} test examples."
    )
  held = np.random.default_rng([config.seed, 0x4E1D]).permutation(test_x.shape[0])
  heldout_x = jnp.asarray(test_x[np.sort(held[: config.heldout_size])])
  source = getattr(dataset, "source", "given")
  return _Data(
    dataset.train_images[tr], dataset.train_labels[tr], test_x, test_y, heldout_x, source
  )


def _host_rows(batch_size: int) -> slice:
  """The rows of every global batch that this process feeds (all of them in one process)."""
  return sharding_lib.host_shard(batch_size) if jax.process_count() > 1 else slice(None)


def _host_batches(
  config: ml_collections.ConfigDict, data: _Data, step: int, spe: int, total: int
) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
  """``(step + 1, this process's share of the batch of step)`` from `step` to `total`."""
  from jaxjac import data as data_lib  # noqa: PLC0415

  host = _host_rows(config.batch_size)
  while step < total:
    epoch, offset = divmod(step, spe)
    for x, y in data_lib.batches(
      data.train_x, data.train_y, config.batch_size, seed=config.seed, epoch=epoch, start=offset
    ):
      step += 1
      yield step, (x[host], y[host])
      if step >= total:
        return


# ----------------------------------------------------------------------------- pieces


def _prepare_workdir(config: ml_collections.ConfigDict, workdir: str, resume: bool) -> bool:
  """Creates `workdir`, checks it against `resume` and writes ``config.json``.

  Returns whether it holds checkpoints.
  """
  os.makedirs(workdir, exist_ok=True)
  mngr = ckpt.open_manager(workdir)
  try:
    steps = mngr.all_steps()
  finally:
    mngr.close()
  if steps and not resume:
    raise ValueError(
      f"`workdir` {workdir} already holds checkpoints (latest step {max(steps)}); pass "
      "`resume=True` (--resume) to continue, or choose an empty workdir."
    )
  if resume:
    ckpt.check_saved_config(workdir, config, has_checkpoints=bool(steps))
  if jax.process_index() == 0:
    ckpt.write_atomic(os.path.join(workdir, ckpt.CONFIG_FILE), ckpt.config_json(config))
  return bool(steps)


def _finished_summary(workdir: str, total: int) -> dict[str, Any] | None:
  """The saved summary of a run that already reached `total` steps, else ``None``."""
  path = os.path.join(workdir, SUMMARY_FILE)
  try:
    with open(path) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(summary, dict) or summary.get("step") != total:
    return None
  records = MetricsWriter(os.path.join(workdir, METRICS_FILE), truncate_after=total)
  try:
    if jax.process_index() == 0 and not any(r["kind"] == "final" for r in read_metrics(workdir)):
      records.write({"kind": "final", **summary})  # killed between summary.json and the record
  finally:
    records.close()
  print(f"jaxjac: the run in {workdir} already finished at step {total}; nothing to do.")
  return summary


def _compile(
  config, state, example, key
) -> tuple[Callable, Callable, TrainState, jax.Array, float]:
  """The AOT-compiled step (data parallel over ``config.num_devices``) and the placement."""
  step_fn: TrainStepFn = make_train_step(config)
  mesh = sharding_lib.mesh_for_config(config.num_devices, batch_size=config.batch_size)
  place = lambda batch: batch
  if jax.process_count() > 1 and mesh is None:
    raise ValueError("`config.num_devices` must be 0 (all devices) in a multi-process run, got 1.")
  if mesh is not None:
    sharding_lib.host_batch_size(config.batch_size, mesh)
    if isinstance(step_fn, LazyTrainStep):
      shard = lambda fn: sharding_lib.shard_train_step(fn, mesh)
      step_fn = LazyTrainStep(shard(step_fn.on), shard(step_fn.off), step_fn.every)
    else:
      step_fn = sharding_lib.shard_train_step(step_fn, mesh)
    state, key = sharding_lib.replicate((state, key), mesh)
    place = lambda batch: sharding_lib.shard_batch(batch, mesh)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, place(example), key).compile()
  return compiled, place, state, key, time.perf_counter() - t0


class _Evaluator:
  """Held-out ``||J||_F`` and test accuracy on a local copy of the parameters."""

  def __init__(self, config: ml_collections.ConfigDict, data: _Data):
    self.config, self.data = config, data

  @staticmethod
  def _params(state: TrainState) -> dict[str, Any]:
    local = lambda a: a.addressable_data(0) if not a.is_fully_addressable else a
    return {"params": jax.tree.map(local, state.params)}

  def heldout(self, state: TrainState) -> float:
    return metrics_lib.jacobian_frobenius_norm(
      state.apply_fn, self._params(state), self.data.heldout_x
    )

  def test_accuracy(self, state: TrainState) -> float:
    return metrics_lib.accuracy(
      state.apply_fn,
      self._params(state),
      self.data.test_x,
      self.data.test_y,
      batch_size=self.config.eval_batch_size,
    )


def _resume_state(workdir: str, state: TrainState) -> tuple[TrainState, dict | None]:
  found = ckpt.restore_latest(workdir, state, move_damaged=jax.process_index() == 0)
  if found is None:
    return state, None
  state, meta, step = found
  if meta is None:
    import warnings  # noqa: PLC0415

    warnings.warn(
      f"the checkpoint at step {step} in {workdir} predates checksums and saved metrics "
      "state; the epoch record of the resumed epoch counts only the steps after it.",
      stacklevel=3,
    )
  return state, meta


def _write_summary(workdir: str, writer: MetricsWriter, summary: dict[str, Any]) -> None:
  if jax.process_index() == 0:
    text = json.dumps(metrics_lib.to_jsonable(summary), indent=1)
    ckpt.write_atomic(os.path.join(workdir, SUMMARY_FILE), text)
  writer.write({"kind": "final", **summary})


class _Run:
  """One training run's moving parts: the compiled step, the logger, evaluation, saves."""

  def __init__(self, config, workdir, data: _Data, writer: MetricsWriter, *, start, **sizes):
    self.config, self.workdir, self.data, self.writer = config, workdir, data, writer
    self.spe, self.total = sizes["steps_per_epoch"], sizes["total"]
    self.start = self.step = start
    self.saved_step = start if start > 0 else None
    self.mngr = ckpt.open_manager(workdir, keep=config.keep_checkpoints)
    self.evaluator = _Evaluator(config, data)

  def compile(self, state: TrainState, key: jax.Array) -> TrainState:
    b = self.config.batch_size
    rows = _host_rows(b)
    example = (self.data.train_x[:b][rows], self.data.train_y[:b][rows])
    self.compiled, self.place, state, self.key, self.compile_s = _compile(
      self.config, state, example, key
    )
    return state

  def begin(self, meta: dict | None, *, resumed: bool) -> None:
    from tqdm.auto import tqdm  # noqa: PLC0415

    config = self.config
    self.bar = tqdm(
      total=self.total, initial=self.start, disable=not config.progress_bar, unit="step"
    )
    show = lambda m: self.bar.set_postfix(
      loss=f"{m['loss']:.4f}", acc=f"{m.get('accuracy', 0):.3f}"
    )
    self.log = MetricsLogger(
      self.writer, batch_size=config.batch_size, steps_per_epoch=self.spe, on_record=show
    )
    if meta is not None:
      self.log.load_state_dict(meta["logger"])
    self.writer.write(
      {
        "kind": "start",
        "step": self.start,
        "total_steps": self.total,
        "steps_per_epoch": self.spe,
        "compile_s": self.compile_s,
        "resumed": resumed,
        **self._data_fields(),
      }
    )

  def _data_fields(self) -> dict[str, Any]:
    return {
      "num_train": int(self.data.train_x.shape[0]),
      "num_test": int(self.data.test_x.shape[0]),
      "data_source": self.data.source,
    }

  def _save(self, state: TrainState) -> None:
    ckpt.save_checkpoint(self.mngr, state, {"logger": self.log.state_dict()})
    self.saved_step = self.step

  def steps(self, state: TrainState, on_step: Callable[[int], None] | None) -> TrainState:
    """Trains from ``start`` to ``total``: logs, evaluates and checkpoints on schedule."""
    config, log, spe = self.config, self.log, self.spe
    for step, batch in _host_batches(config, self.data, self.start, spe, self.total):
      state, step_metrics = self.compiled(state, self.place(batch), self.key)
      self.step = step
      log.add(step, step_metrics)
      self.bar.update(1)
      end_epoch = step % spe == 0
      if step % config.log_every == 0 or end_epoch or step == self.total:
        log.flush(step)
      if (config.heldout_every and step % config.heldout_every == 0) or end_epoch:
        log.flush(step)
        log.heldout(step, self.evaluator.heldout(state))
      if end_epoch:
        log.epoch(step, self.evaluator.test_accuracy(state))
      if step % config.checkpoint_every == 0:
        log.flush(step)
        self._save(state)
        log.restart_timer()
      if on_step is not None:
        on_step(step)
    log.flush(self.step)
    self.bar.close()
    if self.saved_step != self.step:
      self._save(state)
    return state

  def finish(self, state: TrainState) -> dict[str, Any]:
    """The summary (written to ``summary.json`` and the ``final`` record)."""
    log, step = self.log, self.step
    if log.heldout_fro is None or step % self.spe != 0:
      log.heldout_fro = self.evaluator.heldout(state)
      log.test_accuracy = self.evaluator.test_accuracy(state)
    summary = {
      "step": step,
      "total_steps": self.total,
      "epochs": step / self.spe,
      "test_accuracy": log.test_accuracy,
      "heldout_jacobian_fro": log.heldout_fro,
      "train": log.last_train,
      "compile_s": self.compile_s,
      "examples_per_sec": log.examples_per_sec(),
      **self._data_fields(),
    }
    _write_summary(self.workdir, self.writer, summary)
    return summary


# ----------------------------------------------------------------------------- train


def train(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  resume: bool = False,
  dataset: Any = None,
  on_step: Callable[[int], None] | None = None,
) -> TrainResult:
  """Trains the model of `config`, evaluating it as it goes; writes `workdir`.

  ``workdir`` receives ``config.json``, ``metrics.jsonl`` (records
  ``"start"``, ``"train"`` every ``log_every`` steps, ``"heldout"`` with the
  mean exact ``||J||_F`` on held-out test examples, ``"epoch"`` with the
  epoch's means and the test accuracy, ``"final"``; see
  :mod:`jaxjac._src.training.metrics_log`), ``summary.json`` and checksummed
  orbax checkpoints in ``checkpoints/`` (every ``checkpoint_every`` steps and
  at the end). Every step's metrics are checked: a NaN or inf stops the run
  with a ``FloatingPointError`` naming the metric and the step.

  Args:
    config: see :func:`default_config`.
    workdir: output directory; it must not hold checkpoints unless `resume`.
    resume: continue from the newest intact checkpoint in `workdir` (if any;
      damaged newer ones are reported, moved to ``checkpoints_damaged/`` and
      skipped), with the data order, keys and metrics records as if never
      interrupted; prints the step it continues from. A finished run is
      recognised: its saved summary is returned without training. The config
      must equal the saved ``config.json``.
    dataset: a :class:`jaxjac.data.Dataset` to use instead of loading
      ``config.data``'s source (``train_size``/``test_size`` still apply).
    on_step: called with the step number after every step (for progress
      hooks and tests).

  Returns:
    A :class:`TrainResult` ``(state, summary)``.

  Raises:
    ValueError: an invalid config, checkpoints in `workdir` without `resume`,
      a resumed config that differs from the saved one, or a damaged or
      missing ``config.json`` beside checkpoints.
    CheckpointError: checkpoints exist but none is intact.
    FloatingPointError: a non-finite metric.
    TrainingInterrupted: Ctrl-C (a ``KeyboardInterrupt`` whose message holds
      the step reached, the last checkpoint and the command to resume).
  """
  from jaxjac import data as data_lib  # noqa: PLC0415

  validate_config(config)
  has_checkpoints = _prepare_workdir(config, workdir, resume)
  data = _load_data(config, dataset)
  spe = data_lib.steps_per_epoch(int(data.train_x.shape[0]), config.batch_size)
  total = config.num_steps or config.num_epochs * spe
  root = jax.random.key(config.seed)
  init_key, train_key = jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)
  state = create_train_state(
    config, key=init_key, steps_per_epoch=spe, input_shape=(1, *data.train_x.shape[1:])
  )
  meta = None
  if resume and has_checkpoints:
    state, meta = _resume_state(workdir, state)
  start = int(state.step)
  if start > total:
    raise ValueError(f"the checkpoint is at step {start}, past the run's {total} steps.")
  if start == total and (summary := _finished_summary(workdir, total)) is not None:
    return TrainResult(state, summary)
  if resume and has_checkpoints:
    print(f"jaxjac: resuming {workdir} from step {start} of {total}.", flush=True)
  writer = MetricsWriter(
    os.path.join(workdir, METRICS_FILE), truncate_after=start if resume else None
  )
  run = _Run(config, workdir, data, writer, start=start, steps_per_epoch=spe, total=total)
  try:
    state = run.compile(state, train_key)
    run.begin(meta, resumed=bool(resume and has_checkpoints))
    state = run.steps(state, on_step)
    return TrainResult(state, run.finish(state))
  except KeyboardInterrupt:
    raise TrainingInterrupted(workdir, run.step, run.saved_step) from None
  finally:
    writer.close()
    run.mngr.close()
