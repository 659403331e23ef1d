"""Media inputs: (image or audio file, caption) pairs, their loading, and demo data.

The semantic hub paper (Wu et al. 2024, §"Vision / audio") compares an image (LLaVA,
Chameleon) or an audio clip (SALMONN) with its caption: their hidden states meet in the
middle layers, and the media positions decode, through the logit lens, to words of the
caption. This module is the file side of that: it reads the pairs, opens the media and makes
demo data that needs no download. Turning media into model inputs is
:mod:`hubclient.exec.multimodal`'s.

Pairs files
-----------
``.csv`` (header row) or ``.jsonl`` (one JSON object a line) with a media column (``media``,
``path``, ``image`` or ``audio``) and a ``caption`` column. Relative media paths are read
relative to the pairs file's folder. Errors name the file and line (``.csv``: line 1 is the
header, so the first pair is on line 2).

Media files
-----------
Images: anything Pillow opens, converted to RGB. Audio: anything ``soundfile`` (libsndfile)
reads (WAV, FLAC, OGG…), averaged to mono, float32 in ``[-1, 1]``, and resampled to the
model's rate with :func:`scipy.signal.resample_poly` (polyphase FIR filter) unless
``resample=False``, in which case another rate is an error.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubclient.errors import HubError
from hubclient.fs import atomic_write
from hubclient.inputs.prompts import iter_jsonl, take_first

MODALITIES = ("image", "audio")
MEDIA_COLUMNS = ("media", "path", "image", "audio")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


@dataclass(frozen=True)
class MediaPair:
    """One (media file, caption) pair.

    Attributes:
        media: absolute path of the image or audio file.
        caption: its text (e.g. ``"a red circle"``).
        line: line of the pairs file it came from (1-based, for error messages).
        source: the pairs file.
        extra: the row's other non-empty columns (e.g. ``nouns``, ``mask``, ``labels`` of the
            protocol lenses, :mod:`analyses.media_runs`), as text.
    """

    media: Path
    caption: str
    line: int
    source: Path
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def where(self) -> str:
        """``file:line`` of this pair, for messages."""
        return f"{self.source}:{self.line}"


def _need(module: str, what: str) -> Any:
    """Import an optional dependency of the ``media`` extra, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise HubError(f"{what} needs the Python package {module!r}; install the media extra: pip install -e '.[media]'") from exc


def check_modality(modality: str) -> str:
    """Validate ``--modality`` for media inputs.

    Raises:
        HubError: not one of ``image``, ``audio``.
    """
    if modality not in MODALITIES:
        raise HubError(f"--modality {modality!r} is not a media modality; choose image or audio")
    return modality


