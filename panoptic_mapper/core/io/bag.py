"""ROS 2 bags (``mcap`` or ``sqlite3`` storage) of posed RGB-D streams, without rclpy (rosbags).

Topics and types are listed in ``docs/dataset_format.md``; :class:`BagTopics` holds the names.
All messages of a frame share ``header.stamp``, which is also their bag timestamp when we
write them. A sequence with a simulated SLAM estimate (``make-scene --pose-drift``) is written as
a SLAM package would publish it: the drifting live estimate on the pose topic, and each loop
closure as a ``nav_msgs/Path`` of the optimised keyframe poses (:func:`read_keyframe_paths`).

Reading groups messages by **exact header stamp**. A frame is complete when it has colour,
depth and pose, plus segmentation / ground truth when the bag has those topics at all. The
camera info may be sent once (latched) or with every frame: a frame uses the camera info with
its own stamp, else the latest one before it, else the first one. Frames still incomplete when
the stream has moved ``max_part_delay_ns`` past their stamp (or at the end of the bag) are
reported in ``BagFrames.skipped`` with the missing parts named, never dropped silently;
messages that cannot be decoded are reported the same way.

A missing, truncated or corrupt bag raises :class:`DataFormatError` naming the file.

Owns: bag writing/reading for datasets, keyframe paths, bag summaries, raw message iteration
(for players).
Does not own: message <-> core conversions (``bag_messages``) or the type store (``msg_types``).
"""
from __future__ import annotations

import bisect
import contextlib
import logging
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, NamedTuple

from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import DataFormatError, InvalidInputError
from panoptic_mapper.core.io import bag_messages as msgs
from panoptic_mapper.core.io.msg_types import panoptic_typestore
from panoptic_mapper.core.io.progress import progress_bar
from panoptic_mapper.core.io.rgbd_dataset import SkippedFrame
from panoptic_mapper.core.io.slam_estimate import SlamEstimate
from panoptic_mapper.core.types import (CameraIntrinsics, DatasetSample, GroundTruthLabels,
                                        LoopCorrection, RgbdFrame)

LOGGER = logging.getLogger(__name__)

STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP,
                                      "sqlite3": StoragePlugin.SQLITE3}
"""Storage name (as in ``ros2 bag -s``) -> rosbags plugin."""
DEPTH_ENCODINGS = ("16UC1", "32FC1")
BAG_VERSION = 9
"""rosbag2 metadata version written (Jazzy and later)."""
DEFAULT_MAX_PART_DELAY_NS = 5_000_000_000

try:  # rosbags' sqlite3 storage is built on apsw, whose errors are not OSErrors
    import apsw

    _APSW_ERRORS: tuple[type[BaseException], ...] = (apsw.Error,)
except ImportError:  # pragma: no cover - apsw ships with rosbags
    _APSW_ERRORS = ()
_CORRUPT_BAG_ERRORS = (ReaderError, OSError, EOFError, ValueError, IndexError, KeyError,
                       struct.error, AssertionError, *_APSW_ERRORS)
"""What rosbags raises for truncated or corrupt storage files."""


