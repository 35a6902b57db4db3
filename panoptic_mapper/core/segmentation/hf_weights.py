"""Local Hugging Face model directories: checks with actionable errors, and device choice.

The models of the open-vocabulary path (Grounding DINO, SAM, CLIP) are never fetched from a hub at
run time: the user downloads a checkpoint once, on a machine with internet, and points the config
at the directory. This module checks such a directory before ``from_pretrained`` sees it, so a
wrong path fails with a message that names the config field and says how to obtain the weights.

Owns: :func:`require_model_dir`, :func:`resolve_device`, the download hints.
Does not own: building or running any model.
"""
from __future__ import annotations

import json
from pathlib import Path

from panoptic_mapper.core.errors import ConfigError, DataFormatError

WEIGHT_FILE_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
"""A model directory must hold at least one file matching one of these."""

DOWNLOAD_HINTS: dict[str, str] = {
    "grounding-dino": "hf download IDEA-Research/grounding-dino-tiny "
                      "--local-dir <dir>",
    "sam": "hf download facebook/sam-vit-base --local-dir <dir> "
           "(or facebook/sam-vit-huge, the PanopticRecon++ choice)",
    "clip": "hf download openai/clip-vit-base-patch32 --local-dir <dir>",
}
"""How to obtain a checkpoint of each model type (run on a machine with internet access). ``hf``
is the command-line tool of ``huggingface_hub`` >= 0.34; older releases call it
``huggingface-cli`` with the same arguments."""


def require_model_dir(path: str, field: str, model_type: str) -> Path:
    """Check that ``path`` is a local checkpoint directory of ``model_type`` and return it.

    Args:
        path: directory given in the config.
        field: dotted config name of ``path`` (named in the error).
        model_type: expected ``model_type`` of its ``config.json`` (``"grounding-dino"``,
            ``"sam"``, ``"clip"``).

    Raises:
        DataFormatError: the path is empty or missing, has no ``config.json`` or no weight
            file, or holds another model type. The message says how to download the weights.
    """
    command = DOWNLOAD_HINTS.get(model_type, "hf download <repo> --local-dir <dir>")
    hint = (f"; obtain the weights on a machine with internet access with `{command}` and set "
            f"{field} to that directory")
    if not path:
        raise DataFormatError(field, path, "no model directory configured" + hint,
                              kind="model_weights")
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise DataFormatError(field, str(directory), "model directory not found" + hint,
                              kind="model_weights")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise DataFormatError(field, str(directory),
                              "no config.json: not a Hugging Face checkpoint directory" + hint,
                              kind="model_weights")
    try:
        found_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type", "")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise DataFormatError(field, str(config_file), f"unreadable config.json: {exc}" + hint,
                              kind="model_weights") from exc
    if found_type != model_type:
        raise DataFormatError(field, str(directory),
                              f"holds a '{found_type}' model, expected '{model_type}'" + hint,
                              kind="model_weights")
    if not any(any(directory.glob(pattern)) for pattern in WEIGHT_FILE_PATTERNS):
        raise DataFormatError(field, str(directory),
                              f"no weight file ({' or '.join(WEIGHT_FILE_PATTERNS)})" + hint,
                              kind="model_weights")
    return directory


def resolve_device(device: str, field: str) -> str:
    """Map ``"auto"`` to ``"cuda"`` when available (else ``"cpu"``); check an explicit choice.

    Raises:
        ConfigError: ``"cuda"`` was asked for but torch sees no CUDA device, or the name is
            unknown.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(field, device, "CUDA requested but torch.cuda.is_available() is False")
    if device not in ("cpu", "cuda"):
        raise ConfigError(field, device, "must be one of ['auto', 'cpu', 'cuda']")
    return device
