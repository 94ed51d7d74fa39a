"""Image captions for text-to-image GANs (StackGAN): generated from attributes, or read from the user's data.

    m = measure(x)                                      # x: one prepared image [C, H, W] in [-1, 1]
    t = attribute_thresholds(train_m, train_y, num_classes=10, channels=1)   # [K, 2] class medians
    attribute_captions(m[None], [3], class_names, 1, t) # ["a thick upright three"]
    read_captions_csv(Path("raw/captions.csv"), ["cat/001.png", "dog/002.png"])  # one caption per name

``prepare.captions.source: attributes`` describes each labelled image by its class and two
measured attributes, each word chosen by comparing the image with its class's median on
the training split (so the two words of an attribute split every class about in half, and
validation captions use the training thresholds):

    channels  attribute 0 (mass)                      attribute 1
    1         ink: mean of (x + 1) / 2, thin | thick  slant: image-moment shear, upright | slanted
    3         mean luminance, dark | bright           texture: mean |luminance gradient|, smooth | textured

Captions stay strings here: the text encoder that featurize trains builds its own vocabulary.
Only numpy: prepare never imports torch.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gan.errors import DataError

# (low word, high word) of each attribute per channel count; later code (benchmarks, tests)
# checks that a caption's attribute word moves the generated image's measured attribute.
ATTRIBUTE_WORDS: dict[int, tuple[tuple[str, str], tuple[str, str]]] = {
    1: (("thin", "thick"), ("upright", "slanted")),
    3: (("dark", "bright"), ("smooth", "textured")),
}
ATTRIBUTE_NAMES: dict[int, tuple[str, str]] = {1: ("mass", "slant"), 3: ("mass", "texture")}
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CSV_COLUMNS = ("file", "caption")
# ITU-R BT.601 luma, as PIL's convert("L")
LUMA = np.array([0.299, 0.587, 0.114])


def has_captions(manifest: dict) -> bool:
    """Whether prepared data (its manifest) holds a caption per image."""
    return (manifest.get("captions") or {}).get("source", "none") != "none"


def measure(x: np.ndarray) -> tuple[float, float]:
    """``(mass, slant)`` of a grayscale image, ``(mass, texture)`` of an RGB one; ``x``: [C, H, W] in [-1, 1].

    Grayscale: strokes are bright (the prepared digits hold ink near +1 on a -1 background),
    so the ink weight of a pixel is ``(x + 1) / 2``. Slant is the shear of that ink
    distribution, ``-mu11 / mu02`` with x to the right and y down (the negation makes a
    stroke whose top leans right, like ``/``, positive; it is ``mu11 / mu02`` with y up).

        >>> measure(np.full((1, 8, 8), -1.0))
        (0.0, 0.0)
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] not in ATTRIBUTE_WORDS:
        raise ValueError(
            f"measure: expected one image [C, H, W] with C 1 or 3, got shape {x.shape}"
        )
    if x.shape[0] == 1:
        ink = (x[0] + 1.0) / 2.0  # [H, W]
        return float(ink.mean()), _slant(ink)
    lum = np.tensordot(LUMA, (x + 1.0) / 2.0, axes=1)  # [H, W] in [0, 1]
    texture = (np.abs(np.diff(lum, axis=0)).mean() + np.abs(np.diff(lum, axis=1)).mean()) / 2.0
    return float(lum.mean()), float(texture)


def _slant(ink: np.ndarray) -> float:
    """Image-moment shear of ``ink`` [H, W] (weights >= 0); 0 when there is no vertical extent to shear."""
    total = ink.sum()
    if total <= 0:
        return 0.0
    rows, cols = np.indices(ink.shape, dtype=np.float64)
    dy = rows - (ink * rows).sum() / total
    dx = cols - (ink * cols).sum() / total
    mu02 = (ink * dy * dy).sum() / total
    mu11 = (ink * dx * dy).sum() / total
    return float(-mu11 / mu02) if mu02 > 1e-12 else 0.0