def read_pairs(path: Path, n: int | None = None) -> list[MediaPair]:
    """Read a pairs file (``.csv`` or ``.jsonl``; see the module docstring).

    Args:
        path: the pairs file.
        n: keep only the first ``n`` pairs.

    Returns:
        the pairs in file order; every media path exists.

    Raises:
        HubError: a missing or empty file, another suffix, a missing column (listing those the
            file has), an empty caption or media cell, a media file that does not exist, a bad
            JSON line, or ``n < 1`` (line numbers in every message).
    """
    path = Path(path)
    if not path.is_file():
        raise HubError(f"pairs file {str(path)!r} does not exist (or is not a file)")
    suffix = path.suffix.lower()
    records: list[tuple[int, dict[str, Any]]] = []
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                columns = list(reader.fieldnames or [])
                for row in reader:
                    records.append((reader.line_num, row))
        elif suffix == ".jsonl":
            columns = []
            for i, row in iter_jsonl(path):
                records.append((i, row))
                columns.extend(k for k in row if k not in columns)
        else:
            raise HubError(f"pairs file {path.name} must be .csv or .jsonl (columns: media, caption)")
    except UnicodeDecodeError as exc:
        raise HubError(f"pairs file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not records:
        raise HubError(f"pairs file {path} has no pairs")
    media_col = next((c for c in MEDIA_COLUMNS if c in columns), None)
    if media_col is None or "caption" not in columns:
        raise HubError(
            f"pairs file {path} needs a media column ({', '.join(MEDIA_COLUMNS)}) and a 'caption' column; "
            f"it has: {', '.join(map(str, columns)) or 'none'}"
        )
    records = take_first(records, n, f"pairs in {path}")
    pairs = []
    for line, row in records:
        media, caption = row.get(media_col), row.get("caption")
        if not isinstance(media, str) or not media.strip():
            raise HubError(f"{path}:{line}: empty {media_col!r}; give the image or audio file")
        if not isinstance(caption, str) or not caption.strip():
            raise HubError(f"{path}:{line}: empty 'caption'; give the text that describes {media}")
        file = Path(media.strip()).expanduser()
        if not file.is_absolute():
            file = path.parent / file
        if not file.is_file():
            raise HubError(f"{path}:{line}: media file {str(file)!r} does not exist (relative paths are read from {path.parent})")
        extra = {}
        for key, value in row.items():
            if key not in (media_col, "caption") and key is not None and value is not None and str(value).strip():
                extra[str(key)] = str(value).strip()
        pairs.append(MediaPair(media=file.resolve(), caption=caption.strip(), line=line, source=path, extra=extra))
    return pairs


def load_image(path: Path, where: str = "") -> Any:
    """Open an image as an RGB ``PIL.Image.Image`` (pixels loaded, file closed).

    Raises:
        HubError: a missing file, or one Pillow cannot read (naming ``where``, e.g. the
            pairs file and line).
    """
    image_mod = _need("PIL.Image", "reading images")
    at = f"{where}: " if where else ""
    path = Path(path)
    if not path.is_file():
        raise HubError(f"{at}image file {str(path)!r} does not exist")
    try:
        with image_mod.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (image_mod.UnidentifiedImageError, OSError, ValueError) as exc:
        raise HubError(f"{at}{path} is not a readable image ({type(exc).__name__}: {exc}); give a PNG, JPEG or other Pillow-readable file") from None


def load_audio(path: Path, sampling_rate: int, resample: bool = True, where: str = "") -> Any:
    """Read an audio file as mono float32 samples at ``sampling_rate`` Hz.

    Multi-channel audio is averaged to mono. A file at another rate is resampled with
    :func:`scipy.signal.resample_poly` (up/down factors reduced by their gcd; the default
    Kaiser-windowed polyphase low-pass filter), unless ``resample`` is off.

    Args:
        path: the audio file (WAV, FLAC, OGG…, anything libsndfile reads).
        sampling_rate: the rate the model's feature extractor expects (Hz), e.g. 16000.
        resample: resample other rates (default) or refuse them.

    Returns:
        ``numpy.ndarray`` ``[samples]`` float32.

    Raises:
        HubError: a missing or unreadable file, an empty one, or (``resample=False``) a file
            whose rate is not ``sampling_rate``.
    """
    import math

    import numpy as np

    sf = _need("soundfile", "reading audio")
    at = f"{where}: " if where else ""
    path = Path(path)
    if not path.is_file():
        raise HubError(f"{at}audio file {str(path)!r} does not exist")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise HubError(f"{at}{path} is not a readable audio file ({exc}); give a WAV, FLAC or OGG file") from None
    if data.shape[0] == 0:
        raise HubError(f"{at}audio file {path} has no samples")
    samples = data.mean(axis=1)
    if rate != sampling_rate:
        if not resample:
            raise HubError(
                f"{at}{path} is sampled at {rate} Hz but the model's feature extractor expects {sampling_rate} Hz; "
                "resample the file, or drop --no-resample so hub resamples it"
            )
        from scipy.signal import resample_poly

        g = math.gcd(int(rate), int(sampling_rate))
        samples = resample_poly(samples, sampling_rate // g, int(rate) // g)
    return np.ascontiguousarray(samples, dtype=np.float32)


# --------------------------------------------------------------------------- demo data

#: Colours and shapes of the demo images (English names, as in the captions).
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 20)}
SHAPES = ("circle", "square", "triangle")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Sentences the audio demo speaks (short, concrete, English).
SPOKEN = (
    "the cat sat on the mat",
    "a red apple is on the table",
    "the dog runs in the park",
    "seven plus two is nine",
    "the sun is hot and bright",
    "my house has a blue door",
)


