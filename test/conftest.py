"""Shared pytest fixtures and settings.

* DDS traffic stays on this machine, in a ROS domain of its own per test session, so parallel test
  runs (and other developers' nodes) never see each other.
* ``SHARED_DATA`` points at ``../shared/data`` (licensed data read in place, never copied).
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
if "PANOPTIC_MAPPER_TEST_DOMAIN_ID" in os.environ:
    os.environ["ROS_DOMAIN_ID"] = os.environ["PANOPTIC_MAPPER_TEST_DOMAIN_ID"]
else:
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PANOPTIC_MAPPER_SHARED_DATA",
                                  REPO_ROOT.parent / "shared" / "data"))
SEVEN_SCENES = SHARED_DATA / "7scenes_redkitchen_stride4"
REPLICA_FIXTURE = SHARED_DATA / "replica_office0_nvblox_fixture"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~10 s")
    config.addinivalue_line("markers", "ros: needs rclpy and DDS")
    config.addinivalue_line("markers", "gpu: needs CUDA (skipped without it)")


@pytest.fixture(scope="session")
def seven_scenes_dir() -> Path:
    if not SEVEN_SCENES.is_dir():
        pytest.skip(f"7-Scenes data not found at {SEVEN_SCENES}")
    return SEVEN_SCENES


@pytest.fixture(scope="session")
def replica_dir() -> Path:
    if not REPLICA_FIXTURE.is_dir():
        pytest.skip(f"Replica fixture not found at {REPLICA_FIXTURE}")
    return REPLICA_FIXTURE


@pytest.fixture(scope="session")
def label_registry():
    from panoptic_mapper.core.labels import LabelRegistry

    return LabelRegistry.default()
