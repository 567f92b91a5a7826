"""Faster building blocks for XLA:CPU, measured in ``benchmarks/bench_jr.py``.

**Max-pooling by reshape.** ``flax.linen.max_pool`` lowers to
``lax.reduce_window``; its gradient is ``select_and_scatter_add`` and the
gradient of that (needed when a Jacobian penalty is differentiated with
respect to the parameters) is ``select_and_gather_add``, both slow on XLA:CPU.
For non-overlapping windows (stride = window, the LeNet' case) the same
maximum is a reshape followed by ``max`` over two axes, whose derivatives are
plain element-wise selects and reductions:

.. math::
  \\mathrm{pool}(x)_{n,i,j,c} = \\max_{0 \\le a < k_h,\\ 0 \\le b < k_w}
  x_{n,\\, k_h i + a,\\, k_w j + b,\\, c}.

The forward values equal ``nn.max_pool(x, window, strides=window)`` (VALID
padding: trailing rows/columns that do not fill a window are not pooled,
exactly as there). Gradients are equal wherever the maximum of a window is
unique; at ties ``reduce_window`` sends the whole cotangent to one element
and ``jnp.max`` splits it evenly among the tied ones. After a ReLU the only
ties of probability > 0 are windows of zeros, whose ReLU derivative is 0, so
training is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from jaxjac._src import checks


def max_pool(x: jax.Array, window: Sequence[int] = (2, 2)) -> jax.Array:
  """Non-overlapping max-pooling of NHWC images by reshape (stride = window).

  Equal in value to ``flax.linen.max_pool(x, window, strides=window)``
  (VALID padding) and faster to differentiate twice on CPU; see the module
  docstring.

  Args:
    x: float array ``(B, H, W, C)``.
    window: ``(k_h, k_w)``, positive ints; the strides are the same.

  Returns:
    Array ``(B, H // k_h, W // k_w, C)``.

  Raises:
    ValueError: ``x`` not 4-D, or a window larger than the image.
    TypeError: non-int window entries or non-float ``x``.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(16.).reshape(1, 4, 4, 1)
    >>> max_pool(x)[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
  """
  checks.check_float_array(x, "x", min_ndim=4)
  if x.ndim != 4:
    raise ValueError(f"`x` must be NHWC images (B, H, W, C), got shape {tuple(x.shape)}.")
  if len(window) != 2:
    raise ValueError(f"`window` must be a pair (k_h, k_w), got {window!r}.")
  kh = checks.check_positive_int(window[0], "window[0]")
  kw = checks.check_positive_int(window[1], "window[1]")
  b, h, w, c = x.shape
  if kh > h or kw > w:
    raise ValueError(f"`window` {(kh, kw)} must fit in the image of size {(h, w)}.")
  oh, ow = h // kh, w // kw
  x = x[:, : oh * kh, : ow * kw, :]  # VALID padding, as reduce_window
  return x.reshape(b, oh, kh, ow, kw, c).max(axis=(2, 4))
