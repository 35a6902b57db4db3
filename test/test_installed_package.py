"""`make test` must exercise the installed package (with its generated interfaces)."""
import os
from pathlib import Path

import pytest

import panoptic_mapper

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not os.environ.get("PANOPTIC_MAPPER_EXPECT_INSTALLED"),
                    reason="development run against the source tree")
def test_imports_the_installed_package_not_the_source_tree():
    package_dir = Path(panoptic_mapper.__file__).resolve().parent
    assert package_dir != REPO_ROOT / "panoptic_mapper", f"imported the source tree: {package_dir}"
    assert "site-packages" in package_dir.parts


def test_generated_interfaces_import():
    from panoptic_mapper.msg import MapInstance, PanopticMesh, PanopticSegmentation, Segment
    from panoptic_mapper.srv import ListInstances, LoadMap, QueryObjects, SaveMap

    request = QueryObjects.Request(query="red mug", max_results=3, min_score=0.2)
    assert request.query == "red mug"
    assert [f for f in Segment.get_fields_and_field_types()] == \
        ["id", "label", "label_id", "is_thing", "score", "phrase"]
    assert list(MapInstance.get_fields_and_field_types())[:4] == \
        ["id", "label", "label_id", "is_thing"]
    for cls in (PanopticMesh, PanopticSegmentation, ListInstances, LoadMap, SaveMap):
        assert cls.__name__
