"""Sanity checks of a robustness evaluation: signs of gradient masking or a weak attack.

On the accuracies (Carlini et al. 2019):

1. every attack's accuracy, and each worst case, is non-increasing in eps
   (the worst case compared only between radii where the larger one ran
   every attack of the smaller one);
2. the accuracy at a large eps (by default the whole box) is zero;
3. twice the steps and three times the restarts never raise the accuracy;

and AutoAttack's automatic checks (Croce and Hein 2020):

4. a randomized model: two calls on the same inputs give different outputs;
5. outputs that look like probabilities (rows in ``[0, 1]`` summing to 1)
   instead of logits: the cross-entropy gradient then vanishes;
6. zero input gradients of the cross-entropy at clean points;
7. a gradient-free attack beating the white-box ones by more than a small
   margin (at any radius).

References:
  Carlini, Athalye, Papernot, et al. On evaluating adversarial robustness.
  arXiv:1902.06705, 2019.
  Croce, Hein. Reliable evaluation of adversarial robustness with an
  ensemble of diverse parameter-free attacks. arXiv:2003.01690, 2020.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxjac._src.jacobian import ApplyFn, Params
from jaxjac._src.robustness.specs import AttackSpec

# A gradient-free attack may beat the white-box ones by this fraction of all
# examples before it is reported (AutoAttack flags Square above 0.2 points).
GRADIENT_FREE_MARGIN = 0.002


class GradientMaskingWarning(UserWarning):
  """A robustness sanity check failed: the attack is weak or gradients are masked."""


class Job(NamedTuple):
  """One attack at one radius."""

  spec: AttackSpec
  eps: float


def sanity_jobs(
  specs: Sequence[AttackSpec], large_eps: dict[str, float]
) -> dict[str, dict[str, Job]]:
  """The extra runs of the sanity report, per norm: large eps, more steps, restarts.

  The reference is the first PGD (else APGD, else FGSM) attack of the norm;
  more steps and restarts run at its middle eps; the large-eps run is PGD with
  the margin loss and the reference's number of steps (40 after FGSM).
  """
  jobs: dict[str, dict[str, Job]] = {}
  for norm in dict.fromkeys(s.norm for s in specs):
    of_norm = [s for s in specs if s.norm == norm]
    ref = next((s for m in ("pgd", "apgd", "fgsm") for s in of_norm if s.method == m), None)
    steps = 40 if ref is None or ref.method == "fgsm" else ref.steps
    # The margin loss does not saturate: far from x the softmax of a confident
    # model underflows and the cross-entropy gradient is exactly zero.
    large = AttackSpec(
      f"pgd{steps}-margin-{norm}", "pgd", norm, (large_eps[norm],), steps, loss="margin"
    )
    jobs[norm] = {"large_eps": Job(large, large_eps[norm])}
    if ref is not None and ref.method != "fgsm":
      assert ref.steps is not None, "PGD and APGD specs have their steps (check_spec resolves them)"
      eps = sorted(ref.eps)[len(ref.eps) // 2]
      jobs[norm]["more_steps"] = Job(ref._replace(steps=2 * ref.steps), eps)
      jobs[norm]["more_restarts"] = Job(ref._replace(restarts=3 * ref.restarts), eps)
  return jobs


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _ce_input_grad(apply_fn, params, x, y):
  def loss(xa):
    logits = apply_fn(params, xa)
    return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

  return jax.grad(loss)(x)


def model_checks(apply_fn: ApplyFn, params: Params, x: jax.Array, y: jax.Array) -> dict[str, Any]:
  """Checks 4 to 6 on one batch: randomness, probability outputs, zero gradients.

  Args:
    apply_fn: the model.
    params: its parameters.
    x: a batch of clean inputs ``(B, ...)``.
    y: their labels ``(B,)``.

  Returns:
    ``{"max_output_change", "probability_rows", "zero_gradient_fraction"}``:
    the largest change between two calls, the fraction of output rows in
    ``[0, 1]`` summing to 1 (within 1e-4), and the fraction of examples
    whose cross-entropy input gradient is exactly zero.
  """
  out1 = np.asarray(apply_fn(params, x), np.float64)
  out2 = np.asarray(apply_fn(params, x), np.float64)
  rows = np.all((out1 >= 0) & (out1 <= 1), axis=1) & (np.abs(out1.sum(axis=1) - 1) < 1e-4)
  g = np.asarray(_ce_input_grad(apply_fn, params, x, y)).reshape(len(y), -1)
  return {
    "max_output_change": float(np.max(np.abs(out1 - out2))),
    "probability_rows": float(np.mean(rows)),
    "zero_gradient_fraction": float(np.mean(np.all(g == 0, axis=1))),
  }


def _subset(small: Any, large: Any) -> bool:
  return set(small) <= set(large)


def _curve_problems(label: str, res: dict[str, Any], tol: float) -> list[str]:
  """Rises of accuracy with eps, between radii whose attack sets are nested."""
  eps, acc = np.asarray(res["eps"], float), np.asarray(res["accuracy"], float)
  sets = res.get("attacks")
  if sets is None or not sets or isinstance(sets[0], str):
    sets = [sets or ()] * len(eps)
  problems = []
  order = np.argsort(eps, kind="stable")
  for a, i in enumerate(order):
    for j in order[a + 1 :]:
      if eps[j] > eps[i] and _subset(sets[i], sets[j]) and acc[j] > acc[i] + tol:
        problems.append(
          f"{label}: accuracy rises with eps ({acc[i]:.4f} at eps={eps[i]:g} -> "
          f"{acc[j]:.4f} at eps={eps[j]:g})"
        )
        break
  return problems


def sanity_report(
  attack_results: dict[str, dict[str, Any]],
  worst_case: dict[str, dict[str, Any]],
  extra: dict[str, dict[str, dict[str, Any]]],
  *,
  tol: float = 0.0,
  model: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Gradient-masking checks on accuracies; returns ``{"passed", "warnings", ...}``.

  Each accuracy check allows ``tol`` of slack (the gradient-free one
  ``tol + 0.002``).

  Args:
    attack_results: ``{name: {"eps": [...], "accuracy": [...]}}``.
    worst_case: ``{norm: {"eps": [...], "accuracy": [...], "attacks": [[names
      at eps] ...]}}``; the worst case at a larger radius is compared with a
      smaller one only when it ran every attack the smaller one ran.
    extra: ``{norm: {check: {...}}}``, checks ``"large_eps"`` (``accuracy``
      must be 0), ``"more_steps"`` and ``"more_restarts"`` (``accuracy`` must
      not exceed ``base_accuracy``) and ``"gradient_free"`` (per eps,
      ``accuracy`` must not be below ``white_box_accuracy`` by more than the
      margin), as built by :func:`jaxjac.evaluate`.
    tol: allowed slack.
    model: the output of :func:`model_checks`, or ``None``.

  Returns:
    A JSON-able dict with ``passed`` (bool), ``warnings`` (list of str) and
    the per-check details.

  Example:
    >>> from jaxjac.robustness import sanity_report
    >>> curves = {"pgd": {"eps": [0.1, 0.2], "accuracy": [0.5, 0.6]}}
    >>> sanity_report(curves, {}, {})["warnings"]
    ["attack 'pgd': accuracy rises with eps (0.5000 at eps=0.1 -> 0.6000 at eps=0.2)"]
  """
  problems = []
  for name, res in attack_results.items():
    problems += _curve_problems(f"attack {name!r}", res, tol)
  for norm, res in worst_case.items():
    problems += _curve_problems(f"worst case {norm!r}", res, tol)
  for norm, runs in extra.items():
    large = runs.get("large_eps")
    if large is not None and large["accuracy"] > tol:
      problems.append(
        f"{norm}: accuracy {large['accuracy']:.4f} > 0 at the large eps={large['eps']:g} "
        f"({large['attack']})"
      )
    for check in ("more_steps", "more_restarts"):
      run = runs.get(check)
      if run is not None and run["accuracy"] > run["base_accuracy"] + tol:
        problems.append(
          f"{norm}: {check.replace('_', ' ')} raises accuracy ({run['base_accuracy']:.4f} -> "
          f"{run['accuracy']:.4f} at eps={run['eps']:g}, {run['attack']})"
        )
    free = runs.get("gradient_free") or {}
    curves = (free.get(k, ()) for k in ("eps", "white_box_accuracy", "accuracy"))
    for e, white, acc in zip(*curves, strict=True):
      if acc < white - tol - GRADIENT_FREE_MARGIN:
        problems.append(
          f"{norm}: a gradient-free attack beats the white-box ones at eps={e:g} "
          f"({white:.4f} -> {acc:.4f}): gradient masking"
        )
  if model is not None:
    if model["max_output_change"] > 0:
      problems.append(
        f"randomized model: two calls on the same inputs differ by up to "
        f"{model['max_output_change']:.3g}; evaluate its expectation (EOT) or fix the randomness"
      )
    if model["probability_rows"] == 1.0:
      problems.append(
        "the model's outputs look like probabilities (rows in [0, 1] summing to 1); "
        "pass logits: the attacks' losses expect them"
      )
    if model["zero_gradient_fraction"] > 0:
      problems.append(
        f"zero input gradients at {100 * model['zero_gradient_fraction']:.1f}% of the clean "
        "points: gradient-based attacks cannot move there"
      )
  return {
    "passed": not problems,
    "warnings": problems,
    "tol": float(tol),
    "runs": extra,
    "model": model,
  }
