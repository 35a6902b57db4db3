"""ROS 2 bags written and read with rosbags: round trips, foreign bags, corrupt bags."""
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from scipy.spatial.transform import Rotation

from panoptic_mapper.core.errors import ConfigError, DataFormatError, InvalidInputError
from panoptic_mapper.core.io import bag_messages as msgs
from panoptic_mapper.core.io.bag import (BagTopics, bag_info, iter_raw_messages, read_bag,
                                         write_bag)
from panoptic_mapper.core.io.datasets import open_dataset
from panoptic_mapper.core.io import msg_types
from panoptic_mapper.core.io.msg_types import panoptic_typestore
from panoptic_mapper.core.types import (CameraIntrinsics, DatasetSample, GroundTruthLabels,
                                        PanopticSegmentation2D, RgbdFrame, Segment)


def _assert_frames_equal(source, read_back, depth_atol=0.0):
    assert len(source) == len(read_back)
    for a, b in zip(source, read_back):
        fa, fb = a.frame, b.frame
        assert fa.stamp_ns == fb.stamp_ns and fa.intrinsics == fb.intrinsics
        assert fa.frame_id == fb.frame_id
        np.testing.assert_array_equal(fa.rgb, fb.rgb)
        np.testing.assert_allclose(fa.depth_m, fb.depth_m, rtol=0, atol=depth_atol)
        np.testing.assert_allclose(fa.T_world_cam, fb.T_world_cam, rtol=0, atol=1e-12)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_seven_scenes_bag_round_trip(seven_scenes_dir, tmp_path, storage):
    dataset = open_dataset(seven_scenes_dir, stride=12, max_frames=20)
    report = write_bag(tmp_path / "kitchen", dataset, dataset.intrinsics, storage=storage,
                       progress=False)
    assert report.num_frames == 20 and report.storage == storage
    assert report.message_counts == {"/camera/color/camera_info": 20,
                                     "/camera/color/image_raw": 20,
                                     "/camera/depth/image_raw": 20, "/camera/pose": 20}
    frames = read_bag(tmp_path / "kitchen")
    read_back = list(frames)
    assert frames.skipped == [] and not frames.has_segmentation
    _assert_frames_equal(list(dataset), read_back)  # 16UC1 mm depth is lossless for mm sources
    assert [s.frame.index for s in read_back] == list(range(20))

    info = bag_info(tmp_path / "kitchen")
    assert info.storage == storage and info.message_count == 80
    assert info.topics["/camera/pose"].msgtype == "geometry_msgs/msg/PoseStamped"
    assert info.topics["/camera/color/image_raw"].message_count == 20
    # frames 0 and 19 * 12 * 4 = 912 of the 30 Hz sequence
    assert (info.start_ns, info.end_ns) == (0, round(912e9 / 30))
    assert info.duration_ns == info.end_ns


@pytest.mark.slow
def test_all_seven_scenes_frames_round_trip(seven_scenes_dir, tmp_path):
    dataset = open_dataset(seven_scenes_dir)
    write_bag(tmp_path / "all", dataset, dataset.intrinsics, progress=False)
    frames = read_bag(tmp_path / "all")
    count = 0
    for a, b in zip(dataset, frames):
        _assert_frames_equal([a], [b])
        count += 1
    assert count == 250 and frames.skipped == [] and dataset.skipped == []


