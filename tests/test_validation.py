"""Bad input across the public API: the right exception, with a message that
names what was wrong and what is expected. One row per bad input."""
import jax
import jax.numpy as jnp
import pytest

import jaxbp
from jaxbp.core import activations
from jaxbp.core import backprop
from jaxbp.core import graph
from jaxbp.core import initializers
from jaxbp.core import losses
from jaxbp.theory import meanfield
from jaxbp.train import training
from jaxbp import io
from jaxbp.studies import conv_sweep
from jaxbp.studies import depth_sweep
from jaxbp.studies import driver
from jaxbp.studies import himmelblau
from jaxbp.studies import remedies
from jaxbp.studies import seed_examples
from jaxbp.studies import spectrum
from jaxbp.studies import train_digits
from jaxbp.studies import width_sweep

NET = jaxbp.MLP((3, 4, 2))
STACKED = jaxbp.MLP((3, 4, 4, 4, 2), "tanh", stack=True)
P = NET.init(jax.random.PRNGKey(0))
X = jnp.ones((5, 3))
Y = jnp.zeros((5, 2))
TX = training.optimizer("sgd", 0.1)
CNN = jaxbp.ConvNet((3, 4, 4), kernel_size=3)
CP = CNN.init(jax.random.PRNGKey(0))