@dataclass
class BagTopics(ConfigBase):
    """Topic names of the streams in our bags."""

    rgb: str = "/camera/color/image_raw"
    """sensor_msgs/Image colour topic (written rgb8; rgb8, bgr8, rgba8, bgra8, mono8 read)."""
    depth: str = "/camera/depth/image_raw"
    """sensor_msgs/Image depth topic (16UC1 millimetres or 32FC1 metres)."""
    camera_info: str = "/camera/color/camera_info"
    """sensor_msgs/CameraInfo of the (registered, undistorted) colour and depth images."""
    pose: str = "/camera/pose"
    """Camera pose in the map frame: geometry_msgs/PoseStamped (written), nav_msgs/Odometry or
    geometry_msgs/TransformStamped (read)."""
    segmentation: str = "/panoptic/segmentation"
    """panoptic_mapper/msg/PanopticSegmentation: 2D panoptic input, when the source has it."""
    gt_labels: str = "/ground_truth/labels"
    """sensor_msgs/Image 16UC1 ground-truth label ids, when the source has them."""
    gt_instances: str = "/ground_truth/instances"
    """sensor_msgs/Image 16UC1 ground-truth instance ids, when the source has them."""
    keyframe_path: str = "/slam/optimized_keyframes"
    """nav_msgs/Path: the optimised keyframe poses of each loop closure (map frame; the path
    stamped at publication, each pose with its keyframe's stamp), when the source has them."""

    def validate(self) -> None:
        super().validate()
        names = self.by_part()
        for part, topic in names.items():
            require(isinstance(topic, str) and topic.startswith("/") and " " not in topic,
                    part, topic, "topic names are absolute ('/...') without spaces")
        require(len(set(names.values())) == len(names), "topics", names,
                "every stream needs its own topic")

    def by_part(self) -> dict[str, str]:
        """``{"rgb": "/camera/color/image_raw", ...}`` for every field."""
        return {name: getattr(self, name) for name in (
            "rgb", "depth", "camera_info", "pose", "segmentation", "gt_labels", "gt_instances",
            "keyframe_path")}


# --------------------------------------------------------------------------------------------
# Summaries and raw messages
# --------------------------------------------------------------------------------------------
@dataclass
class BagTopicInfo:
    """One topic of a bag."""

    msgtype: str
    """e.g. ``"sensor_msgs/msg/Image"``."""
    message_count: int


@dataclass
class BagInfo:
    """What :func:`bag_info` reports."""

    path: Path
    storage: str
    """``"mcap"`` or ``"sqlite3"``."""
    topics: dict[str, BagTopicInfo]
    message_count: int
    start_ns: int
    """Bag timestamp of the first message (0 for an empty bag)."""
    end_ns: int
    """Bag timestamp of the last message (0 for an empty bag)."""

    @property
    def duration_ns(self) -> int:
        """Time between the first and the last message."""
        return self.end_ns - self.start_ns


class RawMessage(NamedTuple):
    """One serialised message as stored (CDR bytes)."""

    topic: str
    msgtype: str
    timestamp_ns: int
    """Bag (receive) timestamp."""
    rawdata: bytes


def bag_info(path: str | Path) -> BagInfo:
    """Topics, types, message counts and time span of a bag (folder, ``.mcap`` or ``.db3``)."""
    with _open_reader(path) as reader:
        topics = {topic: BagTopicInfo(info.msgtype or "<mixed>", int(info.msgcount))
                  for topic, info in sorted(reader.topics.items())}
        count = int(reader.message_count)
        start = int(reader.start_time) if count else 0
        end = int(reader.end_time) - 1 if count else 0
        return BagInfo(Path(path), _storage_name(Path(path)), topics, count, start, end)


def iter_raw_messages(path: str | Path, topics: Iterable[str] | None = None
                      ) -> Iterator[RawMessage]:
    """Yield every message (or those on ``topics``) in timestamp order, undecoded.

    Works for any ROS 2 bag, including types that panoptic_mapper does not convert: a player
    can hand ``rawdata`` to ``rclpy.serialization.deserialize_message`` or publish it as is.
    Bags split into several storage files are read file after file.
    """
    wanted = None if topics is None else set(topics)
    with _open_reader(path) as reader:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not connections:
            return
        for connection, timestamp, raw in _messages(reader, connections, path):
            yield RawMessage(connection.topic, connection.msgtype, int(timestamp), bytes(raw))


class KeyframePath(NamedTuple):
    """One ``nav_msgs/Path`` of optimised keyframe poses (a loop correction) read from a bag."""

    stamp_ns: int
    """Header stamp: when it was published."""
    keyframe_stamps_ns: Any
    """[K] int64 stamps of the keyframes (the frames they belong to)."""
    T_map_keyframe: Any
    """[K, 4, 4] optimised keyframe poses in the path's frame."""
    frame_id: str


