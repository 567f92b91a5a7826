"""The examples in the core docstrings run and print what they say."""

import doctest

import jax
import pytest

from jaxjac._src import jacobian, penalty


@pytest.mark.parametrize("module", [jacobian, penalty])
def test_docstring_examples(module):
  with jax.numpy_rank_promotion("allow"):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0
  assert result.failed == 0
