"""The depth sweep: per-layer gradient profiles across activation x init x depth, against theory.

Seed 003 §4.4 explains vanishing and exploding gradients by the product
``dL/dh_{k-1} = dL/dh_L prod_{t=k..L} phi'(z_t) w_t``. For a wide random net
with ``W ~ N(0, sigma_w2 / n)``, ``b ~ N(0, sigma_b2)`` whose pre-activations
sit at the variance fixed point q*, mean-field theory turns the product into a
rate (Schoenholz et al. 2017)::

    E ||delta_{l-1}||^2 = chi_1 E ||delta_l||^2,   chi_1 = sigma_w2 E_z[phi'(sqrt(q*) z)^2],

so ``log ||delta_l||^2`` should fall (chi_1 < 1) or rise (chi_1 > 1) by
``ln chi_1`` per layer going backwards. This module measures that slope on real
networks and sets it beside the prediction of :mod:`jaxbp.meanfield`.

The experiment, per configuration (activation, weights, sigma_w2, sigma_b2, depth):

* the net is ``MLP.uniform(width, width, depth, width, stack=True)``: ``depth``
  hidden layers under ``lax.scan``, a linear output layer;
* inputs are rows of squared norm ``width * v0`` with ``sigma_w2 v0 + sigma_b2 = q*``,
  so that z_1 already has variance q* and no layer is a transient of the
  variance map (the prediction holds at q*); where q* is 0 or infinite, v0 = 1;
* the loss is a random linear readout ``L = sum_b <r_b, h_K[b]>``, r standard
  normal: ``delta_K = r`` is independent of the forward pass, as the theory's
  gradient-independence assumption wants (MSE to random targets is not: its
  ``h_K`` part adds a transient of tenths of a nat at the top layers);
* the deltas come from the hand recursion :func:`jaxbp.backprop.backward`, their
  norms from :func:`jaxbp.diagnostics.norms_from_deltas`, and the slope from a
  least squares fit of ``ln mean_batch ||delta_l||^2`` over the hidden layers,
  leaving ``skip`` layers out at either end
  (:func:`jaxbp.diagnostics.fit_log_slope`), one fit per seed, then averaged.

Compute is organised for the compiler. Per depth, one program draws every
seed's standard-normal sample (and its orthonormalised twin); per (activation,
depth, weight family), one program measures any number of configurations:
sigma_w2, sigma_b2, the input scale and the sample index are array inputs, so
configurations and seeds share the samples (common random numbers). Since a
configuration only rescales its seed's sample (``W = sqrt(sigma_w2) W_unit``,
``b = sqrt(sigma_b2) b_unit``, ``x = sqrt(v0) x_unit``) and a scalar commutes
with a matmul, the configurations of one seed run as one row-stacked net
(:func:`~jaxbp.studies.depth_sweep.measure_rows`): their batches stacked into ``C * batch`` rows, the
scales applied per row, every matmul ``(C * batch, n) @ (n, n)`` on the
seed's unscaled weights, which are never copied. Exact, not an approximation:
rows never mix, so each row follows its own configuration's net, equal to
:func:`measure` (the per-configuration reference) to round-off. Seeds (groups)
run under ``lax.map``, as many vmapped at once as ``memory_gb`` allows. With
several local devices the group axis is split over a ``Mesh`` with
``shard_map`` (``NamedSharding`` inputs, samples replicated); every group is
independent, so no device talks to another.

Results are resumable: each finished configuration is one atomic JSON file in
``out_dir/store`` (:class:`jaxbp.results.ResultStore`); a rerun skips them.

References:
  Poole et al., "Exponential expressivity in deep neural networks through
    transient chaos", NeurIPS 2016.
  Schoenholz et al., "Deep information propagation", ICLR 2017.
  He et al., "Delving deep into rectifiers", ICCV 2015.
  Glorot & Bengio, "Understanding the difficulty of training deep feedforward
    neural networks", AISTATS 2010.
  Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of
    learning in deep linear neural networks", ICLR 2014.

>>> import jax; jax.config.update("jax_enable_x64", True)
>>> cfg = SweepConfig(activations=("tanh",), inits=("xavier",), sigma_b2=(0.0,),
...                   depths=(8,), width=32, batch=2, seeds=(0,), skip=1)
>>> summary = run(cfg, "/tmp/jaxbp_doc_sweep")   # doctest: +SKIP
"""
from jaxbp.studies.depth_sweep.config import ACTIVATIONS, DTYPES, FULL, INITS, NAMED_INITS, QUICK, VERSION
from jaxbp.studies.depth_sweep.config import Point, SweepConfig, Theory
from jaxbp.studies.depth_sweep.config import critical_line, grid, store_key, theory
from jaxbp.studies.depth_sweep.measure import RANDOM_READOUT, Measurement, Sample
from jaxbp.studies.depth_sweep.measure import draw_samples, measure, measure_groups, measure_rows
from jaxbp.studies.depth_sweep.measure import sweep_net
from jaxbp.studies.depth_sweep.records import fit_window, summarise
from jaxbp.studies.depth_sweep.report import TOLERANCE, agreement
from jaxbp.studies.depth_sweep.schedule import group_items
from jaxbp.studies.depth_sweep.study import Config, run

__all__ = (
    "ACTIVATIONS", "DTYPES", "FULL", "INITS", "NAMED_INITS", "QUICK", "VERSION", "Config",
    "Measurement", "Point", "RANDOM_READOUT", "Sample", "SweepConfig", "TOLERANCE", "Theory",
    "agreement", "critical_line", "draw_samples", "fit_window", "grid", "group_items",
    "measure", "measure_groups", "measure_rows", "run", "store_key", "summarise", "sweep_net",
    "theory",
)
