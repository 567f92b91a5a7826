"""Attack specifications and the two suites of an evaluation.

An :class:`AttackSpec` names one attack and the radii it runs at. A suite is
a default list of specs and a schedule:

* ``"standard"`` (AutoAttack's standard version, Croce and Hein 2020):
  APGD-CE, APGD-T (9 target classes), FAB-T (9 target classes) and Square
  (5000 queries), 100 iterations each, run as a cascade: at each radius an
  attack runs only on the examples every earlier attack left robust;
* ``"fast"``: FGSM, PGD (CE and margin) and APGD (CE and DLR) with 40 steps,
  each run on every correctly classified example; cheaper and weaker, for
  quick comparisons.

References:
  Croce, Hein. Reliable evaluation of adversarial robustness with an
  ensemble of diverse parameter-free attacks. arXiv:2003.01690, 2020.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from jaxjac._src import checks
from jaxjac._src.attacks.norms import NORMS

SUITES = ("standard", "fast")
METHODS = ("fgsm", "pgd", "apgd", "apgd-t", "fab-t", "square")

# Per method: default steps, default loss, allowed losses, and which extra fields it takes.
_STEPS = {"fgsm": 1, "pgd": 40, "apgd": 100, "apgd-t": 100, "fab-t": 100, "square": None}
_LOSSES = {
  "fgsm": ("ce", "margin", "dlr"),
  "pgd": ("ce", "margin", "dlr"),
  "apgd": ("ce", "margin", "dlr"),
  "apgd-t": ("dlr", "ce"),
  "fab-t": (),
  "square": (),
}
_MIN_CLASSES = {"dlr": 3, "margin": 2, "ce": 1}
_EXTRA_FIELDS = {
  "relative_step": ("pgd",),
  "num_targets": ("apgd-t", "fab-t"),
  "queries": ("square",),
}
_EXTRA_DEFAULTS = {"num_targets": 9, "queries": 5000}


class AttackSpec(NamedTuple):
  """One attack of an evaluation, run at every radius of ``eps``.

  Fields a method does not take must stay ``None`` (they are rejected, not
  ignored); ``None`` elsewhere takes the method's default.

  Attributes:
    name: a unique label for the results, e.g. ``"apgd-ce-linf"``.
    method: ``"fgsm"``, ``"pgd"``, ``"apgd"``, ``"apgd-t"``, ``"fab-t"`` or
      ``"square"``.
    norm: ``"linf"`` or ``"l2"``.
    eps: the radii, a tuple of floats >= 0.
    steps: iterations (FGSM: 1; PGD: 40; APGD, APGD-T, FAB-T: 100; Square
      takes ``queries`` instead).
    restarts: random restarts.
    loss: ``"ce"``, ``"margin"`` or ``"dlr"`` (FGSM, PGD, APGD: default
      ``"ce"``; APGD-T: ``"dlr"`` or ``"ce"``, default ``"dlr"``; FAB-T and
      Square have their own objectives).
    relative_step: PGD's step relative to the radius, ``alpha =
      relative_step * eps`` (unlike :func:`jaxjac.attacks.pgd`'s absolute
      ``step_size``); ``None`` takes ``2.5 / steps``.
    num_targets: target classes of APGD-T and FAB-T (default 9).
    queries: Square's query budget (default 5000).
  """

  name: str
  method: str
  norm: str
  eps: tuple[float, ...]
  steps: int | None = None
  restarts: int = 1
  loss: str | None = None
  relative_step: float | None = None
  num_targets: int | None = None
  queries: int | None = None


def _per_norm(linf_eps, l2_eps, make) -> tuple[AttackSpec, ...]:
  """``make(norm, eps)``'s specs for each norm with a non-empty tuple of radii."""
  radii = (("linf", tuple(float(e) for e in linf_eps)), ("l2", tuple(float(e) for e in l2_eps)))
  return tuple(spec for norm, eps in radii if eps for spec in make(norm, eps))


def standard_attacks(
  *,
  linf_eps: Sequence[float] = (0.1, 0.2, 0.3),
  l2_eps: Sequence[float] = (1.0, 2.0, 3.0),
  steps: int = 100,
  queries: int = 5000,
) -> tuple[AttackSpec, ...]:
  """AutoAttack's standard suite per norm: APGD-CE, APGD-T, FAB-T, Square.

  Args:
    linf_eps: l_inf radii (pixels in ``[0, 1]``; the common MNIST ones).
    l2_eps: l_2 radii.
    steps: iterations of APGD-CE, APGD-T and FAB-T.
    queries: Square's query budget.

  Returns:
    The specs, per norm in the order the cascade runs them.
  """
  return _per_norm(
    linf_eps,
    l2_eps,
    lambda norm, eps: (
      AttackSpec(f"apgd-ce-{norm}", "apgd", norm, eps, steps, loss="ce"),
      AttackSpec(f"apgd-t-{norm}", "apgd-t", norm, eps, steps, num_targets=9),
      AttackSpec(f"fab-t-{norm}", "fab-t", norm, eps, steps, num_targets=9),
      AttackSpec(f"square-{norm}", "square", norm, eps, queries=queries),
    ),
  )


