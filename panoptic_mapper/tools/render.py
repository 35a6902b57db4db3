"""Write PNG pictures of a map: bird's-eye and oblique views by class, instance and RGB.

Reads a mesh exported by the map (``export_mesh``, PLY with label and instance ids) or a saved
map (``save_map``, ``.npz`` of the instant or refined map), ray casts it off-screen on the CPU
(Open3D; no display needed) and writes ``{view}_{colouring}.png`` with a legend of the labels or
of the instance ids. Surfaces seen from behind are transparent in the oblique view, and the
ceiling and everything above ``--cut-height`` over the floor are left out, so the views look into
the room.

Examples::

    panoptic-mapper render /tmp/panoptic_mapper_demo/map.npz --out /tmp/pictures
    panoptic-mapper render mesh.ply --out pictures --view oblique --color class --width 800
    panoptic-mapper render map.npz --out pictures --labels my_labels.yaml --up 0 -1 0
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("map", metavar="MAP_OR_PLY", help="saved map (.npz) or mesh (.ply)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files")
    parser.add_argument("--labels", default="", metavar="YAML",
                        help="label registry of the map (default: the shipped one)")
    parser.add_argument("--view", action="append", choices=("birdseye", "oblique"),
                        help="view to render (repeatable; default: both)")
    parser.add_argument("--color", action="append", choices=("class", "instance", "rgb"),
                        help="colouring (repeatable; default: all three)")
    parser.add_argument("--width", type=int, default=1024, help="view width in pixels "
                        "(default: %(default)s; a legend panel is added)")
    parser.add_argument("--height", type=int, default=768,
                        help="view height in pixels (default: %(default)s)")
    parser.add_argument("--up", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="up direction of the map frame (default: the floor's normal, "
                             "else +z)")
    parser.add_argument("--cut-height", type=float, default=2.2, metavar="M",
                        help="leave out surfaces this far above the floor (default: "
                             "%(default)s m; 0 keeps everything)")
    parser.add_argument("--prefix", default="", help="prefix of the file names")


def run(args: argparse.Namespace) -> int:
    from panoptic_mapper.core.errors import PanopticMapperError
    from panoptic_mapper.core.labels import LabelRegistry
    from panoptic_mapper.core.viz.map_render import MapViewConfig, render_map_views
    from panoptic_mapper.core.viz.map_source import load_map_mesh

    try:
        config = MapViewConfig(width_px=args.width, height_px=args.height,
                               views=tuple(args.view or ("birdseye", "oblique")),
                               color_modes=tuple(args.color or ("class", "instance", "rgb")),
                               up=tuple(args.up or ()), cut_height_m=args.cut_height)
        registry = (LabelRegistry.from_yaml(args.labels) if args.labels
                    else LabelRegistry.default())
        mesh, instances, kind = load_map_mesh(args.map, registry)
        rendered = render_map_views(mesh, registry, args.out, config, instances, args.prefix)
    except (PanopticMapperError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.map} ({kind}: {mesh.num_vertices:,} vertices, "
          f"{len(instances) if instances is not None else 'no'} instances)")
    for view in rendered:
        print(f"  {view.path}")
    return 0
