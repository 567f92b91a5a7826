"""Flax linen classifiers for MNIST-sized images: LeNet' and an MLP.

Both take float images ``(B, H, W, C)`` (MNIST: ``(B, 28, 28, 1)`` in
``[0, 1]``) and return logits ``(B, num_classes)``. They fit the library's
``apply_fn(params, x)`` convention as ``apply_fn = model.apply`` with
``params = {"params": p}`` (the variables dict); evaluation mode
(``train=False``) is the default, so ``model.apply(variables, x)`` is the
deterministic function whose Jacobian the penalties and attacks use. With
``dropout_rate > 0`` and ``train=True`` the dropout masks come from the rng
stream ``"dropout"``:
``model.apply(variables, x, train=True, rngs={"dropout": key})``.

LeNet' pools by :func:`_max_pool`, a reshape and a select of the first maximal
element of each window (a stop-gradient mask): equal to
``flax.linen.max_pool(x, (2, 2), strides=(2, 2))`` in value **and** in every
derivative, ties included (the cotangent goes to one element, the first
maximal one in row-major window order, as ``reduce_window``'s
``select_and_scatter_add`` and PyTorch's ``max_pool2d`` do), and cheaper to
differentiate twice on XLA:CPU (``benchmarks/bench_jr.py --sections pool``).
Ties are common on real images: on MNIST's constant background the first
convolution outputs its bias, so whole windows hold the same positive value.

References:
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019. (LeNet', Section 4.)
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxjac._src import checks

MODELS = ("lenet", "mlp")


def _check_images(x: jax.Array, name: str) -> None:
  checks.check_float_array(x, "x")
  if x.ndim != 4:
    raise ValueError(
      f"`x` for {name} must be images of shape (B, H, W, C), e.g. (B, 28, 28, 1), "
      f"got shape {tuple(x.shape)}; add the channel axis with `x[..., None]`."
    )


def _max_pool(x: jax.Array, window: tuple[int, int] = (2, 2)) -> jax.Array:
  """Non-overlapping max-pooling of NHWC images (stride = window, VALID padding).

  .. math::
    \\mathrm{pool}(x)_{n,i,j,c} = x_{n,\\, k_h i + a^*,\\, k_w j + b^*,\\, c},
    \\quad (a^*, b^*) = \\text{first } \\arg\\max_{(a, b)} x_{n,\\, k_h i + a,\\, k_w j + b,\\, c}

  with "first" in row-major order over the window. The mask of the selected
  element is computed under ``stop_gradient``, so the pool is linear in ``x``
  for its derivatives: every cotangent goes to the one selected element, as in
  ``flax.linen.max_pool`` (``reduce_window``) and PyTorch, and the derivatives
  of any order are element-wise selects and sums (``reduce_window``'s
  second derivative, ``select_and_gather_add``, is slow on XLA:CPU). The value
  is XLA's maximum, NaN included where XLA's maximum is NaN.
  """
  kh, kw = window
  b, h, w, c = x.shape
  oh, ow = h // kh, w // kw
  win = x[:, : oh * kh, : ow * kw, :].reshape(b, oh, kh, ow, kw, c)
  top = jax.lax.stop_gradient(jnp.max(win, axis=(2, 4)))  # (b, oh, ow, c)
  # Walk the window in row-major order and keep the first element equal to the maximum.
  # Where none is (a NaN maximum), the output stays the maximum, without a derivative.
  out, taken = top, jnp.zeros(top.shape, bool)
  for i in range(kh):
    for j in range(kw):
      elem = win[:, :, i, :, j, :]
      sel = (jax.lax.stop_gradient(elem) == top) & ~taken
      out = jnp.where(sel, elem, out)
      taken = taken | sel
  return out


def _check_dropout(rate: float) -> None:
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
    raise ValueError(f"`dropout_rate` must be a float in [0, 1), got {rate!r}.")


class LeNet(nn.Module):
  """LeNet' of Hoffman et al.: two 5x5 conv + max-pool blocks, two dense layers.

  ``conv 5x5x32 (SAME) - ReLU - maxpool 2 - conv 5x5x64 (SAME) - ReLU -
  maxpool 2 - dense 1024 - ReLU - [dropout] - dense num_classes``. On MNIST
  that is 3.27M parameters. Dropout, when ``dropout_rate > 0``, acts on the
  1024 hidden units in training mode only.

  Attributes:
    num_classes: number of logits ``C``.
    dropout_rate: dropout probability in ``[0, 1)`` for the dense hidden layer.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = LeNet()
    >>> x = jnp.zeros((2, 28, 28, 1))
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only
    >>> sum(p.size for p in jax.tree.leaves(variables))
    3274634
    >>> jax.eval_shape(model.apply, variables, x).shape
    (2, 10)

  References:
    Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
    arXiv:1908.02729, 2019.
  """

  num_classes: int = 10
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Logits ``(B, num_classes)`` of float images ``x`` ``(B, H, W, C)``."""
    checks.check_positive_int(self.num_classes, "num_classes")
    _check_dropout(self.dropout_rate)
    _check_images(x, "LeNet")
    x = nn.relu(nn.Conv(32, (5, 5), padding="SAME")(x))
    x = _max_pool(x)  # = nn.max_pool with its derivatives, faster to differentiate twice
    x = nn.relu(nn.Conv(64, (5, 5), padding="SAME")(x))
    x = _max_pool(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(1024)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


class MLP(nn.Module):
  """Fully connected ReLU network on flattened images: ``d - features... - C``.

  The default ``features=(1024, 1024)`` gives 784-1024-1024-10 on MNIST.
  Dropout, when ``dropout_rate > 0``, follows every hidden layer in training
  mode.

  Attributes:
    features: widths of the hidden layers (may be empty: a linear model).
    num_classes: number of logits ``C``.
    dropout_rate: dropout probability in ``[0, 1)`` after each hidden layer.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = MLP(features=(32,))
    >>> x = jnp.zeros((2, 28, 28, 1))
    >>> variables = model.init(jax.random.key(0), x)
    >>> model.apply(variables, x).shape
    (2, 10)
  """

  features: Sequence[int] = (1024, 1024)
  num_classes: int = 10
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Logits ``(B, num_classes)`` of float images ``x`` ``(B, H, W, C)``."""
    checks.check_positive_int(self.num_classes, "num_classes")
    for width in self.features:
      checks.check_positive_int(width, "features[i]")
    _check_dropout(self.dropout_rate)
    _check_images(x, "MLP")
    x = x.reshape((x.shape[0], -1))
    for width in self.features:
      x = nn.relu(nn.Dense(width)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def get_model(name: str, **kwargs) -> nn.Module:
  """A model by name: ``"lenet"`` (:class:`LeNet`) or ``"mlp"`` (:class:`MLP`).

  Args:
    name: ``"lenet"`` or ``"mlp"``.
    **kwargs: the model's attributes, e.g. ``dropout_rate=0.5`` or
      ``features=(256,)`` (MLP only).

  Returns:
    An unbound Flax linen module.

  Raises:
    ValueError: unknown ``name``.
    TypeError: an attribute the model does not have.

  Example:
    >>> get_model("mlp", features=[64])
    MLP(
        # attributes
        features = (64,)
        num_classes = 10
        dropout_rate = 0.0
    )
  """
  checks.check_choice(name, "name", MODELS)
  cls: type[LeNet] | type[MLP] = {"lenet": LeNet, "mlp": MLP}[name]
  fields = {f for f in cls.__dataclass_fields__ if f not in ("parent", "name")}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise TypeError(
      f"`get_model({name!r}, ...)` got unknown keyword(s) {unknown}; "
      f"{cls.__name__} accepts {sorted(fields)}."
    )
  if "features" in kwargs:
    kwargs["features"] = tuple(kwargs["features"])
  return cls(**kwargs)