def demo_images(out: Path, size: int = 224) -> list[tuple[str, str]]:
    """Write the image demo: ten rendered digits and twelve coloured shapes, with captions.

    Digits are drawn black on white with Pillow's bundled font; shapes are filled on white.
    Captions name what is shown in plain English (``"the digit seven"``, ``"a red circle"``).

    Args:
        out: folder to write ``images/*.png`` into (created).
        size: width and height of each image in pixels.

    Returns:
        ``(relative path, caption)`` for each image, in a fixed order.
    """
    image_mod = _need("PIL.Image", "making demo images")
    from PIL import ImageDraw, ImageFont

    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    font = ImageFont.load_default(size=int(size * 0.7))
    for digit, word in enumerate(DIGIT_WORDS):
        img = image_mod.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(img)
        draw.text((size / 2, size / 2), str(digit), fill="black", font=font, anchor="mm")
        name = f"images/digit-{digit}.png"
        img.save(out / name)
        rows.append((name, f"the digit {word}"))
    m = size // 6
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            img = image_mod.new("RGB", (size, size), "white")
            draw = ImageDraw.Draw(img)
            if shape == "circle":
                draw.ellipse((m, m, size - m, size - m), fill=rgb)
            elif shape == "square":
                draw.rectangle((m, m, size - m, size - m), fill=rgb)
            else:
                draw.polygon([(size / 2, m), (size - m, size - m), (m, size - m)], fill=rgb)
            name = f"images/{colour}-{shape}.png"
            img.save(out / name)
            rows.append((name, f"a {colour} {shape}"))
    return rows


def espeak_binary() -> str | None:
    """Path of ``espeak-ng`` (or ``espeak``) on this machine, or ``None``."""
    return shutil.which("espeak-ng") or shutil.which("espeak")


def demo_audio(out: Path, voice: str = "en-us") -> list[tuple[str, str]]:
    """Write the audio demo: :data:`SPOKEN` sentences synthesised by ``espeak-ng`` as WAV.

    Args:
        out: folder to write ``audio/*.wav`` into (created).
        voice: espeak-ng voice.

    Returns:
        ``(relative path, transcript)`` per clip.

    Raises:
        HubError: ``espeak-ng`` is not installed (Debian/Ubuntu: ``apt-get install espeak-ng``),
            or it fails.
    """
    binary = espeak_binary()
    if binary is None:
        raise HubError(
            "the audio demo needs the speech synthesiser espeak-ng, which is not installed here; "
            "install it (Debian/Ubuntu: sudo apt-get install espeak-ng; macOS: brew install espeak-ng) "
            "or make the image demo only (--modality image)"
        )
    folder = out / "audio"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, sentence in enumerate(SPOKEN):
        name = f"audio/sentence-{i}.wav"
        result = subprocess.run([binary, "-v", voice, "-w", str(out / name), sentence], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise HubError(f"espeak-ng failed on {sentence!r}: {result.stderr.strip() or result.returncode}")
        rows.append((name, sentence))
    return rows


def write_pairs(path: Path, rows: list[Any], columns: tuple[str, ...] = ("media", "caption")) -> Path:
    """Write rows (``(media, caption)`` by default; one value per name of ``columns``) as a pairs
    ``.csv`` with ``columns`` as its header, atomically (:func:`hubclient.fs.atomic_write`: a
    failed write leaves no half-written file)."""
    path = Path(path)

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(list(columns))
            writer.writerows(rows)

    atomic_write(path, write)
    return path


def write_demo(out: Path, modalities: tuple[str, ...] = MODALITIES, size: int = 224) -> dict[str, Path]:
    """Write demo pairs that need no download: ``images.csv`` and/or ``audio.csv`` in ``out``.

    Args:
        out: target folder (created; existing demo files are overwritten).
        modalities: which demos to make.
        size: image size in pixels.

    Returns:
        modality -> its pairs file.

    Raises:
        HubError: an unknown modality; audio asked for without ``espeak-ng``.
    """
    out = Path(out)
    for modality in modalities:
        check_modality(modality)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    if "audio" in modalities:
        rows = demo_audio(out)  # fails first, before any image is written, when espeak-ng is absent
        written["audio"] = write_pairs(out / "audio.csv", rows)
    if "image" in modalities:
        written["image"] = write_pairs(out / "images.csv", demo_images(out, size=size))
    return written


# --------------------------------------------------------------------------- protocol inputs (paper-protocols.md A12-A14)

#: The solid colours of the colour lens (A12, ``vision/logit_lens_color.py:33-39``): a
#: ``torch.zeros(3, 256, 256)`` image with channel ``colors.index(c)`` set to 1 (black: none).
SOLID_COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "black": (0, 0, 0)}


