"""Mean-field theory: the public face of :mod:`jaxbp.theory.infinite_width` (q*,
chi_1, the variance and correlation maps, critical sigma_w^2, depth scales) and
:mod:`jaxbp.theory.finite_width` (the mean and spread of ln ||delta_l||^2 at finite
width and depth); for transformers, :mod:`jaxbp.theory.attention` (the token
kernel through a block: q and the token cosine rho per block, Dong's rank
collapse) and :mod:`jaxbp.theory.attention_gradients` (the per-block weight
gradient norms at init).

>>> import jaxbp.meanfield as mf
>>> round(float(mf.chi1("relu", 2.0, 0.1)), 6)  # He init is critical for ReLU
1.0
>>> mean, var = mf.log_gradient_stats("relu", 2.0, 0.0, width=256, depth=10)
>>> mean.shape, float(mean[0]), float(var[0])
((10,), 0.0, 0.0)
"""
from jaxbp.theory.attention import RankCollapse
from jaxbp.theory.attention import SignalProfile
from jaxbp.theory.attention import kernel_profile
from jaxbp.theory.attention import rank_collapse
from jaxbp.theory.attention import signal_profile
from jaxbp.theory.attention import token_kernel
from jaxbp.theory.attention_gradients import GradientProfile
from jaxbp.theory.attention_gradients import gradient_profile
from jaxbp.theory.finite_width import log_gradient_stats
from jaxbp.theory.finite_width import predicted_slope
from jaxbp.theory.finite_width import sweep_predictions
from jaxbp.theory.finite_width import window_slope
from jaxbp.theory.infinite_width import MAX_SIGMA_W2
from jaxbp.theory.infinite_width import NUM_POINTS
from jaxbp.theory.infinite_width import DepthScales
from jaxbp.theory.infinite_width import chi1
from jaxbp.theory.infinite_width import correlation_map
from jaxbp.theory.infinite_width import critical_sigma_w2
from jaxbp.theory.infinite_width import depth_scales
from jaxbp.theory.infinite_width import fixed_point
from jaxbp.theory.infinite_width import gaussian_expectation
from jaxbp.theory.infinite_width import gradient_log_slope
from jaxbp.theory.infinite_width import variance_map

__all__ = (
    "MAX_SIGMA_W2", "NUM_POINTS", "DepthScales", "chi1", "correlation_map",
    "critical_sigma_w2", "depth_scales", "fixed_point", "gaussian_expectation",
    "gradient_log_slope", "log_gradient_stats", "predicted_slope", "sweep_predictions",
    "variance_map", "window_slope",
    # transformers
    "GradientProfile", "RankCollapse", "SignalProfile", "gradient_profile", "kernel_profile",
    "rank_collapse", "signal_profile", "token_kernel",
)