def read_keyframe_paths(path: str | Path, topic: str | None = None) -> list[KeyframePath]:
    """The keyframe paths (loop corrections) of a bag in publication order; [] when it has
    none. ``topic`` defaults to :attr:`BagTopics.keyframe_path`.

    Raises:
        DataFormatError: unreadable bag, a message of another type on the topic or an
            undecodable one.
    """
    topic = topic or BagTopics().keyframe_path
    store = panoptic_typestore()
    out = []
    with _open_reader(path) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:  # rosbags reads every topic when given none
            return []
        for connection, timestamp, raw in _messages(reader, connections, path):
            if connection.msgtype != msgs.PATH:
                raise DataFormatError(f"{path}:{topic}", connection.msgtype,
                                      f"keyframe paths must be {msgs.PATH}", kind="bag_topics")
            try:
                msg = store.deserialize_cdr(raw, connection.msgtype)
                stamps, poses = msgs.decode_path(msg, topic)
            except Exception as exc:  # noqa: BLE001 - any CDR or pose decoding failure
                raise DataFormatError(f"{path}:{topic}", timestamp,
                                      f"undecodable path ({type(exc).__name__}: {exc})",
                                      kind="bag_message") from exc
            out.append(KeyframePath(msgs.stamp_ns_of(msg), stamps, poses, msg.header.frame_id))
    return sorted(out, key=lambda p: p.stamp_ns)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
@dataclass
class BagWriteReport:
    """What :func:`write_bag` wrote."""

    path: Path
    storage: str
    num_frames: int
    message_counts: dict[str, int] = field(default_factory=dict)
    """topic -> number of messages."""


def write_bag(out_path: str | Path, samples: Iterable[DatasetSample],
              intrinsics: CameraIntrinsics, storage: Literal["mcap", "sqlite3"] = "mcap",
              topics: BagTopics | None = None, depth_encoding: str = "16UC1",
              progress: bool = True, map_frame_id: str = "map",
              slam_estimate: SlamEstimate | None = None) -> BagWriteReport:
    """Write samples as a ROS 2 bag (a new folder with ``metadata.yaml`` and one storage file).

    Each frame becomes camera info, rgb8 image, depth image and PoseStamped (``map_frame_id`` ->
    camera), plus PanopticSegmentation and 16UC1 ground-truth images when the sample has them;
    all stamped with the frame's ``stamp_ns`` (header and bag time). On any error the partly
    written folder is removed.

    With ``slam_estimate`` the pose topic carries its live estimate instead of the samples' (true)
    poses, and each loop correction becomes a ``nav_msgs/Path`` on ``topics.keyframe_path``,
    written after the frame with its publication stamp (or at the end, if no frame is that late).

    Raises:
        InvalidInputError: existing ``out_path``, unknown ``storage`` / ``depth_encoding``, a
            sample whose camera differs from ``intrinsics``, ids that do not fit 16 bits, a frame
            without an estimated pose.
    """
    topics = topics or BagTopics()
    if storage not in STORAGES:
        raise InvalidInputError("storage", storage, f"must be one of {list(STORAGES)}",
                                kind="config")
    if depth_encoding not in DEPTH_ENCODINGS:
        raise InvalidInputError("depth_encoding", depth_encoding,
                                f"must be one of {list(DEPTH_ENCODINGS)}", kind="config")
    out = Path(out_path)
    if out.exists():
        raise InvalidInputError("out_path", str(out), "exists already; bags are never "
                                "overwritten", kind="file_exists")
    store = panoptic_typestore()
    writer = Writer(out, version=BAG_VERSION, storage_plugin=STORAGES[storage])
    counts: dict[str, int] = {}
    connections: dict[str, Any] = {}

    def write(topic: str, msgtype: str, stamp_ns: int, msg) -> None:
        if topic not in connections:
            connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
        writer.write(connections[topic], stamp_ns, store.serialize_cdr(msg, msgtype))
        counts[topic] = counts.get(topic, 0) + 1

    def write_corrections(until_ns: int | None) -> None:
        while pending and (until_ns is None or pending[0].stamp_ns <= until_ns):
            c = pending.pop(0)
            write(topics.keyframe_path, msgs.PATH, c.stamp_ns,
                  msgs.path_msg(c.T_world_keyframe, c.keyframe_stamps_ns, c.stamp_ns,
                                map_frame_id))

    pending: list[LoopCorrection] = sorted(
        slam_estimate.corrections if slam_estimate is not None else [], key=lambda c: c.stamp_ns)
    num_frames = 0
    try:
        writer.open()
        for topic, msgtype in ((topics.camera_info, msgs.CAMERA_INFO), (topics.rgb, msgs.IMAGE),
                               (topics.depth, msgs.IMAGE), (topics.pose, msgs.POSE_STAMPED)):
            connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
        for sample in progress_bar(samples, progress, "writing bag"):
            stamp = sample.frame.stamp_ns
            T_map_cam = (sample.frame.T_world_cam if slam_estimate is None  # noqa: N806
                         else slam_estimate.pose_at(stamp))
            for topic, msgtype, msg in _frame_messages(num_frames, sample, intrinsics, topics,
                                                       depth_encoding, map_frame_id, T_map_cam):
                write(topic, msgtype, stamp, msg)
            write_corrections(stamp)
            num_frames += 1
        write_corrections(None)
        writer.close()
    except BaseException:
        with contextlib.suppress(Exception):
            writer.abort()
        shutil.rmtree(out, ignore_errors=True)
        raise
    return BagWriteReport(out, storage, num_frames, counts)


