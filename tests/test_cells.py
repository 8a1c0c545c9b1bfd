"""The affect-cell registry: order, coordinates, colours of equal lightness, and user cell sets."""

from __future__ import annotations

import re

import pytest

from affectlens import cells
from affectlens.cells import PAD9, Cell, CellSet, default_cells, get_cell_set, register_cell_set
from affectlens.errors import AffectlensError

# code: (valence sign, arousal sign, dominance sign)
EXPECTED_SIGNS = {
    "HP-D": (1, 1, 1),
    "HP-S": (1, 1, -1),
    "LP": (1, -1, 0),
    "NP": (1, 0, 0),
    "HN-D": (-1, 1, 1),
    "HN-S": (-1, 1, -1),
    "LN": (-1, -1, 0),
    "NB": (0, 0, 0),
    "HB": (0, 1, 0),
}
EXPECTED_ORDER = ["HP-D", "HP-S", "LP", "NP", "HN-D", "HN-S", "LN", "NB", "HB"]


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def srgb_to_lab(colour: str) -> tuple[float, float, float]:
    """CIELAB (L*, a*, b*) of an sRGB hex colour, via linear RGB and XYZ under D65."""
    rgb = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb)
    x = 0.4124564 * r + 0.3575761 * g + 0.1804375 * b
    y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b
    z = 0.0193339 * r + 0.1191920 * g + 0.9503041 * b
    white = (0.95047, 1.0, 1.08883)
    eps, kappa = 216 / 24389, 24389 / 27

    def f(t: float) -> float:
        return t ** (1 / 3) if t > eps else (kappa * t + 16) / 116

    fx, fy, fz = (f(v / w) for v, w in zip((x, y, z), white, strict=True))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def test_lab_reference_values():
    # Checks of the reference conversion itself: white, black, mid grey and pure sRGB red.
    assert srgb_to_lab("#ffffff") == pytest.approx((100.0, 0.0, 0.0), abs=0.01)
    assert srgb_to_lab("#000000") == pytest.approx((0.0, 0.0, 0.0), abs=0.01)
    assert srgb_to_lab("#777777")[0] == pytest.approx(50.03, abs=0.05)
    assert srgb_to_lab("#ff0000") == pytest.approx((53.24, 80.09, 67.20), abs=0.05)


def test_default_set_is_pad9_with_nine_cells_in_order():
    assert default_cells() is PAD9
    assert get_cell_set() is PAD9
    assert get_cell_set("pad9") is PAD9
    assert len(PAD9) == 9
    assert PAD9.codes == EXPECTED_ORDER
    assert [PAD9.index(code) for code in EXPECTED_ORDER] == list(range(9))


@pytest.mark.parametrize("code", EXPECTED_ORDER)
def test_cell_coordinate_signs(code):
    cell = PAD9[code]
    assert cell.code == code
    assert (_sign(cell.valence), _sign(cell.arousal), _sign(cell.dominance)) == EXPECTED_SIGNS[code]
    assert all(-1.0 <= v <= 1.0 for v in (cell.valence, cell.arousal, cell.dominance))
    assert PAD9.coordinates()[code] == (cell.valence, cell.arousal, cell.dominance)


def test_cells_have_names_and_descriptions():
    names = [cell.name for cell in PAD9.cells]
    assert all(names) and len(set(names)) == len(names)
    assert all(cell.description for cell in PAD9.cells)


def test_colours_are_distinct_valid_hex():
    colours = PAD9.colours
    assert list(colours) == EXPECTED_ORDER
    assert all(re.fullmatch(r"#[0-9a-fA-F]{6}", c) for c in colours.values())
    assert len({c.lower() for c in colours.values()}) == len(colours)


def test_colours_have_equal_lightness():
    lightness = {code: srgb_to_lab(colour)[0] for code, colour in PAD9.colours.items()}
    mean = sum(lightness.values()) / len(lightness)
    assert all(abs(v - mean) <= 2 for v in lightness.values()), lightness
    assert max(lightness.values()) - min(lightness.values()) <= 2, lightness


def test_colours_are_perceptibly_different():
    # Equal lightness leaves only hue and chroma to tell cells apart: every pair must differ by a clear
    # CIELAB distance (delta E 76 > 10).
    labs = {code: srgb_to_lab(colour) for code, colour in PAD9.colours.items()}
    codes = list(labs)
    for i, a in enumerate(codes):
        for b in codes[i + 1 :]:
            dist = sum((p - q) ** 2 for p, q in zip(labs[a], labs[b], strict=True)) ** 0.5
            assert dist > 10, (a, b, dist)


def _custom_set(name: str = "test-binary") -> CellSet:
    return CellSet(
        name,
        (
            Cell("POS", "positive", "any positive feeling", 1.0, 0.0, 0.0, "#c87f55"),
            Cell("NEG", "negative", "any negative feeling", -1.0, 0.0, 0.0, "#5194da"),
        ),
    )


@pytest.fixture
def clean_registry(monkeypatch):
    # Other tests must not see the sets these tests register.
    monkeypatch.setattr(cells, "_REGISTRY", dict(cells._REGISTRY))


def test_register_custom_cell_set(clean_registry):
    custom = _custom_set()
    assert register_cell_set(custom) is custom
    found = get_cell_set("test-binary")
    assert found is custom
    assert found.codes == ["POS", "NEG"]
    assert found["NEG"].valence == -1.0
    assert found.index("NEG") == 1
    assert get_cell_set() is PAD9  # the default is unchanged


def test_unknown_cell_set_raises(clean_registry):
    with pytest.raises(AffectlensError, match="no-such-set") as info:
        get_cell_set("no-such-set")
    assert "\n" not in str(info.value)


def test_unknown_cell_code_raises():
    with pytest.raises(AffectlensError, match="XX") as info:
        PAD9["XX"]
    assert "\n" not in str(info.value)
    with pytest.raises(AffectlensError, match="XX"):
        PAD9.index("XX")


def test_duplicate_codes_raise():
    cell = PAD9["LP"]
    with pytest.raises(AffectlensError, match="duplicate") as info:
        CellSet("dupes", (cell, PAD9["LN"], cell))
    assert "LP" in str(info.value)
    assert "\n" not in str(info.value)


def test_empty_cell_set_raises():
    with pytest.raises(AffectlensError, match="no cells"):
        CellSet("empty", ())
