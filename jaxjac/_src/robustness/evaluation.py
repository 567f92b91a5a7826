"""Robustness evaluation: clean, white-noise and adversarial accuracy, with sanity checks.

:func:`evaluate` runs over a dataset in batches of at most ``batch_size``
examples; a part batch (the last one, or the few examples a cascade still has
to attack) is padded to the next power of two, so each attack compiles for at
most ``log2(batch_size) + 1`` shapes and a cascade's late attacks cost in
proportion to the examples left:

* the clean accuracy;
* the accuracy under Gaussian white noise ``clip(x + sigma n, l, u)``,
  ``n ~ N(0, I)``, for each standard deviation ``sigma``;
* every attack (:class:`~jaxjac.robustness.AttackSpec`) at each of its radii,
  on the correctly classified examples, scheduled by the suite (see
  :mod:`jaxjac.robustness`): a cascade (``"standard"``) or independently
  (``"fast"``);
* the worst case per norm and radius over the attacks that ran at that
  radius: an example is robust only if no attack broke it;
* the sanity report of :mod:`jaxjac._src.robustness.sanity`, its failures
  raised as a :class:`GradientMaskingWarning`.

The result is a plain dict of Python numbers, strings and lists that
``json.dump`` writes as is.

References:
  Croce, Hein. Reliable evaluation of adversarial robustness with an
  ensemble of diverse parameter-free attacks. arXiv:2003.01690, 2020.
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019 (white-noise robustness).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from jaxjac._src import checks
from jaxjac._src.attacks import validation
from jaxjac._src.attacks.norms import RULES
from jaxjac._src.jacobian import ApplyFn, Params
from jaxjac._src.robustness import registry
from jaxjac._src.robustness import specs as specs_lib
from jaxjac._src.robustness.sanity import (
  GradientMaskingWarning,
  Job,
  model_checks,
  sanity_jobs,
  sanity_report,
)


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _correct(apply_fn, params, x, y):
  return jnp.argmax(apply_fn(params, x), axis=-1) == y


@functools.partial(jax.jit, static_argnames=("apply_fn", "bounds"))
def _noise_correct(apply_fn, bounds, params, x, y, std, key):
  noisy = jnp.clip(x + std * jax.random.normal(key, x.shape, x.dtype), *bounds)
  return _correct(apply_fn, params, noisy, y)


def padded_size(n: int, size: int) -> int:
  """The batch a part of ``n <= size`` examples is padded to: the next power of two, at
  most ``size``. A cascade hands each attack the examples still robust, often a few; a
  full-size batch for them would cost as much as attacking every example, while powers
  of two keep the compiled shapes per attack to ``log2(size) + 1``."""
  return min(size, 1 << max(n - 1, 0).bit_length())


class _Data:
  """The dataset on the host and its batches of at most ``batch_size`` examples; a part
  batch is padded (by repeating its last example) to :func:`padded_size`."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int):
    self.images, self.labels = images, labels
    self.size = min(batch_size, len(labels))

  def batches(self, idx: np.ndarray) -> Iterator[tuple[int, np.ndarray, jax.Array, jax.Array]]:
    """``(b, sel, x, y)`` per batch of the examples ``idx``, padded by repeating the last."""
    for b, start in enumerate(range(0, len(idx), self.size)):
      sel = idx[start : start + self.size]
      padded = np.concatenate(
        [sel, np.repeat(sel[-1:], padded_size(len(sel), self.size) - len(sel))]
      )
      yield b, sel, jnp.asarray(self.images[padded]), jnp.asarray(self.labels[padded])


def _check_output(job: Job, x: jax.Array, x_adv: jax.Array, bounds) -> None:
  """An attack's output must be finite, in the box and in the ball (else it is not counted)."""
  adv = np.asarray(x_adv)
  size = np.asarray(RULES[job.spec.norm].size(jnp.asarray(adv - np.asarray(x))))
  slack = 1e-4 * job.eps + 1e-6
  ok = np.isfinite(adv).all() and (adv >= bounds[0] - 1e-6).all()
  if not (ok and (adv <= bounds[1] + 1e-6).all() and (size <= job.eps + slack).all()):
    raise RuntimeError(
      f"attack {job.spec.name!r} at eps={job.eps:g} returned points outside the "
      f"{job.spec.norm} ball or the box bounds={bounds} (largest perturbation "
      f"{float(np.nanmax(size)):.6g}); its results cannot be counted."
    )


