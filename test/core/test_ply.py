"""PLY writing/reading of panoptic meshes, checked against Open3D's reader."""
import numpy as np
import pytest

from panoptic_mapper.core.errors import DataFormatError, InvalidInputError
from panoptic_mapper.core.io.ply import read_ply, write_ply
from panoptic_mapper.core.labels.registry import instance_color
from panoptic_mapper.core.types import PanopticMesh


def _mesh(n_vertices=40, n_triangles=30, seed=0):
    rng = np.random.default_rng(seed)
    return PanopticMesh(vertices_m=rng.normal(size=(n_vertices, 3)) * 3.0,
                        triangles=rng.integers(0, n_vertices, (n_triangles, 3)),
                        colors=rng.integers(0, 256, (n_vertices, 3)),
                        label_ids=rng.choice([0, 1, 10, 22], n_vertices),
                        instance_ids=rng.choice([0, 5, 1_000_000], n_vertices))


def _assert_same_geometry_and_ids(a, b):
    np.testing.assert_array_equal(a.vertices_m, b.vertices_m)  # float32 exact, also in ASCII
    np.testing.assert_array_equal(a.triangles, b.triangles)
    np.testing.assert_array_equal(a.label_ids, b.label_ids)
    np.testing.assert_array_equal(a.instance_ids, b.instance_ids)


@pytest.mark.parametrize("binary", [True, False])
def test_round_trip_and_open3d(tmp_path, binary):
    import open3d as o3d

    mesh = _mesh()
    path = write_ply(tmp_path / "sub" / "mesh.ply", mesh, binary=binary)
    back = read_ply(path)
    _assert_same_geometry_and_ids(mesh, back)
    np.testing.assert_array_equal(back.colors, mesh.colors)

    header = path.read_bytes()[:400].decode("ascii", errors="replace")
    assert header.startswith(f"ply\nformat {'binary_little_endian' if binary else 'ascii'} 1.0\n")
    assert header.index("property float x") < header.index("property uchar red") < \
        header.index("property int label_id") < header.index("property int instance_id")
    o3d_mesh = o3d.io.read_triangle_mesh(str(path))
    np.testing.assert_allclose(np.asarray(o3d_mesh.vertices), mesh.vertices_m, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(o3d_mesh.triangles), mesh.triangles)
    np.testing.assert_allclose(np.asarray(o3d_mesh.vertex_colors) * 255.0, mesh.colors,
                               atol=1e-3)


def test_color_modes(tmp_path, label_registry):
    mesh = _mesh()
    semantic = read_ply(write_ply(tmp_path / "s.ply", mesh, color_mode="semantic",
                                  registry=label_registry))
    _assert_same_geometry_and_ids(mesh, semantic)
    chair = mesh.label_ids == 10
    assert np.all(semantic.colors[chair] == [188, 189, 34])  # chair colour in default.yaml
    assert np.all(semantic.colors[mesh.label_ids == 0] == [0, 0, 0])
    instance = read_ply(write_ply(tmp_path / "i.ply", mesh, color_mode="instance"))
    _assert_same_geometry_and_ids(mesh, instance)
    big = mesh.instance_ids == 1_000_000
    assert np.all(instance.colors[big] == instance_color(1_000_000))
    assert np.all(instance.colors[mesh.instance_ids == 0] == [128, 128, 128])
    assert b"comment color_mode=instance" in (tmp_path / "i.ply").read_bytes()[:200]

    with pytest.raises(InvalidInputError, match="needs the label registry"):
        write_ply(tmp_path / "x.ply", mesh, color_mode="semantic")
    with pytest.raises(InvalidInputError, match="color_mode"):
        write_ply(tmp_path / "x.ply", mesh, color_mode="depth")
    unknown = PanopticMesh(mesh.vertices_m, mesh.triangles, mesh.colors,
                           np.full(mesh.num_vertices, 9), mesh.instance_ids)
    with pytest.raises(InvalidInputError, match="unknown to the label registry"):
        write_ply(tmp_path / "x.ply", unknown, color_mode="semantic", registry=label_registry)


