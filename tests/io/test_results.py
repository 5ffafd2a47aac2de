"""Result files: atomic JSON/CSV, the resumable store, plots, progress bars, TensorBoard."""
import json
import os
import struct
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import io as results
from jaxbp.train.training import StepInfo

HISTORY = StepInfo(loss=np.array([2.0, 1.0, 0.5, np.nan]),
                   accuracy=np.array([0.25, 0.5, 1.0, np.nan]),
                   grad_norm=np.array([3.0, 2.0, 1e-3, np.nan]))


def test_json_round_trip_with_arrays_namedtuples_and_nan(tmp_path):
  path = tmp_path / "sub" / "a.json"
  results.write_json(path, {"x": jnp.array([1.0, 2.0]), "n": np.int64(3), "h": HISTORY,
                            "bad": float("inf"), "t": (1, 2)})
  back = results.read_json(path)
  assert back["x"] == [1.0, 2.0] and back["n"] == 3 and back["t"] == [1, 2]
  assert back["h"]["loss"] == [2.0, 1.0, 0.5, None]      # JSON has no NaN: null
  assert back["bad"] is None
  assert os.listdir(tmp_path / "sub") == ["a.json"]      # no temp files left behind


def test_read_json_names_a_damaged_file(tmp_path):
  path = tmp_path / "cut.json"
  path.write_text('{"loss": [1.0, 0.5')
  with pytest.raises(ValueError, match="cut.json is not valid JSON"):
    results.read_json(path)
  path.write_text('{"loss": NaN}')                        # Python's json would accept it
  with pytest.raises(ValueError, match="not valid JSON"):
    results.read_json(path)


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
  path = tmp_path / "r.json"
  results.write_json(path, {"v": 1})

  def crash(src, dst):
    raise OSError("disk full")
  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(OSError):
    results.write_json(path, {"v": 2})
  monkeypatch.undo()
  assert results.read_json(path) == {"v": 1}
  assert os.listdir(tmp_path) == ["r.json"]


def test_csv_round_trip_keeps_nan_and_inf(tmp_path):
  path = tmp_path / "h.csv"
  results.write_csv(path, {"step": np.arange(4), **HISTORY._asdict()})
  back = results.read_csv(path)
  assert list(back) == ["step", "loss", "accuracy", "grad_norm"]
  np.testing.assert_array_equal(back["loss"], HISTORY.loss)   # nan == nan here
  results.write_csv(path, {"x": [np.inf, 1e-300]})
  assert results.read_csv(path)["x"].tolist() == [np.inf, 1e-300]
  with pytest.raises(ValueError, match="equal lengths.*'a': 2.*'b': 3"):
    results.write_csv(path, {"a": [1, 2], "b": [1, 2, 3]})


def test_result_store_resumes(tmp_path):
  store = results.ResultStore(tmp_path / "sweep")
  config = {"depth": 10, "activation": "tanh", "sigma_w2": 1.5}
  assert not store.done(config)
  store.save(config, {"norms": np.array([1.0, 0.5])})
  # Key order does not matter, and the key is stable across runs and machines.
  same = {"sigma_w2": 1.5, "activation": "tanh", "depth": 10}
  assert results.config_key(same) == results.config_key(config) == "ab68df7d6a7d456c"
  reopened = results.ResultStore(tmp_path / "sweep")
  assert reopened.done(same) and reopened.load(same) == {"norms": [1.0, 0.5]}
  assert list(reopened.items()) == [(config, {"norms": [1.0, 0.5]})]
  store.save("by-name", {"ok": True})
  assert store.load("by-name") == {"ok": True}
  with pytest.raises(KeyError, match="done"):
    store.load({"depth": 11})


def test_provenance_names_versions_and_device():
  p = results.provenance()
  for key in ("jaxbp", "jax", "jaxlib", "numpy", "platform", "device_kind", "time"):
    assert p[key], key
  assert p["jaxbp"] == jaxbp.__version__ and p["platform"] == "cpu"


