"""Every example in the public docstrings of the core modules runs and prints what it says.

The attack, evaluation, data and sharding modules run theirs in their own test files.
"""

import doctest
import importlib

import jax
import pytest

from jaxjac._src import (
  checks,
  estimators,
  jacobian,
  metrics,
  models,
  penalty,
  precision,
  surrogates,
)

# The attack package re-exports the functions `fab` and `square` under the modules' names.
fab = importlib.import_module("jaxjac._src.attacks.fab")
square = importlib.import_module("jaxjac._src.attacks.square")
MODULES = [jacobian, estimators, penalty, surrogates, models, precision, metrics, fab, square]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
  with jax.numpy_rank_promotion("allow"):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.failed == 0
  assert result.attempted > 0


@pytest.mark.parametrize("module", MODULES + [checks], ids=lambda m: m.__name__)
def test_every_public_function_has_an_example(module):
  """The public functions (exported by ``jaxjac``) carry ``>>>`` examples."""
  import jaxjac  # noqa: PLC0415

  exported = {name for name in jaxjac.__all__} | set(jaxjac.precision.__all__)
  exported |= set(jaxjac.models.__all__)
  missing = [
    name
    for name, obj in vars(module).items()
    if name in exported
    and callable(obj)
    and getattr(obj, "__module__", None) == module.__name__
    and ">>>" not in (obj.__doc__ or "")
  ]
  assert not missing, f"{module.__name__}: no doctest example in {missing}"
