"""The README's examples run as written, and CI runs the README's test commands."""
import ast
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# A ```python block whose first line is this comment is not run (one that needs
# files or a long run); use sparingly.
SKIP = "# readme-test: skip"


def _blocks(lang):
  return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


PYTHON = _blocks("python")


def _ten_lines(namespace, printed):
  assert len(PYTHON[0].strip().splitlines()) <= 12
  assert float(printed.strip()) < 1e-12
  np.testing.assert_allclose(float(namespace["value"]), float(namespace["loss_fn"](
      namespace["params"], namespace["x"], namespace["y"])), rtol=1e-14)


def _inspect_table(namespace, printed):
  assert "ln · tap" in printed and "theory over layers 1..4 (tanh)" in printed
  # The README shows the table the example prints (its numbers are float32's; the
  # suite runs in float64, so compare the layer column).
  for line in printed.splitlines()[2:8]:
    assert line.split("  ")[0] + "  " in README


# What some blocks must print, beyond running: (a line only that block holds, check).
CHECKS = (("print(jaxbp.gradcheck.max_relative_error(grads, auto))", _ten_lines),
          ("jaxbp.inspect(loss_fn, p, x, y))(params, x, y).summary()", _inspect_table))


def test_the_checks_find_their_blocks():
  for key, _ in CHECKS:
    assert sum(key in b for b in PYTHON) == 1, f"no single README python block holds {key!r}"


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_every_python_block_runs(index, capsys):
  block = PYTHON[index]
  if block.startswith(SKIP):
    pytest.skip(f"README python block {index + 1} is marked '{SKIP}'")
  namespace = {}
  exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)
  printed = capsys.readouterr().out
  for key, check in CHECKS:
    if key in block:
      check(namespace, printed)


def _inline_calls():
  """``jaxbp.a.b(`` as the prose writes it, in `inline code` outside the fenced blocks."""
  prose = re.sub(r"```.*?```", "", README, flags=re.S)
  spans = re.findall(r"`([^`]+)`", prose)
  return sorted({m.group(1) for s in spans
                 for m in re.finditer(r"(?<![\w.])(jaxbp(?:\.\w+)+)\(", s)})


_RESOLVE = """
import json, sys
import jaxbp
missing = []
for name in json.loads(sys.argv[1]):
  obj = jaxbp
  try:
    for part in name.split(".")[1:]:
      obj = getattr(obj, part)
  except AttributeError as e:
    missing.append(f"{name}: {e}")
print(json.dumps(missing))
"""


def test_every_call_the_prose_shows_works_after_import_jaxbp():
  # In a fresh interpreter: in this one, other tests have imported submodules
  # that `import jaxbp` alone does not.
  calls = _inline_calls()
  assert "jaxbp.train.monitoring.write_monitor" in calls and len(calls) >= 5
  proc = subprocess.run([sys.executable, "-c", _RESOLVE, json.dumps(calls)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_ci_runs_the_readme_test_commands():
  commands = [b.strip() for b in _blocks("bash")]
  assert len(commands) == 2, "the README gives exactly two set-up commands"
  test_command = [c for c in commands if "pytest" in c]
  assert len(test_command) == 1
  ci = (ROOT / ".ci" / "run").read_text()
  # The README's command runs the fast tier; CI runs it, then the slow tier, and
  # the README says how to run that tier (and everything).
  assert test_command[0] in ci and test_command[0].endswith('-m "not slow"')
  slow = "python -m pytest -q -n 2 -m slow"
  assert f"`{slow}`" in README and slow in ci
  assert ci.index(test_command[0]) < ci.index(slow)


def test_every_slow_pattern_names_a_test():
  # A renamed or moved test would silently leave the slow tier; the patterns are
  # read from tests/conftest.py as text, so no test collection is needed.
  tree = ast.parse((ROOT / "tests" / "conftest.py").read_text())
  slow = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
              and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["SLOW"])
  for pattern in slow:
    path, _, name = pattern.partition("::")
    assert (ROOT / path).is_file(), pattern
    func = name.split("[")[0]
    if func == "*":
      continue
    regex = rf"^def {re.escape(func[:-1])}\w*\(" if func.endswith("*") else rf"^def {re.escape(func)}\("
    assert re.search(regex, (ROOT / path).read_text(), flags=re.M), f"no test for {pattern}"