# (id, thunk, exception type, words that must appear in the message)
CASES = [
    # -- nets: construction
    ("sizes-too-few", lambda: jaxbp.MLP((3,)), ValueError, ["at least two", "(3,)"]),
    ("sizes-empty", lambda: jaxbp.MLP(()), ValueError, ["at least two"]),
    ("sizes-zero", lambda: jaxbp.MLP((3, 0, 2)), ValueError, ["positive int", "(3, 0, 2)"]),
    ("sizes-negative", lambda: jaxbp.MLP((3, -4, 2)), ValueError, ["positive int"]),
    ("sizes-float", lambda: jaxbp.MLP((3, 4.5, 2)), ValueError, ["positive int"]),
    ("sizes-bool", lambda: jaxbp.MLP((3, True, 2)), ValueError, ["positive int"]),
    ("unknown-activation", lambda: jaxbp.MLP((3, 2), "swish"), ValueError, ["swish", "tanh", "relu"]),
    ("activation-wrong-type", lambda: jaxbp.MLP((3, 2), 3.0), TypeError, ["activation", "float"]),
    ("softmax-hidden", lambda: jaxbp.MLP((3, 4, 2), "softmax"), ValueError, ["softmax", "output_activation"]),
    ("stack-unequal-widths", lambda: jaxbp.MLP((3, 4, 5, 2), stack=True), ValueError, ["equal hidden widths", "stack=False"]),
    ("residual-unequal-widths", lambda: jaxbp.MLP((3, 4, 5, 2), residual=True), ValueError, ["equal hidden widths"]),
    ("bn-eps-zero", lambda: jaxbp.MLP((3, 4, 2), bn_eps=0.0), ValueError, ["bn_eps"]),
    ("uniform-depth-zero", lambda: jaxbp.MLP.uniform(3, 4, 0, 2), ValueError, ["depth", ">= 1"]),
    # -- nets: init
    ("unknown-init", lambda: NET.init(jax.random.PRNGKey(0), "kaiming_magic"), ValueError, ["kaiming_magic", "he", "glorot"]),
    ("init-wrong-type", lambda: NET.init(jax.random.PRNGKey(0), 2.0), TypeError, ["init"]),
    # -- nets: apply
    ("x-wrong-width", lambda: NET.apply(P, jnp.ones((5, 4))), ValueError, ["(5, 4)", "(batch, 3)"]),
    ("x-1d", lambda: NET.apply(P, jnp.ones(3)), ValueError, ["(3,)", "x[None]"]),
    ("x-3d", lambda: NET.apply(P, jnp.ones((2, 5, 3))), ValueError, ["(2, 5, 3)"]),
    ("x-int", lambda: NET.apply(P, jnp.ones((5, 3), jnp.int32)), TypeError, ["floating", "int32"]),
    ("x-complex", lambda: NET.apply(P, jnp.ones((5, 3), jnp.complex64)), TypeError, ["floating", "complex64"]),
    ("params-other-net", lambda: NET.apply(jaxbp.MLP((3, 5, 2)).init(jax.random.PRNGKey(0)), X), ValueError, ["(3, 5)", "(3, 4)", "another net"]),
    ("params-too-few-layers", lambda: NET.apply(P[:1], X), ValueError, ["2 Dense", "got 1"]),
    ("params-not-a-tuple", lambda: NET.apply({"W": 1}, X), ValueError, ["tuple", "net.init"]),
    ("params-unstacked-for-stacked", lambda: STACKED.apply(jaxbp.MLP((3, 4, 4, 4, 2), "tanh").init(jax.random.PRNGKey(0)), X), ValueError, ["expected a tuple of 3"]),
    ("params-bias-for-nobias", lambda: jaxbp.MLP((3, 4, 2), bias=False).apply(P, X), ValueError, ["bias=False"]),
    ("params-dense-for-batchnorm", lambda: jaxbp.MLP((3, 4, 2), batchnorm=True).apply(P, X), ValueError, ["BatchNormDense", "another net"]),
    # -- objective / backprop
    ("y-wrong-shape", lambda: jaxbp.objective(NET, "mse")(P, X, jnp.zeros((5, 3))), ValueError, ["(5, 3)", "(5, 2)"]),
    ("y-labels-wrong-length", lambda: jaxbp.objective(NET, "softmax_cross_entropy")(P, X, jnp.zeros(4, jnp.int32)), ValueError, ["(4,)", "(5,)"]),
    ("y-label-out-of-range", lambda: jaxbp.objective(NET, "softmax_cross_entropy")(P, X, jnp.full(5, 7)), ValueError, ["[0, 2)", "7"]),
    ("unknown-loss", lambda: jaxbp.objective(NET, "hinge"), ValueError, ["hinge", "mse", "softmax_cross_entropy"]),
    ("objective-reduction-none", lambda: jaxbp.objective(NET, "mse", reduction="none"), ValueError, ["'mean' or 'sum'"]),
    ("backprop-x-wrong-width", lambda: backprop.value_and_grad(NET, "mse", P, jnp.ones((5, 2)), Y), ValueError, ["(5, 2)", "(batch, 3)"]),
    ("backprop-bad-reduction", lambda: backprop.grad(NET, "mse", P, X, Y, reduction="avg"), ValueError, ["'avg'"]),
    ("backprop-y-wrong-shape", lambda: backprop.grad(NET, "mse", P, X, jnp.zeros((5,))), ValueError, ["(5,)", "(5, 2)"]),
    # -- losses
    ("loss-bad-reduction", lambda: losses.mse.fn(Y, Y, "median"), ValueError, ["median", "mean"]),
    ("one-hot-negative", lambda: losses.one_hot(jnp.array([0, -1]), 3), ValueError, ["[0, 3)", "-1"]),
    ("one-hot-float-labels", lambda: losses.one_hot(jnp.array([0.0, 1.0]), 3), TypeError, ["integers"]),
    ("one-hot-zero-classes", lambda: losses.one_hot(jnp.array([0]), 0), ValueError, ["num_classes"]),
    ("loss-int-output", lambda: losses.mse.fn(jnp.ones((2, 2), jnp.int32), Y[:2]), TypeError, ["floating"]),
    # -- activations / initializers
    ("leaky-negative-slope", lambda: activations.leaky_relu(-0.1), ValueError, ["negative_slope", ">= 0"]),
    ("gaussian-negative-variance", lambda: initializers.gaussian(-1.0), ValueError, ["sigma_w2", ">= 0"]),
    ("gaussian-negative-bias-variance", lambda: initializers.gaussian(1.0, -0.5), ValueError, ["sigma_b2"]),
    ("gaussian-nan", lambda: initializers.gaussian(float("nan")), ValueError, ["sigma_w2"]),
    ("orthogonal-negative-gain", lambda: initializers.orthogonal(-1.0), ValueError, ["gain"]),
    # -- training
    ("unknown-optimizer", lambda: training.optimizer("adamw2", 0.1), ValueError, ["adamw2", "sgd", "momentum"]),
    ("lr-zero", lambda: training.optimizer("sgd", 0.0), ValueError, ["learning_rate"]),
    ("lr-negative", lambda: training.optimizer("sgd", -0.1), ValueError, ["learning_rate"]),
    ("momentum-negative", lambda: training.optimizer("sgd", 0.1, momentum=-0.5), ValueError, ["momentum"]),
    ("clip-norm-zero", lambda: training.optimizer("sgd", 0.1, clip_norm=0.0), ValueError, ["clip_norm"]),
    ("weight-decay-negative", lambda: training.optimizer("sgd", 0.1, weight_decay=-1.0), ValueError, ["weight_decay"]),
    ("fit-batch-larger-than-data", lambda: training.fit(NET, "mse", P, X, Y, TX, steps=2, batch_size=6, key=jax.random.PRNGKey(0)), ValueError, ["batch_size", "[1, 5]"]),
    ("fit-batch-zero", lambda: training.fit(NET, "mse", P, X, Y, TX, steps=2, batch_size=0), ValueError, ["batch_size"]),
    ("fit-xy-lengths-differ", lambda: training.fit(NET, "mse", P, X, Y[:4], TX, steps=2), ValueError, ["5 rows", "4"]),
    ("fit-steps-zero", lambda: training.fit(NET, "mse", P, X, Y, TX, steps=0), ValueError, ["steps", ">= 1"]),
    ("fit-unknown-grad-method", lambda: training.fit(NET, "mse", P, X, Y, TX, steps=1, grad_method="magic"), ValueError, ["magic", "autodiff", "backprop"]),
    # -- meanfield
    ("meanfield-softmax", lambda: meanfield.chi1("softmax", 1.0, 0.0), ValueError, ["softmax"]),
    ("meanfield-negative-sigma-w2", lambda: meanfield.chi1("tanh", -1.0, 0.0), ValueError, ["sigma_w2"]),
    ("meanfield-unknown-activation", lambda: meanfield.chi1("gelu9", 1.0, 0.0), ValueError, ["gelu9", "tanh"]),
    # -- ConvNet
    ("conv-channels-too-few", lambda: jaxbp.ConvNet(channels=(3,)), ValueError, ["channels"]),
    ("conv-even-kernel", lambda: jaxbp.ConvNet(channels=(3, 4), kernel_size=4), ValueError, ["odd", "4"]),
    ("conv-bad-padding", lambda: jaxbp.ConvNet(channels=(3, 4), padding="reflect"), ValueError, ["reflect", "circular", "same"]),
    ("conv-bad-ndim", lambda: jaxbp.ConvNet(channels=(3, 4), ndim=0), ValueError, ["ndim"]),
    ("conv-outputs-zero", lambda: jaxbp.ConvNet(channels=(3, 4), outputs=0), ValueError, ["outputs"]),
    ("conv-image-rank", lambda: CNN.apply(CP, jnp.ones((2, 8, 3))), ValueError, ["(2, 8, 3)"]),
    ("conv-wrong-channels", lambda: CNN.apply(CP, jnp.ones((2, 8, 8, 5))), ValueError, ["5", "3"]),
    ("conv-int-input", lambda: CNN.apply(CP, jnp.ones((2, 8, 8, 3), jnp.int32)), TypeError, ["int32"]),
    ("conv-empty-batch", lambda: CNN.apply(CP, jnp.ones((0, 8, 8, 3))), ValueError, ["empty"]),
    ("conv-params-other-net", lambda: CNN.apply(jaxbp.ConvNet((3, 5)).init(jax.random.PRNGKey(0)), jnp.ones((2, 8, 8, 3))), ValueError, ["params"]),
    ("delta-orthogonal-narrowing", lambda: jaxbp.ConvNet((4, 2)).init(jax.random.PRNGKey(0), "delta_orthogonal"), ValueError, ["c_out", "c_in"]),
    # -- inspect
    ("inspect-loss-not-scalar", lambda: jaxbp.inspect(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 2))}, jnp.ones((4, 3))), ValueError, ["scalar"]),
    ("inspect-no-layer", lambda: jaxbp.inspect(lambda p, x: jnp.sum(p["w"] * x), {"w": jnp.ones(3)}, jnp.ones(3)), ValueError, ["no layer", "tap"]),
    ("inspect-no-float-params", lambda: jaxbp.inspect(lambda p, x: jnp.sum(x), {"n": jnp.arange(3)}, jnp.ones(3)), TypeError, ["floating-point", "int64"]),
    ("inspect-while-loop", lambda: jaxbp.inspect(lambda p, x: jax.lax.while_loop(lambda h: jnp.sum(h) < 10.0, lambda h: jnp.tanh(h @ p["w"]) + 1.0, x).sum(), {"w": jnp.ones((3, 3))}, jnp.ones((2, 3))), (ValueError, TypeError, NotImplementedError), ["while"]),
    # -- finite-width theory
    ("lgs-width-zero", lambda: meanfield.log_gradient_stats("tanh", 1.0, 0.0, width=0, depth=4), ValueError, ["width"]),
    ("lgs-depth-zero", lambda: meanfield.log_gradient_stats("tanh", 1.0, 0.0, width=64, depth=0), ValueError, ["depth"]),
    ("lgs-negative-sigma-w2", lambda: meanfield.log_gradient_stats("tanh", -1.0, 0.0, width=64, depth=4), ValueError, ["sigma_w2"]),
    ("lgs-unknown-activation", lambda: meanfield.log_gradient_stats("gelu9", 1.0, 0.0, width=64, depth=4), ValueError, ["gelu9"]),
    ("lgs-batch-zero", lambda: meanfield.log_gradient_stats("tanh", 1.0, 0.0, width=64, depth=4, batch=0), ValueError, ["batch"]),
    ("critical-no-root-in-given-bracket", lambda: meanfield.critical_sigma_w2("sigmoid", 0.05, hi=50.0), ValueError, ["50"]),
    # -- losses and the seeds' forms
    ("loss-mean-empty-batch", lambda: losses.mse.fn(jnp.zeros((0, 2)), jnp.zeros((0, 2))), ValueError, ["empty"]),
    ("loss-grad-mean-empty-batch", lambda: losses.mse.grad(jnp.zeros((0, 2)), jnp.zeros((0, 2))), ValueError, ["empty"]),
    ("scalar-chain-no-layers", lambda: backprop.scalar_chain(jnp.zeros(0), jnp.zeros(0), 1.0), ValueError, ["scalar_chain", "(0,)"]),
    ("mlp-empty-batch", lambda: NET.apply(P, jnp.ones((0, 3))), ValueError, ["empty"]),
    # -- studies: configs fail before any compute
    ("sweep-config-width", lambda: depth_sweep.Config(width=0), ValueError, ["width", ">= 1"]),
    ("sweep-config-activation", lambda: depth_sweep.Config(activations=("swish",)), ValueError, ["swish"]),
    ("sweep-config-unknown-key", lambda: depth_sweep.Config.from_dict({"depth": 3}), ValueError, ["depth"]),
    ("width-sweep-config-widths", lambda: width_sweep.Config(widths=()), ValueError, ["widths"]),
    ("width-sweep-config-seeds", lambda: width_sweep.Config(seeds=0), ValueError, ["seeds"]),
    ("conv-sweep-config-channels", lambda: conv_sweep.Config(channels=0), ValueError, ["channels"]),
    ("remedies-config-depths", lambda: remedies.Config(depths=()), ValueError, ["depths"]),
    ("remedies-config-remedy", lambda: remedies.Config(settings=("magic",)), ValueError, ["magic"]),
    ("spectrum-config-width", lambda: spectrum.Config(width=0), ValueError, ["width"]),
    ("spectrum-config-weights", lambda: spectrum.Config(weights=("uniform",)), ValueError, ["uniform"]),
    ("seed-examples-config-seed", lambda: seed_examples.Config(seed=-1), ValueError, ["seed"]),
    ("train-digits-config-epochs", lambda: train_digits.Config(epochs=0), ValueError, ["epochs"]),
    ("himmelblau-config-steps", lambda: himmelblau.Config(steps=0), ValueError, ["steps"]),
    # -- files
    ("read-config-suffix", lambda: io.read_config("config.yaml"), (ValueError, OSError), ["config.yaml"]),
    ("out-dir-under-a-file", lambda: driver.check_out_dir(__file__ + "/out"), ValueError, ["cannot be written"]),
    # -- graph
    ("graph-unsupported-primitive", lambda: graph.grad(lambda x: jnp.cumsum(x).sum())(jnp.ones(3)), NotImplementedError, ["cumsum"]),
    ("graph-nonscalar-output", lambda: graph.grad(lambda x: x * 2.0)(jnp.ones(3)), ValueError, ["(3,)", "scalar"]),
]


def test_table_is_large_enough():
  assert len(CASES) >= 100


@pytest.mark.parametrize("thunk,exc,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(thunk, exc, words):
  with pytest.raises(exc) as info:
    thunk()
  message = str(info.value)
  missing = [w for w in words if w not in message]
  assert not missing, f"message lacks {missing}: {message!r}"


def test_checks_run_at_trace_time_under_jit():
  # Shape errors surface when jit traces, not as a silent broadcast later.
  with pytest.raises(ValueError, match=r"\(5, 4\)"):
    jax.jit(NET.apply)(P, jnp.ones((5, 4)))
  with pytest.raises(ValueError, match=r"\(5, 3\)"):
    jax.jit(jaxbp.objective(NET, "mse"))(P, X, jnp.zeros((5, 3)))
