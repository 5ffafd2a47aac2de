"""Strict JAX for every test: float64 available, no silent rank promotion.

Hypothesis runs a bounded, derandomized profile by default, so the suite is
deterministic and quick; ``pytest --hypothesis-profile=long`` draws many more
examples, fresh each run.

Two tiers: the tests named in SLOW below (and any marked ``@pytest.mark.slow``)
form the slow tier; ``-m "not slow"`` (the README's command) runs the rest, which
still exercises every module. ``.ci/run`` runs both.
"""
import fnmatch
import pathlib

import jax
import pytest
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


# The slow tier, as node-id patterns (fnmatch): real processes and signals, the
# scripts run end to end (their studies also run in process in the fast tier),
# and the deep or repeated cases of a property that shallower cases show in the
# fast tier. Named here rather than in each file, so that the tiers are one list.
SLOW = (
    # Real processes: signals, kills, two writers, several hosts or devices.
    "tests/test_faults_processes.py::*",
    "tests/studies/test_kill_resume.py::test_sigkill_then_restart_equals_an_uninterrupted_run",
    "tests/studies/test_multihost.py::test_two_processes_write_the_one_process_results_bit_for_bit",
    "tests/studies/test_depth_sweep.py::test_four_devices_give_the_numbers_of_one",
    # Scripts end to end in a fresh interpreter.
    "tests/studies/test_depth_sweep.py::test_the_script_runs",
    "tests/studies/test_conv_sweep.py::test_the_script_runs_a_grid_for_several_activations_or_depths",
    "tests/studies/test_experiments.py::test_debug_brings_the_traceback_back",
    "tests/studies/test_seed_examples.py::test_script_prints_the_table_and_the_graph_and_writes_files",
    "tests/studies/test_accelerator_check.py::test_smoke_run_runs_every_step_the_device_tests_included",
    "tests/studies/test_accelerator_check.py::test_tests_step_fails_when_a_named_test_is_missing*",
    "tests/benchmarks/test_benchmark.py::test_quick_run_writes_every_section_target_and_same_gradient",
    "tests/benchmarks/test_benchmark.py::test_child_prints_one_json_line_and_the_parent_aggregates_it",
    "tests/benchmarks/test_rnn_benchmark.py::test_quick_run_writes_the_row_from_two_processes*",
    # A script's bad flags in a fresh interpreter: the first case stays in the fast
    # tier, and every script's parser errors are checked in process there too.
    "tests/studies/test_depth_sweep.py::test_the_script_reports_bad_flags_in_one_line[depths]",
    "tests/studies/test_depth_sweep.py::test_the_script_reports_bad_flags_in_one_line[activation]",
    "tests/studies/test_depth_sweep.py::test_the_script_reports_bad_flags_in_one_line[config]",
    "tests/studies/test_experiments.py::test_scripts_report_bad_flags_like_argparse[remedies]",
    "tests/studies/test_experiments.py::test_scripts_report_bad_flags_like_argparse[jacobian_spectrum]",
    "tests/studies/test_experiments.py::test_scripts_report_bad_flags_like_argparse[himmelblau]",
    # Depths 2 and 30, and finite differences away from depth 5: the fast tier
    # checks the same recursion against jax.grad at depths 1 (no hidden layer) and
    # 5, and against finite differences at depth 5 (every activation and loss).
    "tests/core/test_backprop.py::test_hand_recursion_matches_autodiff[*-depth30-*]",
    "tests/core/test_backprop.py::test_hand_recursion_matches_autodiff[*-depth2-*]",
    "tests/core/test_backprop.py::test_hand_recursion_matches_finite_differences[*-depth30]",
    "tests/core/test_backprop.py::test_hand_recursion_matches_finite_differences[*-depth1]",
    "tests/core/test_backprop.py::test_hand_recursion_matches_finite_differences[*-depth2]",
    "tests/core/test_conv_backprop.py::test_depths_stacked_and_unrolled_match_jax_grad[30-*]",
)


# Besides SLOW, the tests named in slow_tier.txt, one node id a line. They were
# chosen from measured durations to keep the fast tier near 4 minutes on 2 cores:
# every test file keeps its quickest test in the fast tier (and every family's
# hand-vs-jax.grad contract, the RNN and transformer PyTorch checks, the README
# and architecture tests), the quickest of the rest fill the fast tier's budget,
# and the slowest go to the slow tier. A test not listed is fast.
SLOW_TIER = pathlib.Path(__file__).with_name("slow_tier.txt")


def pytest_collection_modifyitems(config, items):
  # "[" is literal in SLOW (parameter ids), not fnmatch's character class.
  patterns = [p.replace("[", "[[]") for p in SLOW]
  listed = set(SLOW_TIER.read_text().split()) if SLOW_TIER.exists() else set()
  for item in items:
    if item.nodeid in listed or any(fnmatch.fnmatchcase(item.nodeid, p) for p in patterns):
      item.add_marker(pytest.mark.slow)