def _run(
  job: Job, data: _Data, idx: np.ndarray, key: jax.Array, model, bounds
) -> tuple[np.ndarray, float]:
  """Runs one attack at one radius on the examples ``idx``; returns which it broke (N,)
  and the wall time in seconds (compilation included, results on the host)."""
  apply_fn, params = model
  runner = registry.RUNNERS[job.spec.method]
  broken = np.zeros(len(data.labels), bool)
  t0 = time.perf_counter()
  for b, sel, xb, yb in data.batches(idx):
    x_adv = runner.run(
      job.spec, job.eps, apply_fn, params, xb, yb, key=jax.random.fold_in(key, b), bounds=bounds
    )
    _check_output(job, xb, x_adv, bounds)
    broken[sel] = ~np.asarray(_correct(apply_fn, params, x_adv, yb))[: len(sel)]
  return broken, time.perf_counter() - t0


def _groups(jobs: Sequence[Job]) -> dict[tuple[str, float], list[int]]:
  """Job indices per (norm, radius), in the order given."""
  groups: dict[tuple[str, float], list[int]] = {}
  for i, job in enumerate(jobs):
    groups.setdefault((job.spec.norm, job.eps), []).append(i)
  return groups


def _check_arguments(
  apply_fn, params, images, labels, key, suite, batch_size, bounds
) -> tuple[np.ndarray, np.ndarray, int, int, tuple[float, float]]:
  """The validated ``(images, labels, num_classes, batch_size, bounds)``, on the host."""
  validation.check_apply_fn(apply_fn)
  validation.check_key(key, needed_by="evaluate (noise and random starts)")
  checks.check_choice(suite, "suite", specs_lib.SUITES)
  batch_size = checks.check_positive_int(batch_size, "batch_size")
  bounds = validation.check_bounds(bounds)
  images, labels = np.asarray(images), np.asarray(labels)
  classes = validation.check_inputs(
    apply_fn, params, images, labels, bounds=bounds, names=("images", "labels")
  )
  return images, labels, classes, batch_size, bounds


def _large_eps(large_eps, images, bounds, norms) -> dict[str, float]:
  width = bounds[1] - bounds[0]
  default = {"linf": width, "l2": width * math.sqrt(math.prod(images.shape[1:]))}
  if large_eps is not None and not isinstance(large_eps, dict):
    raise TypeError(f"`large_eps` must be a dict {{norm: eps}} or None, got {large_eps!r}.")
  for k in large_eps or {}:
    checks.check_choice(k, "large_eps key", tuple(default))
  large = {**default, **(large_eps or {})}
  for norm in norms:
    checks.check_eps(large[norm], f"large_eps[{norm!r}]")
  return large