def _frame_messages(i: int, sample: DatasetSample, intrinsics: CameraIntrinsics,
                    topics: BagTopics, depth_encoding: str, map_frame_id: str,
                    T_map_cam=None) -> list[tuple[str, str, Any]]:  # noqa: N803
    """The messages of one frame; the pose topic gets ``T_map_cam`` (default: the frame's)."""
    frame = sample.frame
    T_map_cam = frame.T_world_cam if T_map_cam is None else T_map_cam  # noqa: N806
    if frame.intrinsics != intrinsics:
        raise InvalidInputError(f"samples[{i}].frame.intrinsics", frame.intrinsics,
                                f"differs from the bag camera {intrinsics}",
                                kind="size_mismatch")
    stamp, camera = frame.stamp_ns, frame.frame_id
    out = [(topics.camera_info, msgs.CAMERA_INFO, msgs.camera_info_msg(intrinsics, stamp, camera)),
           (topics.rgb, msgs.IMAGE, msgs.image_msg(frame.rgb, "rgb8", stamp, camera)),
           (topics.depth, msgs.IMAGE, msgs.depth_msg(frame.depth_m, depth_encoding, stamp,
                                                     camera)),
           (topics.pose, msgs.POSE_STAMPED, msgs.pose_stamped_msg(T_map_cam, stamp,
                                                                  map_frame_id))]
    if sample.segmentation is not None:
        out.append((topics.segmentation, msgs.PANOPTIC_SEGMENTATION,
                    msgs.segmentation_msg(sample.segmentation, stamp, camera)))
    if sample.ground_truth is not None:
        for topic, ids, name in ((topics.gt_labels, sample.ground_truth.label_ids, "label_ids"),
                                 (topics.gt_instances, sample.ground_truth.instance_ids,
                                  "instance_ids")):
            array, encoding = msgs.ids_encoding(ids, f"samples[{i}].ground_truth.{name}")
            if encoding != "16UC1":
                raise InvalidInputError(f"samples[{i}].ground_truth.{name}", int(ids.max()),
                                        "ground-truth ids must fit 16UC1", kind="encoding")
            out.append((topic, msgs.IMAGE, msgs.image_msg(array, encoding, stamp, camera)))
    return out


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
REQUIRED_PARTS = ("rgb", "depth", "pose")
OPTIONAL_PARTS = ("segmentation", "gt_labels", "gt_instances")
_PART_TYPES = {"rgb": (msgs.IMAGE,), "depth": (msgs.IMAGE,), "pose": msgs.POSE_TYPES,
               "camera_info": (msgs.CAMERA_INFO,), "segmentation": (msgs.PANOPTIC_SEGMENTATION,),
               "gt_labels": (msgs.IMAGE,), "gt_instances": (msgs.IMAGE,)}


