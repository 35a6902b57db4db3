"""The geometry the refined layer serves: the prior's TSDF mesh, or the field's own surface.

With ``mesh_source = "field"`` the served mesh is the marching-cubes surface of the field's SDF
(``core/field/field_mesh.py``), meshed only near the prior's surface (what was observed). The
field mesh then goes through the same labelling as the TSDF mesh (``FieldLabeller.publish``):
:func:`field_geometry_snapshot` hands the labeller a prior snapshot whose mesh is the field's,
each vertex carrying the colour, label and instance of the nearest prior vertex, which is what
the labeller keeps where the field is unsure (and what ties tokens to prior instances).

Owns: :func:`field_geometry_snapshot`, :func:`served_geometry`.
Does not own: the extraction (``core/field/field_mesh.py``), the labels (``refined_labels.py``).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.spatial import cKDTree

from panoptic_mapper.core.field.field_mesh import (FieldMeshConfig, extract_field_mesh,
                                                   field_sdf)
from panoptic_mapper.core.field.trainer import FieldTrainer
from panoptic_mapper.core.mapping.prior import PriorSnapshot
from panoptic_mapper.core.types import PanopticMesh

MESH_SOURCES = ("tsdf", "field")
"""What ``RefinedLayerConfig.mesh_source`` may name."""


def field_geometry_snapshot(trainer: FieldTrainer, prior: PriorSnapshot,
                            config: FieldMeshConfig) -> PriorSnapshot:
    """``prior`` with its mesh replaced by ``trainer``'s field surface (same version, instances
    and frame count); each field vertex takes the colour, label and instance of the nearest
    vertex of the prior's mesh. An empty prior mesh gives an empty mesh (nothing observed)."""
    prior_mesh = prior.mesh
    if prior_mesh.num_vertices == 0:
        return replace(prior, mesh=PanopticMesh.empty())
    with trainer.lock:  # one field state for the whole surface
        surface = extract_field_mesh(field_sdf(trainer.field), prior_mesh.vertices_m,
                                     trainer.field.box, config)
    if surface.num_vertices == 0:
        return replace(prior, mesh=PanopticMesh.empty())
    _, nearest = cKDTree(prior_mesh.vertices_m).query(surface.vertices_m)
    mesh = PanopticMesh(surface.vertices_m, surface.triangles, prior_mesh.colors[nearest],
                        prior_mesh.label_ids[nearest], prior_mesh.instance_ids[nearest])
    return replace(prior, mesh=mesh)


def served_geometry(mesh_source: str, trainer: FieldTrainer, prior: PriorSnapshot,
                    config: FieldMeshConfig) -> PriorSnapshot:
    """The snapshot whose mesh the layer labels and serves for ``mesh_source``."""
    if mesh_source == "field":
        return field_geometry_snapshot(trainer, prior, config)
    return prior