def attribute_thresholds(
    measures: np.ndarray, labels: np.ndarray, num_classes: int, channels: int
) -> np.ndarray:
    """``[K, 2]`` per-class medians of mass and of |attribute 1| (call it on the training split only).

    A class without images (the anomalies of the detect layout have none in train/) gets the
    median over all images, so its captions still split at a sensible point.

        >>> attribute_thresholds(np.array([[0.1, 0.5], [0.3, -1.5]]), np.array([0, 0]), 1, 1).tolist()
        [[0.2, 1.0]]
    """
    if channels not in ATTRIBUTE_WORDS:
        raise ValueError(f"attribute_thresholds: channels must be 1 or 3, not {channels}")
    m = np.array(measures, dtype=np.float64).reshape(-1, 2)
    m[:, 1] = np.abs(m[:, 1])  # a slant to the left is as slanted as one to the right
    labels = np.asarray(labels).reshape(-1)
    if len(m) == 0:
        raise ValueError("attribute_thresholds: no measures given; the training split is empty")
    overall = np.median(m, axis=0)
    out = np.empty((num_classes, 2))
    for k in range(num_classes):
        rows = m[labels == k]
        out[k] = np.median(rows, axis=0) if len(rows) else overall
    return out


def class_word(name: str) -> str:
    """The words a class name becomes in a caption: digits spelled out, other names lowercased, punctuation to spaces.

    >>> class_word("7"), class_word("Golden_Retriever")
    ('seven', 'golden retriever')
    """
    if len(name) == 1 and name.isdigit() and name.isascii():
        return DIGIT_WORDS[int(name)]
    return " ".join(re.sub(r"[\W_]+", " ", name.lower()).split())


