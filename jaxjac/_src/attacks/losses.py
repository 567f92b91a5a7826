"""Attack objectives (to be maximized) and the success criterion.

* ``"ce"``: cross-entropy ``-log softmax(z)_y`` (targeted: ``+log softmax(z)_t``);
* ``"margin"``: the Carlini-Wagner margin ``max_{c != y} z_c - z_y``
  (targeted: ``z_t - max_{c != t} z_c``);
* ``"dlr"``: the difference of logits ratio of Croce and Hein (2020),
  ``-(z_y - max_{c != y} z_c) / (z_{pi_1} - z_{pi_3})`` with ``pi`` sorting the
  logits in decreasing order (targeted: ``-(z_y - z_t) / (z_{pi_1} -
  (z_{pi_3} + z_{pi_4}) / 2)``);
* ``"pair"``: the fixed-class margin ``z_t - z_y`` for a given ``target`` t.
  It is linear for a linear model, so its optimum over a ball has a closed
  form: ``eps ||w_t - w_y||_1`` (l_inf) or ``eps ||w_t - w_y||_2`` (l_2)
  without the box.

References:
  Carlini, Wagner. arXiv:1608.04644, 2016. Croce, Hein. arXiv:2003.01690, 2020.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxjac._src import checks
from jaxjac._src.attacks.norms import TINY

LOSSES = ("ce", "margin", "dlr", "pair")

# The fewest classes each loss is defined for (untargeted, targeted).
MIN_CLASSES = {"ce": (1, 2), "margin": (2, 2), "dlr": (3, 4), "pair": (2, 2)}


def _others_max(logits: jax.Array, cls: jax.Array) -> jax.Array:
  """``max_{c != cls} z_c`` per example."""
  mask = jax.nn.one_hot(cls, logits.shape[-1], dtype=bool)
  return jnp.max(jnp.where(mask, -jnp.inf, logits), axis=-1)


def _take(logits: jax.Array, cls: jax.Array) -> jax.Array:
  return jnp.take_along_axis(logits, cls[:, None], axis=-1)[:, 0]


def _ce(logits, y, target, targeted):
  logp = jax.nn.log_softmax(logits, axis=-1)
  return _take(logp, target) if targeted else -_take(logp, y)


def _margin(logits, y, target, targeted):
  if targeted:
    return _take(logits, target) - _others_max(logits, target)
  return _others_max(logits, y) - _take(logits, y)


def _dlr(logits, y, target, targeted):
  z = jnp.sort(logits, axis=-1)  # ascending: z[:, -1] is the largest logit
  if targeted:
    scale = z[:, -1] - 0.5 * (z[:, -3] + z[:, -4])
    return -(_take(logits, y) - _take(logits, target)) / (scale + TINY)
  return -(_take(logits, y) - _others_max(logits, y)) / (z[:, -1] - z[:, -3] + TINY)


def _pair(logits, y, target, targeted):
  del targeted  # Always relative to `target`.
  return _take(logits, target) - _take(logits, y)


LOSS_FNS = {"ce": _ce, "margin": _margin, "dlr": _dlr, "pair": _pair}


def success(logits: jax.Array, y: jax.Array, target: jax.Array, targeted: bool) -> jax.Array:
  """Whether the attack succeeded per example: misclassified, or classified as the target."""
  pred = jnp.argmax(logits, axis=-1)
  return pred == target if targeted else pred != y


def attack_loss(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  loss: str = "ce",
  target: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Per-example attack objective ``(B,)`` (the attacks maximize it).

  .. math::
    L_{\\mathrm{DLR}}(z, y) = -\\frac{z_y - \\max_{c \\ne y} z_c}{z_{\\pi_1} - z_{\\pi_3}},
    \\qquad
    L_{\\mathrm{DLR}}^{t}(z, y) = -\\frac{z_y - z_t}
      {z_{\\pi_1} - (z_{\\pi_3} + z_{\\pi_4}) / 2}.

  Args:
    logits: ``(B, C)``.
    labels: true classes ``(B,)``.
    loss: ``"ce"``, ``"margin"``, ``"dlr"`` or ``"pair"`` (see the module
      docstring for the formulas).
    target: target classes ``(B,)`` for the targeted variants; required by
      ``"pair"``.

  Returns:
    The losses, shape ``(B,)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxjac import attacks
    >>> attacks.attack_loss(jnp.array([[2.0, 1.0, 0.0]]), jnp.array([0]), loss="margin")
    Array([-1.], dtype=float32)
  """
  checks.check_choice(loss, "loss", LOSSES)
  if loss == "pair" and target is None:
    raise ValueError("`target` is required by loss='pair' (the fixed class t in z_t - z_y).")
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  targeted = target is not None
  target = labels if target is None else jnp.asarray(target)
  return LOSS_FNS[loss](logits, labels, target, targeted)
