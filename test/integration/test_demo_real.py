"""``panoptic-mapper demo --real``: a few real 7-Scenes frames through the ROS graph with the
``detector`` backend, then instances, queries, the saved map and its pictures. Needs the model
cache (``make models``) and the data in ``../shared`` (skipped without it)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.ros]


def test_real_demo_maps_queries_and_draws(tmp_path, seven_scenes_dir):
    out = tmp_path / "real"
    command = [sys.executable, "-m", "panoptic_mapper.tools.cli", "demo", "--real",
               str(seven_scenes_dir), "--frames", "8", "--rate", "1", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ))
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    assert re.search(r"segmented 8 of 8 frames: [\d.]+ ms median", text), text
    assert re.search(r"mapped 8 frames", text), text
    assert text.count("query '") == 3 and "query 'chair': #" in text
    instances = json.loads((out / "instances.json").read_text())
    labels = {i["label"] for i in instances}
    assert {"chair", "table", "floor"} <= labels  # frames 0-28: chairs, the table, the floor
    assert (out / "map.npz").is_file() and (out / "mesh.ply").is_file()
    pictures = sorted((out / "pictures").glob("*.png"))
    assert len(pictures) == 6 and all(f"    {p}" in text for p in pictures)
    assert Image.open(pictures[0]).width > 1000


def test_real_demo_says_what_is_missing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "panoptic_mapper.tools.cli", "demo",
                             "--real", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "nothing not found" in result.stderr
