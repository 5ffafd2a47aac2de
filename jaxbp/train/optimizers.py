"""Optimizers by name, as optax chains: ``clip -> + weight decay -> sgd/momentum``.

Seed 004's momentum ``v_{t+1} = gamma v_t + eta g_t``, ``w_{t+1} = w_t - v_{t+1}``
is ``optax.sgd(eta, momentum=gamma)`` (optax keeps ``v / eta``: the same
trajectory) and ``torch.optim.SGD(lr=eta, momentum=gamma)``.

References:
  Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
  Sutskever, Martens, Dahl & Hinton, "On the importance of initialization and
  momentum in deep learning", ICML 2013.
  Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural
  networks", ICML 2013 (clipping by the global norm).
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import optax

OPTIMIZERS = ("sgd", "momentum", "nesterov")


def optimizer(name: str, learning_rate, momentum: Optional[float] = None,
              nesterov: bool = False, clip_norm: Optional[float] = None,
              weight_decay: Optional[float] = None) -> optax.GradientTransformation:
  """An optax optimizer by name: ``clip -> + weight decay -> sgd/momentum``.

  Args:
    name: ``"sgd"`` (plain, or heavy-ball with ``momentum``, as torch.optim.SGD),
      ``"momentum"`` or ``"nesterov"`` (both default to ``momentum=0.9``).
    learning_rate: eta > 0, or an optax schedule ``step -> eta``.
    momentum: gamma in ``v <- gamma v + g`` (Polyak 1964).
    nesterov: Nesterov's look-ahead form ``g + gamma v`` (Sutskever et al. 2013).
    clip_norm: rescale the gradient to global norm <= ``clip_norm`` (Pascanu et al. 2013).
    weight_decay: lambda of an L2 penalty ``lambda/2 ||w||^2``: ``lambda w`` joins the
      clipped gradient before the momentum, like torch SGD's coupled ``weight_decay``.

  Equal hashable arguments give the same object, so :func:`fit` (whose ``tx``
  is a static jit argument) reuses its compiled loop.

  >>> tx = optimizer("momentum", 0.01, momentum=0.9, clip_norm=1.0)
  >>> state = tx.init(jnp.zeros(3))
  """
  # floats, not arrays: hashable, for the cache.
  number = lambda v: v if v is None or callable(v) else float(v)
  return _optimizer(name, number(learning_rate), number(momentum), bool(nesterov),
                    number(clip_norm), number(weight_decay))


@functools.lru_cache(maxsize=256)
def _optimizer(name, learning_rate, momentum, nesterov, clip_norm, weight_decay):
  if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r}; valid names are {', '.join(OPTIMIZERS)}.")
  _check(callable(learning_rate) or 0 < float(learning_rate) < np.inf,
         f"learning_rate must be > 0 and finite, got {learning_rate!r}.", "optimizer")
  _check(momentum is None or 0 <= float(momentum) < 1,
         f"momentum must lie in [0, 1), got {momentum!r}.", "optimizer")
  for label, value in (("clip_norm", clip_norm), ("weight_decay", weight_decay)):
    _check(value is None or 0 < float(value) < np.inf,
           f"{label} must be > 0 and finite, or None; got {value!r}.", "optimizer")
  momentum = 0.9 if momentum is None and name.lower() != "sgd" else momentum
  nesterov = nesterov or name.lower() == "nesterov"
  _check(momentum is not None or not nesterov, "nesterov=True needs a momentum, e.g. 0.9.",
         "optimizer")
  chain = []
  if clip_norm is not None:
    chain.append(optax.clip_by_global_norm(clip_norm))   # clip the raw gradient first
  if weight_decay is not None:
    chain.append(optax.add_decayed_weights(weight_decay))  # g + lambda w, before momentum
  chain.append(optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))
  return chain[0] if len(chain) == 1 else optax.chain(*chain)


def _check(ok, message, where):
  if not ok:
    raise ValueError(f"{where}: {message}")
