"""Mixed precision: low-precision compute with float32 parameters, inputs and penalties.

``mixed_precision(apply_fn)`` runs a model's forward pass (and every VJP/JVP
through it) in bfloat16 while parameters, gradients, input Jacobian products,
logits and the penalty's sums stay float32; ``with_precision(apply_fn,
"bfloat16")`` does the same from a configuration string.

Example::

  apply_bf16 = jaxjac.precision.mixed_precision(model.apply)
  penalty = jaxjac.jacobian_penalty(apply_bf16, {"params": params}, x)  # float32
"""

from jaxjac._src.precision import PRECISIONS as PRECISIONS
from jaxjac._src.precision import cast_floating as cast_floating
from jaxjac._src.precision import mixed_precision as mixed_precision
from jaxjac._src.precision import with_precision as with_precision

__all__ = ("PRECISIONS", "cast_floating", "mixed_precision", "with_precision")
