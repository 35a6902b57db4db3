"""Label registry and per-voxel label fusion rules."""
from panoptic_mapper.core.labels.registry import Label, LabelRegistry, normalize_phrase

__all__ = ["Label", "LabelRegistry", "normalize_phrase"]
