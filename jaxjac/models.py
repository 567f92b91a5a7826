"""Classifiers: LeNet' (Hoffman et al. 2019) and an MLP, as Flax linen modules.

``apply_fn = model.apply`` and ``params = {"params": p}`` plug into every
``jaxjac`` function taking ``(apply_fn, params, x)``.
"""

from jaxjac._src.models import MLP as MLP
from jaxjac._src.models import MODELS as MODELS
from jaxjac._src.models import LeNet as LeNet
from jaxjac._src.models import get_model as get_model

__all__ = ("MLP", "MODELS", "LeNet", "get_model")
