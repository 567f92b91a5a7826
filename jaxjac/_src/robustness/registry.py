"""How each method of an :class:`AttackSpec` is run: one runner per method.

FAB-T and Square live in their own modules (``jaxjac._src.fab`` and
``jaxjac._src.square``) and are imported only when a suite uses them.
Every runner returns adversarial inputs of ``x``'s shape; the evaluation
checks that they lie in the ball and the box before counting them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from jaxjac._src import attacks as attacks_lib
from jaxjac._src.robustness.specs import AttackSpec


class Runner(NamedTuple):
  """``run(spec, eps, apply_fn, params, x, y, *, key, bounds) -> x_adv``."""

  run: Callable[..., jax.Array]
  gradient_free: bool


def _fgsm(spec: AttackSpec, eps, apply_fn, params, x, y, *, key, bounds):
  del key
  return attacks_lib.fgsm(
    apply_fn, params, x, y, eps=eps, norm=spec.norm, loss=spec.loss, bounds=bounds
  )


def _pgd(spec: AttackSpec, eps, apply_fn, params, x, y, *, key, bounds):
  rel = 2.5 / spec.steps if spec.relative_step is None else spec.relative_step
  return attacks_lib.pgd(
      apply_fn, params, x, y, eps=eps, norm=spec.norm, steps=spec.steps, step_size=rel * eps,
      key=key, restarts=spec.restarts, loss=spec.loss, bounds=bounds,
  )  # fmt: skip


def _apgd(spec: AttackSpec, eps, apply_fn, params, x, y, *, key, bounds):
  return attacks_lib.apgd(
      apply_fn, params, x, y, eps=eps, norm=spec.norm, steps=spec.steps, key=key,
      restarts=spec.restarts, loss=spec.loss, bounds=bounds,
  )  # fmt: skip


def _apgd_t(spec: AttackSpec, eps, apply_fn, params, x, y, *, key, bounds):
  return attacks_lib.apgd_targeted(
      apply_fn, params, x, y, eps=eps, norm=spec.norm, key=key, steps=spec.steps,
      num_targets=spec.num_targets, restarts=spec.restarts, loss=spec.loss, bounds=bounds,
  )  # fmt: skip


def _external(module: str, name: str) -> Callable[..., Any]:
  try:
    return getattr(importlib.import_module(module), name)
  except ImportError as e:
    raise ImportError(
      f"the attack `{name}` needs `{module}`, which cannot be imported ({e}); run a suite "
      "without it, e.g. `suite='fast'` or `attacks=` without that method."
    ) from e


_EXTERNAL = {"fab-t": ("jaxjac._src.fab", "fab"), "square": ("jaxjac._src.square", "square")}


def require(methods: Any) -> None:
  """Imports the modules of the external methods among ``methods`` now, not mid-evaluation."""
  for method in dict.fromkeys(methods):
    if method in _EXTERNAL and RUNNERS[method].run in (_fab_t, _square):
      _external(*_EXTERNAL[method])


def _fab_t(spec: AttackSpec, eps, apply_fn, params, x, y, *, key, bounds):
  fab = _external("jaxjac._src.fab", "fab")
  return fab(
      apply_fn, params, x, y, eps=eps, norm=spec.norm, key=key, steps=spec.steps,
      restarts=spec.restarts, num_targets=spec.num_targets, bounds=bounds,
  )  # fmt: skip


def _square(spec: AttackSpec, eps, apply_fn, params, x, y, *, key, bounds):
  square = _external("jaxjac._src.square", "square")
  return square(
      apply_fn, params, x, y, eps=eps, norm=spec.norm, key=key, queries=spec.queries,
      restarts=spec.restarts, bounds=bounds,
  )  # fmt: skip


RUNNERS = {
  "fgsm": Runner(_fgsm, False),
  "pgd": Runner(_pgd, False),
  "apgd": Runner(_apgd, False),
  "apgd-t": Runner(_apgd_t, False),
  "fab-t": Runner(_fab_t, False),
  "square": Runner(_square, True),
}
