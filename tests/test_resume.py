"""Resumes equal uninterrupted runs, in parameters and in every metrics record, from any
checkpoint (mid-epoch included); finished runs, partial lines, a kill during the metrics
rewrite, Ctrl-C and damaged or missing config.json files are handled with clear words."""

import builtins
import json
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import TIMING

from jaxjac import training


def _config():
  """24 steps, 16 per epoch; checkpoints every 5 steps (mid-epoch ones included)."""
  config = training.tiny(training.default_config())
  config.model.dropout_rate = 0.3
  config.reg.jr_lambda = 0.05
  config.checkpoint_every = 5
  config.keep_checkpoints = 10
  config.log_every = 3
  config.heldout_every = 7
  return config


def _records(workdir):
  """Every record but the start ones, without timing fields."""
  return [
    {k: v for k, v in r.items() if k not in TIMING}
    | ({"train": {k: v for k, v in r["train"].items() if k not in TIMING}} if "train" in r else {})
    for r in training.read_metrics(workdir)
    if r["kind"] != "start"
  ]


@pytest.fixture(scope="module")
def full(mnist5k, tmp_path_factory):
  work = str(tmp_path_factory.mktemp("full") / "run")
  result = training.train(_config(), work, dataset=mnist5k)
  return work, result


def _assert_same_run(work, full):
  ref_work, ref = full
  state = training.restore_checkpoint(work, ref.state)
  for a, b in zip(jax.tree.leaves(ref.state), jax.tree.leaves(state), strict=True):
    np.testing.assert_array_equal(a, b)
  assert _records(work) == _records(ref_work)
  kinds = [r["kind"] for r in _records(work)]
  assert kinds.count("final") == 1 and kinds.count("epoch") == 1


def _interrupted_after(full, checkpoint, dest):
  """The workdir of a run killed after saving `checkpoint` (later records still in the file)."""
  shutil.copytree(full[0], dest)
  ckpts = os.path.join(dest, "checkpoints")
  for name in os.listdir(ckpts):
    if name.isdigit() and int(name) > checkpoint:
      shutil.rmtree(os.path.join(ckpts, name))
  os.remove(os.path.join(dest, "summary.json"))
  return dest


@pytest.mark.parametrize("checkpoint", [5, pytest.param(15, marks=pytest.mark.slow), 20])
def test_resume_from_any_checkpoint_equals_uninterrupted(
  checkpoint, full, mnist5k, tmp_path, capsys
):
  """Steps 5 and 20 are mid-epoch (16 steps per epoch): the epoch record needs the
  checkpointed running sums. Every record equals the uninterrupted run's, timing aside."""
  work = _interrupted_after(full, checkpoint, str(tmp_path / "run"))
  result = training.train(_config(), work, dataset=mnist5k, resume=True)
  assert f"resuming {work} from step {checkpoint} of 24" in capsys.readouterr().out
  _assert_same_run(work, full)
  starts = [r for r in training.read_metrics(work) if r["kind"] == "start"]
  assert [(r["step"], r["resumed"]) for r in starts] == [(0, False), (checkpoint, True)]
  assert {k: v for k, v in result.summary.items() if k not in TIMING} == {
    k: v for k, v in full[1].summary.items() if k not in TIMING
  } | {"train": result.summary["train"]}
  assert result.summary["train"] == full[1].summary["train"]


def test_interrupted_run_resumes_and_refuses_a_changed_config(full, mnist5k, tmp_path):
  work = str(tmp_path / "run")

  def stop(step):
    if step == 12:
      raise KeyboardInterrupt

  with pytest.raises(
    training.TrainingInterrupted, match=r"step 12; the last checkpoint .* step 10"
  ):
    training.train(_config(), work, dataset=mnist5k, on_step=stop)
  try:
    training.train(_config(), work, dataset=mnist5k, on_step=stop, resume=True)
  except KeyboardInterrupt as err:  # a KeyboardInterrupt that says how to continue
    assert "--resume" in str(err) and work in str(err)
  with pytest.raises(ValueError, match="already holds checkpoints"):
    training.train(_config(), work, dataset=mnist5k)
  changed = _config()
  changed.reg.jr_lambda = 0.1
  with pytest.raises(ValueError, match=r"differs .* in \['reg.jr_lambda'\]"):
    training.train(changed, work, dataset=mnist5k, resume=True)
  training.train(_config(), work, dataset=mnist5k, resume=True)
  _assert_same_run(work, full)