def read_bag(path: str | Path, topics: BagTopics | None = None, *, strict: bool = True,
             intrinsics: CameraIntrinsics | None = None,
             max_part_delay_ns: int = DEFAULT_MAX_PART_DELAY_NS) -> "BagFrames":
    """The frames of a bag (see module docstring for grouping and reporting).

    Args:
        path: bag folder, or a single ``.mcap`` / ``.db3`` file.
        topics: topic names (defaults: :class:`BagTopics`).
        strict: a frame lacking a segmentation / ground-truth message while the bag has that
            topic is skipped (True) or yielded with that part None (False).
        intrinsics: use these instead of the bag's camera info (e.g. a bag without one).
        max_part_delay_ns: how far past a frame's stamp the stream may go before the frame is
            declared incomplete.

    Raises:
        DataFormatError: unreadable bag, or a required topic missing or of the wrong type.
    """
    return BagFrames(Path(path), topics or BagTopics(), strict=strict, intrinsics=intrinsics,
                     max_part_delay_ns=max_part_delay_ns)


class BagFrames:
    """An iterable of the :class:`DatasetSample` frames of a bag; each iteration re-reads it.

    After (or during) an iteration, :attr:`skipped` lists the frames that were incomplete or
    undecodable, with reasons.
    """

    def __init__(self, path: Path, topics: BagTopics, *, strict: bool = True,
                 intrinsics: CameraIntrinsics | None = None,
                 max_part_delay_ns: int = DEFAULT_MAX_PART_DELAY_NS):
        if max_part_delay_ns < 0:
            raise InvalidInputError("max_part_delay_ns", max_part_delay_ns, "must be >= 0",
                                    kind="config")
        self.path, self.topics, self.strict = path, topics, strict
        self.intrinsics_override = intrinsics
        self.max_part_delay_ns = int(max_part_delay_ns)
        self.info = bag_info(path)
        """Summary of the bag (topics, counts, time span)."""
        self.skipped: list[SkippedFrame] = []
        """Frames the last iteration could not assemble or decode."""
        needed = list(REQUIRED_PARTS) + ([] if intrinsics is not None else ["camera_info"])
        by_part = topics.by_part()
        for part in needed + list(OPTIONAL_PARTS):
            topic = by_part[part]
            info = self.info.topics.get(topic)
            if info is None or info.message_count == 0:
                if part in needed:
                    raise DataFormatError(f"{path}:{topic}", "missing",
                                          f"the bag has no {part} messages; topics: "
                                          f"{sorted(self.info.topics)}", kind="bag_topics")
                continue
            if info.msgtype not in _PART_TYPES[part]:
                raise DataFormatError(f"{path}:{topic}", info.msgtype,
                                      f"{part} must be one of {list(_PART_TYPES[part])}",
                                      kind="bag_topics")
        self.optional_parts = tuple(p for p in OPTIONAL_PARTS
                                    if self.info.topics.get(by_part[p]) is not None
                                    and self.info.topics[by_part[p]].message_count > 0)
        """Optional streams this bag has (a subset of :data:`OPTIONAL_PARTS`)."""

    @property
    def has_segmentation(self) -> bool:
        return "segmentation" in self.optional_parts

    @property
    def has_ground_truth(self) -> bool:
        return "gt_labels" in self.optional_parts and "gt_instances" in self.optional_parts

    def __iter__(self) -> Iterator[DatasetSample]:
        self.skipped = []
        assembler = _FrameAssembler(self)
        by_part = self.topics.by_part()
        part_of_topic = {by_part[p]: p for p in REQUIRED_PARTS + self.optional_parts}
        store = panoptic_typestore()
        with _open_reader(self.path) as reader:
            if self.intrinsics_override is None:
                assembler.cameras = _CameraInfos.read(reader, self.path, by_part["camera_info"])
            connections = [c for c in reader.connections if c.topic in part_of_topic]
            for connection, timestamp, raw in _messages(reader, connections, self.path):
                part = part_of_topic[connection.topic]
                try:
                    msg = store.deserialize_cdr(raw, connection.msgtype)
                    stamp = msgs.stamp_ns_of(msg)
                except Exception as exc:  # noqa: BLE001 - any CDR decoding failure
                    assembler.skip(f"{connection.topic} @ {timestamp}", DataFormatError(
                        f"{self.path}:{connection.topic}", timestamp,
                        f"undecodable {connection.msgtype} message ({type(exc).__name__}: "
                        f"{exc})", kind="bag_message"))
                    continue
                yield from assembler.add(stamp, part, msg, connection.msgtype)
            yield from assembler.finish()


