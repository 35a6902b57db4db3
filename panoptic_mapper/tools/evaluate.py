"""Evaluate mapping methods on datasets or bags: panoptic, semantic, instance and geometry scores.

Runs every ``--method`` side by side over each DATASET_OR_BAG directly through the core (no ROS
graph), then writes ``metrics.json`` and ``metrics.md`` (one row per scene and method, plus
per-method means when several scenes are given) to ``--out`` and prints the table.

Examples:
  panoptic-mapper eval scene_00/ --method instant --method per_frame --out results/
  panoptic-mapper eval s0/ s1/ s2/ --method fine=instant --config fine=fine.yaml --out results/
  panoptic-mapper eval ../shared/data/7scenes_redkitchen_stride4 --method instant \\
      --max-frames 100 --out results/   # no labels: geometry (depth) and timing only
  panoptic-mapper eval s0_vio/ --poses estimated --out results_drift/   # loop corrections applied
  panoptic-mapper eval s0_vio/ --poses estimated --corrections ignore --out results_drift/

``--poses estimated`` feeds the maps the SLAM estimate of a ``make-scene --pose-drift`` scene
(``pose_estimated/``) and scores them at the true poses; ``--corrections apply`` (the default)
rebuilds the instant map at the scene's loop corrections (``loop_corrections.json``) as they are
published, ``ignore`` feeds the estimate alone (what drift costs without loop closing).

``--method oracle`` renders the ground-truth mesh (it needs one): a check of the evaluation
itself, and the best score the ground truth allows. Metric definitions: docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

ORACLE = "oracle"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="DATASET_OR_BAG",
                        help="dataset folders (ScanNet-export, 7-Scenes, Replica) or ROS 2 bags")
    parser.add_argument("--method", action="append", default=[], metavar="[NAME=]METHOD",
                        help="map method to run (repeatable; default: instant); NAME=METHOD "
                             "runs METHOD under a display name, e.g. fine=instant")
    parser.add_argument("--config", action="append", default=[], metavar="NAME=YAML",
                        help="YAML file holding the config mapping of method NAME (repeatable)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder for metrics.json and metrics.md")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="feed at most N frames (after --stride)")
    parser.add_argument("--stride", type=int, default=None, metavar="N",
                        help="feed every N-th frame")
    parser.add_argument("--eval-every", type=int, default=None, metavar="K",
                        help="score every K-th fed frame (default: about 40 frames)")
    parser.add_argument("--eval-pixel-step", type=int, default=None, metavar="S",
                        help="score every S-th pixel row/column (default 2; 1 = all)")
    parser.add_argument("--poses", choices=("true", "estimated"), default=None,
                        help="poses the maps integrate: the dataset's own (true, default) or "
                             "its SLAM estimate (pose_estimated/); scoring uses the true ones")
    parser.add_argument("--corrections", choices=("apply", "ignore"), default=None,
                        help="with --poses estimated: apply the scene's loop corrections to the "
                             "maps (apply, default) or feed the estimate alone (ignore)")
    parser.add_argument("--eval-config", metavar="YAML",
                        help="YAML with EvalConfig fields (flags above override it)")
    parser.add_argument("--labels", metavar="YAML",
                        help="label registry (default: the dataset's labels.yaml or the default)")
    parser.add_argument("--gt-mesh", metavar="PLY",
                        help="ground-truth mesh (only with a single DATASET_OR_BAG)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from panoptic_mapper.core.errors import InvalidInputError

    try:
        return _run(args)
    except InvalidInputError as exc:
        print(f"panoptic-mapper eval: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from panoptic_mapper.core.errors import ConfigError
    from panoptic_mapper.core.eval.report import to_json, to_markdown
    from panoptic_mapper.core.eval.runner import EvalConfig, MethodSpec, evaluate, open_source
    from panoptic_mapper.core.labels import LabelRegistry

    config = EvalConfig.from_yaml(args.eval_config) if args.eval_config else EvalConfig()
    overrides = {"max_frames": args.max_frames, "stride": args.stride,
                 "eval_every": args.eval_every, "eval_pixel_step": args.eval_pixel_step,
                 "poses": args.poses, "corrections": args.corrections}
    config = EvalConfig.from_dict({**config.to_dict(),
                                   **{k: v for k, v in overrides.items() if v is not None}})
    if args.gt_mesh and len(args.sources) > 1:
        raise ConfigError("--gt-mesh", args.gt_mesh, "only valid with a single DATASET_OR_BAG")
    specs = [MethodSpec.parse(text) for text in (args.method or ["instant"])]
    configs = _method_configs(args.config, {s.name for s in specs})
    registry = LabelRegistry.from_yaml(args.labels) if args.labels else None

    results = []
    for path in args.sources:
        source = open_source(path, config, registry=registry, gt_mesh_path=args.gt_mesh)
        scene_specs = []
        for spec in specs:
            if spec.method == ORACLE:
                if source.gt_mesh is None:
                    raise ConfigError("--method", ORACLE, f"{path} has no ground-truth mesh")
                scene_specs.append(MethodSpec(spec.name, ORACLE, factory=functools.partial(
                    _oracle, source.gt_mesh)))
            else:
                scene_specs.append(MethodSpec(spec.name, spec.method, configs.get(spec.name)))
        results.append(evaluate(source, scene_specs, config, progress=not args.no_progress))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(to_json(results), indent=1) + "\n",
                                      encoding="utf-8")
    table = to_markdown(results)
    (out / "metrics.md").write_text(table, encoding="utf-8")
    print(table)
    print(f"wrote {out / 'metrics.json'} and {out / 'metrics.md'}")
    return 0


def _oracle(mesh, registry):
    from panoptic_mapper.core.eval.oracle import GroundTruthMeshMap

    return GroundTruthMeshMap(mesh, registry)


def _method_configs(entries: list[str], names: set[str]) -> dict[str, dict]:
    """``NAME=YAML`` entries -> {name: config mapping}."""
    import yaml

    from panoptic_mapper.core.errors import ConfigError, DataFormatError

    configs: dict[str, dict] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not path:
            raise ConfigError("--config", entry, "expected NAME=YAML")
        if name not in names:
            raise ConfigError("--config", entry, f"no --method named '{name}' ({sorted(names)})")
        file = Path(path)
        if not file.is_file():
            raise DataFormatError("--config", path, "file not found", kind="missing_file")
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise DataFormatError("--config", path, f"invalid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise DataFormatError("--config", path, "must hold a mapping of config fields")
        configs[name] = data
    return configs
