"""One base for every network family: a family is a *plan* of layer groups.

A family (:class:`jaxbp.MLP`, :class:`jaxbp.ConvNet`, :class:`jaxbp.RNN`...)
declares an ordered tuple of :class:`Group` s, each a layer kind
(:mod:`jaxbp.core.kinds`: its init, forward and hand-derived backward
together), a count, fan-in and fan-out, and four flags:

* ``stacked``: the group's params carry a leading layer axis and the layers run
  under ``lax.scan``, so compile time does not grow with depth;
* ``tied``: one set of params applied at every step of the input sequence (a
  recurrent layer), also under ``lax.scan``; its gradient is the sum over the
  steps (backpropagation through time);
* ``hidden``: the layer uses the hidden activation ``phi`` (else ``phi_out``);
* ``residual``: the layer adds its input back, ``h_next = h + phi(z)``.

Every layer computes a pre-activation ``z = kind.forward(h, p)`` and then
``h_next = phi(z)`` (``+ h`` when residual): that is the contract that lets
one backward walk (:func:`jaxbp.core.backprop.backward`) serve every family.
The base writes, once: init (one key schedule), check_params, trace (with
probes, row scales and sample selection), apply (stacks and ``remat=k`` for
every family), zero probes, layer inputs and unstacking.

A new family writes its plan, its input check (``check_input``), and, if its
params are not a plain tuple of per-group entries, ``split_params`` /
``join_params``; a new kind of layer writes one class in :mod:`kinds`.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

import jaxbp.core.activations as _act
import jaxbp.core.checks as _checks
import jaxbp.core.initializers as _init
from jaxbp.core.layers import RowScale, Trace, layer_stream, take_sample


class Group(NamedTuple):
  """One entry of a family's plan: consecutive layers of one kind.

  Attributes:
    kind: the layer kind (a hashable object with ``init``, ``check``,
      ``forward``, ``backward``; :mod:`jaxbp.core.kinds`).
    count: layers in the group (a tied group: 1, its steps come from the input).
    fan_in, fan_out: the kind's widths (channels for a convolution).
    stacked: params with a leading layer axis, run under ``lax.scan``.
    tied: one set of params at every step of the input sequence.
    hidden: the hidden activation (else the output activation).
    residual: ``h_next = h + phi(z)``.
    reads: ``"last"``: the previous group's last output; ``"all"``: every
      output of the previous (scanned) group, ``(steps, batch, ...)``.
  """
  kind: Any
  count: int
  fan_in: int
  fan_out: int
  stacked: bool = False
  tied: bool = False
  hidden: bool = True
  residual: bool = False
  reads: str = "last"


class Family(_act.NetActivations):
  """The base of every network spec (a frozen dataclass with ``activation``,
  ``output_activation`` and ``remat`` fields, and a ``plan`` property)."""

  # -- what a family declares ------------------------------------------------

  @property
  def plan(self) -> Tuple[Group, ...]:
    raise NotImplementedError

  def check_input(self, x) -> jax.Array:
    raise NotImplementedError

  def entry(self, x):
    """``(h_0, stream)``: the first group's input and the sequence a tied group
    steps over (None for feed-forward families)."""
    return x, None

  def split_params(self, params) -> tuple:
    """The family's params as one entry per group (a plain tuple here)."""
    return tuple(params)

  def join_params(self, entries):
    """The inverse of :meth:`split_params` (also used for gradients)."""
    return tuple(entries)

  def _check_family(self, name: str, hidden, what: str, shown: str) -> None:
    """The checks every spec shares: activations, stack / residual widths, remat."""
    # Resolve names now so that bad ones fail at construction, not inside jit.
    _act.get(self.output_activation)
    if not _act.get(self.activation).elementwise:
      raise ValueError(f"{name}: softmax can only be the output_activation, not a hidden one.")
    for flag in ("stack", "residual"):
      if getattr(self, flag, False) and len(set(hidden)) > 1:
        raise ValueError(f"{name}: {flag}=True needs equal {what}, got {shown}. Use "
                         f"{flag}=False for nets with varying widths.")
    remat = self.remat
    if isinstance(remat, bool) or type(remat).__name__ == "bool_":
      object.__setattr__(self, "remat", bool(remat))
    elif _checks.is_int(remat) and remat >= 1:
      object.__setattr__(self, "remat", int(remat))
    else:
      raise ValueError(f"{name}: remat must be a bool or an int k >= 1 (checkpoint blocks of "
                       f"k layers), got {remat!r}.")

  @staticmethod
  def _floating_input(x) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"x must be floating point, got dtype {x.dtype}; convert it with "
                      "x.astype(jnp.float32) (or float64).")
    return x

  def delta_view(self, deltas):
    """What :func:`jaxbp.backprop.deltas` returns of the per-group deltas."""
    return deltas

  # -- structure ---------------------------------------------------------------

  @property
  def groups(self) -> Tuple[Tuple[int, int, int], ...]:
    """One ``(num_layers, fan_in, fan_out)`` per params entry."""
    return tuple((g.count, g.fan_in, g.fan_out) for g in self.plan)

  def is_stacked(self, g: int) -> bool:
    """Whether params entry g carries a leading layer axis."""
    return self.plan[g].stacked

  def is_tied(self, g: int) -> bool:
    """Whether params entry g is applied at every step of the input sequence."""
    return self.plan[g].tied

  def is_scanned(self, g: int) -> bool:
    """Whether group g runs under ``lax.scan`` (stacked or tied)."""
    return self.plan[g].stacked or self.plan[g].tied

  def is_hidden(self, g: int) -> bool:
    """Whether group g uses the hidden activation."""
    return self.plan[g].hidden

  def is_residual(self, g: int) -> bool:
    """Whether the layers of group g add their input back."""
    return self.plan[g].residual

  def phi_of(self, g: int) -> _act.Activation:
    return self.phi if self.plan[g].hidden else self.phi_out

  @property
  def remat_block(self) -> int:
    """Layers per checkpointed block: 0 without remat, 1 per layer, k for ``remat=k``."""
    return 0 if self.remat is False else (1 if self.remat is True else self.remat)

  # -- parameters --------------------------------------------------------------

  def init(self, key, init: _init.InitializerLike = "he", dtype=None):
    """Draws parameters, one PRNG key per params entry.

    Args:
      key: a ``jax.random.PRNGKey``.
      init: a name (``"he"``, ``"glorot"``, ``"lecun"``, ``"orthogonal"``,
        ``"delta_orthogonal"``...) or an ``Initializer`` such as
        ``gaussian(sigma_w2=1.76, sigma_b2=0.05)``; each kind draws by the form it
        needs (dense, or a convolution's fan-in ``k^d c_in``).
      dtype: float dtype; default float64 when x64 is enabled, else float32.
    """
    initializer = _init.get(init)
    dtype = jax.dtypes.canonicalize_dtype(dtype or jnp.float64)
    entries = []
    for group in self.plan:
      key, layer_key = jax.random.split(key)
      w_key, b_key = jax.random.split(layer_key)
      lead = (group.count,) if group.stacked else ()
      entries.append(group.kind.init(initializer, w_key, b_key, lead, group.fan_in,
                                     group.fan_out, dtype))
    return self.join_params(entries)

  def check_params(self, params) -> None:
    """Raises a ValueError naming the first entry or leaf that does not fit this net."""
    plan = self.plan
    try:
      entries = self.split_params(params)
    except (TypeError, AttributeError, ValueError):
      entries = None
    if entries is None or len(entries) != len(plan):
      got = len(params) if isinstance(params, (tuple, list)) else type(params).__name__
      raise ValueError(
          f"params do not fit {self}: expected {self._params_form()}, got {got}. Create "
          "them with net.init(key).")
    for g, (p, group) in enumerate(zip(entries, plan)):
      want = group.kind.params_type
      if not isinstance(p, want):
        raise ValueError(
            f"params[{g}] is a {type(p).__name__}, expected {want.__name__} for net "
            f"{self}. Were the params made for another net? Create them with net.init(key).")
      lead = (group.count,) if group.stacked else ()
      problem = group.kind.check(p, lead, group.fan_in, group.fan_out)
      if problem:
        raise ValueError(f"params[{g}].{problem} Were the params made for another net "
                         f"({self})?")

  def _params_form(self) -> str:
    kinds = ", ".join(g.kind.params_type.__name__ for g in self.plan)
    return f"a tuple of {len(self.plan)} entries ({kinds})"

  # -- forward -----------------------------------------------------------------

  def layer(self, g: int, checkpoint: Optional[bool] = None):
    """Group g's forward, ``(h, p, probe=None, scale=None) -> (h_next, z)``.

    Checkpointed (``jax.checkpoint``) with per-layer remat; ``checkpoint``
    overrides that (block remat checkpoints whole blocks instead).
    """
    group = self.plan[g]
    kind, phi, residual = group.kind, self.phi_of(g), group.residual

    def fn(h, p, probe=None, scale=None):
      z = kind.forward(h, p, scale=scale)
      if probe is not None:
        z = z + probe
      a = phi.fn(z)
      return (h + a if residual else a), z

    if checkpoint is None:
      checkpoint = self.remat_block == 1
    return jax.checkpoint(fn) if checkpoint else fn

  def _group_input(self, g: int, h, hs_prev):
    """What group g reads: the running ``h``, or every output of group g-1."""
    return hs_prev if self.plan[g].reads == "all" else h

  def _scan_inputs(self, g: int, p, stream, select=None):
    """``(xs, take, p_fixed)`` for a scanned group: the scanned sequence, how a
    step reads its params from its slice, and the params fixed over the steps."""
    group = self.plan[g]
    if group.stacked:
      xs, take = layer_stream(p, select)
      return xs, take, None
    p = take_sample(p, select)
    return group.kind.prepare(p, stream), None, p

  def trace(self, params, x, probes=None, scale: Optional[RowScale] = None,
            select=None) -> Trace:
    """Forward pass that keeps every z and h (what backprop caches).

    Args:
      params: ``init``-shaped parameters; with ``select``, every leaf carries one
        more leading axis, of samples.
      x: the input (:meth:`check_input`).
      probes: optional additions to the pre-activations, ``z += probes[g]``,
        shaped like the trace's ``z`` (:meth:`zero_probes`): the derivative with
        respect to ``probes[g]`` is ``delta``.
      scale: optional :class:`RowScale`: per-row factors on every layer's matmul
        and bias (dense kinds only).
      select: optional sample index into the params' leading axis. The layers
        read their weights one at a time from the selected sample, so a stack
        of many nets' weights is never copied to pick one.

    Returns a :class:`Trace` with one entry per group; scanned groups come with
    a leading layer (or step) axis.
    """
    self.check_params(params if select is None else
                      jax.tree_util.tree_map(lambda a: a[0], params))
    h, stream = self.entry(self.check_input(x))
    entries = self.split_params(params)
    probes = (None,) * len(entries) if probes is None else probes
    zs, hs = [], []
    for g, (p, probe) in enumerate(zip(entries, probes)):
      h = self._group_input(g, h, hs[-1] if hs else None)
      layer = self.layer(g)
      if self.is_scanned(g):
        xs, take, fixed = self._scan_inputs(g, p, stream, select)

        def step(h, xs_probe, layer=layer, take=take, fixed=fixed):
          xs, probe = xs_probe
          h, z = layer(h, take(xs), probe, scale) if fixed is None else \
              layer(h, (fixed, xs), probe, scale)
          return h, (z, h)

        h, (z, hstack) = jax.lax.scan(step, h, (xs, probe))
        zs.append(z)
        hs.append(hstack)
      else:
        h, z = layer(h, take_sample(p, select), probe, scale)
        zs.append(z)
        hs.append(h)
    return Trace(tuple(zs), tuple(hs))

  def _run_scan(self, g, h, p, stream, keep: bool = False):
    """The scanned group g on h, under its remat scheme: ``(h, outputs)``, the
    outputs of every layer (or step) only with ``keep``, else None."""
    k = self.remat_block
    xs, take, fixed = self._scan_inputs(g, p, stream)
    read = take if fixed is None else (lambda x: (fixed, x))

    def body(layer):
      def step(h, x):
        h = layer(h, read(x))[0]
        return h, (h if keep else None)
      return step

    if k <= 1:
      return jax.lax.scan(body(self.layer(g)), h, xs)
    step = body(self.layer(g, checkpoint=False))
    length = jax.tree_util.tree_leaves(xs)[0].shape[0]

    def block(size):
      # Layers [i k, i k + size) under one checkpoint: the backward pass keeps
      # only the block's input h and recomputes the block. The block's slice is
      # cut out of the whole sequence inside the checkpoint (not passed in as
      # scanned slices), so a remainder block copies nothing, and its gradients
      # are written back into one sequence-shaped buffer.
      @jax.checkpoint
      def run(h, i):
        xb = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_slice_in_dim(a, i * k, size), xs)
        return jax.lax.scan(step, h, xb)
      return run

    n, r = divmod(length, k)
    outs = []
    if n:
      h, hb = jax.lax.scan(lambda h, i: block(k)(h, i), h, jnp.arange(n))
      if keep:
        outs.append(hb.reshape((n * k,) + hb.shape[2:]))
    if r:                             # the last L mod k layers: a shorter block
      h, hb = block(r)(h, n)
      outs.append(hb)
    return h, (jnp.concatenate(outs, axis=0) if keep else None)

  def apply(self, params, x) -> jax.Array:
    """The network output for input ``x`` (:meth:`check_input`)."""
    self.check_params(params)
    h, stream = self.entry(self.check_input(x))
    entries = self.split_params(params)
    k = self.remat_block
    blocks = k > 1 and not any(self.is_scanned(g) for g in range(len(entries)))
    hs_prev, g = None, 0
    while g < len(entries):
      h = self._group_input(g, h, hs_prev)
      if self.is_scanned(g):
        needs_all = g + 1 < len(entries) and self.plan[g + 1].reads == "all"
        h, hs_prev = self._run_scan(g, h, entries[g], stream, keep=needs_all)
        g += 1
      elif blocks:
        # Block remat of an unscanned net: k consecutive layers in one checkpoint.
        gs = tuple(range(g, min(g + k, len(entries))))
        layers = [self.layer(i, checkpoint=False) for i in gs]

        @jax.checkpoint
        def block(h, ps, layers=layers):
          for layer, p in zip(layers, ps):
            h = layer(h, p)[0]
          return h

        h = block(h, tuple(entries[i] for i in gs))
        g = gs[-1] + 1
      else:
        # Per-layer remat; with block remat of a scanned net, the layers
        # around the scan are checkpointed one by one.
        h, _ = self.layer(g, checkpoint=k >= 1)(h, entries[g])
        g += 1
    return h

  # -- what measurement needs ------------------------------------------------

  def zero_probes(self, x, dtype=None) -> Tuple[jax.Array, ...]:
    """Zeros shaped like the trace's pre-activations for input ``x``."""
    x = jnp.asarray(x)
    dtype = dtype or x.dtype
    params = jax.eval_shape(lambda: self.init(jax.random.PRNGKey(0), dtype=dtype))
    zs = jax.eval_shape(lambda p: self.trace(p, x).z, params)
    return tuple(jnp.zeros(z.shape, z.dtype) for z in zs)

  def layer_inputs(self, x, trace: Trace) -> Tuple[jax.Array, ...]:
    """Every group's layer inputs, aligned with the trace: ``h_0`` for the first
    (a tied group: its carried state before every step), ``(L, ...)`` for a
    scanned group (its input, then its own outputs but the last)."""
    h, _ = self.entry(jnp.asarray(x))
    ins = []
    for g, hg in enumerate(trace.h):
      h = self._group_input(g, h, trace.h[g - 1] if g else None)
      ins.append(jnp.concatenate([h[None], hg[:-1]], axis=0) if self.is_scanned(g) else h)
      h = hg[-1] if self.is_scanned(g) else hg
    return tuple(ins)

  def unstack(self, params) -> tuple:
    """Params as one entry per layer (stacked groups split), for inspection."""
    out = []
    for g, p in enumerate(self.split_params(params)):
      if self.is_stacked(g):
        n = jax.tree_util.tree_leaves(p)[0].shape[0]
        out.extend(jax.tree_util.tree_map(lambda a: a[i], p) for i in range(n))
      else:
        out.append(p)
    return tuple(out)

