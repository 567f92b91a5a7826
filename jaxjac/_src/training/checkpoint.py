"""Checkpoint and config I/O of a training workdir, checked by content.

A checkpoint at step ``s`` is an orbax directory ``checkpoints/s/`` holding
the :class:`TrainState` (``state/``) and a small JSON item (``meta/``): the
metrics logger's running values (so a resumed run writes the same records as
an uninterrupted one) and a SHA-256 checksum over the state's leaves (path,
dtype, shape and bytes) and those values. Orbax writes both atomically (a
temporary directory renamed on success). A checkpoint that fails to restore
(missing or truncated files) or whose restored content does not match its
checksum (flipped bytes) is reported by step and skipped:
:func:`restore_latest` falls back to the newest intact one, and the training
loop moves the damaged ones aside to ``checkpoints_damaged/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxjac._src.training.state import TrainState

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"
CONFIG_FILE = "config.json"


class CheckpointError(RuntimeError):
  """No checkpoint of a workdir could be restored and verified."""


def checkpoint_dir(workdir: str) -> str:
  """``workdir/checkpoints`` as an absolute path (orbax requires one)."""
  return os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))


def open_manager(workdir: str, *, keep: int = 1_000_000):
  """An orbax ``CheckpointManager`` of ``workdir/checkpoints``, synchronous saves."""
  import orbax.checkpoint as ocp  # noqa: PLC0415 (slow import)

  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep, create=True, enable_async_checkpointing=False
  )
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def host_array(leaf: Any) -> np.ndarray:
  """This process's full copy of a (possibly multi-host, replicated) array."""
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    leaf = leaf.addressable_data(0)
  return np.asarray(leaf)


def checksum(state: Any, meta: dict[str, Any]) -> str:
  """SHA-256 over every leaf's path, dtype, shape and bytes, then the JSON of `meta`."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    a = np.ascontiguousarray(host_array(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
    h.update(a.tobytes())
  h.update(json.dumps(meta, sort_keys=True).encode())
  return h.hexdigest()


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
  """Holds Ctrl-C back until the block ends, then raises it: a save is never cut in half.

  Orbax commits a checkpoint in background threads; a ``KeyboardInterrupt`` in the middle
  leaves them writing while the interpreter shuts down. Only the main thread can hold
  signals; elsewhere the block runs as is.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  caught: list[int] = []
  previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
  if caught:
    raise KeyboardInterrupt


def save_checkpoint(mngr, state: TrainState, meta: dict[str, Any]) -> None:
  """Saves `state` and `meta` (JSON-able) at ``state.step``, with their checksum.

  The save is whole or absent: Ctrl-C during it takes effect once it is committed.
  """
  import orbax.checkpoint as ocp  # noqa: PLC0415

  meta = {"meta": meta, "sha256": checksum(state, meta)}
  args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
  with _sigint_deferred():
    mngr.save(int(host_array(state.step)), args=args, force=True)
    mngr.wait_until_finished()


def _restore_step(mngr, step: int, template: TrainState) -> tuple[TrainState, dict | None]:
  """The verified state and meta of `step`; raises on any failure."""
  import orbax.checkpoint as ocp  # noqa: PLC0415

  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
  step_dir = os.path.join(str(mngr.directory), str(step))
  if not os.path.isdir(step_dir) or not os.listdir(step_dir):
    raise ValueError("the step directory is empty")
  if os.path.isdir(os.path.join(step_dir, "default")):  # written before checksums existed
    state = mngr.restore(step, args=ocp.args.Composite(default=ocp.args.StandardRestore(abstract)))
    return state["default"], None
  out = mngr.restore(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
  )
  saved = out["meta"]
  if not isinstance(saved, dict) or "sha256" not in saved:
    raise ValueError("the checkpoint's meta item has no checksum")
  if checksum(out["state"], saved["meta"]) != saved["sha256"]:
    raise ValueError("the restored content does not match its SHA-256 checksum")
  if int(host_array(out["state"].step)) != step:
    raise ValueError(f"the restored state is at step {int(out['state'].step)}")
  return out["state"], saved["meta"]


def _reason(err: BaseException) -> str:
  text = " ".join(str(err).split())
  return f"{type(err).__name__}: {text[:200]}"


