"""Colour words for queries: a small named-colour model in CIELAB.

Each basic colour term (Berlin & Kay's eleven plus beige) has a few sRGB prototypes (typical,
light and dark shades; mostly values from the public xkcd colour-name survey). The probability of
a name for a colour is proportional to ``exp(-dE^2 / (2 sigma^2))`` for its nearest prototype,
where ``dE`` is the CIE76 distance in L*a*b* (D65), normalised over all names. A query word matches
a colour with score ``p(word) / max_name p(name)``: 1 for the most likely name, lower for names
that are plausible but less so (a purplish red still answers "purple" a little).

Owns: sRGB -> L*a*b* conversion, the colour vocabulary, :class:`ColorNamingModel`.
Does not own: where an instance's colour comes from (the map fuses it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_mapper.core.config import ConfigBase, require
from panoptic_mapper.core.errors import InvalidInputError

COLOR_PROTOTYPES_SRGB: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((229, 0, 0), (132, 0, 0), (192, 57, 43)),
    "orange": ((249, 115, 6), (192, 78, 1), (253, 170, 72)),
    "yellow": ((255, 255, 20), (206, 179, 1), (255, 255, 132)),
    "green": ((21, 176, 26), (6, 71, 12), (150, 249, 123), (110, 117, 14)),
    "blue": ((3, 67, 223), (0, 3, 91), (149, 208, 252), (90, 125, 154)),
    "purple": ((126, 30, 156), (53, 6, 62), (199, 159, 239)),
    "pink": ((255, 129, 192), (255, 2, 141), (255, 209, 223)),
    "brown": ((101, 55, 0), (52, 28, 2), (173, 129, 80)),
    "beige": ((230, 218, 166), (209, 178, 111)),
    "black": ((0, 0, 0), (30, 30, 30)),
    "white": ((255, 255, 255), (255, 255, 228), (242, 242, 242)),
    "gray": ((146, 149, 145), (192, 192, 192), (54, 55, 55)),
}
"""Colour name -> sRGB prototypes (0-255)."""

COLOR_SYNONYMS: dict[str, str] = {"grey": "gray", "violet": "purple", "tan": "beige"}
"""Other spellings and near-synonyms -> the canonical name."""


@dataclass
class ColorConfig(ConfigBase):
    """Colour-word matching (YAML section ``query.colors``)."""

    sigma_delta_e: float = 10.0
    """Width of each name's likelihood around its prototypes, CIE76 Delta-E units. 10 had the
    best F1 of {10, 15, 20} for instance-colour naming on synthetic scenes of seeds 100-105 (the
    query benchmark reports seeds 0-4)."""

    def validate(self) -> None:
        super().validate()
        require(self.sigma_delta_e > 0, "sigma_delta_e", self.sigma_delta_e, "must be > 0")


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """[N, 3] sRGB in 0-255 -> [N, 3] CIE L*a*b* (D65 white), float64."""
    c = np.asarray(rgb, np.float64).reshape(-1, 3) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]),
                     200 * (f[:, 1] - f[:, 2])], axis=1)


class ColorNamingModel:
    """``p(name | colour)`` over the basic colour names, and query-word match scores."""

    def __init__(self, config: ColorConfig | None = None):
        self.config = config or ColorConfig()
        self.names: tuple[str, ...] = tuple(COLOR_PROTOTYPES_SRGB)
        protos = [(k, rgb) for k, name in enumerate(self.names)
                  for rgb in COLOR_PROTOTYPES_SRGB[name]]
        self._proto_name = np.array([k for k, _ in protos])
        self._proto_lab = srgb_to_lab(np.array([rgb for _, rgb in protos]))

    def canonical(self, word: str) -> str | None:
        """The colour name a word stands for (``"grey"`` -> ``"gray"``), or None."""
        word = word.lower().strip()
        word = COLOR_SYNONYMS.get(word, word)
        return word if word in self.names else None

    def probabilities(self, rgb: np.ndarray) -> np.ndarray:
        """[N, K] probability of each of :attr:`names` for [N, 3] sRGB colours (0-255)."""
        lab = srgb_to_lab(rgb)
        d2 = ((lab[:, None, :] - self._proto_lab[None, :, :]) ** 2).sum(-1)  # [N, P]
        nearest = np.full((len(lab), len(self.names)), np.inf)
        np.minimum.at(nearest.T, self._proto_name, d2.T)
        logits = -nearest / (2.0 * self.config.sigma_delta_e ** 2)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def match_scores(self, rgb: np.ndarray, word: str) -> np.ndarray:
        """[N] in [0, 1]: how well ``word`` names each colour (1 = the most likely name).

        Raises:
            InvalidInputError: ``word`` is not a known colour word.
        """
        name = self.canonical(word)
        if name is None:
            raise InvalidInputError("color", word, f"unknown colour word; known: "
                                    f"{sorted(self.names + tuple(COLOR_SYNONYMS))}",
                                    kind="query")
        p = self.probabilities(rgb)
        return p[:, self.names.index(name)] / p.max(axis=1)

    def name_of(self, rgb: np.ndarray) -> list[str]:
        """The most likely name of each of [N, 3] colours."""
        return [self.names[k] for k in self.probabilities(rgb).argmax(axis=1)]
