"""The package's house rules, read from its source.

Layers import downwards only, modules form no import cycle, no module reads
another's private names, imports sit at the top (but for optional heavy
packages), modules stay small, and importing jaxbp or any study changes
nothing in the process.
"""
import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxbp"

# What each layer may import from jaxbp (besides itself).
ALLOWED = {
    "core": set(),
    "io": set(),
    "theory": {"core"},
    "measure": {"core", "theory"},
    "train": {"core", "io", "theory", "measure"},
    "studies": {"core", "io", "theory", "measure", "train"},
}
# Imported inside functions on purpose: optional, or heavy to load.
LAZY_OK = {"matplotlib", "torch", "tqdm", "tensorboardX", "sklearn", "threadpoolctl", "ctypes", "dks"}
MAX_LINES = 400


def _modules():
  mods = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    mods[name] = path
  return mods


MODULES = _modules()


def _resolve(name):
  """The jaxbp module an imported name refers to (a module, or a name in one)."""
  while name and name not in MODULES:
    name = name.rpartition(".")[0]
  return name or None


def _imports(path):
  """``(imported module, names, line, inside a function)`` for each import statement."""
  tree = ast.parse(path.read_text())
  funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
  nested = {id(n) for f in funcs for n in ast.walk(f) if n is not f}
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        out.append((a.name, [], node.lineno, id(node) in nested))
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      out.append((node.module, [a.name for a in node.names], node.lineno, id(node) in nested))
  return out


def _deps(name):
  deps = set()
  for module, names, _, _ in _imports(MODULES[name]):
    if module == "jaxbp" or module.startswith("jaxbp."):
      for target in [f"{module}.{n}" for n in names] or [module]:
        resolved = _resolve(target)
        if resolved and resolved != name:
          deps.add(resolved)
  return deps


def _layer(name):
  parts = name.split(".")
  return parts[1] if len(parts) > 1 else None


def test_every_module_belongs_to_a_layer():
  stray = [m for m in MODULES if m != "jaxbp" and _layer(m) not in ALLOWED]
  assert not stray, f"modules outside the layers {sorted(ALLOWED)}: {stray}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m != "jaxbp"))
def test_layers_import_downwards_only(name):
  layer = _layer(name)
  for dep in _deps(name):
    if dep == "jaxbp":
      # The face imports the lower layers eagerly and the studies lazily, so only
      # a study may use it.
      assert layer == "studies", f"{name} imports the package face; import the layered module"
      continue
    assert _layer(dep) == layer or _layer(dep) in ALLOWED[layer], (
        f"{name} ({layer}) imports {dep} ({_layer(dep)}); {layer} may import only "
        f"{sorted(ALLOWED[layer]) or 'itself'}")


def test_no_import_cycles():
  graph = {m: _deps(m) for m in MODULES if m != "jaxbp"}
  state, cycles = {}, []

  def visit(m, stack):
    if state.get(m) == "open":
      cycles.append(stack[stack.index(m):] + [m])
      return
    if state.get(m) == "done":
      return
    state[m] = "open"
    for d in graph.get(m, ()):
      # A package's __init__ importing its own submodules is not a cycle.
      if not d.startswith(m + "."):
        visit(d, stack + [m])
    state[m] = "done"

  for m in graph:
    visit(m, [])
  assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_across_modules(name):
  path = MODULES[name]
  tree = ast.parse(path.read_text())
  aliases = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxbp"):
      for a in node.names:
        assert not (a.name.startswith("_") and not a.name.startswith("__")), (
            f"{path.name}:{node.lineno} imports the private name {a.name} from {node.module}")
        if _resolve(f"{node.module}.{a.name}") == f"{node.module}.{a.name}":
          aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith("jaxbp"):
          aliases[a.asname or a.name.split(".")[0]] = a.name
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in aliases and node.attr.startswith("_")
        and not node.attr.startswith("__")):
      raise AssertionError(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}, a "
                           f"private name of {aliases[node.value.id]}")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_at_the_top(name):
  late = [(m, line) for m, _, line, nested in _imports(MODULES[name])
          if nested and m.split(".")[0] not in LAZY_OK]
  assert not late, f"{MODULES[name].name}: imports inside functions {late}; move them to the top"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
  lines = len(MODULES[name].read_text().splitlines())
  assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines: split it by idea"


_IMPORT_ALL = """
import json, os, pkgutil, importlib, sys
def umask():
  for line in open("/proc/self/status"):
    if line.startswith("Umask:"):
      return line.split()[1]
before = (umask(), dict(os.environ))
import jax
x64 = bool(jax.config.jax_enable_x64)
import jaxbp
face = {"matplotlib": "matplotlib" in sys.modules,
        "studies": any(m.startswith("jaxbp.studies") for m in sys.modules)}
import jaxbp.studies
names = [m.name for m in pkgutil.walk_packages(jaxbp.studies.__path__, "jaxbp.studies.")]
for name in names:
  importlib.import_module(name)
after = (umask(), dict(os.environ))
print(json.dumps({"umask": [before[0], after[0]], "env_same": before[1] == after[1],
                  "x64": [x64, bool(jax.config.jax_enable_x64)], "face": face,
                  "studies": names}))
"""


def test_importing_jaxbp_and_every_study_changes_nothing():
  env = {k: v for k, v in __import__("os").environ.items() if k != "JAX_ENABLE_X64"}
  proc = subprocess.run([sys.executable, "-c", _IMPORT_ALL], capture_output=True, text=True,
                        timeout=300, cwd=ROOT, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["umask"][0] == out["umask"][1]
  assert out["env_same"]
  assert out["x64"] == [False, False]
  assert out["face"] == {"matplotlib": False, "studies": False}
  assert {"jaxbp.studies.depth_sweep", "jaxbp.studies.driver"} <= set(out["studies"])
