"""The affect-cell registry: the single source of cell order, names, coordinates and colours.

The default set is nine cells on the Russell circumplex (valence x arousal), with the PAD dominance
axis splitting the two high-arousal cells that carry a valence. Users may register other taxonomies.
"""

from __future__ import annotations

from dataclasses import dataclass

from affectlens.errors import AffectlensError


@dataclass(frozen=True)
class Cell:
    code: str
    name: str
    description: str
    valence: float
    arousal: float
    dominance: float
    colour: str  # hex; the default set uses equal CIELAB lightness so blends stay readable


@dataclass(frozen=True)
class CellSet:
    name: str
    cells: tuple[Cell, ...]

    def __post_init__(self) -> None:
        codes = [c.code for c in self.cells]
        if not codes:
            raise AffectlensError(f"cell set {self.name!r} has no cells")
        if len(set(codes)) != len(codes):
            raise AffectlensError(f"cell set {self.name!r} has duplicate cell codes: {codes}")

    @property
    def codes(self) -> list[str]:
        return [c.code for c in self.cells]

    @property
    def colours(self) -> dict[str, str]:
        return {c.code: c.colour for c in self.cells}

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, code: str) -> Cell:
        for cell in self.cells:
            if cell.code == code:
                return cell
        raise AffectlensError(f"unknown cell {code!r}; the {self.name} cells are {', '.join(self.codes)}")

    def index(self, code: str) -> int:
        return self.codes.index(self[code].code)

    def coordinates(self) -> dict[str, tuple[float, float, float]]:
        return {c.code: (c.valence, c.arousal, c.dominance) for c in self.cells}


# Colours: CIELAB L* = 60 for every cell, hue spread around the circle (checked in tests/test_cells.py).
PAD9 = CellSet(
    "pad9",
    (
        Cell("HP-D", "playful", "playful, mischievous", 1.0, 1.0, 1.0, "#c87f55"),
        Cell("HP-S", "excited", "excited, celebratory", 1.0, 1.0, -1.0, "#ac8c45"),
        Cell("LP", "content", "content, peaceful", 1.0, -1.0, 0.0, "#739c56"),
        Cell("NP", "relieved", "relieved, grateful", 1.0, 0.0, 0.0, "#08a389"),
        Cell("HN-D", "frustrated", "frustrated, contemptuous", -1.0, 1.0, 1.0, "#d67473"),
        Cell("HN-S", "fearful", "fearful, anxious", -1.0, 1.0, -1.0, "#c876ab"),
        Cell("LN", "sad", "sad, weary", -1.0, -1.0, 0.0, "#5194da"),
        Cell("NB", "neutral", "neutral, mundane", 0.0, 0.0, 0.0, "#919191"),
        Cell("HB", "confused", "confused, uncertain", 0.0, 1.0, 0.0, "#9c85cd"),
    ),
)

_REGISTRY: dict[str, CellSet] = {PAD9.name: PAD9}


def register_cell_set(cell_set: CellSet) -> CellSet:
    """Make a user taxonomy available by name (for stimuli files and analyses)."""
    _REGISTRY[cell_set.name] = cell_set
    return cell_set


def get_cell_set(name: str = "pad9") -> CellSet:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise AffectlensError(f"unknown cell set {name!r}; registered: {', '.join(_REGISTRY)}") from None


def default_cells() -> CellSet:
    return PAD9
