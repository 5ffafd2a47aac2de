"""Critical initialisation for any JAX model: ``criticalize(loss_fn, params, *args)``.

:func:`jaxbp.inspect` says where a model's gradients vanish or explode;
:func:`criticalize` rescales its weights until they do neither. Every layer that
inspect finds (a matmul or convolution between a weight from the params and the
data) gets one scalar ``s_l`` on the weight leaf that feeds it
(:mod:`jaxbp.measure.weight_map`): a stacked ``(L, ...)`` leaf scanned by
``lax.scan`` gets one scalar per slice ``W[t]``, a leaf shared by several layers
(an RNN's recurrent weight, used at every step) one scalar for all of them.

``target="gradient"``: with the row-vector recursion
``delta_{l-1} = (delta_l W_l^T) * phi'(z_{l-1})`` the backward gain of layer l,
``delta_sq[l-1] / delta_sq[l]``, is ``s_l^2`` times a factor that depends on
the layers before l only (in mean-field theory ``sigma_w^2 E[phi'(z)^2]``,
chi_1). Each iteration measures every gain with one :func:`inspect` pass and
moves ``ln s_l^2`` by ``-ln gain_l`` (exact for that layer alone), accelerated
by Anderson mixing over the last few iterations, since changing a layer's
scale also moves the q, and so the phi', of the layers after it. A shared
weight's step is its layers' mean ``-ln gain``. The first layer has no gain
(nothing below it carries a delta); it only sets the level of q.

The q band: the first layers are scaled into ``q`` in :data:`Q_START` =
[0.01, 1], the range of a unit-variance (LSUV) layer and below: at ``q <= 1``
tanh is not saturated (``E[tanh'(z)^2] >= 0.46``), and ``q >= 0.01`` keeps the
signal well above round-off and a typical bias. The gain steps never move a
later layer's q further out of :data:`Q_GUARD` = [1e-4, 100], a guard against
blow-up and underflow; gain 1 alone rarely leaves it, because a saturating phi
has ``E[phi^2] / E[phi'^2] <= q`` (tanh's q then decays slowly with depth), and
a ReLU chain at gain 1 keeps its q. A layer the guard holds back is reported as
not reaching its target.

The result is the best iterate, not the last one (for ``"gradient"`` the
flattest profile, the smallest largest ``|ln delta_sq - mean|``; for
``"forward"`` the smallest largest ``|ln q|``):
the gain steps assume a layer's gain depends mostly on its own scale. Where it
moves as much with the other layers' scales (a gelu chain, whose E[phi'^2]
doubles between small and large q, so that a common excess of scale compounds
through the q of every later layer; parallel branches, as attention's q, k and
v, which the execution-order chain pairs with each other) the steps need not
converge, and what is returned is never further from the target, by that
measure, than the params as given.

Profile descent (``target="gradient"`` only): where the gain steps end short of
``tol``, what the target asks for, a flat ln delta_sq profile, is minimised
directly: Adam on the log-scales, for at most ``descent_steps`` steps, of the L6
mean of ``|ln delta_sq - mean|`` over the rows (a smooth stand-in for the
largest), the q band a penalty. Each step differentiates an inspect pass
(second order through the model), so it is several passes' cost; it needs no
chain, so it also reaches layers the execution-order pairs describe badly. It
stops once the profile is flat to :data:`DESCENT_DONE` nats, and the best
iterate over both phases is returned. This is close to GradInit and MetaInit
(Zhu et al. 2021, Dauphin & Schoenholz 2019), which also learn per-layer scales
by gradient descent, there on a loss-decrease or curvature objective.

``target="forward"`` is LSUV (Mishkin & Matas 2016): every layer's ``q = 1``
(their unit output variance of the pre-activation). LSUV scales one layer at a
time, in data order, a forward pass per step; here every layer moves at once
by ``-ln q_l + 0.5 ln q_{l-1}`` (between a chain, where fixing layer l-1 fixes
l too, and independent layers), with the same Anderson mixing: the same fixed
point, in far fewer passes.

References:
  Mishkin & Matas 2016, "All you need is a good init" (LSUV).
  Schoenholz et al. 2017, "Deep information propagation" (chi_1 = 1).
  Walker & Ni 2011, "Anderson acceleration for fixed-point iterations".
  Zhu et al. 2021, "GradInit: learning to initialize neural networks".
  Dauphin & Schoenholz 2019, "MetaInit: initializing learning by learning to initialize".
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbp.measure.weight_map as weight_map
from jaxbp.core import checks
from jaxbp.measure.criticalized import WHERE, Criticalized, warn_missed
from jaxbp.measure.inspect import inspect, is_float
from jaxbp.measure.sites import LAYER_PRIMITIVES

TARGETS = ("gradient", "forward")
Q_START = (1e-2, 1.0)   # q of the first layers (no gain to set them)
Q_GUARD = (1e-4, 1e2)   # q no gain step pushes a later layer beyond
MEMORY = 5              # Anderson mixing: iterations remembered
MAX_STEP = 4.0          # most a step moves ln s^2 (a factor e^2 on s)
DESCENT_RATE = 0.1      # Adam's step on ln s^2 in the profile descent
DESCENT_BAND = 10.0     # weight of the q band's penalty there
DESCENT_WARMUP = 50     # steps of a linear warm-up: Adam's first steps are
                        # lr * sign(g) on every layer at once, which moves q by
                        # e^(lr * depth) where the gains are balanced on an edge
DESCENT_DONE = 0.25     # nats: a profile this flat ends the descent


def _segment_mean(values, weights, ids, n):
  total = jax.ops.segment_sum(jnp.where(weights, values, 0.0), ids, n)
  count = jax.ops.segment_sum(weights.astype(values.dtype), ids, n)
  return total / jnp.maximum(count, 1), count > 0


def criticalize(loss_fn: Callable[..., Any], params, *args, target: str = "gradient",
                max_iters: int = 20, tol: float = 0.01, descent_steps: int = 1000):
  """Rescales each layer's weight so that gradients neither vanish nor explode.

  Args:
    loss_fn: pure ``(params, *args) -> scalar``, as for :func:`jaxbp.inspect`.
    params: any pytree (plain dicts, flax variables, ``nnx.split(model)[1]``, an
      equinox module, haiku params).
    *args: the batch; the result is deterministic given it.
    target: ``"gradient"``, every layer's backward gain
      ``delta_sq[l-1] / delta_sq[l]`` 1 with q kept in a band, or ``"forward"``,
      LSUV's unit ``q`` per layer (see the module docstring).
    max_iters: the most updates (one :func:`inspect` pass each).
    tol: the target is met where ``|ln gain| <= tol`` (``|ln q|`` for "forward")
      at every layer; the loop stops there.
    descent_steps: for ``"gradient"``, where the gain steps end short of ``tol``,
      the most Adam steps of the profile descent that follows (0: none); each
      differentiates one :func:`inspect` pass (see the module docstring). The
      default leaves room for a slow draw: on five seeds of a depth-50 gelu MLP
      the descent met the target within 300 steps on four, within 900 on the fifth.

  Returns:
    ``(new_params, info)``: ``new_params`` has the structure, dtypes and shapes of
    ``params``, each weight leaf multiplied by its layers' scales (other leaves as
    given); ``info`` is a :class:`Criticalized`, whose ``report`` is the
    :class:`LayerReport` after the change and ``scales`` the factors applied.

  It jits (``jax.jit(lambda p, x, y: criticalize(loss_fn, p, x, y))``): the
  iterations run in one ``lax.while_loop``. Run eagerly it warns, naming the
  layers, where some cannot reach the target (a dead ReLU layer: no gradient
  reaches it); under ``jit`` read ``info.reached`` instead.

  Raises:
    ValueError: no layer found, or none with a weight that is one param leaf;
      a bad ``target``, ``max_iters`` or ``tol``.

  >>> import jax, jax.numpy as jnp, jaxbp
  >>> net = jaxbp.MLP(sizes=(8,) * 6 + (2,), activation="tanh")
  >>> params = net.init(jax.random.PRNGKey(0), init=jaxbp.initializers.gaussian(4.0))
  >>> x = jax.random.normal(jax.random.PRNGKey(1), (32, 8))
  >>> loss = lambda p, x: jnp.mean(net.apply(p, x) ** 2)
  >>> new, info = jaxbp.criticalize(loss, params, x)
  >>> bool(abs(info.report.log_slope) < 0.01)
  True
  """
  checks.one_of(target, TARGETS, "target", WHERE)
  max_iters = checks.positive_int(max_iters, "max_iters", WHERE)
  tol = checks.positive(tol, "tol", WHERE)
  descent_steps = checks.int_at_least(descent_steps, 0, "descent_steps", WHERE)
  lay = weight_map.layout(loss_fn, params, args, WHERE)
  G = len(lay.groups)
  loose = [n for n, k, g in zip(lay.names, lay.kinds, lay.row_group)
           if g < 0 and k in LAYER_PRIMITIVES]
  if G == 0:
    raise ValueError(
        f"{WHERE}: none of the {len(lay.names)} layer(s) found has a weight that is one "
        f"param leaf (or a slice of one) to rescale: {list(lay.names)[:5]}. A weight built "
        "from several leaves, or carried through a loop, has no single scale.")
  if loose:
    warnings.warn(f"{WHERE}: {len(loose)} layer(s) have a weight that is not one param "
                  f"leaf and keep it as it is: {loose[:5]}.", stacklevel=2)

  has_pairs = np.zeros(G, bool)
  has_pairs[lay.pair_group] = True
  floats = [leaf for leaf in jax.tree_util.tree_leaves(params) if is_float(leaf)]
  dtype = jnp.promote_types(jnp.result_type(*floats), jnp.float32)
  lo = jnp.asarray(np.log(np.where(has_pairs, Q_GUARD[0], Q_START[0])), dtype)
  hi = jnp.asarray(np.log(np.where(has_pairs, Q_GUARD[1], Q_START[1])), dtype)
  rg = jnp.asarray(np.where(lay.row_group >= 0, lay.row_group, G))
  sizes = np.bincount(lay.row_group[lay.row_group >= 0], minlength=G)
  shared = jnp.asarray(sizes >= 2)
  # A row's place among its shared weight's rows (-1 outside such a group).
  member = np.full(len(lay.names), -1)
  for g in np.flatnonzero(sizes >= 2):
    rows_g = np.flatnonzero(lay.row_group == g)
    member[rows_g] = np.arange(len(rows_g))
  member = jnp.asarray(member)
  # "forward": a one-layer group whose previous row has a scale of its own.
  chained = np.zeros(G, bool)
  prev_of = np.zeros(G, np.int32)
  for p, g in zip(lay.pair_prev, lay.pair_group):
    if np.sum(lay.row_group == g) == 1 and lay.row_group[p] >= 0:
      chained[g], prev_of[g] = True, p

  def ran(rep):
    # The rows that ran (a lax.cond branch not taken did not).
    return jnp.ones(len(lay.names), bool) if rep.taken is None else rep.taken

  def residual(rep):
    # The step towards the target per group (0 there) and how far each group is
    # from it (inf where it cannot be measured: no delta, or q = 0).
    taken = ran(rep)
    q_g, _ = _segment_mean(rep.q, taken, rg, G + 1)
    lq = jnp.log(q_g[:G])
    if target == "gradient":
      ld = jnp.log(rep.delta_sq)
      both = taken[lay.pair_prev] & taken[lay.pair_row]
      lg, measured = _segment_mean(ld[lay.pair_prev] - ld[lay.pair_row], both, lay.pair_group, G)
      # A shared weight sets the gain of all its layers: the least-squares slope of
      # ln delta_sq over them (what log_slope measures), not its mean step, which
      # the first and last alone decide.
      w = (taken & jnp.isfinite(ld) & (member >= 0)).astype(ld.dtype)
      t = member.astype(ld.dtype)
      n, st, sl, stt, stl = (jax.ops.segment_sum(w * v, rg, G + 1)[:G]
                             for v in (1.0, t, jnp.where(w > 0, ld, 0.0), t * t,
                                       t * jnp.where(w > 0, ld, 0.0)))
      slope = (n * stl - st * sl) / jnp.where(n >= 2, n * stt - st * st, 1.0)
      lg = jnp.where(shared, -slope, lg)
      measured = jnp.where(shared, n >= 2, measured)
      ok = measured & jnp.isfinite(lg)
      # A gain that under- or overflowed (delta_sq 0 or inf on both sides, deep in a
      # vanishing net) moves with the median of those measured until it is measured.
      fill = jnp.nanmedian(jnp.where(ok, lg, jnp.nan))
      move = jnp.where(ok, -lg, jnp.where(measured & jnp.isfinite(fill), -fill, 0.0))
      lq = jnp.where(jnp.isnan(lq), 0.0, jnp.clip(lq, -80.0, 80.0))
      start = jnp.clip(lq, lo, hi) - lq
      move = jnp.where(has_pairs, move, start)
      move = jnp.where(has_pairs & (lq < lo), jnp.maximum(move, 0.0), move)
      move = jnp.where(has_pairs & (lq > hi), jnp.minimum(move, 0.0), move)
      miss = jnp.where(has_pairs, jnp.where(measured, jnp.abs(lg), 0.0), jnp.abs(start))
    else:
      move = -lq + jnp.where(chained, 0.5 * jnp.log(rep.q)[prev_of], 0.0)
      miss = jnp.abs(lq)
    move = jnp.where(jnp.isfinite(move), move, 0.0).astype(dtype)
    return move, jnp.where(jnp.isnan(miss), jnp.inf, miss).astype(dtype)

  def profile(rep, before):
    # ln delta_sq's distance from its mean over the rows that ran and had a
    # gradient at the start (a dead ReLU layer stays dead; 0 elsewhere); ok is
    # False where one of them under- or overflowed.
    taken = ran(rep)
    use = taken & (before.delta_sq > 0)
    ld = jnp.log(jnp.maximum(rep.delta_sq, jnp.finfo(dtype).tiny))
    ok = ~jnp.any(use & ~((rep.delta_sq > 0) & jnp.isfinite(rep.delta_sq)))
    n = jnp.maximum(jnp.sum(use), 1)
    dev = jnp.where(use, ld - jnp.sum(jnp.where(use, ld, 0.0)) / n, 0.0)
    return dev, use, ok

  def keep(better, new, best):
    # The best iterate so far, (a, report, score, miss), replaced where better.
    return jax.tree_util.tree_map(lambda n, o: jnp.where(better, n, o), new, best)

  def _score(rep, before, miss):
    # How far an iterate is from the target, to keep the best: for "gradient" the
    # flatness the target is for, the largest |ln delta_sq - mean| (inf where a
    # row under- or overflowed). For "forward", the largest miss.
    if target != "gradient":
      return jnp.max(miss)
    dev, _, ok = profile(rep, before)
    return jnp.where(ok, jnp.max(jnp.abs(dev)), jnp.inf).astype(dtype)

  def measure(a):
    rep = inspect(loss_fn, weight_map.apply(lay, params, a), *args)
    if rep.names != lay.names:
      raise AssertionError(f"{WHERE}: the layers found differ from inspect's rows: "
                           f"{lay.names[:3]}... vs {rep.names[:3]}...")
    return rep

  def body(state):
    # Measure at a; stop there if the target is met or the steps are spent, else
    # take one Anderson-mixed step: a + f minus the part of it that the last
    # MEMORY steps' changes of f explain (least squares). The best iterate so far
    # (_score) is kept: where the steps do not converge, the result is never
    # worse, by that measure, than the best point visited, the params as given
    # included.
    a, before, _, it, _, dX, dF, a_prev, f_prev, best = state
    rep = measure(a)
    before = jax.tree_util.tree_map(lambda new, old: jnp.where(it == 0, new, old), rep, before)
    f, miss = residual(rep)
    score = _score(rep, before, miss)
    best = keep((it == 0) | (score < best[2]) | (jnp.max(miss) <= tol),
                (a, rep, score, miss), best)
    done = (jnp.max(miss) <= tol) | (it >= max_iters)
    slot = it % MEMORY
    dX = dX.at[slot].set(jnp.where(it > 0, a - a_prev, 0.0))
    dF = dF.at[slot].set(jnp.where(it > 0, f - f_prev, 0.0))
    gram = dF @ dF.T
    gram = gram + (1e-10 * jnp.trace(gram) + 1e-30) * jnp.eye(MEMORY, dtype=dtype)
    gamma = jnp.linalg.solve(gram, dF @ f)
    step = jnp.clip(f - (dX + dF).T @ gamma, -MAX_STEP, MAX_STEP)
    a_next = jnp.where(done, a, a + jnp.where(jnp.isfinite(step), step, 0.0))
    return (a_next, before, rep, it + jnp.where(done, 0, 1), (done, miss), dX, dF, a, f,
            best)

  def flatness(a, before):
    # The descent's objective: the L6 mean of ln delta_sq's distance from its mean
    # (near the largest, which the target bounds, yet smooth), plus the q band as
    # a penalty.
    rep = measure(a)
    dev, use, _ = profile(rep, before)
    taken = ran(rep)
    flat = (jnp.sum(dev ** 6) / jnp.maximum(jnp.sum(use), 1)) ** (1 / 3)
    q_g, _ = _segment_mean(rep.q, taken, rg, G + 1)
    lq = jnp.log(jnp.maximum(q_g[:G], jnp.finfo(dtype).tiny))
    band = jnp.sum(jax.nn.relu(lq - hi) ** 2 + jax.nn.relu(lo - lq) ** 2)
    return (flat + DESCENT_BAND * band).astype(dtype), rep

  def _descend(best, before, iters):
    # Adam on ln s^2 from the best gain iterate, keeping the best by the same
    # _score; it stops early once the profile is flat to DESCENT_DONE nats.
    opt = optax.adam(optax.linear_schedule(0.0, DESCENT_RATE, DESCENT_WARMUP))
    grad = jax.value_and_grad(flatness, has_aux=True)

    def step(state):
      a, opt_state, k, best = state
      (_, rep), g = grad(a, before)
      _, miss = residual(rep)
      score = _score(rep, before, miss)
      best = keep(score < best[2], (a, rep, score, miss), best)
      g = jnp.where(jnp.isfinite(g), g, 0.0)
      updates, opt_state = opt.update(g, opt_state)
      return a + updates, opt_state, k + 1, best

    def going(state):
      return (state[2] < descent_steps) & (state[3][2] > DESCENT_DONE) & \
          (jnp.max(state[3][3]) > tol)

    a = best[0]
    state = jax.lax.while_loop(going, step, (a, opt.init(a), jnp.asarray(0), best))
    return state[3], iters + state[2]

  a0 = jnp.zeros((G,), dtype)
  shape = jax.eval_shape(measure, a0)
  blank = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
  hist = jnp.zeros((MEMORY, G), dtype)
  state = (a0, blank, blank, jnp.asarray(0), (jnp.asarray(False), jnp.zeros((G,), dtype)),
           hist, hist, a0, a0, (a0, blank, jnp.asarray(jnp.inf, dtype), jnp.zeros((G,), dtype)))
  final = jax.lax.while_loop(lambda s: ~s[4][0], body, state)
  before, iters, best = final[1], final[3], final[9]
  short = (jnp.max(best[3]) > tol) & (best[2] > DESCENT_DONE)
  # Run eagerly, the descent is built only where it is needed: it differentiates
  # through inspect, and compiling that costs more than the gain steps' passes.
  if target == "gradient" and descent_steps and (
      isinstance(short, jax.core.Tracer) or bool(short)):
    best, iters = _descend(best, before, iters)
  a, rep, _, miss = best
  group_reached = jnp.concatenate([miss <= tol, jnp.ones((1,), bool)])
  scales = jnp.exp(0.5 * jnp.concatenate([a, jnp.full((1,), jnp.nan, dtype)]))[rg]
  info = Criticalized(rep, before, scales, group_reached[rg], iters, jnp.all(miss <= tol))
  warn_missed(lay.names, info, target, max_iters, Q_GUARD)
  return weight_map.apply(lay, params, a), info
