"""The one timer (benchmarks.timing) that the benchmark, its child processes and the
accelerator check share: what it counts, waits for and reports, not how long anything takes."""
import numpy as np
import pytest

from benchmarks import timing


class Pending:
  """A result that counts how often it was waited for (as jax.block_until_ready does)."""
  waited = 0

  def block_until_ready(self):
    Pending.waited += 1
    return self


def _counting():
  calls = []

  def fn():
    calls.append(1)
    return [Pending(), {"b": Pending()}]
  return fn, calls


def test_every_call_is_waited_for():
  Pending.waited = 0
  fn, calls = _counting()
  assert timing.call_seconds(fn, number=4) >= 0
  assert len(calls) == 4 and Pending.waited == 8          # both leaves of every result


def test_window_makes_at_least_min_calls_and_stops_at_max_calls():
  fn, calls = _counting()
  t = timing.time_window(fn, window=0.0)
  assert t["calls"] == len(calls) == timing.MIN_CALLS      # no time asked: the minimum
  fn, calls = _counting()
  t = timing.time_window(fn, window=1e9, max_calls=7)      # endless window: the cap
  assert t["calls"] == len(calls) == 7
  fn, calls = _counting()
  assert timing.time_window(fn, 0.0, min_calls=5, max_calls=2)["calls"] == 5


def test_summary_statistics_against_a_sorted_list():
  samples = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.4, 0.8, 0.6, 1.0, 0.05]
  s = sorted(samples)
  got = timing.summary(samples)
  assert got["median_s"] == s[5] and got["min_s"] == s[0] and got["max_s"] == s[-1]
  # Linear interpolation between order statistics: rank p (n - 1).
  for key, p in (("p10_s", 0.1), ("p90_s", 0.9)):
    r = p * (len(s) - 1)
    lo = int(r)
    assert got[key] == pytest.approx(s[lo] + (r - lo) * (s[lo + 1] - s[lo]), abs=1e-15)
  assert got["p10_s"] <= got["median_s"] <= got["p90_s"]


def test_interleaved_calls_each_function_warmup_plus_calibration_plus_repeats():
  fa, ca = _counting()
  fb, cb = _counting()
  t = timing.time_interleaved({"a": fa, "b": fb}, repeats=3, warmup=2, min_time=0.0)
  # min_time 0: one call per repeat, after the warm-up calls and one calibration call.
  assert len(ca) == len(cb) == 2 + 1 + 3
  for v in t.values():
    assert v["number"] == 1 and v["repeats"] == 3
    assert v["min_s"] <= v["median_s"] <= v["max_s"]
  assert np.isfinite([v["median_s"] for v in t.values()]).all()
