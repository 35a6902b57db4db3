"""Pictures of a panoptic map: bird's-eye and oblique views coloured by class, instance or RGB.

Off-screen and CPU only: the mesh is ray cast with Open3D's ``RaycastingScene`` (no display, no
OpenGL). Per pixel, the hit triangle's vertex with the largest barycentric weight gives the
label and instance colours (ids never blend), fused RGB is interpolated, and a Lambert term from a
light above and behind the viewer shades the surface so shapes read. A legend panel lists the
labels (class views) or the instance ids with their labels (instance views); the instance ids
of objects are also written at their centroids in the bird's-eye view.

The "up" direction is the mean normal of the floor triangles when the map has a floor, else +z
(or given). Ceiling triangles and everything more than ``cut_height_m`` above the floor are left
out, so the views look into the room.

Owns: :class:`MapViewConfig`, :func:`render_map_views`, :func:`map_up_vector`,
:func:`vertex_colors`.
Does not own: reading maps (``map_source``), colour tables (``labels``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import InvalidInputError
from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.labels.registry import instance_color
from panoptic_mapper.core.types import MapInstance, PanopticMesh

ColorMode = Literal["class", "instance", "rgb"]
ViewName = Literal["birdseye", "oblique"]
VOID_COLOR = (200, 200, 200)
BACK_FACE_PASSES = 4
"""Back faces a ray may pass through (see-through walls of the oblique view)."""
BACKGROUND = (255, 255, 255)


@dataclass
class MapViewConfig(ConfigBase):
    """What the map pictures show and how large they are."""

    width_px: int = 1024
    """Width of the rendered view (the legend panel is added to its right)."""
    height_px: int = 768
    views: tuple[str, ...] = ("birdseye", "oblique")
    """Views to render: birdseye (orthographic, looking down) and oblique (perspective)."""
    color_modes: tuple[str, ...] = ("class", "instance", "rgb")
    """Colourings: class (label colours), instance (a colour per instance id), rgb (fused
    sensor colour)."""
    up: tuple[float, ...] = ()
    """Up direction of the map frame; empty = the floor's mean normal, else +z."""
    cut_height_m: float = 2.2
    """Leave out surfaces this far above the floor (and the ceiling), metres; 0 keeps all."""
    oblique_elevation_deg: float = 50.0
    """Angle of the oblique camera above the horizontal, degrees."""
    oblique_azimuth_deg: float = -35.0
    """Rotation of the oblique camera about up, from the map's short side, degrees."""
    fov_deg: float = 50.0
    """Vertical field of view of the oblique camera, degrees."""
    see_through_back_faces: bool = True
    """In the oblique view, surfaces seen from behind (a wall from outside the room) are
    transparent, so the camera looks into the room."""
    max_legend_entries: int = 30
    """Legend rows at most (largest instances first)."""

    def validate(self) -> None:
        require(64 <= self.width_px <= 8192 and 64 <= self.height_px <= 8192, "width_px",
                (self.width_px, self.height_px), "must be in 64..8192 pixels")
        for view in self.views:
            require(view in ("birdseye", "oblique"), "views", view,
                    "must be birdseye or oblique")
        for mode in self.color_modes:
            require(mode in ("class", "instance", "rgb"), "color_modes", mode,
                    "must be class, instance or rgb")
        require(len(self.up) in (0, 3), "up", self.up, "must be empty or a 3-vector")
        if self.up:
            require(float(np.linalg.norm(self.up)) > 1e-6, "up", self.up, "must not be zero")
        require(self.cut_height_m >= 0.0, "cut_height_m", self.cut_height_m, "must be >= 0")
        require(5.0 <= self.oblique_elevation_deg <= 89.0, "oblique_elevation_deg",
                self.oblique_elevation_deg, "must be in [5, 89] degrees")
        require(10.0 <= self.fov_deg <= 120.0, "fov_deg", self.fov_deg,
                "must be in [10, 120] degrees")
        require(self.max_legend_entries >= 1, "max_legend_entries", self.max_legend_entries,
                "must be >= 1")


@dataclass
class RenderedView:
    """One picture and what it shows."""

    path: Path
    view: str
    color_mode: str
    covered_fraction: float
    """Share of the view's pixels that show the map."""
    legend: list[tuple[str, tuple[int, int, int]]] = field(default_factory=list)


