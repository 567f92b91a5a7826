"""Robustness evaluation: clean, white-noise and adversarial accuracy, with sanity checks.

:func:`evaluate` runs, batch by batch over a dataset (with a progress bar),

* the clean accuracy;
* the accuracy under Gaussian white noise ``clip(x + sigma n, l, u)``,
  ``n ~ N(0, I)``, for each standard deviation ``sigma``;
* the robust accuracy of each attack (:class:`AttackSpec`) at each radius
  ``eps``: an example counts as robust when it is classified correctly both
  clean and at the attack's output;
* the worst case per example over all attacks of a norm at each radius they
  share: robust only if robust against every one of them;
* a gradient-masking sanity report (Carlini et al. 2019, Croce and Hein
  2020): accuracy must not increase with ``eps``, must reach zero at a large
  ``eps`` (by default the whole box), and must not increase with more steps
  or more restarts. Violations are listed in the result and raised as a
  :class:`GradientMaskingWarning`.

The result is a plain dict of Python numbers, strings and lists that
``json.dump`` writes as is.

References:
  Croce, Hein. Reliable evaluation of adversarial robustness with an
  ensemble of diverse parameter-free attacks. arXiv:2003.01690, 2020.
  Carlini, Athalye, Papernot, et al. On evaluating adversarial robustness.
  arXiv:1902.06705, 2019.
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019 (white-noise robustness).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from jaxjac._src import attacks as attacks_lib
from jaxjac._src import checks
from jaxjac._src.jacobian import ApplyFn, Params


class GradientMaskingWarning(UserWarning):
  """A robustness sanity check failed: the attack is weak or gradients are masked."""


class AttackSpec(NamedTuple):
  """One attack of an evaluation, run at every radius of ``eps``.

  Attributes:
    name: a unique label for the results, e.g. ``"pgd40-ce-linf"``.
    method: ``"fgsm"``, ``"pgd"`` or ``"apgd"``.
    norm: ``"linf"`` or ``"l2"``.
    eps: the radii, a tuple of floats >= 0.
    steps: iterations (ignored by FGSM, which takes one step).
    restarts: random restarts (PGD, APGD).
    loss: ``"ce"``, ``"margin"`` or ``"dlr"``.
    step_size: PGD step relative to the radius, ``alpha = step_size * eps``;
      ``None`` takes ``2.5 / steps``.
  """

  name: str
  method: str
  norm: str
  eps: tuple[float, ...]
  steps: int = 40
  restarts: int = 1
  loss: str = "ce"
  step_size: float | None = None


def default_attacks(
  *,
  linf_eps: Sequence[float] = (0.1, 0.2, 0.3),
  l2_eps: Sequence[float] = (1.0, 2.0, 3.0),
  steps: int = 40,
  restarts: int = 1,
) -> tuple[AttackSpec, ...]:
  """FGSM, PGD (CE and margin) and APGD (CE and DLR) for l_inf and l_2.

  The default radii are the common MNIST ones (pixels in ``[0, 1]``).
  """
  specs = []
  for norm, eps in (("linf", tuple(linf_eps)), ("l2", tuple(l2_eps))):
    if not eps:
      continue
    specs += [
      AttackSpec(f"fgsm-{norm}", "fgsm", norm, eps, steps=1),
      AttackSpec(f"pgd{steps}-ce-{norm}", "pgd", norm, eps, steps, restarts, "ce"),
      AttackSpec(f"pgd{steps}-margin-{norm}", "pgd", norm, eps, steps, restarts, "margin"),
      AttackSpec(f"apgd{steps}-ce-{norm}", "apgd", norm, eps, steps, restarts, "ce"),
      AttackSpec(f"apgd{steps}-dlr-{norm}", "apgd", norm, eps, steps, restarts, "dlr"),
    ]
  return tuple(specs)


def _check_spec(spec: Any, num_classes: int) -> AttackSpec:
  if not isinstance(spec, AttackSpec):
    raise TypeError(f"`attacks` must hold AttackSpec entries, got {spec!r}.")
  where = f"attack {spec.name!r}"
  if not isinstance(spec.name, str) or not spec.name:
    raise ValueError(f"AttackSpec.name must be a non-empty string, got {spec.name!r}.")
  checks.check_choice(spec.method, f"{where}: method", attacks_lib.METHODS)
  checks.check_choice(spec.norm, f"{where}: norm", attacks_lib.NORMS)
  checks.check_choice(spec.loss, f"{where}: loss", ("ce", "margin", "dlr"))
  checks.check_positive_int(spec.steps, f"{where}: steps")
  checks.check_positive_int(spec.restarts, f"{where}: restarts")
  if spec.method == "fgsm" and (spec.restarts != 1 or spec.steps != 1):
    raise ValueError(f"{where}: FGSM takes one step and no restarts (steps=1, restarts=1).")
  if spec.loss == "dlr" and num_classes < 3:
    raise ValueError(f"{where}: loss='dlr' needs at least 3 classes, got {num_classes}.")
  if isinstance(spec.eps, (str, bytes)) or not isinstance(spec.eps, Sequence) or not spec.eps:
    raise ValueError(f"{where}: eps must be a non-empty tuple of radii, got {spec.eps!r}.")
  for e in spec.eps:
    checks.check_eps(e, f"{where}: eps")
  if spec.step_size is not None:
    checks.check_eps(spec.step_size, f"{where}: step_size")
  return spec._replace(eps=tuple(float(e) for e in spec.eps))


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _correct(apply_fn, params, x, y):
  return jnp.argmax(apply_fn(params, x), axis=-1) == y


@functools.partial(jax.jit, static_argnames=("apply_fn", "bounds"))
def _noise_correct(apply_fn, bounds, params, x, y, std, key):
  noisy = jnp.clip(x + std * jax.random.normal(key, x.shape, x.dtype), *bounds)
  return _correct(apply_fn, params, noisy, y)


def _run_attack(spec: AttackSpec, eps: float, apply_fn, params, x, y, *, key, bounds):
  common = dict(eps=eps, norm=spec.norm, loss=spec.loss, bounds=bounds)
  if spec.method == "fgsm":
    return attacks_lib.fgsm(apply_fn, params, x, y, **common)
  if spec.method == "pgd":
    rel = 2.5 / spec.steps if spec.step_size is None else spec.step_size
    return attacks_lib.pgd(
        apply_fn, params, x, y, steps=spec.steps, step_size=rel * eps, key=key,
        restarts=spec.restarts, **common,
    )  # fmt: skip
  return attacks_lib.apgd(
    apply_fn, params, x, y, steps=spec.steps, key=key, restarts=spec.restarts, **common
  )


class _Job(NamedTuple):
  """One attack at one radius: a row of per-example robustness flags."""

  spec: AttackSpec
  eps: float


def _sanity_jobs(specs, large_eps) -> dict[str, dict[str, _Job]]:
  """The extra runs of the sanity report, per norm: large eps, more steps, restarts.

  The reference is the first PGD (else APGD, else FGSM) attack of the norm;
  more steps and restarts run at its middle eps; the large-eps run is PGD with
  the margin loss and the reference's number of steps.
  """
  jobs: dict[str, dict[str, _Job]] = {}
  for norm in dict.fromkeys(s.norm for s in specs):
    of_norm = [s for s in specs if s.norm == norm]
    ref = next((s for m in ("pgd", "apgd", "fgsm") for s in of_norm if s.method == m), of_norm[0])
    eps = sorted(ref.eps)[len(ref.eps) // 2]
    # The margin loss does not saturate: far from x the softmax of a confident
    # model underflows and the cross-entropy gradient is exactly zero.
    steps = ref.steps if ref.method != "fgsm" else 40
    large = AttackSpec(
      f"pgd{steps}-margin-{norm}", "pgd", norm, (large_eps[norm],), steps, loss="margin"
    )
    jobs[norm] = {"large_eps": _Job(large, large_eps[norm])}
    if ref.method != "fgsm":
      jobs[norm]["more_steps"] = _Job(ref._replace(steps=2 * ref.steps), eps)
      jobs[norm]["more_restarts"] = _Job(ref._replace(restarts=3 * ref.restarts), eps)
  return jobs


def sanity_report(
  attack_results: dict[str, dict[str, Any]],
  worst_case: dict[str, dict[str, Any]],
  extra: dict[str, dict[str, dict[str, Any]]],
  *,
  tol: float = 0.0,
) -> dict[str, Any]:
  """Gradient-masking checks on accuracies; returns ``{"passed", "warnings", ...}``.

  Checks (each allowing ``tol`` of slack in accuracy):

  1. every attack's (and each worst case's) accuracy is non-increasing in eps;
  2. the accuracy at a large eps (``extra[norm]["large_eps"]``) is zero;
  3. twice the steps (``"more_steps"``) and three times the restarts
     (``"more_restarts"``) never give a higher accuracy than the base run
     (``"base_accuracy"``).

  Args:
    attack_results: ``{name: {"eps": [...], "accuracy": [...]}}``.
    worst_case: ``{norm: {"eps": [...], "accuracy": [...]}}``.
    extra: ``{norm: {check: {"accuracy": a, ...}}}`` as built by :func:`evaluate`.
    tol: allowed slack.

  Returns:
    A JSON-able dict with ``passed`` (bool), ``warnings`` (list of str) and
    the per-check details.
  """
  problems = []
  curves = [(f"attack {k!r}", v) for k, v in attack_results.items()]
  curves += [(f"worst case {k!r}", v) for k, v in worst_case.items()]
  for label, res in curves:
    order = np.argsort(res["eps"], kind="stable")
    eps, acc = np.asarray(res["eps"])[order], np.asarray(res["accuracy"])[order]
    for i in range(1, len(eps)):
      if acc[i] > acc[i - 1] + tol:
        problems.append(
          f"{label}: accuracy rises with eps ({acc[i - 1]:.4f} at eps={eps[i - 1]:g} -> "
          f"{acc[i]:.4f} at eps={eps[i]:g})"
        )
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
  return {"passed": not problems, "warnings": problems, "tol": float(tol), "runs": extra}


def evaluate(
  apply_fn: ApplyFn,
  params: Params,
  images: Any,
  labels: Any,
  *,
  key: jax.Array,
  attacks: Sequence[AttackSpec] | None = None,
  noise_stds: Sequence[float] = (0.1, 0.2, 0.3, 0.5),
  batch_size: int = 256,
  bounds: tuple[float, float] = (0.0, 1.0),
  sanity: bool = True,
  large_eps: dict[str, float] | None = None,
  sanity_tol: float = 0.0,
  progress: bool = True,
) -> dict[str, Any]:
  """Clean, white-noise and adversarial accuracy of a classifier, as a JSON-able dict.

  .. math::
    \\mathrm{acc}_{\\mathcal A}(\\epsilon) = \\frac{1}{N} \\sum_{n=1}^{N}
    \\mathbb 1[\\hat y(x_n) = y_n]\\ \\mathbb 1[\\hat y(\\mathcal A_\\epsilon(x_n)) = y_n],
    \\qquad \\mathrm{worst}(\\epsilon) = \\frac{1}{N} \\sum_n \\mathbb 1[\\hat y(x_n) = y_n]
    \\prod_{\\mathcal A} \\mathbb 1[\\hat y(\\mathcal A_\\epsilon(x_n)) = y_n].

  The dataset is processed in batches of ``batch_size`` (the last one padded,
  so every attack compiles once); batch ``i`` draws its randomness from
  ``jax.random.fold_in(key, i)``.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, C)``, hashable (e.g.
      ``model.apply``); examples must be independent (inference mode).
    params: model parameters (for Flax linen: ``{"params": p}``).
    images: float array ``(N, ...)`` inside ``bounds`` (NumPy or JAX).
    labels: integer array ``(N,)`` in ``[0, C)``.
    key: PRNG key for noise and random starts.
    attacks: :class:`AttackSpec` entries with unique names; ``None`` takes
      :func:`default_attacks`; ``()`` runs no attack.
    noise_stds: standard deviations of the Gaussian noise, each >= 0.
    batch_size: examples per batch.
    bounds: the input box ``(low, high)``.
    sanity: run the gradient-masking checks. Extra runs per norm, on the
      first PGD (else APGD) attack of that norm at its middle eps: twice the
      steps, three times the restarts; and PGD with the margin loss at
      ``large_eps``. The first two reuse the base run's key, so the
      comparison is paired: the same random start with more steps, and
      restarts that contain the base run (restart ``r`` draws from
      ``fold_in(key, r)``), so a rise in accuracy is not sampling noise.
    large_eps: ``{norm: eps}`` for the zero-accuracy check; default: the
      whole box, ``u - l`` for l_inf and ``(u - l) sqrt(d)`` for l_2
      (required when the box is infinite).
    sanity_tol: accuracy slack of the sanity checks.
    progress: show a tqdm progress bar.

  Returns:
    ``{"num_examples", "bounds", "clean_accuracy", "noise": {"std",
    "accuracy"}, "attacks": {name: {..., "eps", "accuracy"}}, "worst_case":
    {norm: {"eps", "accuracy", "attacks"}}, "sanity": {"passed", "warnings",
    ...}}`` (``"sanity"`` is ``None`` when ``sanity=False``).

  Raises:
    GradientMaskingWarning: (a warning) when a sanity check fails.

  Example:
    >>> report = jaxjac.evaluate(model.apply, variables, ds.test_images[:1000],
    ...                          ds.test_labels[:1000], key=jax.random.key(0))
    >>> json.dump(report, open("robustness.json", "w"))
  """
  if not callable(apply_fn):
    raise TypeError(f"`apply_fn` must be callable as apply_fn(params, x), got {apply_fn!r}.")
  checks.check_key(key, needed_by="evaluate (noise and random starts)")
  bounds = attacks_lib.check_bounds(bounds)
  batch_size = checks.check_positive_int(batch_size, "batch_size")
  images = np.asarray(images)
  labels = np.asarray(labels)
  checks.check_float_array(images, "images", min_ndim=2)
  n = images.shape[0]
  if n == 0:
    raise ValueError("`images` must hold at least one example.")
  out_shape = checks.batch_output_shape(
    lambda xb: apply_fn(params, xb), jax.ShapeDtypeStruct(images[:1].shape, images.dtype)
  )
  if len(out_shape) != 2:
    raise ValueError(f"`apply_fn` must return logits of shape (B, C), got {out_shape}.")
  attacks_lib._check_labels(labels, "labels", n, out_shape[1])
  attacks_lib.check_in_box(images, bounds, "images")
  noise_stds = tuple(float(s) for s in noise_stds)
  for s in noise_stds:
    checks.check_eps(s, "noise_stds")
  specs = default_attacks() if attacks is None else tuple(attacks)
  specs = tuple(_check_spec(s, out_shape[1]) for s in specs)
  names = [s.name for s in specs]
  if len(set(names)) != len(names):
    raise ValueError(f"`attacks` must have unique names, got {names}.")
  jobs = [_Job(s, e) for s in specs for e in s.eps]
  extra_jobs = {}
  if sanity and specs:
    d = math.prod(images.shape[1:])
    width = bounds[1] - bounds[0]
    default_large = {"linf": width, "l2": width * math.sqrt(d)}
    for k in large_eps or {}:
      checks.check_choice(k, "large_eps key", attacks_lib.NORMS)
    large = {**default_large, **(large_eps or {})}
    for norm in {s.norm for s in specs}:
      checks.check_eps(large[norm], f"large_eps[{norm!r}]")
    extra_jobs = _sanity_jobs(specs, large)
  flat_extra = [(norm, c, j) for norm, cs in extra_jobs.items() for c, j in cs.items()]
  extra_list = [j for _, _, j in flat_extra]
  # The base job (same attack name and eps) of each more-steps / more-restarts run.
  extra_base = [
    None if c == "large_eps" else next(
      i for i, b in enumerate(jobs) if b.spec.name == j.spec.name and b.eps == j.eps)
    for _, c, j in flat_extra
  ]  # fmt: skip

  clean = np.zeros(n, bool)
  noise = np.zeros((len(noise_stds), n), bool)
  robust = np.zeros((len(jobs), n), bool)
  robust_extra = np.zeros((len(flat_extra), n), bool)
  num_batches = -(-n // batch_size)
  for b in tqdm.tqdm(range(num_batches), desc="evaluate", disable=not progress):
    lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
    pad = batch_size - (hi - lo) if num_batches > 1 else 0
    xb = jnp.asarray(np.concatenate([images[lo:hi], np.repeat(images[hi - 1 : hi], pad, 0)]))
    yb = jnp.asarray(np.concatenate([labels[lo:hi], np.repeat(labels[hi - 1 : hi], pad, 0)]))
    k_noise, k_attack, k_extra = jax.random.split(jax.random.fold_in(key, b), 3)
    ok = np.asarray(_correct(apply_fn, params, xb, yb))
    clean[lo:hi] = ok[: hi - lo]
    for i, std in enumerate(noise_stds):
      row = _noise_correct(apply_fn, bounds, params, xb, yb, std, jax.random.fold_in(k_noise, i))
      noise[i, lo:hi] = np.asarray(row)[: hi - lo]

    def robust_flags(job, k):
      x_adv = _run_attack(job.spec, job.eps, apply_fn, params, xb, yb, key=k, bounds=bounds)
      return (ok & np.asarray(_correct(apply_fn, params, x_adv, yb)))[: hi - lo]  # noqa: B023

    for i, job in enumerate(jobs):
      robust[i, lo:hi] = robust_flags(job, jax.random.fold_in(k_attack, i))
    for i, (job, base) in enumerate(zip(extra_list, extra_base, strict=True)):
      # Paired sanity runs: more steps / more restarts reuse their base run's key.
      k = jax.random.fold_in(k_extra, i) if base is None else jax.random.fold_in(k_attack, base)
      robust_extra[i, lo:hi] = robust_flags(job, k)

  accuracy = lambda flags: float(np.mean(flags))
  attack_results = {}
  for spec in specs:
    rows = [i for i, j in enumerate(jobs) if j.spec is spec]
    attack_results[spec.name] = {
      "method": spec.method,
      "norm": spec.norm,
      "loss": spec.loss,
      "steps": spec.steps,
      "restarts": spec.restarts,
      "step_size": spec.step_size,
      "eps": [jobs[i].eps for i in rows],
      "accuracy": [accuracy(robust[i]) for i in rows],
    }
  worst_case = {}
  for norm in dict.fromkeys(s.norm for s in specs):
    eps_grid = sorted({j.eps for j in jobs if j.spec.norm == norm})
    flags = []
    for e in eps_grid:
      rows = [i for i, j in enumerate(jobs) if j.spec.norm == norm and j.eps == e]
      flags.append(np.all(robust[rows], axis=0))
    worst_case[norm] = {
      "eps": eps_grid,
      "accuracy": [accuracy(f) for f in flags],
      "attacks": [s.name for s in specs if s.norm == norm],
    }
  result: dict[str, Any] = {
    "num_examples": int(n),
    "bounds": list(bounds),
    "clean_accuracy": accuracy(clean),
    "noise": {"std": list(noise_stds), "accuracy": [accuracy(r) for r in noise]},
    "attacks": attack_results,
    "worst_case": worst_case,
    "sanity": None,
  }
  if sanity:
    extra: dict[str, dict[str, Any]] = {}
    for i, (norm, check, job) in enumerate(flat_extra):
      entry = {
        "attack": f"{job.spec.method} {job.spec.loss} steps={job.spec.steps} "
        f"restarts={job.spec.restarts}",
        "eps": job.eps,
        "accuracy": accuracy(robust_extra[i]),
      }
      if check != "large_eps":
        base = attack_results[job.spec.name]
        entry["base_accuracy"] = base["accuracy"][base["eps"].index(job.eps)]
      extra.setdefault(norm, {})[check] = entry
    report = sanity_report(attack_results, worst_case, extra, tol=sanity_tol)
    result["sanity"] = report
    if not report["passed"]:
      warnings.warn(
        "Robustness sanity checks failed (gradient masking or a too-weak attack?): "
        + "; ".join(report["warnings"]),
        GradientMaskingWarning,
        stacklevel=2,
      )
  return result