def fast_attacks(
  *,
  linf_eps: Sequence[float] = (0.1, 0.2, 0.3),
  l2_eps: Sequence[float] = (1.0, 2.0, 3.0),
  steps: int = 40,
  restarts: int = 1,
) -> tuple[AttackSpec, ...]:
  """FGSM, PGD (CE and margin) and APGD (CE and DLR) for l_inf and l_2.

  Args:
    linf_eps: l_inf radii.
    l2_eps: l_2 radii.
    steps: iterations of PGD and APGD.
    restarts: random restarts of PGD and APGD.

  Returns:
    Five specs per norm with radii.
  """
  return _per_norm(
    linf_eps,
    l2_eps,
    lambda norm, eps: (
      AttackSpec(f"fgsm-{norm}", "fgsm", norm, eps, steps=1),
      AttackSpec(f"pgd{steps}-ce-{norm}", "pgd", norm, eps, steps, restarts, "ce"),
      AttackSpec(f"pgd{steps}-margin-{norm}", "pgd", norm, eps, steps, restarts, "margin"),
      AttackSpec(f"apgd{steps}-ce-{norm}", "apgd", norm, eps, steps, restarts, "ce"),
      AttackSpec(f"apgd{steps}-dlr-{norm}", "apgd", norm, eps, steps, restarts, "dlr"),
    ),
  )


SUITE_ATTACKS: dict[str, Callable[[], tuple[AttackSpec, ...]]] = {
  "standard": standard_attacks,
  "fast": fast_attacks,
}


def check_spec(spec: Any, num_classes: int) -> AttackSpec:
  """Validates one spec against the model; returns it with every default resolved."""
  if not isinstance(spec, AttackSpec):
    raise TypeError(f"`attacks` must hold AttackSpec entries, got {spec!r}.")
  if not isinstance(spec.name, str) or not spec.name:
    raise ValueError(f"AttackSpec.name must be a non-empty string, got {spec.name!r}.")
  where = f"attack {spec.name!r}: "
  method = checks.check_choice(spec.method, f"{where}method", METHODS)
  checks.check_choice(spec.norm, f"{where}norm", NORMS)
  for field, methods in _EXTRA_FIELDS.items():
    if getattr(spec, field) is not None and method not in methods:
      raise ValueError(f"{where}{field} applies to {methods} only, not to method={method!r}.")
  if isinstance(spec.eps, (str, bytes)) or not isinstance(spec.eps, Sequence) or not spec.eps:
    raise ValueError(f"{where}eps must be a non-empty tuple of radii, got {spec.eps!r}.")
  for e in spec.eps:
    checks.check_eps(e, f"{where}eps")
  steps = spec.steps
  if _STEPS[method] is None:
    if steps is not None:
      raise ValueError(f"{where}{method} takes `queries`, not `steps`.")
  else:
    steps = checks.check_positive_int(_STEPS[method] if steps is None else steps, f"{where}steps")
  checks.check_positive_int(spec.restarts, f"{where}restarts")
  if method == "fgsm" and (spec.restarts != 1 or steps != 1):
    raise ValueError(f"{where}FGSM takes one step and no restarts (steps=1, restarts=1).")
  loss = spec.loss
  if not _LOSSES[method]:
    if loss is not None:
      raise ValueError(f"{where}{method} has its own objective; leave `loss` as None.")
  else:
    loss = checks.check_choice(_LOSSES[method][0] if loss is None else loss, f"{where}loss",
                               _LOSSES[method])  # fmt: skip
    need = _MIN_CLASSES[loss] + (method == "apgd-t" and loss == "dlr")
    if num_classes < need:
      raise ValueError(f"{where}loss={loss!r} needs at least {need} classes, got {num_classes}.")
  if spec.relative_step is not None:
    checks.check_eps(spec.relative_step, f"{where}relative_step")
  resolved: dict[str, Any] = {
    "steps": steps,
    "loss": loss,
    "eps": tuple(float(e) for e in spec.eps),
  }
  for field, default in _EXTRA_DEFAULTS.items():
    if method in _EXTRA_FIELDS[field]:
      value = default if getattr(spec, field) is None else getattr(spec, field)
      resolved[field] = checks.check_positive_int(value, f"{where}{field}")
  if method in ("apgd-t", "fab-t") and resolved["num_targets"] > num_classes - 1:
    raise ValueError(
      f"{where}num_targets must be at most C - 1 = {num_classes - 1}, "
      f"got {resolved['num_targets']}."
    )
  return spec._replace(**resolved)
