"""Norm geometry of the threat models: sizes, ascent directions, projections, random starts.

For ``p`` in ``{inf, 2}`` (``norm="linf"`` / ``"l2"``) an attack needs

* the per-example size ``||delta_b||_p`` over all non-batch dims;
* the steepest-ascent direction of a gradient ``g`` under the norm,
  ``sign(g)`` (l_inf) or ``g / ||g||_2`` (l_2);
* the projection on the ball ``{||delta||_p <= eps}``: clipping (l_inf) or
  rescaling (l_2); normalizations divide by ``||v|| + 1e-12`` as the
  reference APGD code does;
* a random start uniform in the ball (for l_2: a direction uniform on the
  sphere with radius ``eps U^{1/d}``) and one on the sphere (APGD's start).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxjac._src import checks

NORMS = ("linf", "l2")

TINY = 1e-12


def per_example(v: jax.Array, x: jax.Array) -> jax.Array:
  """Reshapes a ``(B,)`` array to broadcast against ``x`` of shape ``(B, ...)``."""
  return v.reshape((x.shape[0],) + (1,) * (x.ndim - 1))


def _l2(v: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1))


def _linf(v: jax.Array) -> jax.Array:
  return jnp.max(jnp.abs(v.reshape(v.shape[0], -1)), axis=1)


class NormRules(NamedTuple):
  """The steps of an attack that depend on the norm of the ball."""

  size: Callable[[jax.Array], jax.Array]  # delta -> (B,) norms
  ascent: Callable[[jax.Array], jax.Array]  # gradient -> unit-norm ascent direction
  project: Callable[[jax.Array, jax.Array], jax.Array]  # (delta, eps) -> delta in ball
  uniform: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (key, x, eps) -> delta
  boundary: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # APGD's start


def _linf_ascent(g: jax.Array) -> jax.Array:
  return jnp.sign(g)


def _linf_project(delta: jax.Array, eps: jax.Array) -> jax.Array:
  return jnp.clip(delta, -eps, eps)


def _linf_uniform(key: jax.Array, x: jax.Array, eps: jax.Array) -> jax.Array:
  return eps * jax.random.uniform(key, x.shape, x.dtype, minval=-1.0, maxval=1.0)


def _linf_boundary(key: jax.Array, x: jax.Array, eps: jax.Array) -> jax.Array:
  t = jax.random.uniform(key, x.shape, x.dtype, minval=-1.0, maxval=1.0)
  return eps * t / per_example(_linf(t) + TINY, x)


def _l2_ascent(g: jax.Array) -> jax.Array:
  return g / per_example(_l2(g) + TINY, g)


def _l2_project(delta: jax.Array, eps: jax.Array) -> jax.Array:
  # As the reference APGD code: delta / (||delta|| + tiny) * min(eps, ||delta||), so
  # traces agree to rounding (a point inside the ball moves by a relative 1e-12).
  size = _l2(delta)
  return delta * per_example(jnp.minimum(eps, size) / (size + TINY), delta)


def _l2_uniform(key: jax.Array, x: jax.Array, eps: jax.Array) -> jax.Array:
  kd, kr = jax.random.split(key)
  d = math.prod(x.shape[1:])
  direction = _l2_ascent(jax.random.normal(kd, x.shape, x.dtype))
  radius = eps * jax.random.uniform(kr, (x.shape[0],), x.dtype) ** (1.0 / d)
  return direction * per_example(radius, x)


def _l2_boundary(key: jax.Array, x: jax.Array, eps: jax.Array) -> jax.Array:
  return eps * _l2_ascent(jax.random.normal(key, x.shape, x.dtype))


RULES = {
  "linf": NormRules(_linf, _linf_ascent, _linf_project, _linf_uniform, _linf_boundary),
  "l2": NormRules(_l2, _l2_ascent, _l2_project, _l2_uniform, _l2_boundary),
}


def perturbation_norm(delta: jax.typing.ArrayLike, norm: str) -> jax.Array:
  """Per-example ``||delta_b||_p`` over all non-batch dims, shape ``(B,)``.

  .. math::
    \\|\\delta_b\\|_\\infty = \\max_i |\\delta_{b,i}|, \\qquad
    \\|\\delta_b\\|_2 = \\Big(\\sum_i \\delta_{b,i}^2\\Big)^{1/2}.

  Args:
    delta: perturbations ``(B, ...)``.
    norm: ``"linf"`` or ``"l2"``.

  Returns:
    The norms, shape ``(B,)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxjac import attacks
    >>> attacks.perturbation_norm(jnp.array([[3.0, -4.0]]), "l2")
    Array([5.], dtype=float32)
  """
  checks.check_choice(norm, "norm", NORMS)
  return RULES[norm].size(jnp.asarray(delta))
