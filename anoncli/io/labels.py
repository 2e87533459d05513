"""Per-image label tables (CelebA, UTKFace style CSV): identities and attributes by file name."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from .discover import IMAGE_EXTENSIONS

# The 40 attributes of CelebA's list_attr_celeba.txt, in its column order.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)


class LabelsError(ValueError):
    """A label table that cannot be used as asked (unreadable, no image column, unknown column)."""


@dataclass
class LabelTable:
    """Rows by image file name (the last path component); every value a string."""

    columns: tuple[str, ...]
    rows: dict[str, dict[str, str]]
    notes: list[str] = field(default_factory=list)

    def row_for(self, rel: str) -> dict[str, str] | None:
        return self.rows.get(Path(rel).name)

    def require(self, columns, flag: str) -> None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            shown = ", ".join(self.columns[1:16]) + (", ..." if len(self.columns) > 16 else "")
            raise LabelsError(f"{flag}: no column {', '.join(missing)} in the labels (columns: {shown})")


def _looks_like_image_name(text: str) -> bool:
    return text.lower().endswith(IMAGE_EXTENSIONS)


def _header(first: list[str], width: int) -> tuple[list[str], str | None]:
    """Column names, and a note when they had to be inferred.

    A known damage of CelebA exports: the attribute-name line of list_attr_celeba.txt replaced
    by its first data row, so the header reads ``image,identity,000001.jpg,-1,1,...`` (43
    fields) over rows of 42. The columns are then CelebA's own, in their documented order.
    """
    n_attr = len(CELEBA_ATTRIBUTES)
    if (first[:2] == ["image", "identity"] and len(first) == 3 + n_attr and width == 2 + n_attr
            and _looks_like_image_name(first[2])):
        return (["image", "identity", *CELEBA_ATTRIBUTES],
                "the header holds a data row in place of the attribute names; the 40 attribute columns were "
                "named in CelebA's list_attr_celeba.txt order")
    return first, None


def read_labels(path: Path) -> LabelTable:
    """Read a labels CSV whose ``image`` column holds file names; LabelsError if unusable."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LabelsError(f"cannot read labels {path}: {getattr(e, 'strerror', None) or e}") from None
    lines = [row for row in lines if row]
    if not lines:
        raise LabelsError(f"labels {path} is empty")
    width = len(lines[1]) if len(lines) > 1 else len(lines[0])
    columns, note = _header([c.strip() for c in lines[0]], width)
    if "image" not in columns:
        raise LabelsError(f"labels {path} has no `image` column (its header: {', '.join(columns[:8])})")
    if len(set(columns)) != len(columns):
        raise LabelsError(f"labels {path} names a column twice")
    rows: dict[str, dict[str, str]] = {}
    bad = 0
    for row in lines[1:]:
        if len(row) != len(columns):
            bad += 1
            continue
        values = dict(zip(columns, (v.strip() for v in row)))
        rows[Path(values["image"]).name] = values
    notes = [note] if note else []
    if bad:
        notes.append(f"{bad} row(s) with another number of fields than the header were ignored")
    return LabelTable(tuple(columns), rows, notes)