def attribute_captions(measures: np.ndarray, labels: np.ndarray, class_names: Sequence[str], channels: int,
                       thresholds: np.ndarray) -> list[str]:  # fmt: skip
    """One caption ``"a {w1} {w2} {class}"`` per image, each word set by its class's threshold.

    >>> attribute_captions(np.array([[0.4, -0.6]]), np.array([1]), ["0", "1"], 1, np.array([[0.2, 0.1], [0.3, 0.5]]))
    ['a thick slanted one']
    """
    (low0, high0), (low1, high1) = ATTRIBUTE_WORDS[channels]
    m = np.asarray(measures, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(labels).reshape(-1)
    t = np.asarray(thresholds, dtype=np.float64)[labels]  # [N, 2]
    # a name of punctuation only ("???") still needs a word
    words = [class_word(str(n)) or f"class {i}" for i, n in enumerate(class_names)]
    w0 = np.where(m[:, 0] > t[:, 0], high0, low0)
    w1 = np.where(np.abs(m[:, 1]) > t[:, 1], high1, low1)
    return [f"a {a} {b} {words[int(y)]}" for a, b, y in zip(w0, w1, labels, strict=True)]


def normalise(caption: str) -> str:
    """Whitespace runs (newlines of a multi-line CSV cell too) become one space; ends are stripped."""
    return " ".join(caption.split())


def _usable(caption: str) -> bool:
    return any(ch.isalnum() for ch in caption)


def check_captions(captions: Sequence[str] | np.ndarray, where: str) -> list[str]:
    """The captions, whitespace-normalised; a DataError naming ``where[i]`` for one with no letter or digit.

    >>> check_captions(np.array(["a  cat ", "a dog"]), "data.npz: captions")
    ['a cat', 'a dog']
    """
    if isinstance(captions, np.ndarray):
        if captions.dtype.kind == "S":  # bytes: numpy.savez of encoded strings
            try:
                captions = np.char.decode(captions, "utf-8")
            except UnicodeDecodeError:
                raise DataError(
                    f"{where} holds bytes that are not UTF-8; save the captions as a str array (np.array(captions, dtype=str))."
                ) from None
        if captions.dtype.kind != "U":
            raise DataError(
                f"{where} has dtype {captions.dtype}; save the captions as a str array (np.array(captions, dtype=str))."
            )
    out = [normalise(str(c)) for c in captions]
    for i, c in enumerate(out):
        if not _usable(c):
            what = "is empty" if not c else f"is {c!r}, with no letter or digit"
            raise DataError(f"{where}[{i}] {what}; give every image a caption that describes it.")
    return out


def read_captions_csv(path: Path, names: list[str]) -> list[str]:
    """The caption of each of ``names`` (image files relative to the image folder, ``cat/001.png``), in order.

    ``path`` is a UTF-8 CSV with a header holding ``file`` and ``caption`` (other columns are
    ignored). A row's ``file`` is the image's path relative to the folder, or its bare file
    name when no other image has that name. Rows are numbered as a spreadsheet shows them
    (the header is row 1). A file listed twice with the same caption is fine.

        read_captions_csv(Path("data/raw/captions.csv"), ["cat/001.png", "dog/002.png"])
    """
    rows = _csv_rows(path)
    index = {n: n for n in names}
    by_base: dict[str, list[str]] = {}
    for n in names:
        by_base.setdefault(n.rsplit("/", 1)[-1], []).append(n)
    found: dict[str, tuple[str, int]] = {}
    for row, file, caption in rows:
        key = file.replace("\\", "/").removeprefix("./")
        name = index.get(key)
        if name is None and "/" not in key and len(by_base.get(key, [])) == 1:
            name = by_base[key][0]
        if name is None:
            if "/" not in key and len(by_base.get(key, [])) > 1:
                some = ", ".join(by_base[key][:2]) + (", ..." if len(by_base[key]) > 2 else "")
                raise DataError(
                    f"{path} row {row} names {file!r}, which matches {len(by_base[key])} images ({some}); write its path relative to the image folder."
                )
            raise DataError(
                f"{path} row {row} names {file!r}, which is not a file of the image folder; write the path relative to the folder (e.g. {names[0]}) or remove the row."
            )
        caption = normalise(caption)
        if not _usable(caption):
            what = "is empty" if not caption else f"is {caption!r}, with no letter or digit"
            raise DataError(
                f"{path} row {row}: the caption of {name} {what}; write a caption that describes the image."
            )
        if name in found and found[name][0] != caption:
            raise DataError(
                f"{path} rows {found[name][1]} and {row} give {name} different captions; keep one of them."
            )
        found.setdefault(name, (caption, row))
    missing = [n for n in names if n not in found]
    if missing:
        more = (
            f" (and {len(missing) - 1} more file{'s' if len(missing) > 2 else ''})"
            if len(missing) > 1
            else ""
        )
        raise DataError(
            f"{path} has no caption for {missing[0]}{more}; add a row for every file of the image folder, or move files that are not images out of it."
        )
    return [found[n][0] for n in names]


def _csv_rows(path: Path) -> list[tuple[int, str, str]]:
    """``(row, file, caption)`` of every data row of ``path``; rows without any value are skipped."""
    if not path.is_file():
        raise DataError(
            f"{path} does not exist; write a captions file (columns file,caption) there or set prepare.captions.path."
        )
    rows: list[tuple[int, str, str]] = []
    try:
        # utf-8-sig: spreadsheets put a byte-order mark before the header
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            absent = [c for c in CSV_COLUMNS if c not in header]
            if absent:
                found = ", ".join(h for h in header if h) or "nothing"
                raise DataError(
                    f"{path} has no '{absent[0]}' column in its header (found: {found}); its first line must be file,caption."
                )
            reader.fieldnames = header
            for record in reader:
                file, caption = (record.get(c) or "" for c in CSV_COLUMNS)
                if not any((v or "").strip() for k, v in record.items() if k is not None):
                    continue  # a blank line
                # reader.line_num: the file line the row ended on; = the row number unless a cell spans lines
                rows.append((reader.line_num, file.strip(), caption))
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8 CSV.") from None
    except (OSError, csv.Error) as err:
        raise DataError(
            f"{path} cannot be read as CSV ({type(err).__name__}: {str(err)[:120]}); save it as UTF-8 CSV with columns file,caption."
        ) from None
    return rows
