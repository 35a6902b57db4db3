"""Map pictures (``core/viz``): from a saved instant map and from its exported PLY, the views
show the objects in their label colours where they are, with legends of labels and instance ids.

The map is the instant-map tests' box scene (floor, wall, two boxes, a cabinet), integrated
from a few frames.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panoptic_mapper.core.errors import DataFormatError, InvalidInputError
from panoptic_mapper.core.io.ply import write_ply
from panoptic_mapper.core.types import PanopticMesh
from panoptic_mapper.core.viz.map_render import (MapViewConfig, map_up_vector,
                                                 render_map_views)
from panoptic_mapper.core.viz.map_source import load_map_mesh


def _box_scene_module():
    path = Path(__file__).with_name("test_instant_map.py")
    spec = importlib.util.spec_from_file_location("instant_map_box_scene", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def saved_map(label_registry, tmp_path_factory):
    scene_module = _box_scene_module()
    mapper = scene_module.build("instant", label_registry, scene_module.Scene(label_registry),
                                num_frames=12)
    folder = tmp_path_factory.mktemp("map")
    mapper.save(folder / "map.npz")
    write_ply(folder / "mesh.ply", mapper.get_mesh(), color_mode="semantic",
              registry=label_registry)
    return folder


def _nearest_label(image: np.ndarray, registry, names) -> np.ndarray:
    """Per pixel, the label among ``names`` whose colour direction is closest (shading only
    scales a colour)."""
    colors = np.array([registry.by_name(n).color for n in names], float)
    colors /= np.linalg.norm(colors, axis=1, keepdims=True)
    pixels = image.reshape(-1, 3).astype(float)
    pixels /= np.maximum(np.linalg.norm(pixels, axis=1, keepdims=True), 1e-9)
    similarity = pixels @ colors.T
    best = similarity.argmax(axis=1)
    best[similarity.max(axis=1) < 0.995] = -1
    return best.reshape(image.shape[:2])


@pytest.mark.parametrize("name", ["map.npz", "mesh.ply"])
def test_views_show_the_objects_with_legends(saved_map, label_registry, tmp_path, name):
    mesh, instances, kind = load_map_mesh(saved_map / name, label_registry)
    assert kind == ("instant" if name.endswith(".npz") else "ply")
    assert (instances is not None) == name.endswith(".npz") and mesh.num_triangles > 1000
    config = MapViewConfig(width_px=320, height_px=240)
    views = render_map_views(mesh, label_registry, tmp_path, config, instances, prefix="t_")
    assert sorted(v.path.name for v in views) == sorted(
        f"t_{view}_{mode}.png" for view in ("birdseye", "oblique")
        for mode in ("class", "instance", "rgb"))
    by = {(v.view, v.color_mode): v for v in views}
    for view in views:
        image = Image.open(view.path)
        assert image.width >= 320 and image.height >= 240 and view.covered_fraction > 0.2
    classes = [text for text, _ in by["birdseye", "class"].legend]
    assert {"floor", "wall", "box", "cabinet"} <= set(classes)
    instance_rows = [text for text, _ in by["birdseye", "instance"].legend]
    assert sum(" box" in row for row in instance_rows) == 2  # the two boxes, by id
    assert all(row.startswith("#") for row in instance_rows)
    # the bird's-eye view (z up: the floor's normal) shows the two boxes as two separate
    # patches of box colour on the floor
    from scipy import ndimage

    picture = np.asarray(Image.open(by["birdseye", "class"].path).convert("RGB"))[28:, :320]
    names = ["floor", "box", "cabinet", "wall"]
    labels = _nearest_label(picture, label_registry, names)
    assert (labels == 0).sum() > (labels == 1).sum() > 500
    patches, count = ndimage.label(labels == 1)
    assert (np.bincount(patches.ravel())[1:] > 100).sum() == 2


def test_up_is_the_floor_normal_and_errors_are_named(saved_map, label_registry, tmp_path):
    mesh, _, _ = load_map_mesh(saved_map / "mesh.ply", label_registry)
    np.testing.assert_allclose(map_up_vector(mesh, label_registry), [0, 0, 1], atol=0.05)
    with pytest.raises(DataFormatError, match="not found"):
        load_map_mesh(tmp_path / "missing.npz", label_registry)
    (tmp_path / "map.obj").write_text("o")
    with pytest.raises(DataFormatError, match="ply"):
        load_map_mesh(tmp_path / "map.obj", label_registry)
    with pytest.raises(InvalidInputError, match="no surface"):
        render_map_views(PanopticMesh.empty(), label_registry, tmp_path)
    with pytest.raises(Exception, match="views"):
        MapViewConfig(views=("side",))
