"""A map that follows loop corrections, for offline evaluation (``eval --corrections apply``).

:class:`CorrectedMap` implements ``PanopticMap`` over a :class:`MapSession` that keeps its fused
frames (``core/mapping/frame_store``) and a :class:`MapCorrector`, the objects a node runs:
``integrate_frame`` goes through the session, :meth:`CorrectedMap.apply_correction` rebuilds the
map at the corrected poses in the calling thread (``MapCorrector.apply``), and everything else is
the live map's (after a correction, the rebuilt one).

ROS-free. Owns: :class:`CorrectedMap`. Does not own: when a correction is applied (the caller:
``core/eval/runner``), or how (``runtime/map_corrections``).
"""
from __future__ import annotations

from typing import Any, Callable

from panoptic_mapper.core.labels import LabelRegistry
from panoptic_mapper.core.mapping.base import IntegrationReport, PanopticMap
from panoptic_mapper.core.mapping.frame_store import FrameStore, FrameStoreConfig
from panoptic_mapper.core.mapping.pose_corrections import KeyframeCorrection
from panoptic_mapper.core.types import PanopticSegmentation2D, RgbdFrame
from panoptic_mapper.runtime.map_corrections import MapCorrector
from panoptic_mapper.runtime.map_session import MapSession


class CorrectedMap:
    """``map_factory``'s map fed through a session that keeps its frames (module docstring).

    The map must report ``instance_votes`` (the instant map does): a rebuild inherits ids by them.
    """

    def __init__(self, map_factory: Callable[[], PanopticMap], registry: LabelRegistry,
                 store_config: FrameStoreConfig | None = None):
        self.session = MapSession(map_factory, registry,
                                  frame_store=FrameStore(store_config or FrameStoreConfig()))
        self.corrector = MapCorrector(self.session)

    @property
    def map(self) -> PanopticMap:
        """The live map (a new object after each correction)."""
        return self.session.map

    def integrate_frame(self, frame: RgbdFrame,
                        segmentation: PanopticSegmentation2D | None) -> IntegrationReport:
        return self.session.integrate(frame, segmentation)

    def apply_correction(self, correction: KeyframeCorrection) -> dict[str, float]:
        """Rebuild the map at the corrected poses now; what it cost.

        Raises:
            InvalidInputError: the correction cannot be applied (the map is unchanged).
        """
        report = self.corrector.apply(correction)
        stats = self.corrector.stats
        return {"duration_s": stats.last_duration_s, "frames_fused": report.frames_fused,
                "frames_rejected": report.frames_rejected, "max_shift_m": stats.last_max_shift_m,
                "ids_kept": stats.last_ids_kept, "ids_merged": stats.last_ids_merged,
                "store_mb": stats.store_mb}

    def reset(self) -> None:
        self.session.reset()

    def load(self, path) -> None:
        self.session.load(path)

    def __getattr__(self, name: str) -> Any:  # the rest of PanopticMap: the live map's
        if name in ("session", "corrector"):  # not set yet (during __init__)
            raise AttributeError(name)
        return getattr(self.session.map, name)
