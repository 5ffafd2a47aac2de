"""Strict JAX for every test: float64 available, no silent rank promotion.

Hypothesis runs a bounded, derandomized profile by default, so the suite is
deterministic and quick; ``pytest --hypothesis-profile=long`` draws many more
examples, fresh each run.
"""
import jax
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

# Compiles make the first examples slow, so no deadline; no example database,
# so a test run leaves no files behind. Most examples compile a new program, so
# the default draws few (the suite must stay under 10 minutes on 2 cores); the
# properties' fixed cases are covered by the explicit tests, and "long" explores.
settings.register_profile(
    "jaxbp", max_examples=5, derandomize=True, deadline=None, database=None,
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large))
settings.register_profile(
    "long", max_examples=300, deadline=None, database=None, print_blob=True,
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large))
settings.load_profile("jaxbp")
