"""The command line of ``python -m jaxjac.train``: flags, config files, overrides, errors.

A thin layer over :func:`jaxjac.training.train`. It parses the flags itself
(rather than with ``absl.flags``) so that every mistake a user can make on
the command line or in a config file is reported as one line on stderr with
exit code 2, naming the flag and what was expected, e.g.::

  jaxjac.train: error: --config.learning_rate: no such config field; did you mean
  --config.optimizer.learning_rate?

``--traceback`` (or ``JAXJAC_TRACEBACK=1``) shows the full traceback instead.
Exit codes: 0 done, 1 a failure during training (a non-finite metric) or a
bug (with its traceback), 2 a user error, 130 interrupted (Ctrl-C), with the
command that continues the run.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

PROG = "jaxjac.train"
ENV_TRACEBACK = "JAXJAC_TRACEBACK"
EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

USAGE = f"""\
usage: python -m jaxjac.train --config FILE[:ARG] --workdir DIR [--resume]
                              [--config.FIELD=VALUE ...] [--traceback]

Trains a model from a Python config file and writes metrics and checkpoints to DIR.

  --config FILE[:ARG]   a Python file defining get_config(arg=None) that returns an
                        ml_collections.ConfigDict (or a dict), e.g.
                        experiments/configs/jr.py; ':ARG' passes ARG (e.g. ':tiny').
  --config.FIELD=VALUE  overrides one field, nested fields with dots:
                        --config.num_steps=100 --config.optimizer.learning_rate=0.1
                        --config.optimizer.quench_epochs='(10, 20)'
  --workdir DIR         directory for config.json, metrics.jsonl, summary.json and
                        checkpoints/ (created if missing).
  --resume              continue from the latest checkpoint in DIR.
  --traceback           on an error, print the full traceback (also {ENV_TRACEBACK}=1).
  -h, --help            print this help.