class _FrameAssembler:
    """Groups decoded messages by header stamp and turns complete groups into samples."""

    def __init__(self, frames: BagFrames):
        self.frames = frames
        self.cameras: _CameraInfos | None = None
        self.pending: dict[int, dict[str, tuple[Any, str]]] = {}
        self.latest_stamp = -1
        self.position = 0
        self.needed = REQUIRED_PARTS + frames.optional_parts

    def add(self, stamp: int, part: str, msg, msgtype: str) -> Iterator[DatasetSample]:
        parts = self.pending.setdefault(stamp, {})
        if part in parts:
            LOGGER.warning("%s: second %s message with stamp %d ignored", self.frames.path,
                           part, stamp)
        else:
            parts[part] = (msg, msgtype)
        self.latest_stamp = max(self.latest_stamp, stamp)
        if all(p in parts for p in self.needed):
            yield from self._emit(stamp, self.pending.pop(stamp))
        horizon = self.latest_stamp - self.frames.max_part_delay_ns
        for old in sorted(s for s in self.pending if s < horizon):
            yield from self._expire(old, self.pending.pop(old))

    def finish(self) -> Iterator[DatasetSample]:
        for stamp in sorted(self.pending):
            yield from self._expire(stamp, self.pending.pop(stamp))

    def skip(self, name: str, error: InvalidInputError) -> None:
        self.frames.skipped.append(SkippedFrame(self.position, name, error))
        LOGGER.warning("%s: skipping frame %s: %s", self.frames.path, name, error)
        self.position += 1

    def _expire(self, stamp: int, parts: dict[str, tuple[Any, str]]
                ) -> Iterator[DatasetSample]:
        missing = [p for p in self.needed if p not in parts]
        required_missing = [p for p in REQUIRED_PARTS if p not in parts]
        if required_missing or self.frames.strict:
            topics = self.frames.topics.by_part()
            self.skip(f"stamp {stamp}", DataFormatError(
                f"{self.frames.path} stamp {stamp}", [topics[p] for p in missing],
                "incomplete frame: no message with this header stamp on these topics",
                kind="incomplete_frame"))
            return
        yield from self._emit(stamp, parts)

    def _emit(self, stamp: int, parts: dict[str, tuple[Any, str]]) -> Iterator[DatasetSample]:
        try:
            sample = self._build(stamp, parts)
        except InvalidInputError as exc:
            error = exc if isinstance(exc, DataFormatError) else DataFormatError(
                f"{self.frames.path} stamp {stamp}:{exc.field}", exc.value, exc.reason,
                kind=exc.kind)
            self.skip(f"stamp {stamp}", error)
            return
        self.position += 1
        yield sample

    def _build(self, stamp: int, parts: dict[str, tuple[Any, str]]) -> DatasetSample:
        rgb_msg = parts["rgb"][0]
        intrinsics = self.frames.intrinsics_override or self.cameras.at(stamp)
        frame = RgbdFrame(
            stamp_ns=stamp, rgb=msgs.decode_rgb(rgb_msg), depth_m=msgs.decode_depth(
                parts["depth"][0]),
            T_world_cam=msgs.decode_pose(parts["pose"][0], parts["pose"][1]),
            intrinsics=intrinsics, frame_id=rgb_msg.header.frame_id, index=self.position)
        segmentation = None
        if "segmentation" in parts:
            segmentation = msgs.decode_segmentation(parts["segmentation"][0])
            if segmentation.shape != intrinsics.shape:
                raise InvalidInputError("segmentation.segment_ids", list(segmentation.shape),
                                        f"must match the camera {list(intrinsics.shape)}",
                                        kind="size_mismatch")
        truth = None
        if "gt_labels" in parts and "gt_instances" in parts:
            truth = GroundTruthLabels(msgs.decode_ids(parts["gt_labels"][0], "gt_labels"),
                                      msgs.decode_ids(parts["gt_instances"][0], "gt_instances"))
            if truth.label_ids.shape != intrinsics.shape:
                raise InvalidInputError("gt_labels", list(truth.label_ids.shape),
                                        f"must match the camera {list(intrinsics.shape)}",
                                        kind="size_mismatch")
        return DatasetSample(frame=frame, segmentation=segmentation, ground_truth=truth)


