"""The instant map on the real data fixtures (read in place; skipped when absent)."""
import numpy as np
import open3d as o3d
import open3d.core as o3c

from panoptic_mapper.core.io.datasets import open_dataset
from panoptic_mapper.core.mapping.instant_map import InstantPanopticMap


def test_replica_fused_mesh_lies_on_the_ground_truth(replica_dir, label_registry):
    mapper = InstantPanopticMap.from_config(
        {"tsdf": {"block_count": 6000}, "mesh": {"weight_threshold": 1.0}}, label_registry)
    for sample in open_dataset(replica_dir):
        assert mapper.integrate_frame(sample.frame, None).accepted
    mapper.update_mesh()
    vertices = mapper.get_mesh().vertices_m
    gt = o3d.t.io.read_triangle_mesh(str(replica_dir / "office0_mesh.ply"))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3c.Tensor(gt.vertex.positions.numpy().astype(np.float32)),
                        o3c.Tensor(gt.triangle.indices.numpy().astype(np.uint32)))
    dist = scene.compute_distance(o3c.Tensor(vertices)).numpy()
    assert vertices.shape[0] > 20000
    assert (dist <= 0.02).mean() > 0.95  # 98 % measured (BENCHMARKS.md)


def test_seven_scenes_render_matches_measured_depth(seven_scenes_dir, label_registry):
    mapper = InstantPanopticMap.from_config({"tsdf": {"block_count": 3000}}, label_registry)
    frames = [s.frame for s in open_dataset(seven_scenes_dir, stride=5, max_frames=10)]
    for frame in frames:
        assert mapper.integrate_frame(frame, None).accepted
    frame = frames[5]
    render = mapper.render_labels(frame.T_world_cam, frame.intrinsics)
    both = (render.depth_m > 0) & (frame.depth_m > 0)
    assert both.mean() > 0.5
    assert np.median(np.abs(render.depth_m[both] - frame.depth_m[both])) < 0.02
    assert not render.label_ids.any()  # geometry only: nothing labelled
