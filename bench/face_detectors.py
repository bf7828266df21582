"""Would an off-the-shelf face detector find the people the router misses? The 40 historical portraits, two
detectors a user could install from PyPI, each image's detections counted.

    python -m venv /tmp/faces && /tmp/faces/bin/pip install opencv-python-headless==4.10.0.84 \\
        mediapipe==0.10.14 "numpy<2" pillow
    /tmp/faces/bin/python bench/face_detectors.py [--out bench/results/face_detectors]

Its own environment, because neither detector ships with what the product installs: OpenCV 5's wheel (the
product's) has no Haar cascades, and MediaPipe's newer releases no longer bundle the BlazeFace model.
Detectors: OpenCV's Haar cascades (frontal default, frontal alt2, profile and its mirror; on the L scaled to
512 px, blurred by sigma 1 against halftone screens, histogram-equalised; scale 1.1, 4 neighbours, faces >= 40
px) and MediaPipe's BlazeFace (short range and full range, confidence >= 0.3, on the gray photo as RGB).
A portrait counts as found by a detector when it returns at least one face. Nothing here is used by the pipeline:
it measures a lever (a face prior for the router) before building it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CASCADES = {"haar frontal": "haarcascade_frontalface_default.xml",
            "haar frontal alt2": "haarcascade_frontalface_alt2.xml", "haar profile": "haarcascade_profileface.xml"}


def haar_counts(gray: np.ndarray) -> dict[str, int]:
    import cv2  # OpenCV 4 (the docstring's environment): OpenCV 5 has no cascades

    s = 512 / max(gray.shape)
    g = cv2.equalizeHist(cv2.GaussianBlur(cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA),
                                          (0, 0), 1.0))
    out = {}
    for name, file in CASCADES.items():
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + file)
        views = (g, cv2.flip(g, 1)) if "profile" in name else (g,)
        out[name] = sum(len(cascade.detectMultiScale(v, 1.1, 4, minSize=(40, 40))) for v in views)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--historical", type=Path, default=REPO.parent / "shared" / "examples" / "historical")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "face_detectors")
    args = ap.parse_args()
    import mediapipe as mp  # the docstring's environment only

    paths = sorted(args.historical.glob("*.jpg"))
    rows = {p.stem: haar_counts(np.asarray(Image.open(p).convert("L"))) for p in paths}
    for model, name in ((0, "blazeface short range"), (1, "blazeface full range")):
        with mp.solutions.face_detection.FaceDetection(model_selection=model, min_detection_confidence=0.3) as det:
            for p in paths:
                found = det.process(np.asarray(Image.open(p).convert("L").convert("RGB"))).detections
                rows[p.stem][name] = len(found or [])
    names = list(next(iter(rows.values())))
    found = {n: sorted(k for k, v in rows.items() if v[n] > 0) for n in names}
    any_haar = [k for k, v in rows.items() if any(v[n] for n in CASCADES)]
    md = ["# Face detectors on the historical portraits", "", "`/tmp/faces/bin/python bench/face_detectors.py` "
          "(its own environment: the module docstring)", "", "| detector | portraits with a face (of 40) | missed |",
          "|---|---:|---|"]
    md += [f"| {n} | {len(found[n])} | {', '.join(sorted(set(rows) - set(found[n])))} |" for n in names]
    md.append(f"| any Haar cascade | {len(any_haar)} | {', '.join(sorted(set(rows) - set(any_haar)))} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"per_portrait": rows}, indent=1))
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