Multi-host runs: start the same command on every host with JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID set (or under SLURM srun / Open MPI mpirun);
process 0 writes the metrics and the summary.
"""


class UsageError(Exception):
  """A user error: reported as one line with exit code 2."""


class Args:
  """The parsed command line."""

  def __init__(self) -> None:
    self.config = ""
    self.workdir = ""
    self.resume = False
    self.traceback = False
    self.overrides: list[tuple[str, str]] = []  # (dotted field, raw value), in order.


_FLAGS = ("config", "workdir", "resume", "traceback", "help")


def parse_args(argv: Sequence[str]) -> Args:
  """Parses the flags (without the program name).

  Raises:
    UsageError: an unknown flag (with the closest known one), a missing
      value, a positional argument, or a missing ``--config``/``--workdir``.
  """
  args = Args()
  argv = list(argv)
  i = 0
  while i < len(argv):
    token = argv[i]
    i += 1
    if token in ("-h", "--help", "-help", "--helpfull"):
      print(USAGE, end="")
      raise SystemExit(0)
    if not token.startswith("-"):
      raise UsageError(f"unexpected argument {token!r}; every option is a --flag (see --help).")
    name, has_value, value = token.lstrip("-").partition("=")
    if name in ("resume", "traceback", "noresume", "notraceback"):
      if has_value:
        raise UsageError(f"--{name} takes no value, got {token!r}.")
      setattr(args, name.removeprefix("no"), not name.startswith("no"))
      continue
    if name in ("config", "workdir") or name.startswith("config."):
      if not has_value:
        if i == len(argv) or argv[i].startswith("--"):
          raise UsageError(f"--{name} needs a value, e.g. {_example(name)}.")
        value = argv[i]
        i += 1
      if name.startswith("config."):
        args.overrides.append((name[len("config.") :], value))
      else:
        setattr(args, name, value)
      continue
    close = difflib.get_close_matches(name, _FLAGS, n=1)
    hint = f"; did you mean --{close[0]}?" if close else " (see --help)."
    raise UsageError(f"unknown flag --{name}{hint}")
  if not args.config:
    raise UsageError(
      "--config is required: a Python file with get_config(), e.g. "
      "--config experiments/configs/jr.py:tiny."
    )
  if not args.workdir:
    raise UsageError("--workdir is required: the directory for metrics and checkpoints.")
  return args


def _example(name: str) -> str:
  if name == "config":
    return "--config experiments/configs/jr.py"
  if name == "workdir":
    return "--workdir runs/jr"
  return f"--{name}=VALUE"


# ----------------------------------------------------------------------------- config files


def load_config(spec: str) -> Any:
  """``get_config(arg)`` of the file in ``FILE[:ARG]``, as an ``ml_collections.ConfigDict``.

  A ``dict`` returned by ``get_config`` is accepted and converted (nested
  dicts become nested ``ConfigDict`` s).

  Raises:
    UsageError: a missing or unreadable file, a file that does not run or
      defines no ``get_config``, an error raised by ``get_config``, or a
      result that is neither a ``ConfigDict`` nor a dict.
  """
  import ml_collections  # noqa: PLC0415

  path, arg = spec, ""
  if not os.path.exists(spec) and ":" in spec:  # FILE:ARG
    path, _, arg = spec.partition(":")
  where = f"--config {path}"
  if not os.path.exists(path):
    raise UsageError(f"{where}: no such file.")
  if os.path.isdir(path):
    raise UsageError(f"{where}: is a directory; expected a Python file with get_config().")
  try:
    with open(path, "rb") as f:
      source = f.read()
  except OSError as e:
    raise UsageError(f"{where}: cannot read the file: {e.strerror or e}.") from e
  module_name = "_jaxjac_config_" + os.path.splitext(os.path.basename(path))[0]
  spec_obj = importlib.util.spec_from_file_location(module_name, path)
  if spec_obj is None or spec_obj.loader is None:
    raise UsageError(f"{where}: not a Python file (expected a .py file with get_config()).")
  module = importlib.util.module_from_spec(spec_obj)
  try:
    code = compile(source, path, "exec")
  except (SyntaxError, ValueError) as e:
    lineno = getattr(e, "lineno", None)
    line = f" at line {lineno}" if lineno else ""
    raise UsageError(f"{where}: not valid Python{line}: {getattr(e, 'msg', e)}.") from e
  try:
    exec(code, module.__dict__)  # noqa: S102 (running the user's config file is the point)
  except Exception as e:
    raise UsageError(f"{where}: running the file raised {_describe(e)}") from e
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise UsageError(f"{where}: defines no get_config() function.")
  try:
    config = get_config(arg) if arg else _call_without_arg(get_config)
  except UsageError:
    raise
  except Exception as e:
    call = f"get_config({arg!r})" if arg else "get_config()"
    raise UsageError(f"{where}: {call} raised {_describe(e)}") from e
  if isinstance(config, dict):
    config = ml_collections.ConfigDict(config)
  if not isinstance(config, ml_collections.ConfigDict):
    raise UsageError(
      f"{where}: get_config() must return an ml_collections.ConfigDict or a dict, got "
      f"{type(config).__name__}."
    )
  _check_complete(config, where)
  return config


def _call_without_arg(get_config: Callable[..., Any]) -> Any:
  try:
    return get_config()
  except TypeError as e:
    if "argument" in str(e):  # get_config(arg) with a required argument.
      raise UsageError(
        f"--config: get_config needs an argument ({e}); pass it as FILE:ARG, e.g. FILE:tiny."
      ) from e
    raise


def _describe(e: BaseException) -> str:
  message = str(e).strip().splitlines()[0] if str(e).strip() else ""
  return f"{type(e).__name__}: {message}" if message else type(e).__name__


def _check_complete(config: Any, where: str) -> None:
  """Every field of ``jaxjac.training.default_config()`` must be present (``model``: its name)."""
  from jaxjac import training  # noqa: PLC0415

  have = set(flatten(config))
  need = [f for f in flatten(training.default_config()) if not f.startswith("model.")]
  need.append("model.name")
  missing = [f for f in need if f not in have]
  if missing:
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    raise UsageError(
      f"{where}: the config lacks {shown}; build it from jaxjac.training.default_config()."
    )


# ----------------------------------------------------------------------------- overrides


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
  """``{"optimizer.learning_rate": 0.01, ...}``: the leaf fields of a nested config."""
  import ml_collections  # noqa: PLC0415

  out: dict[str, Any] = {}
  for key in config.keys():
    value = config[key]
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _suggest(field: str, fields: Sequence[str]) -> str:
  """``"; did you mean --config.X?"`` for the closest field name, or ``""``."""
  leaf = field.rsplit(".", 1)[-1]
  by_leaf = [f for f in fields if f.rsplit(".", 1)[-1] == leaf]
  if len(by_leaf) == 1:
    return f"; did you mean --config.{by_leaf[0]}?"
  close = difflib.get_close_matches(field, fields, n=1, cutoff=0.6)
  if not close:  # Compare the leaf names: a typo in a nested field's last part.
    leaves = {f.rsplit(".", 1)[-1]: f for f in fields}
    near = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.75)
    close = [leaves[near[0]]] if near else []
  return f"; did you mean --config.{close[0]}?" if close else ""


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _parse_value(field: str, raw: str, current: Any, kind: type | None) -> Any:
  """Converts ``raw`` to the type of the field's current value."""
  flag = f"--config.{field}"
  kind = type(current) if current is not None else kind
  if kind is bool:
    if raw.lower() in _TRUE:
      return True
    if raw.lower() in _FALSE:
      return False
    raise UsageError(f"{flag}: expected true or false, got {raw!r}.")
  if kind is int:
    try:
      return int(raw)
    except ValueError:
      raise UsageError(f"{flag}: expected an integer, got {raw!r}.") from None
  if kind is float:
    try:
      return float(raw)
    except ValueError:
      raise UsageError(f"{flag}: expected a number, got {raw!r}.") from None
  if kind is str:
    return raw
  if kind in (tuple, list):
    try:
      value = ast.literal_eval(raw) if raw.strip() else ()
    except (ValueError, SyntaxError):
      raise UsageError(
        f"{flag}: expected a tuple such as '(10, 20)' or '10,20', got {raw!r}."
      ) from None
    value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    return value if kind is tuple else list(value)
  try:  # A field whose value is None and has no declared type: a Python literal or a string.
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    return raw