def test_foreign_ply_without_labels_with_quads_and_big_endian(tmp_path):
    ascii_ply = "\n".join([
        "ply", "format ascii 1.0", "comment from another tool", "element vertex 4",
        "property double x", "property double y", "property double z",
        "property float nx", "property float ny", "property float nz",
        "element face 1", "property list uchar int vertex_index", "end_header",
        "0 0 0 0 0 1", "1 0 0 0 0 1", "1 1 0 0 0 1", "0 1 0 0 0 1", "4 0 1 2 3", ""])
    (tmp_path / "quad.ply").write_text(ascii_ply)
    quad = read_ply(tmp_path / "quad.ply")
    np.testing.assert_array_equal(quad.triangles, [[0, 1, 2], [0, 2, 3]])  # fan triangulation
    assert np.all(quad.colors == 128) and np.all(quad.label_ids == 0)
    assert np.all(quad.instance_ids == 0) and quad.vertices_m[2].tolist() == [1, 1, 0]

    header = ("ply\nformat binary_big_endian 1.0\nelement vertex 3\nproperty float x\n"
              "property float y\nproperty float z\nproperty uchar red\nproperty uchar green\n"
              "property uchar blue\nproperty uchar alpha\nelement face 1\n"
              "property list uchar uint vertex_indices\nproperty uchar flags\nend_header\n")
    vertices = np.zeros(3, [("xyz", ">f4", (3,)), ("rgba", "u1", (4,))])
    vertices["xyz"] = [[0, 0, 0], [2, 0, 0], [0, 2, 0]]
    vertices["rgba"] = [[10, 20, 30, 255]] * 3
    face = np.zeros(1, [("n", "u1"), ("v", ">u4", (3,)), ("flags", "u1")])
    face["n"], face["v"] = 3, [[2, 1, 0]]
    (tmp_path / "be.ply").write_bytes(header.encode() + vertices.tobytes() + face.tobytes())
    big_endian = read_ply(tmp_path / "be.ply")
    assert big_endian.vertices_m[1].tolist() == [2, 0, 0]
    assert big_endian.triangles.tolist() == [[2, 1, 0]]
    assert big_endian.colors[0].tolist() == [10, 20, 30]


def test_replica_mesh_matches_open3d(replica_dir):
    import open3d as o3d

    path = replica_dir / "office0_mesh.ply"
    mesh = read_ply(path)
    reference = o3d.io.read_triangle_mesh(str(path))
    np.testing.assert_array_equal(np.asarray(reference.vertices, np.float32), mesh.vertices_m)
    np.testing.assert_array_equal(np.asarray(reference.triangles), mesh.triangles)
    np.testing.assert_allclose(np.asarray(reference.vertex_colors) * 255.0, mesh.colors,
                               atol=1e-3)


def test_bad_files(tmp_path):
    path = write_ply(tmp_path / "m.ply", _mesh())
    data = path.read_bytes()
    (tmp_path / "truncated.ply").write_bytes(data[:len(data) - 100])
    with pytest.raises(DataFormatError, match="truncated") as info:
        read_ply(tmp_path / "truncated.ply")
    assert "truncated.ply" in info.value.field and "face" in info.value.field
    (tmp_path / "header.ply").write_bytes(data[:100])
    with pytest.raises(DataFormatError, match="end_header"):
        read_ply(tmp_path / "header.ply")
    (tmp_path / "text.ply").write_text("hello")
    with pytest.raises(DataFormatError, match="magic"):
        read_ply(tmp_path / "text.ply")
    (tmp_path / "type.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\n"
                                       "property float128 x\nend_header\n0\n")
    with pytest.raises(DataFormatError, match="header line 4"):
        read_ply(tmp_path / "type.ply")
    (tmp_path / "index.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\n"
                                        "property float x\nproperty float y\nproperty float z\n"
                                        "element face 1\nproperty list uchar int vertex_indices\n"
                                        "end_header\n0 0 0\n3 0 0 5\n")
    with pytest.raises(DataFormatError, match="out of range"):
        read_ply(tmp_path / "index.ply")
    with pytest.raises(DataFormatError, match="cannot read"):
        read_ply(tmp_path / "missing.ply")


def test_empty_mesh(tmp_path):
    for binary in (True, False):
        back = read_ply(write_ply(tmp_path / f"e{binary}.ply", PanopticMesh.empty(),
                                  binary=binary))
        assert back.num_vertices == 0 and back.num_triangles == 0