def vertex_colors(mesh: PanopticMesh, registry: LabelRegistry, mode: str) -> np.ndarray:
    """[V, 3] uint8 display colour of every vertex in ``mode``."""
    if mode == "rgb":
        return mesh.colors.copy()
    if mode == "class":
        table = registry.color_table(VOID_COLOR)
        ids = np.clip(mesh.label_ids, 0, registry.max_id)
        return table[ids]
    ids = mesh.instance_ids
    unique = np.unique(ids)
    lut = {int(i): instance_color(int(i)) if i > 0 else VOID_COLOR for i in unique}
    out = np.zeros((len(ids), 3), np.uint8)
    for i, color in lut.items():
        out[ids == i] = color
    return out


def map_up_vector(mesh: PanopticMesh, registry: LabelRegistry) -> np.ndarray:
    """Unit "up": the area-weighted mean normal of floor triangles, else +z."""
    floor = registry.find_phrase("floor")
    if floor is not None and mesh.num_triangles:
        tri = mesh.triangles
        is_floor = (mesh.label_ids[tri] == floor.id).all(axis=1)
        if is_floor.sum() >= 50:
            v = mesh.vertices_m.astype(np.float64)[tri[is_floor]]
            normals = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).sum(axis=0)
            length = np.linalg.norm(normals)
            if length > 1e-9:
                return normals / length
    return np.array([0.0, 0.0, 1.0])


def _view_basis(points: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal axes: e1 along the map's longer horizontal extent, e2 = up x e1."""
    flat = points - np.outer(points @ up, up)
    flat = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat[:: max(1, len(flat) // 20000)], full_matrices=False)
    e1 = vt[0] - (vt[0] @ up) * up
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(up, e1)


def _visible_triangles(mesh: PanopticMesh, registry: LabelRegistry, up: np.ndarray,
                       cut_height_m: float) -> np.ndarray:
    """Triangles kept in the views: no ceiling, nothing above floor + cut height."""
    tri = mesh.triangles
    keep = np.ones(len(tri), bool)
    ceiling = registry.find_phrase("ceiling")
    if ceiling is not None:
        keep &= ~(mesh.label_ids[tri] == ceiling.id).any(axis=1)
    if cut_height_m > 0 and len(tri):
        heights = mesh.vertices_m.astype(np.float64) @ up
        floor_height = np.percentile(heights, 2)
        keep &= (heights[tri] <= floor_height + cut_height_m).all(axis=1)
    return tri[keep]


class _Caster:
    """Ray casting of one mesh; returns colours per pixel for any vertex colouring."""

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray):
        import open3d as o3d

        self._o3d = o3d
        self.vertices = vertices
        self.triangles = triangles
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)),
                                 o3d.core.Tensor(triangles.astype(np.uint32)))

    def cast(self, rays: np.ndarray, see_through_back_faces: bool) -> dict[str, np.ndarray]:
        """First hits of [..., 6] rays; optionally passing through back faces (surfaces seen
        from the side the sensor never saw, e.g. a wall from outside the room) up to
        ``BACK_FACE_PASSES`` times."""
        hits = self._cast(rays)
        if not see_through_back_faces:
            return hits
        flat = {key: value.reshape(-1, *value.shape[rays.ndim - 1:])
                for key, value in hits.items()}
        flat_rays = rays.reshape(-1, 6).astype(np.float64)
        travelled = np.zeros(len(flat_rays))
        for _ in range(BACK_FACE_PASSES):
            back = np.isfinite(flat["t_hit"]) & (
                np.einsum("ij,ij->i", flat["primitive_normals"], flat_rays[:, 3:]) > 0)
            if not back.any():
                break
            step = flat["t_hit"][back] + 1e-3
            travelled[back] += step
            flat_rays[back, :3] += flat_rays[back, 3:] * step[:, None]
            again = self._cast(flat_rays[back])
            for key in flat:
                flat[key][back] = again[key]
        flat["t_hit"] = flat["t_hit"] + travelled
        return {key: value.reshape(hits[key].shape) for key, value in flat.items()}

    def _cast(self, rays: np.ndarray) -> dict[str, np.ndarray]:
        out = self.scene.cast_rays(self._o3d.core.Tensor(rays.astype(np.float32)))
        return {key: out[key].numpy() for key in ("t_hit", "primitive_ids", "primitive_uvs",
                                                  "primitive_normals")}

    def shade(self, hits: dict[str, np.ndarray], colors: np.ndarray, light: np.ndarray,
              interpolate: bool) -> tuple[np.ndarray, np.ndarray]:
        """[..., 3] uint8 image and [...] hit mask."""
        shape = hits["t_hit"].shape
        hit = np.isfinite(hits["t_hit"])
        image = np.empty((*shape, 3), np.float64)
        image[:] = BACKGROUND
        prim = hits["primitive_ids"][hit].astype(np.int64)
        uv = hits["primitive_uvs"][hit].astype(np.float64)
        weights = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1)
        corners = self.triangles[prim]  # [H, 3]
        if interpolate:
            rgb = np.einsum("hk,hkc->hc", weights, colors[corners].astype(np.float64))
        else:
            rgb = colors[corners[np.arange(len(prim)), weights.argmax(axis=1)]].astype(float)
        normals = hits["primitive_normals"][hit].astype(np.float64)
        lambert = np.abs(normals @ light)
        image[hit] = rgb * (0.7 + 0.3 * lambert)[:, None]
        return np.clip(image, 0, 255).astype(np.uint8), hit