class _CameraInfos:
    """The bag's camera info messages by stamp (they are small: read them all up front)."""

    def __init__(self, stamps: list[int], values: list[CameraIntrinsics | InvalidInputError]):
        self.stamps, self.values = stamps, values

    @classmethod
    def read(cls, reader: Reader, path: Path, topic: str) -> "_CameraInfos":
        store = panoptic_typestore()
        entries: dict[int, CameraIntrinsics | InvalidInputError] = {}
        warned = False
        connections = [c for c in reader.connections if c.topic == topic]
        for connection, timestamp, raw in _messages(reader, connections, path):
            try:
                msg = store.deserialize_cdr(raw, connection.msgtype)
            except Exception as exc:  # noqa: BLE001 - any CDR decoding failure
                LOGGER.warning("%s: undecodable camera info at %d: %s", path, timestamp, exc)
                continue
            stamp = msgs.stamp_ns_of(msg)
            try:
                entries.setdefault(stamp, msgs.decode_camera_info(msg, topic))
            except InvalidInputError as exc:
                entries.setdefault(stamp, exc)
            if not warned and msgs.has_distortion(msg):
                LOGGER.warning("%s: %s declares lens distortion; images are used as if they "
                               "were undistorted", path, topic)
                warned = True
        stamps = sorted(entries)
        if not stamps:
            raise DataFormatError(f"{path}:{topic}", "no decodable message",
                                  "no usable camera info in the bag", kind="bag_topics")
        return cls(stamps, [entries[s] for s in stamps])

    def at(self, stamp: int) -> CameraIntrinsics:
        """The camera info with this stamp, else the latest before it, else the first."""
        i = bisect.bisect_right(self.stamps, stamp) - 1
        value = self.values[max(i, 0)]
        if isinstance(value, InvalidInputError):
            raise value
        return value


# --------------------------------------------------------------------------------------------
# rosbags access with file-naming errors
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _open_reader(path: str | Path) -> Iterator[Reader]:
    path = Path(path)
    if not path.exists():
        raise DataFormatError("bag", str(path), "not found", kind="missing_file")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        storage_files = sorted(p.name for p in path.iterdir()
                               if p.suffix in (".mcap", ".db3"))
        raise DataFormatError(str(path / "metadata.yaml"), "missing",
                              "bag folder without metadata.yaml; storage files present: "
                              f"{storage_files} (pass one of them to read it directly)",
                              kind="bag")
    try:
        reader = Reader(path)
        reader.open()
    except DataFormatError:
        raise
    except _CORRUPT_BAG_ERRORS as exc:
        raise DataFormatError(str(path), type(exc).__name__, f"cannot open bag: {exc}",
                              kind="bag") from exc
    try:
        yield reader
    finally:
        with contextlib.suppress(Exception):
            reader.close()


def _messages(reader: Reader, connections: list, path: str | Path) -> Iterator[tuple]:
    """``reader.messages`` with storage failures turned into :class:`DataFormatError`."""
    iterator = reader.messages(connections=connections)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except DataFormatError:
            raise
        except _CORRUPT_BAG_ERRORS as exc:
            raise DataFormatError(str(path), type(exc).__name__,
                                  f"corrupt or truncated bag while reading messages: {exc}",
                                  kind="bag") from exc
        yield item


def _storage_name(path: Path) -> str:
    files = [path] if path.is_file() else list(path.iterdir())
    if any(f.suffix == ".mcap" for f in files):
        return "mcap"
    if any(f.suffix == ".db3" for f in files):
        return "sqlite3"
    return "unknown"
