"""The baselines jaxbp is timed against: PyTorch eager autograd and a NumPy backprop.

PyTorch and NumPy run as their users get them: their own default thread counts
and whatever ``OMP_*`` settings the environment has; nothing here changes them
(torch on one thread is the processes section's labelled extra row, in a
process of its own). torch is optional: imported only when a section asks.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import numpy as np

from jaxbp.core.nets import unstack
from benchmarks.config import Config


def load_torch():
  """The torch module, or None: the sections that need it then record why they skipped."""
  try:
    import torch
  except ImportError:
    return None
  return torch


def torch_skip(config: Config) -> Optional[str]:
  """Why the torch columns are skipped (``"skipped: ..."``), or None when torch runs."""
  if not config.torch:
    return "skipped: torch disabled (--no-torch)"
  return None if load_torch() is not None else "skipped: torch not installed"


def numpy_grad(Ws, x, y):
  """Seed 002's backprop in NumPy: biases as the last row of W, inputs padded with 1.

  Forward keeps every padded input and pre-activation; backward walks
  ``delta_{i} = (delta_{i+1} @ W_{i+1}[:-1].T) * S'(In_i)`` and takes each
  gradient as soon as its delta is known (seed 002: "so as not to store the
  delta array"). tanh hidden layers, identity output, mean squared error.
  """
  inputs, zs, h = [], [], x
  for k, W in enumerate(Ws):
    h_aug = np.concatenate([h, np.ones((h.shape[0], 1), h.dtype)], axis=1)
    z = h_aug @ W
    inputs.append(h_aug)
    zs.append(z)
    h = np.tanh(z) if k < len(Ws) - 1 else z
  delta = 2.0 * (h - y) / h.size          # d mean((h - y)^2) / dh, identity output
  grads = [None] * len(Ws)
  for k in reversed(range(len(Ws))):
    grads[k] = inputs[k].T @ delta
    if k > 0:
      delta = (delta @ Ws[k][:-1].T) * (1.0 - np.tanh(zs[k - 1]) ** 2)
  return grads


def torch_grad_fn(torch, params, x, y) -> Callable:
  """PyTorch eager autograd on the same params (``W`` as ``(in, out)``, ``addmm``)."""
  leaves = [torch.tensor(np.asarray(v)).requires_grad_() for p in params for v in (p.W, p.b)]
  tx, ty = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y))
  last = len(params) - 1

  def step():
    h = tx
    for k in range(len(params)):
      z = torch.addmm(leaves[2 * k + 1], h, leaves[2 * k])   # b + h @ W, one kernel
      h = torch.tanh(z) if k < last else z
    loss = torch.mean((h - ty) ** 2)
    return torch.autograd.grad(loss, leaves)

  return step


def torch_measure_loop(torch, net, samples, items) -> Callable:
  """The depth sweep's ``measure`` in PyTorch eager, one configuration after another.

  On the same unit-scale samples (so the same numbers): ``W = sqrt(sigma_w2)
  W_unit``, ``b = sqrt(sigma_b2) b_unit``, ``x = sqrt(v0) x_unit``, tanh hidden
  layers, the random readout loss ``sum(y * h_K)``. Like ``measure`` it asks
  only for the deltas (``autograd.grad`` with respect to every z: no dW is
  computed) and takes ``||dW_k||_F^2 = sum((h h^T) * (delta delta^T))`` from
  batch x batch Gram matrices; per layer ln mean_batch ||delta_l||^2,
  ln ||dW_l||^2, ln ||db_l||^2 and whether h_l is finite.

  Args:
    torch: the torch module.
    net: the sweep's stacked net.
    samples: the seeds' unit samples, stacked on a leading seed axis.
    items: ``(seed index, sigma_w2, sigma_b2, v0)`` per configuration.
  """
  per_seed = []
  for i in range(samples.x.shape[0]):
    layers = unstack(jax.tree_util.tree_map(lambda a: a[i], samples.params), net)
    per_seed.append(([torch.tensor(np.asarray(p.W)) for p in layers],
                     [torch.tensor(np.asarray(p.b)) for p in layers],
                     torch.tensor(np.asarray(samples.x[i])),
                     torch.tensor(np.asarray(samples.y[i]))))
  last = net.num_layers - 1

  def run():
    out = []
    for i, sw2, sb2, v0 in items:
      Wu, bu, xu, y = per_seed[i]
      Ws = [(math.sqrt(sw2) * W).requires_grad_() for W in Wu]
      bs = [(math.sqrt(sb2) * b).requires_grad_() for b in bu]
      h = math.sqrt(v0) * xu
      h_ins, zs, finite = [], [], []
      for k, (W, b) in enumerate(zip(Ws, bs)):
        h_ins.append(h)
        z = torch.addmm(b, h, W)
        zs.append(z)
        h = torch.tanh(z) if k < last else z
        finite.append(torch.isfinite(h).all())
      deltas = torch.autograd.grad(torch.sum(y * h), zs)
      with torch.no_grad():
        out.append((
            torch.stack([torch.log(torch.mean(torch.sum(d ** 2, 1))) for d in deltas]),
            torch.stack([torch.log(torch.sum((a @ a.T) * (d @ d.T)))
                         for a, d in zip(h_ins, deltas)]),
            torch.stack([torch.log(torch.sum(torch.sum(d, 0) ** 2)) for d in deltas]),
            torch.stack(finite)))
    return out

  return run