def _labelled_samples(n=3, intrinsics=CameraIntrinsics(8, 6, 7.0, 7.0, 3.5, 2.5)):
    """Random frames with a wall (stuff) + chair (thing) segmentation and ground truth."""
    rng = np.random.default_rng(n)
    h, w = intrinsics.shape
    samples = []
    for i in range(n):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
        T[:3, 3] = rng.normal(size=3)
        depth = rng.uniform(0.5, 4.0, (h, w)).astype(np.float32)
        depth[0, :3] = 0.0
        frame = RgbdFrame(stamp_ns=5_000_000_000 + i * 100_000_000,
                          rgb=rng.integers(0, 256, (h, w, 3), dtype=np.uint8), depth_m=depth,
                          T_world_cam=T, intrinsics=intrinsics)
        ids = np.ones((h, w), np.int32)
        ids[:, w // 2:] = 2
        ids[0, 0] = 0
        segmentation = PanopticSegmentation2D(ids, (
            Segment(1, "wall", 1, False, 0.75, "wall panel"),
            Segment(2, "chair", 10, True, 0.5, "office chair")), frame.stamp_ns)
        truth = GroundTruthLabels(np.where(ids == 2, 10, 1), np.where(ids == 2, 40 + i, 0))
        samples.append(DatasetSample(frame, segmentation, truth))
    return samples


def test_segmentation_ground_truth_and_32fc1_round_trip(tmp_path):
    samples = _labelled_samples()
    intrinsics = samples[0].frame.intrinsics
    report = write_bag(tmp_path / "b", samples, intrinsics, storage="sqlite3",
                       depth_encoding="32FC1", progress=False)
    assert report.message_counts["/panoptic/segmentation"] == 3
    assert report.message_counts["/ground_truth/instances"] == 3
    frames = read_bag(tmp_path / "b")
    assert frames.has_segmentation and frames.has_ground_truth
    read_back = list(frames)
    _assert_frames_equal(samples, read_back)  # 32FC1 metres: bit-exact
    for a, b in zip(samples, read_back):
        np.testing.assert_array_equal(a.segmentation.segment_ids, b.segmentation.segment_ids)
        assert [(s.id, s.label, s.label_id, s.is_thing, s.phrase) for s in a.segmentation.segments
                ] == [(s.id, s.label, s.label_id, s.is_thing, s.phrase)
                      for s in b.segmentation.segments]
        assert [s.score for s in b.segmentation.segments] == [0.75, 0.5]
        np.testing.assert_array_equal(a.ground_truth.label_ids, b.ground_truth.label_ids)
        np.testing.assert_array_equal(a.ground_truth.instance_ids, b.ground_truth.instance_ids)


def test_16uc1_depth_rounds_to_millimetres(tmp_path):
    sample = _labelled_samples(1)[0]
    frame = sample.frame.replace(depth_m=np.full(sample.frame.depth_m.shape, 1.23456, np.float32))
    write_bag(tmp_path / "b", [DatasetSample(frame)], frame.intrinsics, progress=False)
    (back,) = list(read_bag(tmp_path / "b"))
    np.testing.assert_allclose(back.frame.depth_m, 1.235, rtol=0, atol=1e-6)
    far = frame.replace(depth_m=np.full(frame.depth_m.shape, 70.0, np.float32))
    with pytest.raises(InvalidInputError, match="use 32FC1"):
        write_bag(tmp_path / "far", [DatasetSample(far)], frame.intrinsics, progress=False)
    assert not (tmp_path / "far").exists()  # partial bags are removed


def test_write_bag_rejects_bad_arguments(tmp_path):
    samples = _labelled_samples(2)
    intrinsics = samples[0].frame.intrinsics
    with pytest.raises(InvalidInputError, match="storage"):
        write_bag(tmp_path / "a", samples, intrinsics, storage="rosbag1", progress=False)
    with pytest.raises(InvalidInputError, match="depth_encoding"):
        write_bag(tmp_path / "a", samples, intrinsics, depth_encoding="mono8", progress=False)
    with pytest.raises(InvalidInputError, match=r"samples\[0\].frame.intrinsics"):
        write_bag(tmp_path / "a", samples, intrinsics.scaled(2.0), progress=False)
    assert not (tmp_path / "a").exists()
    (tmp_path / "exists").mkdir()
    with pytest.raises(InvalidInputError, match="never overwritten"):
        write_bag(tmp_path / "exists", samples, intrinsics, progress=False)


def test_bag_topics_config():
    topics = BagTopics.from_dict({"rgb": "/cam/rgb", "pose": "/odom"})
    assert topics.by_part()["rgb"] == "/cam/rgb" and topics.depth == "/camera/depth/image_raw"
    with pytest.raises(ConfigError, match="rgb"):
        BagTopics(rgb="camera/rgb")
    with pytest.raises(ConfigError, match="own topic"):
        BagTopics(depth="/camera/color/image_raw")


# --------------------------------------------------------------------------------------------
# Bags written by other tools: latched camera info, Odometry poses, missing parts, other types
# --------------------------------------------------------------------------------------------
def _write_foreign_bag(path, frames, storage=StoragePlugin.MCAP):
    """A bag as a robot driver would record it: camera info once, Odometry poses, a String
    topic we do not convert; frame 1 lacks its depth image."""
    store = panoptic_typestore()
    types = store.types
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conn = {
            "info": writer.add_connection("/cam/info", msgs.CAMERA_INFO, typestore=store),
            "rgb": writer.add_connection("/cam/rgb", msgs.IMAGE, typestore=store),
            "depth": writer.add_connection("/cam/depth", msgs.IMAGE, typestore=store),
            "odom": writer.add_connection("/odom", msgs.ODOMETRY, typestore=store),
            "chat": writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store),
        }
        intrinsics = frames[0].intrinsics
        info = msgs.camera_info_msg(intrinsics, frames[0].stamp_ns, "cam")
        writer.write(conn["info"], 1, store.serialize_cdr(info, msgs.CAMERA_INFO))
        for i, frame in enumerate(frames):
            receive = frame.stamp_ns + 7_000_000  # bag time differs from the header stamp
            bgr = msgs.image_msg(frame.rgb[:, :, ::-1], "bgr8", frame.stamp_ns, "cam")
            writer.write(conn["rgb"], receive, store.serialize_cdr(bgr, msgs.IMAGE))
            if i != 1:
                depth = msgs.depth_msg(frame.depth_m, "32FC1", frame.stamp_ns, "cam")
                writer.write(conn["depth"], receive, store.serialize_cdr(depth, msgs.IMAGE))
            pose = msgs.pose_stamped_msg(frame.T_world_cam, frame.stamp_ns, "odom").pose
            odom = types[msgs.ODOMETRY](
                header=msgs.header(frame.stamp_ns, "odom"), child_frame_id="cam",
                pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose,
                                                                   covariance=np.zeros(36)),
                twist=types["geometry_msgs/msg/TwistWithCovariance"](
                    twist=types["geometry_msgs/msg/Twist"](
                        linear=types["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0),
                        angular=types["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0)),
                    covariance=np.zeros(36)))
            writer.write(conn["odom"], receive + 1, store.serialize_cdr(odom, msgs.ODOMETRY))
            chat = types["std_msgs/msg/String"](data=f"hello {i}")
            writer.write(conn["chat"], receive + 2,
                         store.serialize_cdr(chat, "std_msgs/msg/String"))


FOREIGN_TOPICS = BagTopics(rgb="/cam/rgb", depth="/cam/depth", camera_info="/cam/info",
                           pose="/odom")


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_foreign_bag_latched_info_odometry_and_missing_part(tmp_path, storage):
    frames = [s.frame.replace(frame_id="cam") for s in _labelled_samples(3)]
    _write_foreign_bag(tmp_path / "robot", frames, storage)
    bag = read_bag(tmp_path / "robot", FOREIGN_TOPICS)
    read_back = list(bag)
    _assert_frames_equal([DatasetSample(f) for f in (frames[0], frames[2])], read_back)
    (skipped,) = bag.skipped
    assert skipped.name == f"stamp {frames[1].stamp_ns}"
    assert skipped.error.value == ["/cam/depth"] and skipped.error.kind == "incomplete_frame"

    raw = list(iter_raw_messages(tmp_path / "robot"))
    assert len(raw) == 1 + 3 + 2 + 3 + 3
    assert [m.timestamp_ns for m in raw] == sorted(m.timestamp_ns for m in raw)
    chats = [m for m in raw if m.topic == "/chatter"]
    assert chats[0].msgtype == "std_msgs/msg/String" and isinstance(chats[0].rawdata, bytes)
    assert panoptic_typestore().deserialize_cdr(chats[2].rawdata, chats[2].msgtype).data == \
        "hello 2"
    only = list(iter_raw_messages(tmp_path / "robot", topics=["/odom", "/nope"]))
    assert [m.topic for m in only] == ["/odom"] * 3
    assert list(iter_raw_messages(tmp_path / "robot", topics=["/nope"])) == []


def test_non_strict_reading_yields_frames_without_optional_parts(tmp_path):
    samples = _labelled_samples(3)
    partial = [samples[0], DatasetSample(samples[1].frame, None, samples[1].ground_truth),
               samples[2]]
    store = panoptic_typestore()
    with Writer(tmp_path / "b", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        from panoptic_mapper.core.io.bag import _frame_messages

        connections = {}
        for i, sample in enumerate(partial):
            for topic, msgtype, msg in _frame_messages(i, sample, sample.frame.intrinsics,
                                                       BagTopics(), "16UC1", "map"):
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
                writer.write(connections[topic], sample.frame.stamp_ns,
                             store.serialize_cdr(msg, msgtype))
    strict = read_bag(tmp_path / "b")
    assert len(list(strict)) == 2 and strict.skipped[0].error.value == ["/panoptic/segmentation"]
    lenient = read_bag(tmp_path / "b", strict=False)
    read_back = list(lenient)
    assert lenient.skipped == [] and [s.segmentation is None for s in read_back] == [
        False, False, True]  # the incomplete frame is yielded once the stream moved past it
    assert read_back[2].frame.stamp_ns == samples[1].frame.stamp_ns


def test_bag_without_camera_info_needs_intrinsics(tmp_path):
    frames = [s.frame.replace(frame_id="cam") for s in _labelled_samples(2)]
    _write_foreign_bag(tmp_path / "robot", frames)
    no_info = FOREIGN_TOPICS.replace(camera_info="/missing/info")
    with pytest.raises(DataFormatError, match="no camera_info messages") as info:
        read_bag(tmp_path / "robot", no_info)
    assert "/missing/info" in info.value.field
    bag = read_bag(tmp_path / "robot", no_info, intrinsics=frames[0].intrinsics)
    assert len(list(bag)) == 1
    with pytest.raises(DataFormatError, match="pose must be one of"):
        read_bag(tmp_path / "robot", FOREIGN_TOPICS.replace(pose="/chatter"))


def test_undecodable_frame_is_reported(tmp_path):
    (sample,) = _labelled_samples(1)
    bad = sample.frame.intrinsics.scaled(2.0)  # camera info that does not match the images
    store = panoptic_typestore()
    with Writer(tmp_path / "b", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        from panoptic_mapper.core.io.bag import _frame_messages

        for topic, msgtype, msg in _frame_messages(0, sample, sample.frame.intrinsics,
                                                   BagTopics(), "16UC1", "map"):
            if msgtype == msgs.CAMERA_INFO:
                msg = msgs.camera_info_msg(bad, sample.frame.stamp_ns, "camera")
            writer.write(writer.add_connection(topic, msgtype, typestore=store),
                         sample.frame.stamp_ns, store.serialize_cdr(msg, msgtype))
    bag = read_bag(tmp_path / "b")
    assert list(bag) == []
    assert bag.skipped[0].error.kind == "size_mismatch"


# --------------------------------------------------------------------------------------------
# Corrupt and missing bags
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    samples = _labelled_samples(6, CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5))
    for storage in ("mcap", "sqlite3"):
        write_bag(root / storage, samples, samples[0].frame.intrinsics, storage=storage,
                  progress=False)
    return root


def test_truncated_mcap(small_bags, tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "metadata.yaml").write_bytes((small_bags / "mcap" / "metadata.yaml")
                                                   .read_bytes())
    data = (small_bags / "mcap" / "mcap.mcap").read_bytes()
    (tmp_path / "t" / "mcap.mcap").write_bytes(data[:len(data) // 2])
    for path in (tmp_path / "t", tmp_path / "t" / "mcap.mcap"):
        with pytest.raises(DataFormatError, match="cannot open bag") as info:
            read_bag(path)
        assert info.value.field == str(path) and info.value.kind == "bag"
    with pytest.raises(DataFormatError):
        list(iter_raw_messages(tmp_path / "t"))


def test_corrupt_mcap_chunk(small_bags, tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metadata.yaml").write_bytes((small_bags / "mcap" / "metadata.yaml")
                                                   .read_bytes())
    data = bytearray((small_bags / "mcap" / "mcap.mcap").read_bytes())
    data[200:len(data) // 2] = bytes(len(data) // 2 - 200)  # zeros over records, footer intact
    (tmp_path / "c" / "mcap.mcap").write_bytes(bytes(data))
    with pytest.raises(DataFormatError) as info:
        list(read_bag(tmp_path / "c"))
    assert str(tmp_path / "c") in info.value.field


def test_garbage_sqlite3_and_missing_metadata(small_bags, tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "metadata.yaml").write_bytes((small_bags / "sqlite3" / "metadata.yaml")
                                                   .read_bytes())
    (tmp_path / "g" / "sqlite3.db3").write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(DataFormatError, match="not a database"):
        bag_info(tmp_path / "g")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "mcap.mcap").write_bytes((small_bags / "mcap" / "mcap.mcap").read_bytes())
    with pytest.raises(DataFormatError, match="without metadata.yaml") as info:
        read_bag(tmp_path / "m")
    assert info.value.field.endswith("metadata.yaml") and "mcap.mcap" in info.value.reason
    assert len(list(read_bag(tmp_path / "m" / "mcap.mcap"))) == 6  # the storage file itself
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9}")
    with pytest.raises(DataFormatError, match="metadata key is missing"):
        bag_info(tmp_path / "y")
    with pytest.raises(DataFormatError, match="not found"):
        bag_info(tmp_path / "nothing")


def test_required_topic_missing(small_bags):
    with pytest.raises(DataFormatError, match="no rgb messages") as info:
        read_bag(small_bags / "mcap", BagTopics(rgb="/other/rgb"))
    assert "/other/rgb" in info.value.field and "/camera/pose" in info.value.reason


def test_rosbags_messages_match_the_msg_files():
    store = panoptic_typestore()
    fields = list(store.types["panoptic_mapper/msg/Segment"].__dataclass_fields__)
    assert fields[:6] == ["id", "label", "label_id", "is_thing", "score", "phrase"]
    assert "panoptic_mapper/msg/PanopticMesh" in store.types
    frame = RgbdFrame(0, np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2)), np.eye(4),
                      CameraIntrinsics(2, 2, 1.0, 1.0, 0.5, 0.5))
    raw = store.serialize_cdr(msgs.image_msg(frame.rgb, "rgb8", 5, "c"), msgs.IMAGE)
    back = store.deserialize_cdr(raw, msgs.IMAGE)
    assert (back.height, back.width, back.step, back.encoding) == (2, 2, 6, "rgb8")


def test_msg_files_lookup(tmp_path, monkeypatch):
    assert (msg_types.find_msg_dir() / "PanopticSegmentation.msg").is_file()
    monkeypatch.setattr(msg_types, "msg_dirs", lambda: [tmp_path])
    with pytest.raises(DataFormatError, match="PANOPTIC_MAPPER_MSG_DIR"):
        msg_types.find_msg_dir()
    monkeypatch.undo()
    monkeypatch.setenv("PANOPTIC_MAPPER_MSG_DIR", str(tmp_path))
    assert msg_types.msg_dirs()[0] == tmp_path
