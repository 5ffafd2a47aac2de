"""Data: scikit-learn's bundled 8x8 digits, and synthetic sets made from a PRNG key.

``digits`` reads the 1,797 images that scikit-learn ships with its wheel (no
network), flattens them to 64 features, splits them deterministically and
standardises every feature with the training split's mean and standard
deviation. ``two_spirals`` and ``teacher`` are pure JAX functions of a key.
Training on them and saving the run is a study: :mod:`jaxbp.studies.train_digits`.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core.nets import MLP


class Dataset(NamedTuple):
  """A train/test split. ``x_*``: ``(n, features)`` floats; ``y_*``: ``(n,)`` integer
  labels (classification) or ``(n, outputs)`` floats (regression)."""
  x_train: jax.Array
  y_train: jax.Array
  x_test: jax.Array
  y_test: jax.Array


def split(x, y, test_fraction: float = 0.2, seed: int = 0, standardise: bool = True) -> Dataset:
  """Shuffles with ``numpy.random.default_rng(seed)`` and holds out ``test_fraction``.

  With ``standardise``, each feature becomes ``(x - mean) / std`` with the
  *training* statistics (so nothing about the test set leaks into training);
  constant features (std 0, like the digits' blank corners) are only centred.
  """
  x, y = np.asarray(x), np.asarray(y)
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"split: x has {x.shape[0]} rows but y has {y.shape[0]}; "
                     "they need one row per sample.")
  if not 0 < test_fraction < 1:
    raise ValueError(f"split: test_fraction must lie in (0, 1), got {test_fraction!r}.")
  n = x.shape[0]
  n_test = max(1, int(round(n * test_fraction)))
  perm = np.random.default_rng(seed).permutation(n)
  test, train = perm[:n_test], perm[n_test:]
  x_train, x_test = x[train].astype(float), x[test].astype(float)
  if standardise:
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
  dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
  return Dataset(jnp.asarray(x_train, dtype), jnp.asarray(y[train]),
                 jnp.asarray(x_test, dtype), jnp.asarray(y[test]))


def digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """The 8x8 handwritten digits: 64 standardised features, labels 0..9.

  1,797 images; with the defaults 1,438 train and 359 test, the same split on
  every machine. Needs scikit-learn, which ships the data (no download).

  >>> data = digits()
  >>> data.x_train.shape, data.x_test.shape
  ((1438, 64), (359, 64))
  """
  try:
    from sklearn.datasets import load_digits
  except ImportError:
    raise ImportError(
        "jaxbp.data.digits needs scikit-learn, which ships the 8x8 digits with its wheel "
        "(no download): pip install scikit-learn, or pip install 'jaxbp[experiments]'."
    ) from None
  x, y = load_digits(return_X_y=True)
  return split(x, y.astype(np.int32), test_fraction, seed)


@functools.partial(jax.jit, static_argnums=(1,), static_argnames=("turns",))
def two_spirals(key, n: int, noise: float = 0.1, turns: float = 1.5):
  """Two interleaved spirals, ``n // 2`` points each (the rest go to class 0).

  Class 0 lies on ``r(t) (cos t, sin t)``, class 1 on its rotation by pi, with
  ``t`` in ``[0, 2 pi turns]``, ``r(t) = t / (2 pi turns)``, plus Gaussian noise
  of scale ``noise``. Not linearly separable: a classic test for a hidden layer.

  Returns:
    ``x`` of shape ``(n, 2)`` and integer labels ``y`` of shape ``(n,)``.

  >>> x, y = two_spirals(jax.random.PRNGKey(0), 200)
  >>> x.shape, y.shape
  ((200, 2), (200,))
  """
  t_key, n_key = jax.random.split(key)
  y = (jnp.arange(n) >= n - n // 2).astype(jnp.int32)
  # sqrt spreads points evenly along the arc rather than crowding the centre.
  t = jnp.sqrt(jax.random.uniform(t_key, (n,))) * 2 * jnp.pi * turns
  r = t / (2 * jnp.pi * turns)
  sign = 1.0 - 2.0 * y
  x = (sign * r)[:, None] * jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
  return x + noise * jax.random.normal(n_key, (n, 2)), y


class Teacher(NamedTuple):
  """A teacher-student regression set: ``y = teacher(x) + noise``."""
  x: jax.Array
  y: jax.Array
  params: tuple


def teacher(key, n: int, net: MLP, noise: float = 0.0, init="lecun") -> Teacher:
  """Inputs ``x ~ N(0, I)`` labelled by a random network ``net`` drawn with ``init``.

  A student of the same shape can fit it exactly (``noise=0``): a realisable
  regression problem with a known optimum.

  >>> data = teacher(jax.random.PRNGKey(0), 100, MLP((5, 16, 1), "tanh"))
  >>> data.x.shape, data.y.shape
  ((100, 5), (100, 1))
  """
  x_key, p_key, n_key = jax.random.split(key, 3)
  params = net.init(p_key, init)
  x = jax.random.normal(x_key, (n, net.sizes[0]), jax.tree_util.tree_leaves(params)[0].dtype)
  y = net.apply(params, x)
  return Teacher(x, y + noise * jax.random.normal(n_key, y.shape, y.dtype), params)


# The sets :func:`load` knows, as name: (features, classes).
SHAPES = {"digits": (64, 10), "spirals": (2, 2)}
DATASETS = tuple(SHAPES)


def load(name: str, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
  """A dataset by name: ``"digits"`` or ``"spirals"`` (1,000 points, noise 0.1);
  their feature and class counts are :data:`SHAPES`."""
  if name == "digits":
    return digits(test_fraction, seed)
  if name == "spirals":
    x, y = two_spirals(jax.random.PRNGKey(seed), 1000)
    return split(x, y, test_fraction, seed, standardise=False)
  raise ValueError(f"Unknown dataset {name!r}; valid names are {', '.join(DATASETS)}.")
