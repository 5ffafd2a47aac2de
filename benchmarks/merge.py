"""Adds the sections of one run to an earlier run's results, keeping everything else as it was.

A full run takes over twenty minutes; one section (``--sections rnn``) can be
run alone and merged into the committed results (``experiments/benchmark.py
--merge-into DIR``). In ``DIR/results.json`` the run's sections replace
same-named ones, their targets replace those of the same sections (the others
are kept), and the run's time, machine and config are recorded under
``"merged"``. In ``DIR/results.md`` each section's text replaces its earlier
text, or goes in before ``## Targets``, under a line naming the run and its
machine (the file's header describes the earlier run), and its target rows
replace those of the same sections (or join the targets table). Nothing else
in either file changes: the other sections' figures and text stay byte for byte.
"""
from __future__ import annotations

import json
import os

from jaxbp import io as _io
import benchmarks.report as report

TARGETS_HEADING = "## Targets"


def _machine_line(res: dict, sections) -> str:
  m = res["machine"]
  return (f"*Run separately ({', '.join(sections)} only) {res['time']}, {res['seconds']:.0f} s, "
          f"and merged into this file, whose header describes the earlier run: {m['cpu']}, "
          f"{m['cores']} cores, {m['device']}, jax {m['jax']}, jaxlib {m['jaxlib']}, numpy "
          f"{m['numpy']}, python {m['python']}.*")


def _replace_section(lines: list, new: list) -> list:
  """``lines`` with the section headed ``new[0]`` replaced by ``new`` (or inserted before
  the targets)."""
  heading = new[0]
  if heading in lines:
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return lines[:start] + new + lines[end:]
  if TARGETS_HEADING not in lines:
    raise ValueError(f"benchmark merge: results.md has no {TARGETS_HEADING!r} heading to insert "
                     "before; is it a benchmark results.md?")
  at = lines.index(TARGETS_HEADING)
  return lines[:at] + new + lines[at:]


def _replace_targets(lines: list, old: set, rows: list) -> list:
  """The targets table without the rows of the ``old`` targets, ``rows`` in their place
  (or appended)."""
  start = lines.index(TARGETS_HEADING)
  table = [i for i in range(start + 1, len(lines)) if lines[i].startswith("| ")][2:]
  gone = [i for i in table if any(lines[i].startswith(f"| {name} | ") for name in old)]
  at = gone[0] if gone else (table[-1] + 1 if table else start + 4)
  kept = [line for i, line in enumerate(lines) if i not in gone]
  at -= sum(i < at for i in gone)
  return kept[:at] + rows + kept[at:]


def check_into(into_dir, out_dir=None) -> None:
  """Raises ValueError unless ``into_dir`` holds an earlier run's results.json and results.md
  and is not ``out_dir`` (which the new run would overwrite first): checked before any compute."""
  for name in ("results.json", "results.md"):
    path = os.path.join(into_dir, name)
    if not os.path.isfile(path):
      raise ValueError(f"benchmark merge: {path} does not exist; --merge-into takes a directory "
                       "that an earlier full run wrote.")
  if out_dir is not None and os.path.realpath(into_dir) == os.path.realpath(out_dir):
    raise ValueError(f"benchmark merge: --merge-into {into_dir} is the --out directory, which "
                     "this run overwrites; write the run elsewhere (--out /tmp/...).")


def merge_into(res: dict, into_dir) -> dict:
  """Merges the sections of ``res`` (a :func:`benchmarks.run` result) into ``into_dir``.

  Returns the merged results.json. Raises ValueError when ``into_dir`` has no
  results.json / results.md, or ``res`` has no section.
  """
  sections = [s for s in res["config"]["sections"] if s in res]
  check_into(into_dir)
  json_path, md_path = (os.path.join(into_dir, n) for n in ("results.json", "results.md"))
  if not sections:
    raise ValueError("benchmark merge: the run has no section to merge.")
  with open(json_path) as f:
    dest = json.load(f)
  new_targets = report.targets({s: res[s] for s in sections})
  # The earlier run's targets of these sections go (their names may hold other sizes).
  old = {t["target"] for t in report.targets({s: dest[s] for s in sections if s in dest})}
  old |= {t["target"] for t in new_targets}
  for s in sections:
    dest[s] = res[s]
  dest["targets"] = [t for t in dest["targets"] if t["target"] not in old] + new_targets
  dest["merged"] = [m for m in dest.get("merged", []) if set(m["sections"]) - set(sections)] + [
      {"sections": sections, "time": res["time"], "seconds": res["seconds"],
       "machine": res["machine"], "config": res["config"]}]
  with open(md_path) as f:
    lines = f.read().split("\n")
  for s in sections:
    new = report.section_markdown(s, res[s])
    lines = _replace_section(lines, new[:1] + ["", _machine_line(res, sections)] + new[1:])
  lines = _replace_targets(lines, old, [report.target_row(t) for t in new_targets])
  _io.write_json(json_path, dest)
  _io.write_text(md_path, "\n".join(lines))
  return dest