def test_resuming_a_finished_run_returns_its_summary(full, mnist5k, tmp_path, capsys):
  work = str(tmp_path / "run")
  shutil.copytree(full[0], work)
  result = training.train(_config(), work, dataset=mnist5k, resume=True)
  assert "already finished at step 24" in capsys.readouterr().out
  assert result.summary["train"] and result.summary == json.loads(
    json.dumps(training.to_jsonable(full[1].summary))
  )
  assert int(result.state.step) == 24
  _assert_same_run(work, full)  # no second final record


def test_partial_last_line_is_dropped_with_a_warning(full, mnist5k, tmp_path):
  work = _interrupted_after(full, 15, str(tmp_path / "run"))
  path = os.path.join(work, "metrics.jsonl")
  with open(path) as f:
    lines = f.readlines()
  kept = [ln for ln in lines if json.loads(ln)["step"] <= 16]
  with open(path, "w") as f:
    f.writelines(kept)
    f.write('{"kind": "train", "step": 1')  # a write cut short by a kill
  with pytest.warns(UserWarning, match="partial last line"):
    training.read_metrics(work)
  with pytest.warns(UserWarning, match="partial last line"):
    training.train(_config(), work, dataset=mnist5k, resume=True)
  _assert_same_run(work, full)


def test_kill_during_the_metrics_rewrite_loses_nothing(full, mnist5k, tmp_path, monkeypatch):
  """A kill (here KeyboardInterrupt) at the first write of the rewritten metrics file
  leaves the original file whole; the next resume completes the same run."""
  work = _interrupted_after(full, 10, str(tmp_path / "run"))
  path = os.path.join(work, "metrics.jsonl")
  with open(path) as f:
    before = f.read()
  real_open = builtins.open

  class Killed:
    def __init__(self, f):
      self._f = f

    def __getattr__(self, name):
      if name in ("write", "writelines"):
        raise KeyboardInterrupt("killed during the metrics rewrite")
      return getattr(self._f, name)

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self._f.close()

  def killing_open(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    name = os.path.basename(str(file))
    return Killed(f) if name.startswith("metrics.jsonl") and "w" in mode else f

  monkeypatch.setattr(builtins, "open", killing_open)
  with pytest.raises(KeyboardInterrupt):
    training.train(_config(), work, dataset=mnist5k, resume=True)
  monkeypatch.setattr(builtins, "open", real_open)
  with real_open(path) as f:
    assert f.read() == before
  training.train(_config(), work, dataset=mnist5k, resume=True)
  _assert_same_run(work, full)


def test_damaged_or_missing_config_json(full, mnist5k, tmp_path):
  work = _interrupted_after(full, 10, str(tmp_path / "run"))
  path = os.path.join(work, "config.json")
  with open(path) as f:
    text = f.read()
  with open(path, "w") as f:
    f.write(text[: len(text) // 2])
  with pytest.raises(ValueError, match=rf"{path} is damaged"):
    training.train(_config(), work, dataset=mnist5k, resume=True)
  os.remove(path)
  changed = _config()
  changed.reg.jr_lambda = 0.1
  with pytest.raises(ValueError, match=rf"holds checkpoints but {path} is missing"):
    training.train(changed, work, dataset=mnist5k, resume=True)


def test_saved_config_without_new_fields_resumes(full, mnist5k, tmp_path):
  """A config.json written before a field existed counts the field at its default."""
  work = _interrupted_after(full, 20, str(tmp_path / "run"))
  path = os.path.join(work, "config.json")
  with open(path) as f:
    saved = json.load(f)
  del saved["loss"], saved["reg"]["jr_every"]
  with open(path, "w") as f:
    json.dump(saved, f)
  training.train(_config(), work, dataset=mnist5k, resume=True)
  _assert_same_run(work, full)