def write_solid_colours(out: Path, colours: tuple[str, ...] = tuple(SOLID_COLOURS), size: int = 256) -> Path:
    """Write one solid ``size``×``size`` PNG per colour and a pairs file whose caption is the
    colour's name (A12 of ``paper-protocols.md``).

    Args:
        out: folder (created); gets ``solid-<colour>.png`` and ``colours.csv``.
        colours: names from :data:`SOLID_COLOURS`.
        size: width and height in pixels (the paper: 256).

    Returns:
        the pairs file ``out/colours.csv`` (columns ``media,caption``).

    Raises:
        HubError: an unknown colour name.
    """
    image_mod = _need("PIL.Image", "making the solid-colour images")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for colour in colours:
        if colour not in SOLID_COLOURS:
            raise HubError(f"unknown solid colour {colour!r}; choose from {', '.join(SOLID_COLOURS)}")
        name = f"solid-{colour}.png"
        image_mod.new("RGB", (size, size), SOLID_COLOURS[colour]).save(out / name)
        rows.append((name, colour))
    return write_pairs(out / "colours.csv", rows)


#: The two-colour images of the vision intervention (A19, ``vision/intervention.py``): the top
#: half one colour, the bottom half another, from these four.
TWO_COLOURS = ("red", "green", "blue", "black")


def two_colour_cases() -> list[dict[str, str]]:
    """The 48 cases of A19: 12 ordered pairs ``(top, bottom)`` of distinct colours from
    :data:`TWO_COLOURS` × 2 new colours (neither of the pair) × 2 sides (``top``: the top half's
    colour is replaced, ``old = top``; ``bottom``: ``old = bottom``), in that nesting order.

    Returns:
        dicts with ``top``, ``bottom``, ``side``, ``old``, ``new``.
    """
    cases = []
    for top in TWO_COLOURS:
        for bottom in TWO_COLOURS:
            if top == bottom:
                continue
            for new in TWO_COLOURS:
                if new in (top, bottom):
                    continue
                for side in ("top", "bottom"):
                    cases.append({"top": top, "bottom": bottom, "side": side, "old": top if side == "top" else bottom, "new": new})
    return cases