def test_plot_history_writes_a_png(tmp_path):
  pytest.importorskip("matplotlib")
  results.plot_history(HISTORY, tmp_path / "c.png", title="test")
  assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_is_off_without_a_terminal_and_optional(monkeypatch):
  bar = results.progress(range(3), desc="x")   # pytest captures stderr: not a TTY
  assert list(bar) == [0, 1, 2]
  if hasattr(bar, "disable") and not sys.stderr.isatty():
    assert bar.disable
  monkeypatch.setitem(sys.modules, "tqdm", None)
  monkeypatch.setitem(sys.modules, "tqdm.auto", None)
  items = [1, 2]
  assert results.progress(items) is items


def _tfrecords(path):
  """Reads a TFRecord file by hand: (u64 length, u32 crc, data, u32 crc) records."""
  with open(path, "rb") as f:
    while header := f.read(12):
      (length,) = struct.unpack("<Q", header[:8])
      yield f.read(length)
      f.read(4)


def test_tensorboard_event_file_has_scalars_histograms_and_images(tmp_path):
  pytest.importorskip("tensorboardX")
  from tensorboardX.proto import event_pb2
  results.plot_history(HISTORY, tmp_path / "curves.png")
  grads = (jaxbp.Dense(np.ones((3, 2)), np.zeros(2)), jaxbp.Dense(np.ones((2, 1)), None))
  path = results.write_tensorboard(tmp_path / "tb", HISTORY, grads,
                                   {"curves": tmp_path / "curves.png"})
  tags = {}
  for record in _tfrecords(path):
    event = event_pb2.Event.FromString(record)
    for v in event.summary.value:
      tags.setdefault(v.tag, []).append((event.step, v))
  assert [s for s, _ in tags["loss"]] == [0, 1, 2]        # the NaN row is not logged
  assert [v.simple_value for _, v in tags["loss"]] == [2.0, 1.0, 0.5]
  assert len(tags["accuracy"]) == 3 and len(tags["grad_norm"]) == 3
  assert tags["grad/layer0/W"][0][1].histo.num == 6
  assert tags["grad/layer1/W"][0][1].histo.num == 2 and "grad/layer1/b" not in tags
  image = tags["curves"][0][1].image
  assert image.width > 100 and image.encoded_image_string[:4] == b"\x89PNG"


def test_tensorboard_without_the_package_says_what_to_install(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  with pytest.raises(ImportError, match=r"jaxbp\[tensorboard\]"):
    results.write_tensorboard(tmp_path, HISTORY)


def _store_with_one(tmp_path):
  store = results.ResultStore(tmp_path / "store")
  config = {"depth": 3, "activation": "relu"}
  store.save(config, {"norms": [1.0, 2.0]})
  return store, config, store.path(config)


@pytest.mark.parametrize("damage", ("truncate", "edit_value", "drop_checksum", "garbage", "empty"))
def test_damaged_store_file_is_detected_moved_aside_and_recomputed(tmp_path, damage):
  store, config, path = _store_with_one(tmp_path)
  text = open(path).read()
  entry = json.loads(text)
  if damage == "truncate":
    text = text[:len(text) // 2]
  elif damage == "edit_value":     # still valid JSON: only the checksum can tell
    entry["record"]["norms"][1] = 2.5
    text = json.dumps(entry)
  elif damage == "drop_checksum":
    del entry["sha256"]
    text = json.dumps(entry)
  elif damage == "garbage":
    text = "\x00\x01 not json"
  else:
    text = ""
  with open(path, "w") as f:
    f.write(text)
  with pytest.warns(RuntimeWarning, match="damaged.*recomputed"):
    assert not store.done(config)
  assert not os.path.exists(path) and os.path.exists(path + ".damaged")
  with pytest.raises(KeyError, match="no intact result"):
    store.load(config)
  assert list(store.items()) == []          # never used silently
  store.save(config, {"norms": [1.0, 2.0]})  # the recomputation
  assert store.done(config) and store.load(config) == {"norms": [1.0, 2.0]}


def test_store_items_skip_a_damaged_file_with_a_warning(tmp_path):
  store, config, path = _store_with_one(tmp_path)
  store.save({"depth": 4}, {"norms": [0.5]})
  with open(path, "a") as f:
    f.write("x")
  with pytest.warns(RuntimeWarning, match="does not parse"):
    assert list(store.items()) == [({"depth": 4}, {"norms": [0.5]})]


def test_provenance_records_start_and_end(tmp_path):
  import time
  t0 = time.time() - 60
  p = results.provenance(started=t0)
  assert p["started"] < p["finished"] == p["time"]
