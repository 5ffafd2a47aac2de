"""The README's example runs, and CI runs the README's test command."""
import pathlib
import re

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang):
  return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_example_runs_and_agrees(capsys):
  example = _blocks("python")[0]
  assert len(example.strip().splitlines()) <= 12
  namespace = {}
  exec(compile(example, "README.md", "exec"), namespace)
  err = float(capsys.readouterr().out.strip())
  assert err < 1e-12
  np.testing.assert_allclose(float(namespace["value"]), float(namespace["loss_fn"](
      namespace["params"], namespace["x"], namespace["y"])), rtol=1e-14)


def test_ci_runs_the_readme_test_command():
  commands = [b.strip() for b in _blocks("bash")]
  assert len(commands) == 2, "the README gives exactly two set-up commands"
  test_command = [c for c in commands if "pytest" in c]
  assert len(test_command) == 1
  assert test_command[0] in (ROOT / ".ci" / "run").read_text()


def test_inspect_example_prints_its_table(capsys):
  example = _blocks("python")[1]
  exec(compile(example, "README.md", "exec"), {})
  printed = capsys.readouterr().out
  assert "ln · tap" in printed and "theory over layers 1..4 (tanh)" in printed
  # The README shows the table the example prints (its numbers are float32's; the
  # suite runs in float64, so compare the layer column).
  for line in printed.splitlines()[2:8]:
    assert line.split("  ")[0] + "  " in README