def apply_overrides(config: Any, overrides: Sequence[tuple[str, str]]) -> Any:
  """Sets each ``--config.FIELD=VALUE`` on ``config`` (in place), typed like the field.

  Raises:
    UsageError: an unknown field (with "did you mean" the closest one), a
      group of fields given a value, or a value of the wrong type.
  """
  import ml_collections  # noqa: PLC0415

  for field, raw in overrides:
    parts = field.split(".")
    node = config
    for depth, part in enumerate(parts):
      leaf = depth == len(parts) - 1
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        known = sorted(flatten(config))
        raise UsageError(f"--config.{field}: no such config field{_suggest(field, known)}")
      if leaf:
        current = node[part]
        if isinstance(current, ml_collections.ConfigDict):
          sub = ", ".join(f"{field}.{k}" for k in list(current.keys())[:4])
          raise UsageError(f"--config.{field} is a group of fields; set one of them: {sub}.")
        value = _parse_value(field, raw, current, node.get_type(part))
        try:
          node[part] = value
        except (TypeError, ValueError) as e:
          raise UsageError(f"--config.{field}: {e}") from None
      else:
        node = node[part]
  return config


# ----------------------------------------------------------------------------- running


def _check_workdir(workdir: str) -> None:
  flag = f"--workdir {workdir}"
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UsageError(f"{flag}: is a file, not a directory.")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UsageError(f"{flag}: cannot create the directory: {e.strerror or e}.") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise UsageError(f"{flag}: the directory is not writable.")