def _instance_centroids(mesh: PanopticMesh, instances: Sequence[MapInstance] | None
                        ) -> dict[int, tuple[np.ndarray, str, bool, int]]:
    """Instance id -> (centroid, label, is_thing, vertex count), from the map's instances when
    given, else from the mesh vertices (labels then from the majority vertex label)."""
    ids, counts = np.unique(mesh.instance_ids[mesh.instance_ids > 0], return_counts=True)
    size = dict(zip(ids.tolist(), counts.tolist()))
    if instances is not None:
        return {inst.id: (inst.centroid_m, inst.label, inst.is_thing, size.get(inst.id, 0))
                for inst in instances}
    out = {}
    for i in ids.tolist():
        members = mesh.instance_ids == i
        labels = mesh.label_ids[members]
        label = int(np.bincount(labels).argmax())
        out[i] = (mesh.vertices_m[members].mean(axis=0), str(label), True, size[i])
    return out


def render_map_views(mesh: PanopticMesh, registry: LabelRegistry, out_dir: str | Path,
                     config: MapViewConfig | None = None,
                     instances: Sequence[MapInstance] | None = None,
                     prefix: str = "") -> list[RenderedView]:
    """Render every configured view x colouring of ``mesh`` into PNG files in ``out_dir``.

    Files are named ``{prefix}{view}_{mode}.png``.

    Raises:
        InvalidInputError: the mesh has no triangles left to draw.
    """
    from PIL import Image

    config = config or MapViewConfig()
    if not mesh.num_triangles:
        raise InvalidInputError("mesh", 0, "the map has no surface to draw (no triangles)",
                                kind="mesh")
    up = (np.asarray(config.up, np.float64) / np.linalg.norm(config.up) if config.up
          else map_up_vector(mesh, registry))
    triangles = _visible_triangles(mesh, registry, up, config.cut_height_m)
    if not len(triangles):
        raise InvalidInputError("mesh", mesh.num_triangles, "no triangle below the cut height",
                                kind="mesh")
    vertices = mesh.vertices_m.astype(np.float64)
    used = vertices[np.unique(triangles)]
    e1, e2 = _view_basis(used, up)
    caster = _Caster(vertices, triangles)
    centroids = _instance_centroids(mesh, instances)
    names = {lab.id: lab.name for lab in registry}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for view in config.views:
        if view == "birdseye":
            rays, project, light = _birdseye_rays(used, up, e1, e2, config)
        else:
            rays, project, light = _oblique_rays(used, up, e1, e2, config)
        hits = caster.cast(rays, config.see_through_back_faces and view == "oblique")
        for mode in config.color_modes:
            colors = vertex_colors(mesh, registry, mode)
            image, hit = caster.shade(hits, colors, light, interpolate=(mode == "rgb"))
            legend = _legend(mesh, registry, mode, centroids, names, config.max_legend_entries)
            picture = Image.fromarray(image)
            if mode == "instance" and view == "birdseye":
                _write_ids(picture, centroids, project)
            picture = _with_legend(picture, legend, _title(view, mode, mesh))
            path = out_dir / f"{prefix}{view}_{mode}.png"
            picture.save(path, optimize=True)
            results.append(RenderedView(path, view, mode, float(hit.mean()), legend))
    return results


def _birdseye_rays(points: np.ndarray, up: np.ndarray, e1: np.ndarray, e2: np.ndarray,
                   config: MapViewConfig):
    a, b, h = points @ e1, points @ e2, points @ up
    centre_a, centre_b = (a.min() + a.max()) / 2, (b.min() + b.max()) / 2
    scale = 1.08 * max((a.max() - a.min()) / config.width_px,
                       (b.max() - b.min()) / config.height_px, 1e-6)  # metres per pixel
    u = (np.arange(config.width_px) + 0.5 - config.width_px / 2) * scale
    v = (np.arange(config.height_px) + 0.5 - config.height_px / 2) * scale
    grid_a = centre_a + u[None, :]
    grid_b = centre_b - v[:, None]  # image rows go "down" the map
    top = h.max() + 1.0
    origins = (grid_a[..., None] * e1 + grid_b[..., None] * e2 + top * up)
    rays = np.concatenate([origins, np.broadcast_to(-up, origins.shape)], axis=-1)

    def project(point: np.ndarray) -> tuple[float, float]:
        return ((point @ e1 - centre_a) / scale + config.width_px / 2,
                -(point @ e2 - centre_b) / scale + config.height_px / 2)

    light = up * 0.8 + e2 * 0.2
    return rays, project, light / np.linalg.norm(light)


