"""Damaged checkpoints (fault injection: truncate, delete, empty, flip a byte) are
reported by step and skipped: the run falls back to the newest intact checkpoint and
ends equal to an uninterrupted run; with none intact, a clear error names the workdir."""

import os
import shutil
import warnings

import jax
import numpy as np
import pytest
from conftest import TIMING

from jaxjac import training


def _config():
  """24 steps, 16 per epoch, checkpoints at 8 (mid-epoch), 16 and 24."""
  config = training.tiny(training.default_config())
  config.reg.jr_lambda = 0.05
  config.keep_checkpoints = 5
  return config


@pytest.fixture(scope="module")
def full(mnist5k, tmp_path_factory):
  work = str(tmp_path_factory.mktemp("full") / "run")
  return work, training.train(_config(), work, dataset=mnist5k)


def _interrupted(full, dest):
  """A run killed between steps 16 and 24: checkpoints 8 and 16."""
  shutil.copytree(full[0], dest)
  shutil.rmtree(os.path.join(dest, "checkpoints", "24"))
  os.remove(os.path.join(dest, "summary.json"))
  return dest


def _files(step_dir, predicate):
  out = []
  for root, _, names in os.walk(step_dir):
    out += [os.path.join(root, n) for n in names if predicate(os.path.join(root, n))]
  assert out, f"no file to damage in {step_dir}"
  return out


def _data_file(step_dir):
  """The largest array data file of the state item."""
  files = _files(os.path.join(step_dir, "state"), lambda p: f"{os.sep}d{os.sep}" in p)
  return max(files, key=os.path.getsize)


def _truncate(step_dir):
  path = _data_file(step_dir)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _delete(step_dir):
  os.remove(_data_file(step_dir))


def _empty_metadata(step_dir):
  open(os.path.join(step_dir, "state", "_METADATA"), "w").close()


def _delete_manifests(step_dir):
  for path in _files(step_dir, lambda p: os.path.basename(p) == "manifest.ocdbt"):
    os.remove(path)


def _empty_dir(step_dir):
  shutil.rmtree(step_dir)
  os.makedirs(step_dir)


def _flip(step_dir, where=0.5):
  path = _data_file(step_dir)
  with open(path, "r+b") as f:
    f.seek(int(os.path.getsize(path) * where))
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))


DAMAGES = {
  "truncate_data": _truncate,
  "delete_data": _delete,
  "empty_metadata": _empty_metadata,
  "delete_manifests": _delete_manifests,
  "empty_step_dir": _empty_dir,
  "flip_byte": _flip,
}


def _records(workdir):
  return [
    {k: v for k, v in r.items() if k not in TIMING}
    for r in training.read_metrics(workdir)
    if r["kind"] != "start"
  ]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_latest_checkpoint_falls_back(damage, full, mnist5k, tmp_path):
  work = _interrupted(full, str(tmp_path / "run"))
  DAMAGES[damage](os.path.join(work, "checkpoints", "16"))
  with pytest.warns(UserWarning, match=r"checkpoint at step 16 .* is damaged .* moved to"):
    result = training.train(_config(), work, dataset=mnist5k, resume=True)
  assert os.path.isdir(os.path.join(work, "checkpoints_damaged", "16"))
  ref_work, ref = full
  for a, b in zip(jax.tree.leaves(ref.state), jax.tree.leaves(result.state), strict=True):
    np.testing.assert_array_equal(a, b)
  assert _records(work) == _records(ref_work)
  starts = [r["step"] for r in training.read_metrics(work) if r["kind"] == "start"]
  assert starts == [0, 8]  # resumed from the intact mid-epoch checkpoint


def test_byte_flips_are_never_restored_silently(full, tmp_path):
  """Single-byte flips across the data file: each restore returns either the intact
  step-16 state (a flip in unused bytes) or, with a warning, the step-8 state; the
  explicit step 16 raises. All five flips are caught (old code restored them silently)."""
  template = full[1].state
  intact = training.restore_checkpoint(full[0], template, step=16)
  older = training.restore_checkpoint(full[0], template, step=8)
  caught = 0
  for i, where in enumerate((0.1, 0.3, 0.5, 0.7, 0.9)):
    work = str(tmp_path / f"flip{i}")
    shutil.copytree(os.path.join(full[0], "checkpoints"), os.path.join(work, "checkpoints"))
    shutil.rmtree(os.path.join(work, "checkpoints", "24"))
    _flip(os.path.join(work, "checkpoints", "16"), where)
    with warnings.catch_warnings(record=True) as w:
      warnings.simplefilter("always")
      state = training.restore_checkpoint(work, template)
    flagged = any("step 16" in str(m.message) for m in w)
    want = older if flagged else intact
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(state), strict=True):
      np.testing.assert_array_equal(a, b)
    if flagged:
      caught += 1
      with pytest.raises(training.CheckpointError, match="step 16 .* is damaged"):
        training.restore_checkpoint(work, template, step=16)
  assert caught == 5  # every flip lands in array bytes or orbax structure: all caught


def test_no_intact_checkpoint_is_a_clear_error(full, mnist5k, tmp_path):
  work = _interrupted(full, str(tmp_path / "run"))
  _truncate(os.path.join(work, "checkpoints", "16"))
  _empty_metadata(os.path.join(work, "checkpoints", "8"))
  ckpts = os.path.abspath(os.path.join(work, "checkpoints"))
  with pytest.raises(
    training.CheckpointError, match=rf"no intact checkpoint in {ckpts}: steps \[16, 8\].*delete"
  ):
    training.train(_config(), work, dataset=mnist5k, resume=True)
  assert sorted(os.listdir(ckpts)) == ["16", "8"]  # left as they were, for inspection
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    training.restore_checkpoint(str(tmp_path / "none"), full[1].state)
