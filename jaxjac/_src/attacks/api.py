"""The public attacks: FGSM, PGD, APGD and APGD-T for l_inf and l_2 balls.

Every attack solves, per example ``b``, approximately

.. math::
  \\max_{\\delta}\\ L(f(x_b + \\delta), y_b)
  \\quad \\text{s.t.} \\quad \\|\\delta\\|_p \\le \\epsilon,\\quad
  \\ell \\le x_b + \\delta \\le u,

with ``p`` in ``{inf, 2}`` (``norm="linf"`` / ``"l2"``), the box
``[l, u] = bounds`` (``[0, 1]`` by default) and ``L`` one of the losses of
:func:`attack_loss`.

**Compilation.** Each attack is one jitted function; ``apply_fn`` and the
configuration (norm, steps, restarts, loss, bounds, ...) are static, while
``params``, ``x``, ``y``, ``eps``, ``step_size`` and ``key`` are traced: a
second call with the same ``apply_fn`` object, configuration and shapes does
not recompile, whatever the values of ``eps``. Pass the same ``apply_fn``
object each time (a new ``lambda`` per call compiles anew). The attacks can be
called inside another jitted function (e.g. an adversarial training step);
there the value checks need ``checked=True`` and ``checkify`` (see
:mod:`jaxjac._src.attacks.validation`). Results are wrapped in
``lax.stop_gradient``.

**CPU.** Called with concrete arrays on CPU, PGD, APGD, APGD-T and FAB-T run
their iterations from Python, one compiled iteration per call: XLA:CPU
compiles a convolution's input gradient inside a compiled loop about 4x slower
than on its own. The iterations and their results are the same (tested
against the compiled loop); inside ``jax.jit`` and on GPU/TPU the attack is
one compiled loop.

``apply_fn(params, x)`` must return logits ``(B, C)`` and treat examples
independently (BatchNorm in inference mode): one backward pass of the summed
per-example losses then gives every example's input gradient.

References:
  Goodfellow, Shlens, Szegedy. arXiv:1412.6572, 2014.
  Madry, Makelov, Schmidt, Tsipras, Vladu. arXiv:1706.06083, 2017.
  Croce, Hein. Reliable evaluation of adversarial robustness with an
  ensemble of diverse parameter-free attacks. arXiv:2003.01690, 2020.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxjac._src import checks
from jaxjac._src.attacks import core, validation
from jaxjac._src.attacks.norms import per_example
from jaxjac._src.jacobian import ApplyFn, Params


def fgsm(
  apply_fn: ApplyFn,
  params: Params,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float | jax.Array,
  norm: str,
  loss: str = "ce",
  target: jax.Array | None = None,
  bounds: tuple[float, float] = (0.0, 1.0),
  checked: bool = False,
) -> jax.Array:
  """Fast gradient (sign) method: one step of length ``eps``.

  .. math::
    x' = \\mathrm{clip}_{[l, u]}\\big(x + \\epsilon\\, s(\\nabla_x L)\\big),
    \\qquad s(g) = \\mathrm{sign}(g)\\ (\\ell_\\infty),\\quad
    s(g) = g / \\|g\\|_2\\ (\\ell_2).

  For a loss linear in ``x`` and no box this is the exact maximizer over the
  ball (e.g. ``loss="pair"`` on a linear model).

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, C)``; hashable (static).
    params: model parameters (for Flax linen: ``{"params": p}``).
    x: inputs ``(B, ...)`` inside ``bounds``.
    y: true labels ``(B,)``, integers in ``[0, C)``.
    eps: radius, >= 0.
    norm: ``"linf"`` or ``"l2"``.
    loss: ``"ce"``, ``"margin"``, ``"dlr"`` or ``"pair"``.
    target: target classes ``(B,)`` for a targeted attack (the loss then
      favours ``target``); required by ``"pair"``.
    bounds: the box ``(low, high)``; ``(-inf, inf)`` for none.
    checked: under ``jax.jit``, stage the value checks with ``checkify``.

  Returns:
    ``x_adv`` with ``x``'s shape and dtype, no gradient flowing through it.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxjac import attacks
    >>> def apply_fn(w, x):  # a linear model with two classes
    ...   return x @ w
    >>> w = jnp.array([[1.0, -1.0], [0.0, 0.0]])
    >>> x, y = jnp.array([[0.5, 0.5]]), jnp.array([0])
    >>> attacks.fgsm(apply_fn, w, x, y, eps=0.1, norm="linf")
    Array([[0.4, 0.5]], dtype=float32)

  References:
    Goodfellow, Shlens, Szegedy. arXiv:1412.6572, 2014.
  """
  config, args = validation.prepare(
    "fgsm", apply_fn, params, x, y, eps=eps, norm=norm, steps=1, restarts=1, loss=loss,
    target=target, random_start=False, select="success", bounds=bounds, key=None,
    step_size=None, checked=checked,
  )  # fmt: skip
  return core.attack(apply_fn, config, *args)


def pgd(
  apply_fn: ApplyFn,
  params: Params,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float | jax.Array,
  norm: str,
  steps: int,
  step_size: float | jax.Array | None = None,
  key: jax.Array | None = None,
  restarts: int = 1,
  loss: str = "ce",
  random_start: bool = True,
  target: jax.Array | None = None,
  select: str = "success",
  bounds: tuple[float, float] = (0.0, 1.0),
  checked: bool = False,
) -> jax.Array:
  """Projected gradient ascent (PGD) with random start and restarts.

  .. math::
    x^{(0)} = \\Pi(x + \\delta_0), \\qquad
    x^{(k+1)} = \\Pi\\big(x^{(k)} + \\alpha\\, s(\\nabla_x L(x^{(k)}))\\big),

  with ``Pi`` the projection on the ``eps``-ball around ``x`` followed by
  clipping to the box, ``s`` the steepest-ascent direction of the norm
  (``sign`` for l_inf, ``g / ||g||_2`` for l_2) and ``delta_0`` uniform in
  the ball. Each iterate (``x^(0)`` to ``x^(steps)``) is a candidate. With a
  fixed ``step_size`` and key, more steps extend the same trajectory.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, C)``; hashable (static).
    params: model parameters.
    x: inputs ``(B, ...)`` inside ``bounds``.
    y: true labels ``(B,)``.
    eps: radius, >= 0 (traced: changing it does not recompile).
    norm: ``"linf"`` or ``"l2"``.
    steps: gradient steps per restart, >= 1.
    step_size: the absolute step ``alpha``; ``None`` takes ``2.5 * eps /
      steps`` (Madry et al.).
    key: PRNG key (``jax.random.key``), required with ``random_start``.
      Restart ``r`` uses ``jax.random.fold_in(key, r)``.
    restarts: independent random starts, >= 1.
    loss: ``"ce"``, ``"margin"`` (Carlini-Wagner), ``"dlr"`` or ``"pair"``.
    random_start: start uniformly in the ball (else at ``x``).
    target: target classes ``(B,)`` for a targeted attack; required by
      ``"pair"``.
    select: ``"success"`` (first successful candidate, else highest loss)
      or ``"loss"`` (highest loss).
    bounds: the box ``(low, high)``.
    checked: under ``jax.jit``, stage the value checks with ``checkify``.

  Returns:
    ``x_adv`` with ``x``'s shape, ``||x_adv - x||_p <= eps`` and inside the
    box, no gradient flowing through it.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxjac import attacks
    >>> def apply_fn(w, x):
    ...   return x @ w
    >>> w = jnp.array([[1.0, -1.0], [0.0, 0.0]])
    >>> x, y = jnp.array([[0.5, 0.5]]), jnp.array([0])
    >>> x_adv = attacks.pgd(apply_fn, w, x, y, eps=0.1, norm="linf", steps=10,
    ...                     key=jax.random.key(0))
    >>> float(attacks.perturbation_norm(x_adv - x, "linf")[0]) <= 0.1
    True

  References:
    Madry, Makelov, Schmidt, Tsipras, Vladu. arXiv:1706.06083, 2017.
  """
  if step_size is None:
    checks.check_positive_int(steps, "steps")
    validation.check_scalar(eps, "eps")
    step_size = 2.5 * jnp.asarray(eps) / steps
  config, args = validation.prepare(
    "pgd", apply_fn, params, x, y, eps=eps, norm=norm, steps=steps, restarts=restarts,
    loss=loss, target=target, random_start=random_start, select=select, bounds=bounds,
    key=key, step_size=step_size, checked=checked,
  )  # fmt: skip
  return core.attack(apply_fn, config, *args)


def apgd(
  apply_fn: ApplyFn,
  params: Params,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float | jax.Array,
  norm: str,
  steps: int = 100,
  key: jax.Array | None = None,
  loss: str = "ce",
  restarts: int = 1,
  random_start: bool = True,
  target: jax.Array | None = None,
  select: str = "success",
  bounds: tuple[float, float] = (0.0, 1.0),
  checked: bool = False,
) -> jax.Array:
  """Auto-PGD: step-size-free PGD with momentum (Croce and Hein 2020).

  With ``eta^(0) = 2 eps``, ``alpha = 0.75`` (1 at the first step) and ``Pi``
  the projection on the ball and the box,

  .. math::
    z^{(k+1)} = \\Pi\\big(x^{(k)} + \\eta^{(k)} s(\\nabla L(x^{(k)}))\\big), \\quad
    x^{(k+1)} = \\Pi\\big(x^{(k)} + \\alpha (z^{(k+1)} - x^{(k)})
      + (1 - \\alpha)(x^{(k)} - x^{(k-1)})\\big).

  At checkpoints ``w_j ~ p_j N``, ``p_0 = 0``, ``p_1 = 0.22``,
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (integer intervals as in
  the reference code), the step of an example is halved and its iterate reset
  to its best point when (1) the loss rose in at most ``rho = 0.75`` of the
  steps since the last checkpoint (from ``x^(0)`` at the first one, as in the
  paper's Algorithm 1), or (2) the step was not halved at the last checkpoint
  and the best loss did not improve since. The random start lies on the
  sphere of the ball (as in the reference code). ``steps = N`` iterations cost
  ``N + 1`` gradient evaluations. With ``loss="dlr"`` and a ``target`` this
  is one run of APGD-T's targeted DLR loss; :func:`apgd_targeted` runs it over
  the top classes.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, C)``; hashable (static).
    params: model parameters.
    x: inputs ``(B, ...)`` inside ``bounds``.
    y: true labels ``(B,)``.
    eps: radius, >= 0.
    norm: ``"linf"`` or ``"l2"``.
    steps: iterations ``N`` per restart, >= 1 (100 in AutoAttack).
    key: PRNG key, required with ``random_start``; restart ``r`` uses
      ``jax.random.fold_in(key, r)``.
    loss: ``"ce"`` or ``"dlr"`` as in the paper (``"margin"``, ``"pair"``
      also work); ``"dlr"`` needs ``C >= 3`` (targeted: ``C >= 4``).
    restarts: independent runs, >= 1.
    random_start: start on the sphere of the ball (else at ``x``).
    target: target classes ``(B,)``: targeted CE / DLR.
    select: ``"success"`` or ``"loss"``, as in :func:`pgd`.
    bounds: the box ``(low, high)``.
    checked: under ``jax.jit``, stage the value checks with ``checkify``.

  Returns:
    ``x_adv`` with ``x``'s shape, inside the ball and the box.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxjac import attacks
    >>> def apply_fn(w, x):
    ...   return x @ w
    >>> w = jnp.array([[1.0, -1.0], [-1.0, 1.0]])  # z_0 - z_1 = 2 (x_0 - x_1)
    >>> x, y = jnp.array([[0.6, 0.4]]), jnp.array([0])
    >>> x_adv = attacks.apgd(apply_fn, w, x, y, eps=0.2, norm="linf", steps=10,
    ...                      key=jax.random.key(0))
    >>> [round(float(v), 4) for v in x_adv[0]]  # the corner x + eps (-1, 1): z_1 - z_0 = 0.4
    [0.4, 0.6]

  References:
    Croce, Hein. Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks. arXiv:2003.01690, 2020.
  """
  config, args = validation.prepare(
    "apgd", apply_fn, params, x, y, eps=eps, norm=norm, steps=steps, restarts=restarts,
    loss=loss, target=target, random_start=random_start, select=select, bounds=bounds,
    key=key, step_size=None, checked=checked,
  )  # fmt: skip
  return core.attack(apply_fn, config, *args)


def top_classes(logits: jax.Array, y: jax.Array, num_targets: int) -> jax.Array:
  """``(num_targets, B)``: the classes other than ``y`` by decreasing logit."""
  masked = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return jnp.argsort(-masked, axis=-1, stable=True)[:, :num_targets].T.astype(y.dtype)


def apgd_targeted(
  apply_fn: ApplyFn,
  params: Params,
  x: jax.Array,
  y: jax.Array,
  *,
  eps: float | jax.Array,
  norm: str,
  key: jax.Array,
  steps: int = 100,
  num_targets: int = 9,
  restarts: int = 1,
  loss: str = "dlr",
  bounds: tuple[float, float] = (0.0, 1.0),
  checked: bool = False,
) -> jax.Array:
  """APGD-T: targeted APGD against each of the ``num_targets`` most likely other classes.

  For ``k = 1 .. num_targets`` the target ``t_k`` is the class with the
  ``k``-th highest clean logit among those other than ``y`` (for a correctly
  classified example: the ``(k+1)``-th overall, as in AutoAttack), and
  :func:`apgd` maximizes the targeted DLR loss

  .. math::
    L(z) = -\\frac{z_y - z_{t_k}}{z_{\\pi_1} - (z_{\\pi_3} + z_{\\pi_4}) / 2}.

  An example keeps the output of the first target whose run misclassified it
  (any wrong class counts, as in AutoAttack), else the first target's output.
  Target ``k`` draws from ``jax.random.fold_in(key, k)``.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, C)``; hashable (static).
    params: model parameters.
    x: inputs ``(B, ...)`` inside ``bounds``.
    y: true labels ``(B,)``.
    eps: radius, >= 0.
    norm: ``"linf"`` or ``"l2"``.
    key: PRNG key.
    steps: APGD iterations per target and restart (100 in AutoAttack).
    num_targets: target classes, ``1 <= num_targets <= C - 1`` (9 in
      AutoAttack).
    restarts: APGD restarts per target.
    loss: the targeted loss, ``"dlr"`` (needs ``C >= 4``) or ``"ce"``.
    bounds: the box ``(low, high)``.
    checked: under ``jax.jit``, stage the value checks with ``checkify``.

  Returns:
    ``x_adv``: per example the point of the first target that broke it (else
    of the first target), inside the ball and the box.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxjac.attacks import apgd_targeted
    >>> identity_logits = lambda w, x: x @ w  # z = x: class 1 is the runner-up
    >>> x, y = jnp.array([[0.6, 0.5, 0.2, 0.1]]), jnp.array([0])
    >>> x_adv = apgd_targeted(identity_logits, jnp.eye(4), x, y, eps=0.1, norm="linf",
    ...                       key=jax.random.key(0), steps=10, num_targets=3)
    >>> jnp.argmax(identity_logits(jnp.eye(4), x_adv), axis=1)
    Array([1], dtype=int32)

  References:
    Croce, Hein. Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks. arXiv:2003.01690, 2020.
  """
  num_targets = checks.check_positive_int(num_targets, "num_targets")
  checks.check_choice(loss, "loss", ("dlr", "ce"))
  config, (params, x, y, _, eps, _, key) = validation.prepare(
    "apgd", apply_fn, params, x, y, eps=eps, norm=norm, steps=steps, restarts=restarts,
    loss="ce", target=None, random_start=True, select="success", bounds=bounds, key=key,
    step_size=None, checked=checked,
  )  # fmt: skip
  classes = validation.num_classes(apply_fn, params, x)
  if num_targets > classes - 1:
    raise ValueError(
      f"`num_targets` must be at most C - 1 = {classes - 1} (the other classes), got {num_targets}."
    )
  validation.check_loss(loss, classes, targeted=True)
  config = config._replace(loss=loss, targeted=True, misclassify=True)
  targets = top_classes(apply_fn(params, x), y, num_targets)

  def run(k: int) -> tuple[jax.Array, jax.Array]:  # target k's attack and which it broke
    k_key = jax.random.fold_in(key, k)
    out = core.attack(apply_fn, config, params, x, y, targets[k], eps, 0 * eps, k_key)
    return out, jnp.argmax(apply_fn(params, out), axis=-1) != y

  x_adv, done = run(0)  # num_targets >= 1
  for k in range(1, num_targets):
    out, broken = run(k)
    x_adv = jnp.where(per_example(done, x), x_adv, out)
    done = done | broken
  return jax.lax.stop_gradient(x_adv)
