"""How each method of an :class:`AttackSpec` is run: one runner per method.

Every runner returns adversarial inputs of ``x``'s shape; the evaluation
checks that they lie in the ball and the box before counting them. Runners take
specs with every field their method uses set (:func:`~jaxjac.robustness.evaluate`
resolves the defaults with ``check_spec`` first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar

import jax

from jaxjac._src import attacks as attacks_lib
from jaxjac._src.robustness.specs import AttackSpec


class Runner(NamedTuple):
  """``run(spec, eps, apply_fn, params, x, y, *, key, bounds) -> x_adv``."""

  run: Callable[..., jax.Array]
  gradient_free: bool


T = TypeVar("T")


def _set(value: T | None, field: str) -> T:
  """A field of a resolved spec, which is never ``None`` for the methods that use it."""
  assert value is not None, f"AttackSpec.{field} is unresolved; pass the spec through check_spec"
  return value


def _fgsm(spec: AttackSpec, eps, apply_fn, params, x, y, *, key, bounds):
  del key
  return attacks_lib.fgsm(
    apply_fn, params, x, y, eps=eps, norm=spec.norm, loss=_set(spec.loss, "loss"), bounds=bounds
  )


def _pgd(spec: AttackSpec, eps, apply_fn, params, x, y, *, key, bounds):
  steps = _set(spec.steps, "steps")
  rel = 2.5 / steps if spec.relative_step is None else spec.relative_step
  return attacks_lib.pgd(
      apply_fn, params, x, y, eps=eps, norm=spec.norm, steps=steps, step_size=rel * eps,
      key=key, restarts=spec.restarts, loss=_set(spec.loss, "loss"), bounds=bounds,
  )  # fmt: skip


def _apgd(spec: AttackSpec, eps, apply_fn, params, x, y, *, key, bounds):
  return attacks_lib.apgd(
      apply_fn, params, x, y, eps=eps, norm=spec.norm, steps=_set(spec.steps, "steps"),
      key=key, restarts=spec.restarts, loss=_set(spec.loss, "loss"), bounds=bounds,
  )  # fmt: skip


def _apgd_t(spec: AttackSpec, eps, apply_fn, params, x, y, *, key, bounds):
  return attacks_lib.apgd_targeted(
      apply_fn, params, x, y, eps=eps, norm=spec.norm, key=key, steps=_set(spec.steps, "steps"),
      num_targets=_set(spec.num_targets, "num_targets"), restarts=spec.restarts,
      loss=_set(spec.loss, "loss"), bounds=bounds,
  )  # fmt: skip


def _fab_t(spec: AttackSpec, eps, apply_fn, params, x, y, *, key, bounds):
  return attacks_lib.fab(
      apply_fn, params, x, y, eps=eps, norm=spec.norm, key=key, steps=_set(spec.steps, "steps"),
      restarts=spec.restarts, num_targets=_set(spec.num_targets, "num_targets"), bounds=bounds,
  )  # fmt: skip


def _square(spec: AttackSpec, eps, apply_fn, params, x, y, *, key, bounds):
  return attacks_lib.square(
      apply_fn, params, x, y, eps=eps, norm=spec.norm, key=key,
      queries=_set(spec.queries, "queries"), restarts=spec.restarts, bounds=bounds,
  )  # fmt: skip


RUNNERS = {
  "fgsm": Runner(_fgsm, False),
  "pgd": Runner(_pgd, False),
  "apgd": Runner(_apgd, False),
  "apgd-t": Runner(_apgd_t, False),
  "fab-t": Runner(_fab_t, False),
  "square": Runner(_square, True),
}
