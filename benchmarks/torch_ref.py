"""PyTorch reference for the benchmark: LeNet' / MLP and the Jacobian penalty.

The same models as :mod:`jaxjac.models` and the algorithm of Hoffman et al.'s
reference code:

* random projections: for ``v`` uniform on the sphere ``S^{C-1}`` (one per
  example), one double-backward per projection,
  ``||J||_F^2 ~ C / n sum_i ||v_i^T J||^2`` with
  ``v_i^T J = autograd.grad(z, x, v_i, create_graph=True)``;
* exact: a loop over the ``C`` classes with one-hot ``v``.

Weights are copied from a Flax variables dict (:func:`load_flax_params`):
conv kernels ``(kh, kw, cin, cout) -> (cout, cin, kh, kw)``, dense kernels
transposed. The models take NCHW input; before flattening, LeNet' permutes its
activations to NHWC so that the first dense layer's weights equal Flax's
(Flax flattens ``(h, w, c)``).

Optional: needs ``pip install torch`` (the ``bench`` extra); never imported by
the library or its tests.

References:
  Hoffman, Roberts, Yaida. Robust Learning with Jacobian Regularization.
  arXiv:1908.02729, 2019.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
  """LeNet': conv 5x5x32 SAME, pool 2, conv 5x5x64 SAME, pool 2, dense 1024, dense C."""

  def __init__(self, num_classes: int = 10, image_size: int = 28, channels: int = 1):
    super().__init__()
    self.conv1 = nn.Conv2d(channels, 32, 5, padding=2)
    self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
    side = image_size // 4
    self.fc1 = nn.Linear(side * side * 64, 1024)
    self.fc2 = nn.Linear(1024, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # flatten as Flax (NHWC)
    return self.fc2(F.relu(self.fc1(x)))


class MLP(nn.Module):
  """ReLU MLP on flattened images, ``d - features... - C``."""

  def __init__(
    self, features: Sequence[int] = (1024, 1024), num_classes: int = 10, in_features: int = 784
  ):
    super().__init__()
    sizes = [in_features, *features]
    self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    self.out = nn.Linear(sizes[-1], num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    # NCHW -> NHWC before flattening, so the first layer matches Flax's.
    x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
    for layer in self.hidden:
      x = F.relu(layer(x))
    return self.out(x)


def _t(a) -> torch.Tensor:
  return torch.from_numpy(np.array(a, dtype=np.float32))


def load_flax_params(model: nn.Module, params: Mapping) -> nn.Module:
  """Copies Flax ``params`` (the inner ``{"params": ...}`` dict) into ``model``."""
  with torch.no_grad():
    if isinstance(model, LeNet):
      for mod, name in ((model.conv1, "Conv_0"), (model.conv2, "Conv_1")):
        mod.weight.copy_(_t(params[name]["kernel"]).permute(3, 2, 0, 1))
        mod.bias.copy_(_t(params[name]["bias"]))
      linears = [(model.fc1, "Dense_0"), (model.fc2, "Dense_1")]
    else:
      linears = [(m, f"Dense_{i}") for i, m in enumerate(model.hidden)]
      linears.append((model.out, f"Dense_{len(model.hidden)}"))
    for mod, name in linears:
      mod.weight.copy_(_t(params[name]["kernel"]).T)
      mod.bias.copy_(_t(params[name]["bias"]))
  return model


def frobenius_projection(model: nn.Module, x: torch.Tensor, v: torch.Tensor):
  """Batch mean of ``C / n sum_i ||v_i^T J_b||^2`` for unit ``v`` of shape ``(n, B, C)``.

  One double-backward (``create_graph=True``) per projection, as in the
  reference code. ``x`` must have ``requires_grad=True``. Returns
  ``(penalty, logits)``.
  """
  z = model(x)
  n, c = v.shape[0], z.shape[1]
  total = z.new_zeros(())
  for i in range(n):
    (g,) = torch.autograd.grad(z, x, grad_outputs=v[i], create_graph=True)
    total = total + g.pow(2).sum()
  return c * total / (n * x.shape[0]), z


def frobenius_exact(model: nn.Module, x: torch.Tensor):
  """Batch mean of ``||J_b||_F^2`` by a loop over the ``C`` one-hot cotangents.

  Returns ``(penalty, logits)``.
  """
  z = model(x)
  c = z.shape[1]
  total = z.new_zeros(())
  for k in range(c):
    e = torch.zeros_like(z)
    e[:, k] = 1.0
    (g,) = torch.autograd.grad(z, x, grad_outputs=e, create_graph=True)
    total = total + g.pow(2).sum()
  return total / x.shape[0], z


def make_train_step(
  model: nn.Module,
  *,
  mode: str,
  lam: float = 0.01,
  num_projections: int = 1,
  lr: float = 1e-3,
  seed: int = 0,
  device: str | torch.device | None = None,
):
  """``step(x, y)``: one Adam step on ``CE + lam/2 * penalty``.

  ``mode``: ``"plain"``, ``"projection"`` or ``"exact"``. ``device``: where the
  step runs (``"cpu"``, ``"cuda"``, a ``torch.device``); ``None`` takes CUDA
  when ``torch.cuda.is_available()``, else the CPU. The model is moved there
  (with ``torch.backends.cudnn.benchmark`` on for CUDA, as XLA autotunes its
  convolutions too), the projections are drawn there, and an input on another
  device is copied once per distinct tensor, so a timed loop over one batch
  times the step, not the copy. The returned loss stays on the device:
  ``float(loss)`` waits for the step.
  """
  if device is None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
  dev = torch.device(device)
  model.to(dev)
  if dev.type == "cuda":
    torch.backends.cudnn.benchmark = True
  opt = torch.optim.Adam(model.parameters(), lr=lr)
  gen = torch.Generator(device=dev).manual_seed(seed)
  copies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

  def on_device(t: torch.Tensor) -> torch.Tensor:
    if t.device == dev:
      return t
    hit = copies.get(id(t))
    if hit is None or hit[0] is not t:  # the original is kept, so its id is not reused
      hit = copies[id(t)] = (t, t.to(dev))
    return hit[1]

  def step(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = on_device(x), on_device(y)
    opt.zero_grad(set_to_none=True)
    if mode == "plain":
      loss = F.cross_entropy(model(x), y)
    else:
      xg = x.detach().requires_grad_(True)
      if mode == "projection":
        c = model.fc2.out_features if isinstance(model, LeNet) else model.out.out_features
        v = torch.randn((num_projections, x.shape[0], c), generator=gen, device=dev)
        v = v / v.norm(dim=-1, keepdim=True)
        pen, z = frobenius_projection(model, xg, v)
      elif mode == "exact":
        pen, z = frobenius_exact(model, xg)
      else:
        raise ValueError(f"`mode` must be 'plain', 'projection' or 'exact', got {mode!r}.")
      loss = F.cross_entropy(z, y) + 0.5 * lam * pen
    loss.backward()
    opt.step()
    return loss

  return step