def _oblique_rays(points: np.ndarray, up: np.ndarray, e1: np.ndarray, e2: np.ndarray,
                  config: MapViewConfig):
    centre = (points.min(axis=0) + points.max(axis=0)) / 2
    radius = np.linalg.norm(points - centre, axis=1).max()
    azimuth, elevation = np.radians(config.oblique_azimuth_deg), \
        np.radians(config.oblique_elevation_deg)
    horizontal = -np.cos(azimuth) * e2 + np.sin(azimuth) * e1
    direction = np.cos(elevation) * horizontal + np.sin(elevation) * up  # centre -> eye
    distance = radius / np.sin(np.radians(config.fov_deg) / 2) * 0.75
    eye = centre + distance * direction
    forward = (centre - eye) / np.linalg.norm(centre - eye)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    focal = config.height_px / 2 / np.tan(np.radians(config.fov_deg) / 2)
    u = np.arange(config.width_px) + 0.5 - config.width_px / 2
    v = np.arange(config.height_px) + 0.5 - config.height_px / 2
    dirs = (forward * focal + u[None, :, None] * right + v[:, None, None] * down)
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    rays = np.concatenate([np.broadcast_to(eye, dirs.shape), dirs], axis=-1)

    def project(point: np.ndarray) -> tuple[float, float]:
        rel = point - eye
        depth = rel @ forward
        return (rel @ right / depth * focal + config.width_px / 2,
                rel @ down / depth * focal + config.height_px / 2)

    light = up * 0.6 - forward * 0.4
    return rays, project, light / np.linalg.norm(light)


def _legend(mesh: PanopticMesh, registry: LabelRegistry, mode: str,
            centroids: dict, names: dict[int, str], limit: int
            ) -> list[tuple[str, tuple[int, int, int]]]:
    if mode == "rgb":
        return []
    if mode == "class":
        ids, counts = np.unique(mesh.label_ids, return_counts=True)
        order = np.argsort(-counts)
        return [(names.get(int(ids[i]), "void" if ids[i] == 0 else str(ids[i])),
                 registry.by_id(int(ids[i])).color if int(ids[i]) in registry else VOID_COLOR)
                for i in order[:limit]]
    rows = sorted(centroids.items(), key=lambda item: (not item[1][2], -item[1][3]))
    out = []
    for instance_id, (_, label, is_thing, count) in rows[:limit]:
        if count == 0:
            continue
        label = names.get(int(label), label) if label.isdigit() else label
        out.append((f"#{instance_id} {label}" + ("" if is_thing else " (stuff)"),
                    instance_color(instance_id)))
    return out


def _title(view: str, mode: str, mesh: PanopticMesh) -> str:
    names = {"birdseye": "bird's-eye", "oblique": "oblique"}
    return (f"{names[view]} view, coloured by {mode} ({mesh.num_vertices:,} vertices, "
            f"{mesh.num_triangles:,} triangles)")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def _write_ids(picture, centroids: dict, project) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(picture)
    font = _font(14)
    for instance_id, (centroid, _, is_thing, count) in centroids.items():
        if not is_thing or count == 0:
            continue
        x, y = project(np.asarray(centroid, np.float64))
        if 0 <= x < picture.width and 0 <= y < picture.height:
            draw.text((x, y), f"#{instance_id}", fill=(0, 0, 0), font=font, anchor="mm",
                      stroke_width=2, stroke_fill=(255, 255, 255))


def _with_legend(picture, legend: list[tuple[str, tuple[int, int, int]]], title: str):
    from PIL import Image, ImageDraw

    panel = 260 if legend else 0
    header = 28
    canvas = Image.new("RGB", (picture.width + panel, picture.height + header), BACKGROUND)
    canvas.paste(picture, (0, header))
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 6), title, fill=(0, 0, 0), font=_font(16))
    font = _font(14)
    for row, (text, color) in enumerate(legend):
        y = header + 10 + row * 22
        if y + 18 > canvas.height:
            break
        x = picture.width + 12
        draw.rectangle([x, y, x + 16, y + 16], fill=tuple(int(c) for c in color),
                       outline=(60, 60, 60))
        draw.text((x + 24, y + 1), text, fill=(0, 0, 0), font=font)
    return canvas
