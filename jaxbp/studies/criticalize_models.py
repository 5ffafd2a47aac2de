"""The models of the criticalize study and the inits it compares on them.

Every model is a pure ``(init, apply)`` pair around a net from one framework,
with no skips and no normalisation, classifying the 8x8 digits; the last, a
post-LN transformer, has its residual branches and LayerNorms and its own task:

===================  ========================================================  =========
name                 net                                                       start
===================  ========================================================  =========
tanh_mlp_0.5         jaxbp.MLP, ``mlp_depth`` tanh layers                      N(0, 0.5/n)
tanh_mlp_4           the same                                                  N(0, 4/n)
relu_mlp             jaxbp.MLP, ``mlp_depth`` relu layers                      LeCun
tanh_convnet         jaxbp.ConvNet, ``conv_depth`` 3x3 tanh convolutions       N(0, 0.5/fan_in)
                     (the hidden ones stacked, one leaf run by ``lax.scan``)
flax_cnn             flax.linen, ``cnn_depth`` 3x3 relu convolutions           flax's own
eqx_mlp              equinox.nn.MLP, ``eqx_depth`` gelu layers                 equinox's own
rnn                  jaxbp.RNN (tanh), the digit's 8 rows, then blank steps    jaxbp's (He)
post_ln_transformer  jaxbp.Transformer, ``tf_depth`` post-LN blocks of width   LeCun
                     ``tf_width``, 4 heads, relu FFN of ``2 tf_width``; token  (jaxbp's)
                     reversal (16 tokens of 16), the blocks stacked
===================  ========================================================  =========

Every bias starts at variance ``sigma_b2`` where the init is jaxbp's (flax:
zeros; equinox: uniform, ``1/(3 fan_in)``; the transformer: ``Transformer.init``'s
own, ``sigma_b2`` unused). The relu MLP starts from LeCun
(sigma_w^2 = 1, the default of flax, haiku and keras), not jaxbp's own default,
He, which is already relu's critical init. The RNN's task: the digit's 8 rows are
its first 8 inputs, then ``rnn_steps - 8`` zero inputs, and the class is read
from the last state; the gradient must cross every blank step to reach the rows.
The transformer's task is :mod:`jaxbp.studies.transformer_train`'s:
``reversal(key, n, TF_LENGTH, TF_VOCAB)`` sequences, the loss
``token_loss`` (the token-mean softmax cross-entropy); its blocks are one stacked
leaf per weight under ``lax.scan``, as there, and LSUV and criticalize give each
block's slice ``W[t]`` its own scale.

The inits (:data:`SCHEMES`):

* ``default``: the start above (LSUV and criticalize rescale it);
* ``theory``: mean-field critical init, for jaxbp's families only: tanh
  ``N(0, sigma_w2*/n)`` with ``sigma_w2* = critical_sigma_w2("tanh", sigma_b2)``
  (chi_1 = 1), relu He (``sigma_w2 = 2``, no bias), the ConvNet delta-orthogonal
  at tanh's critical gain (Xiao et al. 2018), the RNN ``N(0, sigma_w2*/n)``;
* ``suo``: DKS/TAT's parameters, :func:`jaxbp.studies.criticalize_dks.suo`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Tuple

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxbp.core import activations as _act
from jaxbp.core import initializers as _init
from jaxbp.core.convnets import ConvNet
from jaxbp.core.nets import MLP
from jaxbp.core.rnn import RNN
from jaxbp.core.transformer import Transformer
from jaxbp.studies import criticalize_dks as dks_
from jaxbp.theory import meanfield

# Cheapest first: a full run that is stopped has the MLPs' results.
MODELS = ("tanh_mlp_0.5", "tanh_mlp_4", "relu_mlp", "eqx_mlp", "rnn", "flax_cnn", "tanh_convnet",
          "post_ln_transformer")
SCHEMES = ("default", "theory", "suo")
CLASSES = 10
ROWS = 8   # the digits' rows: the RNN's input steps, and an image's side
# The transformer's reversal task and attention heads, transformer_train's defaults.
TF_LENGTH, TF_VOCAB, TF_HEADS = 16, 16, 4


class Spec(NamedTuple):
  """What a model is, apart from its sizes.

  Attributes:
    framework: ``"jaxbp"``, ``"flax"`` or ``"equinox"``.
    activation: the base activation's name.
    task: ``"flat"`` (64 features), ``"image"`` (8x8x1), ``"sequence"`` (the digits'
      rows, then blanks) or ``"reversal"`` (token reversal, not the digits).
    start: the default init, in words.
    theory: the theory-critical init in words, or None where there is none.
    transforms: ``(method, dks activation name)`` for each of DKS/TAT that applies.
  """
  framework: str
  activation: str
  task: str
  start: str
  theory: Optional[str]
  transforms: Tuple[Tuple[str, str], ...]


_SMOOTH = (("dks", "tanh"), ("tat", "tanh"))
SPECS = {
    "tanh_mlp_0.5": Spec("jaxbp", "tanh", "flat", "Gaussian sigma_w^2 0.5",
                         "Gaussian critical", _SMOOTH),
    "tanh_mlp_4": Spec("jaxbp", "tanh", "flat", "Gaussian sigma_w^2 4", "Gaussian critical",
                       _SMOOTH),
    # DKS proper on relu is discouraged by its authors (a kink at 0: no C-map
    # curvature to control); TAT's answer for relu nets is a leaky relu (TReLU).
    "relu_mlp": Spec("jaxbp", "relu", "flat", "LeCun (sigma_w^2 1)", "He (sigma_w^2 2)",
                     (("tat", "leaky_relu"),)),
    "tanh_convnet": Spec("jaxbp", "tanh", "image", "Gaussian sigma_w^2 0.5",
                         "delta-orthogonal critical", _SMOOTH),
    "flax_cnn": Spec("flax", "relu", "image", "flax default (LeCun normal, zero bias)", None,
                     (("tat", "leaky_relu"),)),
    "eqx_mlp": Spec("equinox", "gelu", "flat", "equinox default (uniform 1/sqrt(fan_in))", None,
                    (("dks", "gelu"), ("tat", "gelu"))),
    # DKS/TAT analyse a chain of fresh weights; an RNN reuses one W at every step.
    "rnn": Spec("jaxbp", "tanh", "sequence", "jaxbp default (He)", "Gaussian critical", ()),
    # No theory-critical init: mean-field theory here covers chains without skips or
    # normalisation (a post-LN block's LayerNorm resets q to 1 whatever the weights'
    # scale). DKS/TAT transform the activations of a chain of fresh dense layers with
    # no skips; attention (softmax) and LayerNorm are outside their C-map analysis.
    "post_ln_transformer": Spec("jaxbp", "relu", "reversal", "jaxbp default (LeCun)", None, ()),
}


class Net(NamedTuple):
  """A model at its sizes: ``init(key, scheme) -> params``, ``apply(params, x) -> logits``,
  and its count of nonlinear layers in a path from input to output (DKS/TAT's depth)."""
  init: Callable[[Any, str], Any]
  apply: Callable[[Any, jax.Array], jax.Array]
  depth: int


def _dtype():
  return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _jaxbp_activation(name: str, fn: Optional[Callable]):
  """jaxbp's activation, or ``fn`` (a transformed one) with its derivative by jvp."""
  if fn is None:
    return name
  grad = lambda z: jax.jvp(fn, (z,), (jnp.ones_like(z),))[1]
  return _act.Activation(f"transformed_{name}", fn, grad)


def _no_theory(name):
  raise ValueError(f"criticalize study: {name} has no theory-critical init "
                   f"(only jaxbp's own families have one).")


def _check_scheme(name, scheme):
  if scheme not in SCHEMES:
    raise ValueError(f"criticalize study: scheme must be one of {SCHEMES}, got {scheme!r}.")


def _mlp(name, config, fn):
  spec = SPECS[name]
  depth, width = config.mlp_depth, config.width
  net = MLP((ROWS * ROWS,) + (width,) * depth + (CLASSES,), _jaxbp_activation(spec.activation, fn))
  relu = spec.activation == "relu"
  start = (_init.get("lecun") if relu else
           _init.gaussian(float(name.rsplit("_", 1)[1]), config.sigma_b2))
  theory = (_init.gaussian(2.0, 0.0) if relu else
            _init.gaussian(float(meanfield.critical_sigma_w2("tanh", config.sigma_b2)),
                           config.sigma_b2))

  def init(key, scheme):
    _check_scheme(name, scheme)
    if scheme == "suo":
      return dks_.suo(key, net.init(key, start, dtype=_dtype()))
    return net.init(key, start if scheme == "default" else theory, dtype=_dtype())
  return Net(init, net.apply, depth)


def _convnet(name, config, fn):
  depth, c = config.conv_depth, config.channels
  net = ConvNet(channels=(1,) + (c,) * depth, kernel_size=3,
                activation=_jaxbp_activation("tanh", fn), padding="same", ndim=2,
                outputs=CLASSES, readout="flatten", spatial=ROWS, stack=True)
  critical = float(meanfield.critical_sigma_w2("tanh", config.sigma_b2))

  def init(key, scheme):
    _check_scheme(name, scheme)
    if scheme == "theory":
      return net.init(key, _init.delta_orthogonal(math.sqrt(critical), config.sigma_b2),
                      dtype=_dtype())
    params = net.init(key, _init.gaussian(0.5, config.sigma_b2), dtype=_dtype())
    return dks_.suo(key, params) if scheme == "suo" else params
  return Net(init, net.apply, depth)


class FlaxCNN(nn.Module):
  """``depth`` 3x3 convolutions (same padding) of ``channels``, each followed by
  ``act``, then a dense readout of the flattened last feature map."""
  channels: int
  depth: int
  act: Callable = nn.relu
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for _ in range(self.depth):
      x = self.act(nn.Conv(self.channels, (3, 3), param_dtype=self.dtype, dtype=self.dtype)(x))
    return nn.Dense(CLASSES, param_dtype=self.dtype, dtype=self.dtype)(
        x.reshape(x.shape[0], -1))


def _flax_cnn(name, config, fn):
  module = FlaxCNN(config.channels, config.cnn_depth, fn or nn.relu, _dtype())

  def init(key, scheme):
    _check_scheme(name, scheme)
    if scheme == "theory":
      _no_theory(name)
    params = module.init(key, jnp.zeros((1, ROWS, ROWS, 1), _dtype()))
    return dks_.suo(key, params) if scheme == "suo" else params
  return Net(init, module.apply, config.cnn_depth)


def _eqx_mlp(name, config, fn):
  act = fn or jax.nn.gelu   # approximate (tanh) gelu, as dks's "gelu"

  def init(key, scheme):
    _check_scheme(name, scheme)
    if scheme == "theory":
      _no_theory(name)
    model = eqx.nn.MLP(ROWS * ROWS, CLASSES, config.width, config.eqx_depth, activation=act,
                       dtype=_dtype(), key=key)
    # equinox's Linear stores (out, in): the output axis is 0.
    return dks_.suo(key, model, axis=0) if scheme == "suo" else model

  def apply(model, x):
    return jax.vmap(model)(x)
  return Net(init, apply, config.eqx_depth)


def _rnn(name, config, fn):
  rnn = RNN(ROWS, config.width, CLASSES, activation=_jaxbp_activation("tanh", fn))
  critical = float(meanfield.critical_sigma_w2("tanh", config.sigma_b2))

  def init(key, scheme):
    _check_scheme(name, scheme)
    if scheme == "suo":
      raise ValueError("criticalize study: DKS/TAT do not apply to the RNN (one W reused at "
                       "every step).")
    return rnn.init(key, "he" if scheme == "default" else
                    _init.gaussian(critical, config.sigma_b2), dtype=_dtype())
  return Net(init, rnn.apply, config.rnn_steps)


def transformer(config) -> Transformer:
  """The post-LN transformer at ``config``'s sizes (non-causal, relu FFN, blocks stacked)."""
  return Transformer(config.tf_width, TF_HEADS, config.tf_depth, 2 * config.tf_width,
                     norm="post", vocab=TF_VOCAB, max_len=TF_LENGTH, stack=True)


def _post_ln_transformer(name, config, fn):
  if fn is not None:
    raise ValueError("criticalize study: DKS/TAT do not apply to the post-LN transformer.")
  net = transformer(config)

  def init(key, scheme):
    _check_scheme(name, scheme)
    if scheme == "theory":
      _no_theory(name)
    if scheme == "suo":
      raise ValueError("criticalize study: DKS/TAT do not apply to the post-LN transformer "
                       "(attention and LayerNorm are outside their kernel maps).")
    return net.init(key, dtype=_dtype())   # LeCun
  # Its gradient path from the loss to the embedding crosses every block's FFN.
  return Net(init, net.apply, config.tf_depth)


_BUILDERS = {"tanh_mlp_0.5": _mlp, "tanh_mlp_4": _mlp, "relu_mlp": _mlp,
             "tanh_convnet": _convnet, "flax_cnn": _flax_cnn, "eqx_mlp": _eqx_mlp, "rnn": _rnn,
             "post_ln_transformer": _post_ln_transformer}


def build(name: str, config, fn: Optional[Callable] = None) -> Net:
  """Model ``name`` at ``config``'s sizes, with activation ``fn`` in place of its own
  (a DKS/TAT transform of it) when given."""
  if name not in _BUILDERS:
    raise ValueError(f"criticalize study: unknown model {name!r}; valid: {', '.join(MODELS)}.")
  return _BUILDERS[name](name, config, fn)


def inputs(task: str, x: jax.Array, rnn_steps: int = ROWS) -> jax.Array:
  """The digits' ``(n, 64)`` features in a task's layout: as they are (flat),
  ``(n, 8, 8, 1)`` images, or ``(n, rnn_steps, 8)`` sequences whose first 8 steps are
  the rows and the rest zeros."""
  x = jnp.asarray(x)
  if task == "flat":
    return x
  if task == "image":
    return x.reshape(-1, ROWS, ROWS, 1)
  rows = x.reshape(-1, ROWS, ROWS)
  return jnp.concatenate([rows, jnp.zeros((rows.shape[0], rnn_steps - ROWS, ROWS), x.dtype)],
                         axis=1)