def restore_latest(
  workdir: str, template: TrainState, *, move_damaged: bool = False
) -> tuple[TrainState, dict | None, int] | None:
  """The newest checkpoint of `workdir` that restores and verifies.

  Each newer checkpoint that fails is reported with a ``UserWarning`` naming
  its step and why; with `move_damaged` it is moved to
  ``workdir/checkpoints_damaged/`` so that the run can save that step again.

  Returns:
    ``(state, meta, step)`` (``meta`` ``None`` for a checkpoint written
    without one), or ``None`` when `workdir` has no checkpoint.

  Raises:
    CheckpointError: checkpoints exist but none is intact.
  """
  mngr = open_manager(workdir)
  found: tuple[TrainState, dict | None, int] | None = None
  failures: list[tuple[int, str]] = []
  try:
    for step in sorted(mngr.all_steps(), reverse=True):
      try:
        state, meta = _restore_step(mngr, step, template)
      except Exception as err:  # noqa: BLE001 (orbax/TensorStore raise many types)
        failures.append((step, _reason(err)))
        continue
      found = (state, meta, step)
      break
  finally:
    mngr.close()
  if found is None:
    if not failures:
      return None
    reasons = "; ".join(f"step {s}: {why}" for s, why in failures)
    raise CheckpointError(
      f"no intact checkpoint in {checkpoint_dir(workdir)}: steps "
      f"{[s for s, _ in failures]} all fail to restore or verify ({reasons}). Restart the run "
      f"in a new workdir, or delete {checkpoint_dir(workdir)} to train this one again from "
      "step 0."
    )
  for bad, why in failures:
    msg = f"checkpoint at step {bad} in {checkpoint_dir(workdir)} is damaged ({why})"
    if move_damaged:
      dest = os.path.join(workdir, DAMAGED_DIR, str(bad))
      while os.path.exists(dest):
        dest += "_"
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      shutil.move(os.path.join(checkpoint_dir(workdir), str(bad)), dest)
      msg += f"; moved to {dest}"
    warnings.warn(f"{msg}; falling back to the checkpoint at step {found[2]}.", stacklevel=2)
  return found


def restore_checkpoint(workdir: str, state: TrainState, *, step: int | None = None) -> TrainState:
  """The state saved in ``workdir`` at `step` (default: the newest intact one).

  ``state`` gives the structure (a fresh :func:`create_train_state`). The
  restored content is verified against the checkpoint's SHA-256 checksum.

  Raises:
    FileNotFoundError: no checkpoint in ``workdir``.
    CheckpointError: the checkpoint at `step` (or every one) is damaged.
  """
  if step is None:
    found = restore_latest(workdir, state)
    if found is None:
      raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(workdir)}.")
    return found[0]
  mngr = open_manager(workdir)
  try:
    if step not in mngr.all_steps():
      raise FileNotFoundError(f"no checkpoint at step {step} in {checkpoint_dir(workdir)}.")
    try:
      return _restore_step(mngr, step, state)[0]
    except Exception as err:  # noqa: BLE001
      raise CheckpointError(
        f"checkpoint at step {step} in {checkpoint_dir(workdir)} is damaged ({_reason(err)})."
      ) from err
  finally:
    mngr.close()


# ----------------------------------------------------------------------------- config.json


def config_json(config: ml_collections.ConfigDict) -> str:
  """The canonical JSON text of `config` (sorted keys) saved as ``config.json``."""
  return json.dumps(json.loads(config.to_json_best_effort()), sort_keys=True, indent=1)


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file, ``fsync`` and ``os.replace``."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _with_defaults(saved: Any, default: Any) -> Any:
  """`saved` with the fields it lacks taken from `default` (fields added since it was saved)."""
  if not (isinstance(saved, dict) and isinstance(default, dict)):
    return saved
  out = {k: _with_defaults(v, default.get(k)) for k, v in saved.items()}
  return {**{k: v for k, v in default.items() if k not in out}, **out}


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
    return out
  return [] if a == b else [prefix[:-1]]


def check_saved_config(
  workdir: str, config: ml_collections.ConfigDict, *, has_checkpoints: bool
) -> None:
  """Checks that a resumed `config` equals the run's saved ``config.json``.

  Fields added to :func:`default_config` since the file was written count as
  their defaults.

  Raises:
    ValueError: the file is unreadable or not a JSON object (naming it), it
      is missing while checkpoints exist, or the configs differ (naming the
      fields).
  """
  from jaxjac._src.training.config import default_config  # noqa: PLC0415

  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    if has_checkpoints:
      raise ValueError(
        f"cannot resume in {workdir}: it holds checkpoints but {path} is missing, so the "
        f"config cannot be checked against the run's. Restore {CONFIG_FILE} (the run's "
        "config as JSON), or start a new workdir."
      )
    return
  try:
    with open(path) as f:
      saved = json.load(f)
    if not isinstance(saved, dict):
      raise ValueError(f"expected a JSON object, got {type(saved).__name__}")
  except (ValueError, UnicodeDecodeError) as err:
    raise ValueError(
      f"cannot resume in {workdir}: {path} is damaged ({err}). Restore it (the run's config "
      "as JSON), or start a new workdir."
    ) from None
  defaults = json.loads(config_json(default_config()))
  current = _with_defaults(json.loads(config_json(config)), defaults)
  diff = _diff_keys(_with_defaults(saved, defaults), current)
  if diff:
    raise ValueError(
      f"cannot resume in {workdir}: the config differs from the saved {CONFIG_FILE} "
      f"in {diff}; use the saved config or a new workdir."
    )
