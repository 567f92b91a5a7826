"""Square attack: score-based random search for l_inf and l_2, no gradients.

Square (Andriushchenko et al. 2020) minimizes the margin

.. math::
  m(x) = z_y(x) - \\max_{c \\ne y} z_c(x)

(``m <= 0``: misclassified) by random search over square-shaped updates, using
only the model's outputs: it breaks models whose input gradients are zero or
useless (gradient masking), where gradient attacks find nothing. An update is
kept when it lowers the margin.

**l_inf.** The start is ``x + eps * s`` with a random sign ``s`` per column and
channel (vertical stripes), clipped to the box. Each update picks, per
example, a window of side ``k`` and sets every pixel of the window, per
channel, to ``x_best +- 2 eps`` (one random sign per channel), projected on
the ball and clipped to the box: the window lands on a vertex of the ball.
Entries whose float difference to ``x`` rounds above ``eps`` are moved one ulp
towards ``x``, so that ``max |x_adv - x| <= eps`` holds as computed.

**l_2.** The start is a grid of ``h // 5``-sided windows, each filled with the
pattern ``eta`` (nested squares of weights ``1 / (j + 1)^2``, opposite signs in
the two halves, randomly transposed) times a random sign per channel, scaled
to norm ``eps``. Each update moves the mass of a window ``W_1`` of side ``k``
(odd, >= 3) and of a second window ``W_2`` into ``W_1``: per channel, the new
content is ``eta * sign + delta_{W_1} / ||delta_{W_1}||``, rescaled to norm
``sqrt(max(eps^2 - ||delta||^2, 0) / c + ||delta_{W_1 u W_2}||^2)``; ``W_2`` is
zeroed, and the whole perturbation is rescaled to norm ``eps`` (times
``1 - 1e-6``, so that rounding never leaves the ball) and clipped to the box.

**Schedule.** The fraction ``p`` of pixels changed starts at ``p_init`` and is
halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a
10000-query run, rescaled to the budget (as in the reference code); the side is
``k = round(sqrt(p h w))`` (``window_sides`` lists them). ``queries`` counts
every model evaluation of an example: one for the start, ``queries - 1``
updates. An example stops as soon as it is misclassified; examples
misclassified at ``x`` are not attacked.
Windows, signs and transposes are drawn per example from
``jax.random.fold_in(fold_in(key, restart), iteration)``; restart ``r > 0``
attacks only the examples that are still classified correctly. The updates
are one ``lax.while_loop`` (the side is traced: windows are masks over the
whole image) that stops when every example is misclassified.

``x`` must be images ``(B, H, W, C)`` (channels last); reshape flat inputs to
``(B, 1, d, 1)`` or to a square image.

References:
  Andriushchenko, Croce, Flammarion, Hein. Square attack: a query-efficient
  black-box adversarial attack via random search. arXiv:1912.00049, 2020.
  Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble
  of diverse parameter-free attacks. arXiv:2003.01690, 2020.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxjac._src import checks
from jaxjac._src.attacks import validation
from jaxjac._src.attacks.fab import check_inputs

NORMS = ("linf", "l2")

_L2_SHRINK = 1.0 - 1e-6  # keeps ||delta||_2 <= eps despite rounding


def p_selection(p_init: float, it: int, queries: int) -> float:
  """The fraction of pixels changed at iteration ``it`` (the reference schedule)."""
  it = int(it / queries * 10000)
  for bound, div in (
    (8000, 512),
    (6000, 256),
    (4000, 128),
    (2000, 64),
    (1000, 32),
    (500, 16),
    (200, 8),
    (50, 4),
    (10, 2),
  ):
    if it > bound:
      return p_init / div
  return p_init


def window_sides(queries: int, p_init: float, h: int, w: int, norm: str) -> list[int]:
  """The window side of each of the ``queries - 1`` updates."""
  return [_side(p_selection(p_init, it, queries), h, w, norm) for it in range(queries - 1)]


def _side(p: float, h: int, w: int, norm: str) -> int:
  s = int(round(math.sqrt(p * h * w)))
  if norm == "linf":
    s = max(s, 1)
  else:
    s = max(s, 3)
    if s % 2 == 0:
      s += 1
  return min(s, h, w)


def _eta_rectangles(a: int, b: int) -> np.ndarray:
  delta = np.zeros((a, b))
  xc, yc = a // 2 + 1, b // 2 + 1
  c0, c1 = xc - 1, yc - 1
  for j in range(max(xc, yc)):
    delta[max(c0, 0) : min(c0 + 2 * j + 1, a), max(c1, 0) : min(c1 + 2 * j + 1, b)] += (
      1.0 / (j + 1) ** 2
    )
    c0 -= 1
    c1 -= 1
  return delta / np.sqrt(np.sum(delta**2))


def eta_pattern(s: int) -> np.ndarray:
  """The ``s x s`` l_2 update pattern of the reference, unit Frobenius norm."""
  delta = np.zeros((s, s))
  delta[: s // 2] = _eta_rectangles(s // 2, s)
  delta[s // 2 :] = -_eta_rectangles(s - s // 2, s)
  return delta / np.sqrt(np.sum(delta**2))


def _l2_init_patterns(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
  """The grid of ``eta`` windows of the l_2 start, as ``(K, H, W)`` arrays.

  Returns the windows filled with ``eta`` and with its transpose (truncated at
  the image edges).
  """
  s = h // 5
  sp = (h - s * 5) // 2
  eta = eta_pattern(s)
  pats: list[np.ndarray] = []
  pats_t: list[np.ndarray] = []
  for vh in range(sp, sp + s * (h // s), s):
    for vw in range(sp, sp + s * (w // s), s):
      hh, ww = min(s, h - vh), min(s, w - vw)
      if hh <= 0 or ww <= 0:
        continue
      for src, dst in ((eta, pats), (eta.T, pats_t)):
        pat = np.zeros((h, w))
        pat[vh : vh + hh, vw : vw + ww] = src[:hh, :ww]
        dst.append(pat)
  return np.stack(pats), np.stack(pats_t)


def _margin(apply_fn, params, xa, *, y):
  z = apply_fn(params, xa)
  zy = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]
  others = jnp.max(jnp.where(jax.nn.one_hot(y, z.shape[-1], dtype=bool), -jnp.inf, z), axis=-1)
  return zy - others


def _l2n(v):
  return jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1))


def _rand_sign(key, shape, dtype):
  return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0).astype(dtype)


def _rand_corner(key, batch, limit):
  """Per-example top-left corners uniform in ``[0, limit)`` (0 if ``limit == 0``)."""
  u = jax.random.uniform(key, (batch,))
  return jnp.minimum((u * limit).astype(jnp.int32), jnp.maximum(limit - 1, 0))


def _inside_linf(x_new, x, eps):
  """Moves entries whose float ``|x_new - x|`` exceeds ``eps`` by rounding one ulp towards ``x``."""
  d = x_new - x
  x_new = jnp.where(d > eps, jnp.nextafter(x_new, x), x_new)
  return jnp.where(-d > eps, jnp.nextafter(x_new, x), x_new)


def _window_mask(vh, vw, s, h, w):
  rows = jnp.arange(h)[None, :]
  cols = jnp.arange(w)[None, :]
  rin = (rows >= vh[:, None]) & (rows < vh[:, None] + s)
  cin = (cols >= vw[:, None]) & (cols < vw[:, None] + s)
  return (rin[:, :, None] & cin[:, None, :])[..., None]  # (B, H, W, 1)


@functools.partial(
  jax.jit, static_argnames=("apply_fn", "norm", "queries", "restarts", "p_init", "bounds")
)
def _square(apply_fn, params, x, y, eps, key, *, norm, queries, restarts, p_init, bounds):
  batch, h, w, ch = x.shape
  dtype = x.dtype
  lo, hi = bounds
  bshape = (batch, 1, 1, 1)
  margin = functools.partial(_margin, apply_fn, params, y=y)
  num_updates = queries - 1
  sides = np.array(window_sides(queries, p_init, h, w, norm))
  sides_used = sorted(set(sides.tolist()))
  side_of = jnp.asarray(sides, jnp.int32)  # the window side of each update
  index_of = jnp.asarray(np.searchsorted(sides_used, sides), jnp.int32)

  def init(k):
    if norm == "linf":
      stripes = _rand_sign(k, (batch, 1, w, ch), dtype)
      return _inside_linf(jnp.clip(x + eps * stripes, lo, hi), x, eps)
    pats, pats_t = _l2_init_patterns(h, w)
    kf, ks = jax.random.split(k)
    flip = jax.random.bernoulli(kf, 0.5, (batch, pats.shape[0])).astype(dtype)
    sign = _rand_sign(ks, (batch, pats.shape[0], ch), dtype)
    pat = jnp.asarray(pats, dtype)
    pat_t = jnp.asarray(pats_t, dtype)
    delta = jnp.einsum("khw,bkc->bhwc", pat, sign * (1 - flip)[..., None]) + jnp.einsum(
      "khw,bkc->bhwc", pat_t, sign * flip[..., None]
    )
    scale = eps * _L2_SHRINK / jnp.maximum(_l2n(delta), 1e-12)
    return jnp.clip(x + delta * scale.reshape(bshape), lo, hi)

  def update_linf(k, x_best, s, _):
    k1, k2, k3 = jax.random.split(k, 3)
    vh = _rand_corner(k1, batch, h - s)
    vw = _rand_corner(k2, batch, w - s)
    sign = _rand_sign(k3, (batch, 1, 1, ch), dtype)
    mask = _window_mask(vh, vw, s, h, w)
    x_new = jnp.where(mask, x_best + 2.0 * eps * sign, x_best)
    x_new = jnp.clip(x_new, x - eps, x + eps)
    return _inside_linf(jnp.clip(x_new, lo, hi), x, eps)

  if norm == "l2":  # eta(s) in the top-left corner of an H x W frame, one per side s
    etas = np.zeros((len(sides_used), 2, h, w))
    for j, side in enumerate(sides_used):
      etas[j, 0, :side, :side] = eta_pattern(side)
      etas[j, 1, :side, :side] = eta_pattern(side).T
    etas = jnp.asarray(etas, dtype)

  def update_l2(k, x_best, s, j):
    k1, k2, k3, k4, k5, k6 = jax.random.split(k, 6)
    vh = _rand_corner(k1, batch, h - s)
    vw = _rand_corner(k2, batch, w - s)
    vh2 = _rand_corner(k3, batch, h - s)
    vw2 = _rand_corner(k4, batch, w - s)
    delta = x_best - x
    mask1 = _window_mask(vh, vw, s, h, w)
    mask2 = _window_mask(vh2, vw2, s, h, w)
    win = jnp.where(mask1, delta, 0.0)
    norm_w1 = jnp.sqrt(jnp.sum(jnp.square(win), axis=(1, 2), keepdims=True))  # per channel
    norm_img = _l2n(delta)
    norm_wins = _l2n(jnp.where(mask1 | mask2, delta, 0.0))
    flip = jax.random.bernoulli(k5, 0.5, (batch,)).astype(jnp.int32)
    frame = etas[j][flip]  # (B, H, W): eta or its transpose, top-left
    # Shift to (vh, vw) with one-hot shift matrices: placed[i, j] = frame[i - vh, j - vw].
    rows = (jnp.arange(h)[None, :, None] - jnp.arange(h)[None, None, :]) == vh[:, None, None]
    cols = (jnp.arange(w)[None, :, None] - jnp.arange(w)[None, None, :]) == vw[:, None, None]
    placed = jnp.einsum("bia,bac,bjc->bij", rows.astype(dtype), frame, cols.astype(dtype))
    new = placed[..., None] * _rand_sign(k6, (batch, 1, 1, ch), dtype) + win / (1e-12 + norm_w1)
    target = jnp.sqrt(jnp.maximum(eps**2 - norm_img**2, 0.0) / ch + norm_wins**2)
    new = new / (1e-12 + jnp.sqrt(jnp.sum(jnp.square(new), axis=(1, 2), keepdims=True)))
    new = new * target.reshape(bshape)
    delta = jnp.where(mask1, new, jnp.where(mask2, 0.0, delta))
    scale = eps * _L2_SHRINK / jnp.maximum(_l2n(delta), 1e-12)
    return jnp.clip(x + delta * scale.reshape(bshape), lo, hi)

  update = update_linf if norm == "linf" else update_l2

  def run(r, carry):
    out, fooled = carry
    kr = jax.random.fold_in(key, r)
    x_best = init(jax.random.fold_in(kr, queries))
    m = margin(x_best)
    m = jnp.where(fooled, -jnp.inf, m)  # frozen: already misclassified

    def cond(c):
      i, _, m = c
      return (i < num_updates) & jnp.any(m > 0)

    def body(c):
      i, x_best, m = c
      x_new = update(jax.random.fold_in(kr, i), x_best, side_of[i], index_of[i])
      m_new = margin(x_new)
      better = (m > 0) & (m_new < m)
      return (
        i + 1,
        jnp.where(better.reshape(bshape), x_new, x_best),
        jnp.where(better, m_new, m),
      )

    _, x_best, m = lax.while_loop(cond, body, (jnp.asarray(0), x_best, m))
    new = (~fooled) & (m <= 0)
    return jnp.where(new.reshape(bshape), x_best, out), fooled | new

  fooled0 = margin(x) <= 0  # misclassified at x: left alone
  out, _ = lax.fori_loop(0, restarts, run, (x, fooled0))
  return lax.stop_gradient(out)


def square(
  apply_fn,
  params: Any,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float | jax.Array,
  norm: str,
  key: jax.Array,
  queries: int = 5000,
  restarts: int = 1,
  p_init: float = 0.8,
  bounds: tuple[float, float] = (0.0, 1.0),
) -> jax.Array:
  """Square attack (score-based, margin loss) in the l_inf or l_2 ball.

  Random search for

  .. math::
    \\min_{\\|\\delta\\|_p \\le \\epsilon,\\ l \\le x + \\delta \\le u}\\
      z_y(x + \\delta) - \\max_{c \\ne y} z_c(x + \\delta)

  with square-window updates of shrinking size; only forward passes are used.
  See the module docstring for the updates and the schedule.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, C)``; hashable (static).
    params: model parameters.
    x: images ``(B, H, W, C)`` inside ``bounds``.
    y: true labels ``(B,)``, integers in ``[0, C)``.
    eps: radius, finite and >= 0.
    norm: ``"linf"`` or ``"l2"``.
    key: PRNG key (``jax.random.key``; a raw ``jax.random.PRNGKey`` works too).
    queries: model evaluations per example and restart, >= 2 (the start
      and ``queries - 1`` updates).
    restarts: runs, >= 1; each attacks the examples still classified
      correctly.
    p_init: initial fraction of pixels changed, in ``(0, 1]``.
    bounds: the box ``(low, high)``, finite.

  Returns:
    ``x_adv`` with ``x``'s shape: the misclassified point found within the
    ball and the box, else ``x``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxjac.attacks import square
    >>> def apply_fn(b, x):  # logits (mean pixel, b): margin 0.1 at x = 0.5
    ...   return jnp.stack([x.mean(axis=(1, 2, 3)), jnp.full(x.shape[:1], b)], axis=-1)
    >>> x = jnp.full((1, 8, 8, 1), 0.5); y = jnp.array([0])
    >>> x_adv = square(apply_fn, 0.4, x, y, eps=0.3, norm="linf", key=jax.random.key(0),
    ...                queries=100)
    >>> int(jnp.argmax(apply_fn(0.4, x_adv))), bool(jnp.max(jnp.abs(x_adv - x)) <= 0.3)
    (1, True)

  References:
    Andriushchenko, Croce, Flammarion, Hein. Square attack: a
    query-efficient black-box adversarial attack via random search.
    arXiv:1912.00049, 2020.
  """
  _, bounds = check_inputs(apply_fn, params, x, y, eps=eps, norm=norm, bounds=bounds)
  validation.check_key(key, needed_by="the attack's random draws")
  if np.ndim(x) != 4:
    raise ValueError(
      f"`x` must be images of shape (B, H, W, C) for the square windows, got shape "
      f"{np.shape(x)}; reshape flat inputs, e.g. `x.reshape(B, 1, d, 1)`."
    )
  if norm == "l2" and min(x.shape[1:3]) < 5:
    raise ValueError(
      f"norm='l2' needs images of at least 5 x 5 pixels (the start is a 5 x 5 grid of "
      f"windows), got {x.shape[1]} x {x.shape[2]}."
    )
  queries = checks.check_positive_int(queries, "queries")
  if queries < 2:
    raise ValueError(f"`queries` must be >= 2 (the start and one update), got {queries}.")
  restarts = checks.check_positive_int(restarts, "restarts")
  try:
    p_init = float(p_init)
  except (TypeError, ValueError):
    raise TypeError(f"`p_init` must be a float in (0, 1], got {p_init!r}.") from None
  if not 0.0 < p_init <= 1.0:
    raise ValueError(f"`p_init` must lie in (0, 1], got {p_init}.")
  return _square(
    apply_fn,
    params,
    x,
    y,
    jnp.asarray(eps, x.dtype),
    key,
    norm=norm,
    queries=queries,
    restarts=restarts,
    p_init=p_init,
    bounds=bounds,
  )
