import numpy as np
import pytest

from panoptic_mapper.core.errors import DataFormatError, InvalidInputError
from panoptic_mapper.core.labels import LabelRegistry


def test_default_registry_has_things_and_stuff(label_registry):
    assert len(label_registry.thing_ids) >= 10
    assert {"wall", "floor", "ceiling"} <= {label_registry.by_id(i).name
                                          for i in label_registry.stuff_ids}
    assert label_registry.find_phrase("Couch").name == "sofa"
    assert label_registry.find_phrase("office chair.").name == "chair"
    assert label_registry.find_phrase("spaceship") is None


def test_resolve_checks_consistency(label_registry):
    chair = label_registry.by_name("chair")
    assert label_registry.resolve(label="chair", label_id=chair.id) == chair
    with pytest.raises(InvalidInputError, match="disagree"):
        label_registry.resolve(label="chair", label_id=label_registry.by_name("wall").id)
    with pytest.raises(InvalidInputError) as info:
        label_registry.resolve(label="spaceship")
    assert info.value.kind == "unknown_label"


def test_tables(label_registry):
    colors = label_registry.color_table()
    assert colors.shape == (label_registry.max_id + 1, 3) and colors.dtype == np.uint8
    assert tuple(colors[label_registry.by_name("wall").id]) == label_registry.by_name("wall").color
    things = label_registry.is_thing_table()
    assert things[label_registry.by_name("chair").id] and not things[0]


def test_yaml_round_trip(tmp_path, label_registry):
    path = tmp_path / "labels.yaml"
    label_registry.to_yaml(path)
    again = LabelRegistry.from_yaml(path)
    assert [(lab.id, lab.name, lab.phrases) for lab in again] == \
        [(lab.id, lab.name, lab.phrases) for lab in label_registry]


@pytest.mark.parametrize("text, match", [
    ("labels: []", "no labels"),
    ("labels:\n  - {id: 0, name: a, is_thing: true}", "0 is void"),
    ("labels:\n  - {id: 1, name: a, is_thing: yes_please}", "true or false"),
    ("labels:\n  - {id: 1, name: a, is_thing: true}\n  - {id: 1, name: b, is_thing: true}",
     "duplicate label id"),
    ("labels:\n  - {id: 1, name: a, is_thing: true, phrases: [x]}\n"
     "  - {id: 2, name: b, is_thing: true, phrases: [x]}", "already maps"),
    ("labels:\n  - {id: 1, name: a, is_thing: true, color: [1, 2]}", "r, g, b"),
    ("nonsense: 1", "'labels' list"),
])
def test_invalid_files_are_rejected_clearly(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises((DataFormatError, InvalidInputError), match=match):
        LabelRegistry.from_yaml(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        LabelRegistry.from_yaml(tmp_path / "nope.yaml")
