"""The studies behind the thin experiment scripts, on tiny configs (the scripts
only parse flags into a Config and call ``run``), and what every script shares:
bad flag values and a rerun into another config's ``--out`` are one line, exit
status 2, before any compute; ``--help`` describes every flag and its default."""
import argparse
import pathlib
import runpy
import subprocess
import sys

import jax
import pytest

from jaxbp import io as results
from jaxbp.studies import cli
from jaxbp.studies import driver
from jaxbp.studies import spectrum
from jaxbp.studies.seed_examples import runner as seed_runner
from jaxbp.studies import train_digits

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_train_digits_run(tmp_path):
  config = train_digits.Config(epochs=2, sizes=(64, 16, 10), grad_method="backprop")
  summary = train_digits.run(config, str(tmp_path))
  assert summary["steps"] == 2 * (1438 // 32) and summary["test_accuracy"] > 0.5
  assert results.read_json(tmp_path / "config.json")["grad_method"] == "backprop"
  assert results.read_json(tmp_path / "summary.json") == summary
  assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
  assert "| test |" in (tmp_path / "report.md").read_text()


BAD_TRAIN = [
    ({"optimizer": "adamw"}, ["optimizer", "adamw", "sgd"]),
    ({"activation": "swish"}, ["activation", "swish", "tanh"]),
    ({"sizes": (64, 16, 3)}, ["sizes", "10 classes"]),
    ({"dataset": "mnist"}, ["dataset", "mnist", "digits"]),
    ({"epochs": 0}, ["epochs", ">= 1"]),
    ({"learning_rate": 0.0}, ["learning_rate", "> 0"]),
    ({"grad_method": "numeric"}, ["grad_method", "autodiff"]),
    ({"epoch": 3}, ["epoch", "valid keys"]),
]


@pytest.mark.parametrize("config,words", BAD_TRAIN, ids=[str(b[0]) for b in BAD_TRAIN])
def test_train_digits_bad_config_raises(config, words):
  with pytest.raises(ValueError) as e:
    train_digits.Config.from_dict(config)
  for w in words:
    assert w in str(e.value), (w, str(e.value))


def test_jacobian_spectrum_quick_run(tmp_path):
  out = spectrum.run(spectrum.Config.quick(width=16, depths=(1, 3), seeds=2), str(tmp_path))
  assert "Var[s^2]" in out["report"]
  rows = results.read_json(tmp_path / "spread.json")
  assert {r["depth"] for r in rows} == {1, 3}
  assert (tmp_path / "histograms.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("script,flags,words", [
    ("train_digits.py", ["--activation", "swish"], ["activation", "swish"]),
    ("remedies.py", ["--depths", "0"], ["depth", ">= 1"]),
    ("jacobian_spectrum.py", ["--depths", "8", "4"], ["increasing"]),
    ("himmelblau.py", ["--steps", "0"], ["steps", ">= 1"]),
], ids=["train_digits", "remedies", "jacobian_spectrum", "himmelblau"])
def test_scripts_report_bad_flags_like_argparse(tmp_path, script, flags, words):
  out = tmp_path / "never"
  proc = subprocess.run([sys.executable, str(ROOT / "experiments" / script), "--out", str(out),
                         *flags], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr
  error = proc.stderr.strip().splitlines()[-1]
  assert error.startswith(f"{script}: error: ") and "Traceback" not in proc.stderr
  for w in words:
    assert w in error, (w, error)
  assert not out.exists()   # failed before any compute or file


def test_debug_brings_the_traceback_back(tmp_path):
  cmd = [sys.executable, str(ROOT / "experiments" / "himmelblau.py"), "--out",
         str(tmp_path / "o"), "--steps", "0"]
  quiet = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
  loud = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
  assert "steps must be an int >= 1" in quiet.stderr.strip().splitlines()[-1]
  assert loud.returncode != 0 and "Traceback" in loud.stderr and "ValueError" in loud.stderr


# Every script of experiments/ but the two kept elsewhere (benchmark.py, accelerator_check.py):
# the flags of a tiny run, and a change of one of them.
RERUN = {
    "conv_spectrum.py": (["--depths", "2", "--channels", "2", "--size", "4"], ["--channels", "3"]),
    "conv_sweep.py": (["--depth", "5", "--skip", "1", "--channels", "2", "--size", "4"],
                      ["--channels", "3"]),
    "conv_train.py": (["--depth", "2", "--channels", "2", "--epochs", "1"], ["--epochs", "2"]),
    "criticalize.py": (["--quick", "--width", "4"], ["--width", "5"]),
    "depth_sweep.py": (["--quick", "--depths", "3", "--width", "4"], ["--width", "5"]),
    "himmelblau.py": (["--steps", "2"], ["--steps", "3"]),
    "inspect_model.py": (["--width", "4", "--depth", "2", "--batch", "2"], ["--width", "5"]),
    "jacobian_spectrum.py": (["--quick", "--width", "4", "--depths", "1", "2"], ["--width", "5"]),
    "remedies.py": (["--quick", "--depths", "2", "--width", "4", "--steps", "2"],
                    ["--width", "5"]),
    "rnn_sweep.py": (["--quick", "--width", "4"], ["--width", "5"]),
    "seed_examples.py": (["--no-torch"], ["--seed", "1"]),
    "train_digits.py": (["--epochs", "1"], ["--epochs", "2"]),
    "transformer_sweep.py": (["--quick", "--parts", "rank", "--rank-depth", "1"],
                             ["--seeds", "3"]),
    "transformer_train.py": (["--quick", "--depths", "2", "--steps", "2", "--tail", "1",
                              "--curve-every", "1"], ["--steps", "3"]),
    "width_sweep.py": (["--quick", "--widths", "4", "--depth", "2", "--seeds", "2"],
                       ["--seeds", "3"]),
}
SCRIPTS = sorted(p.name for p in (ROOT / "experiments").glob("*.py")
                 if p.name not in ("benchmark.py", "accelerator_check.py"))
# Flags whose absence means "none" or "off", so they have no default to show.
NO_DEFAULT = {"out", "config", "scaling", "coordinator", "num_processes", "process_id"}


def test_every_script_is_checked_here():
  missing = sorted(set(SCRIPTS) - set(RERUN))
  assert not missing, f"give {missing} a tiny run and a changed flag in RERUN"


def _main(script, monkeypatch):
  path = ROOT / "experiments" / script
  monkeypatch.setattr(sys, "argv", [str(path)])   # argparse's prog, as on the command line
  return runpy.run_path(str(path))["main"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_rerun_with_a_changed_flag_is_one_line_and_exit_2(script, tmp_path, monkeypatch,
                                                            capsys):
  first, changed = RERUN[script]
  out = tmp_path / "out"
  main = _main(script, monkeypatch)

  def stop(*args, **kwargs):   # a first run stopped once its config.json is written
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(driver, "resume", stop)
  monkeypatch.setattr(seed_runner, "EXAMPLES", ())   # seed_examples computes no example
  try:
    main(first + ["--out", str(out)])
  except SystemExit as e:      # the failed write, one line too
    err = capsys.readouterr().err
    assert e.code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{script}: OSError: ") and "No space left" in err, err
  assert (out / "config.json").exists()
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    main(first + changed + ["--out", str(out)])
  err = capsys.readouterr().err
  assert e.value.code == 2, err
  assert len(err.strip().splitlines()) == 1, err
  assert err.startswith(f"{script}: error: ") and "holds the results of another config" in err
  # A script may turn float64 on, never off: the test process (and a caller) keeps it.
  assert jax.config.jax_enable_x64, f"{script} turned jax_enable_x64 off"


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_describes_every_flag_and_its_default(script, monkeypatch):
  seen = {}

  def grab(self, *args, **kwargs):
    seen["parser"] = self
    raise SystemExit(0)
  monkeypatch.setattr(cli.Parser, "parse_args", grab)
  with pytest.raises(SystemExit):
    _main(script, monkeypatch)(["--help"])
  p = seen["parser"]              # a KeyError: the script does not use cli.parser
  assert p.description.rstrip().endswith("."), p.description   # not cut mid-sentence
  assert "see above" not in p.format_help()
  formatter = p.formatter_class(prog=p.prog)
  for action in p._actions:
    if isinstance(action, argparse._HelpAction):
      continue
    assert action.help, f"{script} {action.option_strings}: no help"
    shown = formatter._get_help_string(action)
    if action.nargs != 0 and action.dest not in NO_DEFAULT:
      assert "(default" in shown, f"{script} {action.option_strings}: no default in {shown!r}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_argparse_errors_are_one_line(script, tmp_path, monkeypatch, capsys):
  with pytest.raises(SystemExit) as e:
    _main(script, monkeypatch)(["--out", str(tmp_path / "o"), "--no-such-flag"])
  err = capsys.readouterr().err
  assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
  assert err.startswith(f"{script}: error: unrecognized arguments: --no-such-flag"), err
  assert not (tmp_path / "o").exists()
