"""Run folders: atomic writes, resume markers, and refusal to mix runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from affectlens.conventions import LAYER_CONVENTION
from affectlens.errors import AffectlensError
from affectlens.store.atomic import atomic_path, write_parquet
from affectlens.store.manifest import RunStore
from affectlens.store.read import read_parquet, read_tensors

IDENTITY = {"model": {"spec": "m", "fingerprint": "f"}, "stimuli": {"hash": "h"}, "config": {"samples": 8}}


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "table.parquet"
    write_parquet(target, pd.DataFrame({"a": [1]}))
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a file")
        raise RuntimeError("killed mid-write")
    assert read_parquet(target)["a"].tolist() == [1]  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet"]


def test_manifest_records_conventions_and_refuses_a_different_run(tmp_path):
    store = RunStore(tmp_path / "run")
    assert store.begin("elicit", IDENTITY) is False
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["layer_convention"] == LAYER_CONVENTION
    assert manifest["stages"]["elicit"]["identity"] == IDENTITY
    assert store.begin("elicit", IDENTITY) is False  # same identity: resume
    changed = {**IDENTITY, "config": {"samples": 4}}
    with pytest.raises(AffectlensError, match=r"config\.samples \(8 -> 4\)"):
        store.begin("elicit", changed)
    store.finish("elicit", summary={"ok": True})
    assert store.begin("elicit", IDENTITY) is True


def test_parts_count_as_done_only_once_their_marker_exists(tmp_path):
    store = RunStore(tmp_path)
    store.begin("s", IDENTITY)
    store.write_part(
        "s", "a", ["p1", "p2"], tables={"rows": pd.DataFrame({"x": [1, 2]})}, tensors={"h": torch.ones(2, 3)}
    )
    # A part whose marker never got written (killed before the end) is not done.
    write_parquet(store.parts("s") / "b.rows.parquet", pd.DataFrame({"x": [3]}))
    (store.parts("s") / "c.json").write_text("{truncated")
    assert store.done_parts("s") == [("a", ["p1", "p2"])]
    assert store.part_tensors("s", "a")["h"].shape == (2, 3)


def test_unreadable_files_give_one_line_errors(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(AffectlensError, match="unreadable Parquet"):
        read_parquet(bad)
    bad_tensors = tmp_path / "x.safetensors"
    bad_tensors.write_bytes(b"\x00" * 10)
    with pytest.raises(AffectlensError, match="unreadable safetensors"):
        read_tensors(bad_tensors)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text("{")
    with pytest.raises(AffectlensError, match="not valid JSON"):
        RunStore(tmp_path / "run").manifest()
    with pytest.raises(AffectlensError, match="no finished 'elicit' stage"):
        RunStore(tmp_path / "empty").require("elicit")


def test_tensor_files_are_byte_identical_across_processes(tmp_path):
    """safetensors writes its metadata from a hash map whose order changes per process; the header is sorted."""
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from affectlens.store.atomic import write_tensors\n"
        "write_tensors(sys.argv[1], {'b': torch.zeros(2), 'a': torch.arange(5.0)},\n"
        "              metadata={'layers': '0,1', 'position': 'x', 'prompt_order': 'p', 'z': '1', 'q': '2'})\n"
    )
    paths = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for path in paths:
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    assert len({p.read_bytes() for p in paths}) == 1
    from safetensors import safe_open

    with safe_open(str(paths[0]), "pt") as f:
        assert f.metadata()["layers"] == "0,1" and f.get_tensor("a").tolist() == [0, 1, 2, 3, 4]
