"""Which files are inputs and what their outputs are called: one rule for the CLI, the batch engine and the app.

Why a module of its own: the batch engine plans output names against a remote folder listing and the CLI against
the disk, and both must pick the same names and skip the same files; a front end that imports another front
end for a naming rule ties them in a circle.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath

#: still images read by :func:`ensemble_color.io.load_image`
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: Containers read as video (cv2 / FFmpeg); anything else goes through the image path.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
#: Image formats that may hold an animation (checked per file: a still GIF stays an image).
ANIMATION_SUFFIXES = (".gif", ".png", ".apng", ".webp")
OUTPUT_TAGS = ("_colorized", "_routing")


def expand_inputs(items: Iterable[str], recursive: bool) -> tuple[list[Path], list[str]]:
    """Files from files/folders/globs (sorted, de-duplicated) and errors for arguments matching nothing."""
    files: list[Path] = []
    errors: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in (path.rglob("*") if recursive else path.iterdir())
                           if p.is_file() and (is_input_image(p) or is_input_sequence(p)))
            files.extend(found)
        elif path.exists():
            files.append(path)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                errors.append(f"{item}: pattern matches no file")
            files.extend(matches)
        else:
            errors.append(f"{item}: no such file or folder")
    seen: set[Path] = set()
    unique = [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]
    return unique, errors


def is_input_image(path: PurePath) -> bool:
    """Whether a file found in a folder is an input: an image, not hidden, not one of our outputs.
    A pure name test, so ``batch`` applies the same rule to remote (pyarrow filesystem) listings."""
    return (path.suffix.lower() in IMAGE_SUFFIXES and not path.stem.endswith(OUTPUT_TAGS)
            and not path.name.startswith("."))


def is_input_sequence(path: PurePath) -> bool:
    """Whether a file found in a folder is a video or a (possibly animated) GIF/PNG/WebP, by the naming rules
    of :func:`is_input_image`; GIFs used to be skipped without a word."""
    return (path.suffix.lower() in (*VIDEO_SUFFIXES, *ANIMATION_SUFFIXES) and not path.stem.endswith(OUTPUT_TAGS)
            and not path.name.startswith("."))


def output_path(src: Path, out_dir: Path | None, tag: str, fmt: str | None, overwrite: bool,
                protected: set[Path]) -> Path:
    """``{stem}{tag}.{ext}``; never an input file, and never an existing file unless ``overwrite``."""
    folder = out_dir or src.parent
    return folder / output_name(src, tag, fmt, lambda name: (folder / name).resolve() in protected
                                or ((folder / name).exists() and not overwrite))


def output_name(src: PurePath, tag: str, fmt: str | None, taken: Callable[[str], bool]) -> str:
    """``{stem}{tag}.{ext}``, else ``{stem}{tag}_1.{ext}``, ``_2``… until ``taken`` says no: the naming rule
    alone, so ``batch`` can plan names against a folder listing (local or remote) instead of the disk."""
    ext = f".{fmt}" if fmt else (src.suffix.lower() if src.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp",
                                                                               ".tif", ".tiff") else ".png")
    name, n = f"{src.stem}{tag}{ext}", 1
    while taken(name):
        name, n = f"{src.stem}{tag}_{n}{ext}", n + 1
    return name