def _program(argv0: str | None) -> str:
  if argv0 and os.path.basename(argv0) == "jaxjac-train":
    return "jaxjac-train"
  return "python -m jaxjac.train"


def _resume_command(program: str, argv: Sequence[str]) -> str:
  words = [w for w in argv if w not in ("--resume", "--noresume")]
  return f"{program} {shlex.join([*words, '--resume'])}"


def _latest_checkpoint(workdir: str) -> int | None:
  from jaxjac import training  # noqa: PLC0415

  path = os.path.join(workdir, getattr(training, "CHECKPOINT_DIR", "checkpoints"))
  try:
    steps = [int(n) for n in os.listdir(path) if n.isdigit()]
  except OSError:
    return None
  return max(steps) if steps else None


def _error(message: str, code: int) -> int:
  print(f"{PROG}: error: {message}", file=sys.stderr)
  return code


def _one_line(e: BaseException) -> str:
  return " ".join(str(e).split()) or type(e).__name__


def run(argv: Sequence[str], *, program: str = "python -m jaxjac.train") -> int:
  """Runs the command line ``argv`` (without the program name); returns the exit code."""
  show_traceback = os.environ.get(ENV_TRACEBACK, "") not in ("", "0")
  try:
    args = parse_args(argv)
  except UsageError as e:
    return _error(str(e), EXIT_USAGE)
  show_traceback = show_traceback or args.traceback
  step: list[int | None] = [None]
  try:
    # Before anything touches a device: join the other processes of a multi-host run.
    from jaxjac import sharding  # noqa: PLC0415

    try:
      sharding.initialize_distributed()
    except ValueError as e:
      raise UsageError(f"multi-host environment: {_one_line(e)}") from e
    import jax  # noqa: PLC0415

    lead = jax.process_index() == 0
    config = apply_overrides(load_config(args.config), args.overrides)
    _check_workdir(args.workdir)
    from absl import logging  # noqa: PLC0415

    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    from jaxjac import training  # noqa: PLC0415

    if lead:
      print(f"{PROG}: {args.config} -> {args.workdir}", flush=True)

    def on_step(s: int) -> None:
      step[0] = s

    result = training.train(config, args.workdir, resume=args.resume, on_step=on_step)
    if lead:
      print(json.dumps(training.to_jsonable(result.summary), indent=1))
    return 0
  except KeyboardInterrupt as e:
    at = getattr(e, "step", None) or step[0]
    where = f" at step {at}" if at is not None else ""
    latest = _latest_checkpoint(args.workdir) if args.workdir else None
    saved = f" (latest checkpoint: step {latest})" if latest is not None else ""
    print(
      f"{PROG}: interrupted{where}{saved}; continue with: {_resume_command(program, argv)}",
      file=sys.stderr,
    )
    return EXIT_INTERRUPTED
  except UsageError as e:
    if show_traceback:
      traceback.print_exc()
    return _error(str(e), EXIT_USAGE)
  except (FloatingPointError, _checkpoint_error()) as e:
    if show_traceback:
      traceback.print_exc()
    return _error(_one_line(e), EXIT_FAILED)
  except (ValueError, TypeError, OSError) as e:
    # The library's checks of the config, the data and the workdir name the field or the
    # file; a bug shows its traceback with --traceback.
    if show_traceback:
      traceback.print_exc()
    return _error(f"{_one_line(e)} (--traceback for details)", EXIT_USAGE)


def _checkpoint_error() -> type[Exception]:
  """The training loop's error for a workdir with no intact checkpoint (imported late)."""
  from jaxjac._src.training.checkpoint import CheckpointError  # noqa: PLC0415

  return CheckpointError


def main(argv: Sequence[str] | None = None) -> NoReturn:
  """``python -m jaxjac.train`` and ``jaxjac-train``: runs and exits with the code."""
  program = _program(sys.argv[0] if sys.argv else None)
  raise SystemExit(run(sys.argv[1:] if argv is None else argv, program=program))
