"""Labelled query phrases for the free-text query engine: a calibration set and a held-out set.

Each entry maps a phrase to the set of default-registry labels it names; an empty set marks a
negative (an object the registry does not have, so a map built with it can never hold one). The
calibration set fits :class:`panoptic_mapper.core.query.calibration.MatchCalibration`
(``query_calibration.py``); the held-out set is only used by ``query_benchmark.py``. The two share
no phrase except the registry's own phrases (which the calibration needs, so that "table" does not
also name the desk).

Owns: the phrase lists. Does not own: scenes, scoring.
"""
from __future__ import annotations

CALIBRATION_POSITIVES: dict[str, set[str]] = {
    "coffee cup": {"mug"}, "cup of tea": {"mug"}, "teacup": {"mug"},
    "something to drink from": {"mug"}, "tea mug": {"mug"}, "beer stein": {"mug"},
    "something to sit on": {"chair", "sofa"}, "seat": {"chair", "sofa"},
    "seating": {"chair", "sofa"}, "loveseat": {"sofa"}, "sectional sofa": {"sofa"},
    "recliner": {"chair", "sofa"},
    "kitchen table": {"table"}, "side table": {"table"}, "work desk": {"desk"},
    "office desk": {"desk"}, "computer desk": {"desk"}, "writing table": {"desk", "table"},
    "television": {"monitor"}, "tv screen": {"monitor"}, "computer monitor": {"monitor"},
    "flat screen": {"monitor"}, "lcd display": {"monitor"},
    "bookcase": {"shelf"}, "shelves": {"shelf"}, "rack": {"shelf"}, "shelving": {"shelf"},
    "wardrobe": {"cabinet"}, "dresser": {"cabinet"}, "chest of drawers": {"cabinet"},
    "kitchen cabinet": {"cabinet"}, "closet": {"cabinet"},
    "trash": {"bin"}, "garbage bin": {"bin"}, "rubbish bin": {"bin"}, "recycling bin": {"bin"},
    "wastebasket": {"bin"}, "garbage can": {"bin"}, "something to throw garbage in": {"bin"},
    "carton": {"box"}, "package": {"box"}, "storage box": {"box"}, "cardboard": {"box"},
    "parcel": {"box"},
    "flower": {"plant"}, "houseplants": {"plant"}, "potted flower": {"plant"}, "ficus": {"plant"},
    "greenery": {"plant"},
    "light": {"lamp"}, "reading lamp": {"lamp"}, "light source": {"lamp"}, "lampshade": {"lamp"},
    "mattress": {"bed"}, "a place to sleep": {"bed"}, "bunk bed": {"bed"},
    "chairs": {"chair"}, "stools": {"chair"}, "armchairs": {"chair"}, "sofas": {"sofa"},
    "tables": {"table"}, "mugs": {"mug"}, "boxes": {"box"}, "lamps": {"lamp"},
    "ground": {"floor"}, "flooring": {"floor"}, "walls": {"wall"}, "glass window": {"window"},
    "entrance": {"door"}, "doors": {"door"}, "roof of the room": {"ceiling"},
}
"""Synonyms, plurals, hyponyms and descriptions -> labels (calibration only)."""

CALIBRATION_NEGATIVES: tuple[str, ...] = (
    "airplane", "giraffe", "car", "bicycle", "elephant", "banana", "laptop", "keyboard", "phone",
    "toilet", "sink", "refrigerator", "oven", "bottle", "book", "clock", "vase", "pillow",
    "person", "dog", "cat", "guitar", "umbrella", "horse", "pizza", "scissors", "backpack",
    "microwave", "skateboard", "toothbrush", "train", "boat", "zebra", "sheep", "cow", "bird",
    "kite", "fork", "knife", "spoon", "sandwich", "broccoli", "carrot", "donut", "cake",
    "remote", "mouse", "curtain", "mirror", "painting", "radiator", "staircase", "fan",
    "teddy bear", "hair drier", "fire hydrant", "stop sign", "traffic light", "tennis racket",
    "cell phone", "hot dog", "motorcycle", "bus", "truck", "wine glass", "bowl", "apple",
    "suitcase", "handbag", "tie", "frisbee", "skis", "snowboard", "baseball bat", "surfboard",
    "bear",
)
"""Objects the default registry lacks (COCO classes and household objects)."""

HELDOUT_SYNONYMS: dict[str, set[str]] = {
    "dining chair": {"chair"}, "kitchen chair": {"chair"}, "easy chair": {"chair"},
    "round table": {"table"}, "coffee tables": {"table"}, "study desk": {"desk"},
    "computer table": {"desk", "table"}, "sleeper sofa": {"sofa"}, "sofa bed": {"sofa", "bed"},
    "filing cabinet": {"cabinet"}, "storage cupboard": {"cabinet"}, "wall shelf": {"shelf"},
    "bookshelves": {"shelf"}, "double bed": {"bed"}, "tv monitor": {"monitor"},
    "computer display": {"monitor"}, "espresso cup": {"mug"}, "coffee mugs": {"mug"},
    "waste bin": {"bin"}, "dustbins": {"bin"}, "moving box": {"box"}, "shipping box": {"box"},
    "indoor plant": {"plant"}, "pot plant": {"plant"}, "table lamp": {"lamp"},
    "standing lamp": {"lamp"},
}
"""Held-out synonyms (not in the registry, not in the calibration set) -> the labels they
name (two where the phrase is honestly both)."""

HELDOUT_NEGATIVES: tuple[str, ...] = (
    "airplane", "giraffe", "piano", "bathtub", "printer", "towel", "ladder", "jacket",
    "basketball", "candle", "toaster", "kettle", "helmet", "shoe", "violin", "tractor",
    "penguin", "lion", "watermelon", "sword",
)
"""Generic negatives for the benchmark; "airplane" and "giraffe" are the brief's examples and
also appear in the calibration set, the rest do not."""