def evaluate(
  apply_fn: ApplyFn,
  params: Params,
  images: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  key: jax.Array,
  suite: str = "standard",
  attacks: Sequence[specs_lib.AttackSpec] | None = None,
  noise_stds: Sequence[float] = (0.1, 0.2, 0.3, 0.5),
  batch_size: int = 256,
  bounds: tuple[float, float] = (0.0, 1.0),
  sanity: bool = True,
  large_eps: dict[str, float] | None = None,
  sanity_tol: float = 0.0,
  progress: bool = True,
  return_per_example: bool = False,
) -> dict[str, Any]:
  """Clean, white-noise and adversarial accuracy of a classifier, as a JSON-able dict.

  With ``R_A(eps)`` the examples attack ``A`` broke at radius ``eps``,

  .. math::
    \\mathrm{acc}_{\\mathcal A}(\\epsilon) = \\frac{1}{N} \\sum_{n=1}^{N}
    \\mathbb 1[\\hat y(x_n) = y_n]\\ \\mathbb 1[n \\notin R_{\\mathcal A}(\\epsilon)],
    \\qquad \\mathrm{worst}(\\epsilon) = \\frac{1}{N} \\sum_n \\mathbb 1[\\hat y(x_n) = y_n]
    \\prod_{\\mathcal A \\text{ at } \\epsilon} \\mathbb 1[n \\notin R_{\\mathcal A}(\\epsilon)].

  With ``suite="standard"`` the attacks at a radius run as a cascade, each on
  the examples no earlier one broke, and an attack's ``accuracy`` is the
  robust accuracy after it (cumulative, as AutoAttack reports it); with
  ``suite="fast"`` each runs on every correctly classified example and its
  ``accuracy`` is its own. Either way ``worst_case`` is over the attacks that
  ran at each radius. Attack ``j`` (in the order of ``attacks``, one per
  radius) draws batch ``b``'s randomness from ``fold_in(fold_in(k, j), b)``.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (B, C)``, hashable (e.g.
      ``model.apply``); examples must be independent (inference mode).
    params: model parameters (for Flax linen: ``{"params": p}``).
    images: float array ``(N, ...)``, finite and inside ``bounds``.
    labels: integer array ``(N,)`` in ``[0, C)``.
    key: PRNG key for noise and random starts.
    suite: ``"standard"`` (AutoAttack's APGD-CE, APGD-T, FAB-T, Square as a
      cascade; the default, what a reviewer accepts) or ``"fast"`` (FGSM,
      PGD, APGD, each on all examples).
    attacks: :class:`~jaxjac.robustness.AttackSpec` entries with unique
      names, run with the suite's schedule; ``None`` takes the suite's
      attacks (:func:`~jaxjac.robustness.standard_attacks` or
      :func:`~jaxjac.robustness.fast_attacks`); ``()`` runs none.
    noise_stds: standard deviations of the Gaussian noise, each >= 0.
    batch_size: examples per batch; a part batch is padded to the next power
      of two (each attack compiles once per padded size).
    bounds: the input box ``(low, high)``.
    sanity: run the sanity checks of :func:`~jaxjac.robustness.sanity_report`.
      Extra runs per norm, on the first PGD (else APGD) attack of that norm
      at its middle eps, on the same examples and with the same keys as that
      run (paired, so a rise is not sampling noise): twice the steps, three
      times the restarts; and PGD with the margin loss at ``large_eps``. The
      model checks (randomness, probability outputs, zero gradients) use the
      first batch; the gradient-free check compares, per radius, the worst
      case with and without the gradient-free attacks.
    large_eps: ``{norm: eps}`` for the zero-accuracy check; default: the
      whole box, ``u - l`` for l_inf and ``(u - l) sqrt(d)`` for l_2
      (required when the box is infinite).
    sanity_tol: accuracy slack of the sanity checks.
    progress: show a tqdm progress bar.
    return_per_example: add ``"per_example"``: the clean mask, per attack and
      radius which examples it broke, and per norm and radius the worst-case
      robust mask (lists of bools of length N).

  Returns:
    ``{"num_examples", "bounds", "suite", "clean_accuracy", "noise": {"std",
    "accuracy"}, "attacks": {name: {"method", ..., "eps", "accuracy",
    "num_broken", "num_attacked", "seconds"}}, "worst_case": {norm: {"eps",
    "accuracy", "attacks"}}, "sanity": {"passed", "warnings", ...}}``
    (``"sanity"`` is ``None`` when ``sanity=False``). Per radius,
    ``num_attacked`` counts the examples the attack ran on and ``seconds`` its
    wall time (compilation included).

  Raises:
    GradientMaskingWarning: (a warning) when a sanity check fails.

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import jaxjac
    >>> from jaxjac.robustness import AttackSpec
    >>> def apply_fn(w, x):
    ...   return x @ w
    >>> w = jnp.array([[1.0, -1.0], [-1.0, 1.0]])
    >>> x = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], np.float32)
    >>> y = np.array([0, 0, 1])
    >>> spec = AttackSpec("pgd", "pgd", "linf", (0.05, 0.2), steps=10)
    >>> report = jaxjac.evaluate(apply_fn, w, x, y, key=jax.random.key(0), suite="fast",
    ...                          attacks=(spec,), noise_stds=(), sanity=False, progress=False)
    >>> report["attacks"]["pgd"]["accuracy"]  # margins z_y - z_o: 1.6, 0.4, 1.2 vs. 4 eps
    [1.0, 0.6666666666666666]
  """
  images, labels, classes, batch_size, bounds = _check_arguments(
    apply_fn, params, images, labels, key, suite, batch_size, bounds
  )
  noise_stds = tuple(noise_stds)
  for s in noise_stds:
    checks.check_eps(s, "noise_stds")
  specs = specs_lib.SUITE_ATTACKS[suite]() if attacks is None else tuple(attacks)
  specs = tuple(specs_lib.check_spec(s, classes) for s in specs)
  names = [s.name for s in specs]
  if len(set(names)) != len(names):
    raise ValueError(f"`attacks` must have unique names, got {names}.")
  extra_jobs = {}
  if sanity and specs:
    large = _large_eps(large_eps, images, bounds, {s.norm for s in specs})
    extra_jobs = sanity_jobs(specs, large)
  jobs = [Job(s, e) for s in specs for e in s.eps]
  n, model = len(labels), (apply_fn, params)
  data = _Data(images, labels, batch_size)
  k_noise, k_attack, k_extra = jax.random.split(key, 3)

  clean = np.zeros(n, bool)
  noise = np.zeros((len(noise_stds), n), bool)
  for b, sel, xb, yb in data.batches(np.arange(n)):
    clean[sel] = np.asarray(_correct(apply_fn, params, xb, yb))[: len(sel)]
    for i, std in enumerate(noise_stds):
      k = jax.random.fold_in(jax.random.fold_in(k_noise, i), b)
      noise[i, sel] = np.asarray(_noise_correct(apply_fn, bounds, params, xb, yb, std, k))[
        : len(sel)
      ]

  cascade = suite == "standard"
  groups = _groups(jobs)
  broken = np.zeros((len(jobs), n), bool)
  ran = np.zeros((len(jobs), n), bool)
  seconds = np.zeros(len(jobs))
  total = len(jobs) + sum(len(c) for c in extra_jobs.values())
  bar = tqdm.tqdm(total=total, desc="evaluate", disable=not progress)
  for rows in groups.values():
    robust = clean.copy()
    for j in rows:
      ran[j] = robust if cascade else clean
      broken[j], seconds[j] = _run(jobs[j], data, np.flatnonzero(ran[j]),
                                   jax.random.fold_in(k_attack, j), model, bounds)  # fmt: skip
      robust &= ~broken[j]
      bar.update()

  accuracy = lambda flags: float(np.mean(flags))
  attack_results = {}
  for spec in specs:
    rows = [j for j, job in enumerate(jobs) if job.spec is spec]
    acc = []
    for j in rows:
      upto = groups[(spec.norm, jobs[j].eps)]
      upto = upto[: upto.index(j) + 1] if cascade else [j]
      acc.append(accuracy(clean & ~np.any(broken[upto], axis=0)))
    attack_results[spec.name] = {
      **{f: v for f, v in spec._asdict().items() if f not in ("name", "eps")},
      "eps": [jobs[j].eps for j in rows],
      "accuracy": acc,
      "num_broken": [int(broken[j].sum()) for j in rows],
      "num_attacked": [int(ran[j].sum()) for j in rows],
      "seconds": [float(seconds[j]) for j in rows],
    }
  worst_case: dict[str, dict[str, Any]] = {}
  worst_masks: dict[str, list[np.ndarray]] = {}
  for (norm, e), rows in sorted(groups.items(), key=lambda g: (g[0][0] != "linf", g[0][1])):
    mask = clean & ~np.any(broken[rows], axis=0)
    entry = worst_case.setdefault(norm, {"eps": [], "accuracy": [], "attacks": []})
    entry["eps"].append(e)
    entry["accuracy"].append(accuracy(mask))
    entry["attacks"].append([jobs[j].spec.name for j in rows])
    worst_masks.setdefault(norm, []).append(mask)

  result: dict[str, Any] = {
    "num_examples": int(n),
    "bounds": list(bounds),
    "suite": suite,
    "clean_accuracy": accuracy(clean),
    "noise": {"std": [float(s) for s in noise_stds], "accuracy": [accuracy(r) for r in noise]},
    "attacks": attack_results,
    "worst_case": worst_case,
    "sanity": None,
  }
  if sanity:
    extra = _sanity_runs(extra_jobs, jobs, broken, ran, clean, data, k_attack, k_extra, model,
                         bounds, bar)  # fmt: skip
    for norm, free in _gradient_free(jobs, groups, broken, clean, cascade).items():
      extra.setdefault(norm, {})["gradient_free"] = free
    checked = model_checks(apply_fn, params, *next(data.batches(np.arange(n)))[2:])
    report = sanity_report(attack_results, worst_case, extra, tol=sanity_tol, model=checked)
    result["sanity"] = report
    if not report["passed"]:
      warnings.warn(
        "Robustness sanity checks failed (gradient masking or a too-weak attack?): "
        + "; ".join(report["warnings"]),
        GradientMaskingWarning,
        stacklevel=2,
      )
  bar.close()
  if return_per_example:
    result["per_example"] = {
      "clean": clean.tolist(),
      "attacks": {
        s.name: {
          "eps": list(s.eps),
          "broken": [broken[j].tolist() for j, job in enumerate(jobs) if job.spec is s],
        }
        for s in specs
      },  # fmt: skip
      "worst_case": {
        norm: {"eps": worst_case[norm]["eps"], "robust": [m.tolist() for m in masks]}
        for norm, masks in worst_masks.items()
      },
    }
  return result


