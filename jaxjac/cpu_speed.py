"""Faster building blocks for XLA:CPU (see ``benchmarks/README.md``).

``max_pool``: non-overlapping max-pooling by reshape, equal in value to
``flax.linen.max_pool(x, window, strides=window)`` and cheaper to
differentiate twice on CPU (the Jacobian penalty's training step).
"""

from jaxjac._src.cpu_speed import max_pool as max_pool

__all__ = ("max_pool",)
