"""Strict JAX for every test: rank promotion raises, tolerances per backend."""

import os

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MNIST = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "mnist")


def tol(cpu: float) -> float:
  """Tolerance helper: `cpu` on CPU, loosened 10x on accelerators (TF32 matmuls)."""
  return cpu if jax.default_backend() == "cpu" else 10 * cpu


@pytest.fixture
def mnist_dir():
  """The canonical MNIST IDX directory beside the repository, or skip."""
  path = os.environ.get("JAXJAC_DATA_DIR", SHARED_MNIST)
  if not os.path.isdir(path):
    pytest.skip(f"no MNIST IDX directory at {path}")
  return path