def _sanity_runs(
  extra_jobs, jobs, broken, ran, clean, data, k_attack, k_extra, model, bounds, bar
) -> dict[str, dict[str, Any]]:
  """Runs the extra jobs; the paired ones on their base run's examples and keys."""
  n = len(clean)
  extra: dict[str, dict[str, Any]] = {}
  for i, (norm, check, job) in enumerate(
    (norm, c, j) for norm, cs in extra_jobs.items() for c, j in cs.items()
  ):
    entry = {
      "attack": f"{job.spec.method} {job.spec.loss} steps={job.spec.steps} "
      f"restarts={job.spec.restarts}",
      "eps": job.eps,
    }
    if check == "large_eps":
      idx, key = np.flatnonzero(clean), jax.random.fold_in(k_extra, i)
    else:
      base = next(
        b for b, j in enumerate(jobs) if j.spec.name == job.spec.name and j.eps == job.eps
      )
      idx, key = np.flatnonzero(ran[base]), jax.random.fold_in(k_attack, base)
      entry["base_accuracy"] = float(np.sum(ran[base] & ~broken[base]) / n)
    hit, entry["seconds"] = _run(job, data, idx, key, model, bounds)
    entry["accuracy"] = float(np.sum(clean[idx] & ~hit[idx]) / n)
    extra.setdefault(norm, {})[check] = entry
    bar.update()
  return extra


def _gradient_free(jobs, groups, broken, clean, cascade) -> dict[str, dict[str, list]]:
  """Per norm and radius: worst case over the white-box attacks, and over all of them.

  In a cascade the comparison needs the gradient-free attacks last (as in the
  standard suite); radii where one runs before a white-box attack are left out.
  """
  out: dict[str, dict[str, list]] = {}
  for (norm, e), rows in sorted(groups.items()):
    free = [registry.RUNNERS[jobs[j].spec.method].gradient_free for j in rows]
    if not any(free) or all(free):
      continue
    if cascade and any(f and not g for f, g in zip(free, free[1:], strict=False)):
      continue
    white = [j for j, f in zip(rows, free, strict=True) if not f]
    entry = out.setdefault(norm, {"eps": [], "white_box_accuracy": [], "accuracy": []})
    entry["eps"].append(e)
    entry["white_box_accuracy"].append(float(np.mean(clean & ~np.any(broken[white], axis=0))))
    entry["accuracy"].append(float(np.mean(clean & ~np.any(broken[rows], axis=0))))
  return out