def write_two_colours(out: Path, size: int = 256) -> Path:
    """Write the 12 two-colour PNGs of A19 (``size``×``size``; rows ``0..size/2-1`` the top
    colour, the rest the bottom colour, RGB as :data:`SOLID_COLOURS`) and a pairs file with one
    row per case of :func:`two_colour_cases` (48 rows; each image appears 4 times).

    Args:
        out: folder (created); gets ``two-<top>-<bottom>.png`` and ``two-colours.csv``.
        size: width and height in pixels (the paper: 256); even.

    Returns:
        the pairs file ``out/two-colours.csv``, columns ``media, caption, top, bottom, side,
        old, new`` (caption ``"<top> and <bottom>"``).

    Raises:
        HubError: an odd or non-positive ``size``.
    """
    if size < 2 or size % 2:
        raise HubError(f"two-colour images need an even size of at least 2 pixels, got {size}")
    image_mod = _need("PIL.Image", "making the two-colour images")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = set()
    columns = ["media", "caption", "top", "bottom", "side", "old", "new"]
    rows = []
    for case in two_colour_cases():
        name = f"two-{case['top']}-{case['bottom']}.png"
        if name not in written:
            image = image_mod.new("RGB", (size, size), SOLID_COLOURS[case["bottom"]])
            image.paste(SOLID_COLOURS[case["top"]], (0, 0, size, size // 2))
            image.save(out / name)
            written.add(name)
        rows.append([name, f"{case['top']} and {case['bottom']}", *(case[c] for c in columns[2:])])
    return write_pairs(out / "two-colours.csv", rows, tuple(columns))


def read_label_mask(path: Path, where: str = "") -> Any:
    """A segmentation mask as pixel ids, ``numpy.int64`` ``[H, W]`` (row ``y``, column ``x``).

    An RGB(A) PNG is read as COCO panoptic ids, ``R + 256·G + 256²·B``
    (``vision/logit_lens_segmentation.py:56``); a one-channel image (mode ``L``, ``I``,
    ``I;16``, ``P``) as its values. Unlike the released code, which fills ``labels[x][y]``
    (a ``(W, H)`` tensor whose flattening is column-major, paper-protocols.md A14 [BUG]), the
    array is ``(H, W)``, so its row-major patches match the image tokens' order.

    Raises:
        HubError: a missing or unreadable file.
    """
    import numpy as np

    image_mod = _need("PIL.Image", "reading segmentation masks")
    at = f"{where}: " if where else ""
    path = Path(path)
    if not path.is_file():
        raise HubError(f"{at}mask file {str(path)!r} does not exist")
    try:
        with image_mod.open(path) as img:
            img.load()
            if img.mode in ("RGB", "RGBA"):
                rgb = np.asarray(img.convert("RGB"), dtype=np.int64)
                return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
            if img.mode == "P":
                return np.asarray(img, dtype=np.int64)
            return np.asarray(img.convert("I") if img.mode not in ("L", "I") else img, dtype=np.int64)
    except (image_mod.UnidentifiedImageError, OSError, ValueError) as exc:
        raise HubError(f"{at}{path} is not a readable mask image ({type(exc).__name__}: {exc})") from None


def parse_segment_labels(text: str, where: str = "") -> dict[int, str]:
    """The ``labels`` cell of a segmentation pairs file: ``"id:name;id:name"`` (pixel id of a
    segment -> its category name), e.g. ``"3226956:person;6979964:dog"``.

    Raises:
        HubError: a part without ``:``, a non-integer id, or an empty name.
    """
    at = f"{where}: " if where else ""
    out: dict[int, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, name = part.partition(":")
        if not sep or not key.strip().lstrip("-").isdigit() or not name.strip():
            raise HubError(f"{at}labels entry {part!r} is not 'pixel_id:category name' (e.g. '3226956:person')")
        out[int(key)] = name.strip()
    return out


def _read_json(path: Path, what: str) -> Any:
    """The JSON document at ``path``.

    Raises:
        HubError: an unreadable or invalid file, naming ``what`` it should be.
    """
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HubError(f"cannot read {what} {path}: {exc}") from None


def coco_caption_pairs(captions_json: Path, images_dir: Path, out_csv: Path, n: int | None = None) -> Path:
    """A pairs file from COCO ``captions_val2017.json``: one (image, caption) pair per caption
    annotation, in file order, the first ``n`` (paper-protocols.md A11/A13,
    ``vision/similarity.py:18-33``; an image can occur in several pairs).

    Image paths are written relative to ``out_csv``'s folder when possible.

    Raises:
        HubError: an unreadable JSON file.
    """
    import os

    data = _read_json(captions_json, "COCO captions")
    files = {image["id"]: image["file_name"] for image in data["images"]}
    rows = []
    for item in data["annotations"]:
        if n is not None and len(rows) >= n:
            break
        media = Path(images_dir) / files[item["image_id"]]
        rows.append((os.path.relpath(media.resolve(), Path(out_csv).resolve().parent), " ".join(item["caption"].split())))
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    return write_pairs(Path(out_csv), rows)


def coco_panoptic_pairs(panoptic_json: Path, images_dir: Path, masks_dir: Path, out_csv: Path, n: int | None = None) -> Path:
    """A segmentation pairs file from COCO ``panoptic_val2017.json``: the first ``n``
    annotations, each with its image, its panoptic PNG (column ``mask``) and ``labels``
    (segment pixel id -> category name), keeping only categories whose name has no ``-``
    (paper-protocols.md A14, ``vision/logit_lens_segmentation.py:29-50``). The caption is the
    image's category names joined by ``", "`` (only for display).

    Raises:
        HubError: an unreadable JSON file.
    """
    import os

    data = _read_json(panoptic_json, "COCO panoptic annotations")
    categories = {c["id"]: c["name"] for c in data["categories"] if "-" not in c["name"]}
    files = {image["id"]: image["file_name"] for image in data["images"]}
    base = Path(out_csv).resolve().parent
    rows = []
    for idx, ann in enumerate(data["annotations"]):
        if n is not None and idx >= n:
            break
        labels = {s["id"]: categories[s["category_id"]] for s in ann["segments_info"] if s["category_id"] in categories}
        names = sorted(set(labels.values()))
        rows.append([
            os.path.relpath((Path(images_dir) / files[ann["image_id"]]).resolve(), base),
            ", ".join(names) or "(none)",
            os.path.relpath((Path(masks_dir) / ann["file_name"]).resolve(), base),
            ";".join(f"{k}:{v}" for k, v in labels.items()),
        ])
    return write_pairs(Path(out_csv), rows, ("media", "caption", "mask", "labels"))


def vggsound_pairs(csv_file: Path, wav_dir: Path, out_csv: Path, n: int | None = None) -> Path:
    """A pairs file of VGGSound clips as the paper's audio scripts read them
    (paper-protocols.md A15, ``audio/similarity.py:19-28``): the ``.wav`` files of ``wav_dir``
    in ``os.listdir`` order (unsorted, as the code), the first ``n``; a clip's label is that of
    its video id, ``file.rsplit(".", 1)[0].rsplit("_", 1)[0]``, in the header-less csv
    ``video_id, start_seconds, label, split``. Also writes ``labels.txt`` beside ``out_csv``:
    every label of the csv, sorted (the code's ``all_labels``; ``--labels`` of
    ``hub analyze media-lens label-words``).

    Raises:
        HubError: an unreadable csv, or a clip whose video id is not in it.
    """
    import os

    id2label: dict[str, str] = {}
    try:
        with Path(csv_file).open(newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                if len(row) >= 3:
                    id2label[row[0]] = row[2]
    except OSError as exc:
        raise HubError(f"cannot read the VGGSound csv {csv_file}: {exc}") from None
    wavs = [f for f in os.listdir(wav_dir) if f.endswith(".wav")]
    if n is not None:
        wavs = wavs[:n]
    rows = []
    for name in wavs:
        video = name.rsplit(".", 1)[0].rsplit("_", 1)[0]
        if video not in id2label:
            raise HubError(f"{name}: video id {video!r} is not in {csv_file}")
        rows.append((os.path.relpath((Path(wav_dir) / name).resolve(), Path(out_csv).resolve().parent), id2label[video]))
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    (out_csv.parent / "labels.txt").write_text("\n".join(sorted(set(id2label.values()))) + "\n", encoding="utf-8")
    return write_pairs(out_csv, rows)
