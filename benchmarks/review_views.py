"""Does the review overlay tell a right registration from a wrong one? Each view, every real pair.

For each pair (the 20 raw BF/SHG cases: raw H&E as scanned against its SHG, the reference affine,
in colour and again in grey; the 4 H&E-vs-IHC serial sections: the affine fitted to their 80
landmarks) and each view of
``core.review``, the moving channel is resampled onto the fixed grid by the right transform and by
three wrong ones (the right one followed by a shift of 8 px, a shift of 20 px, a 3° rotation about
the fixed image's centre), and the overlay is scored on the moving image's overlap:

* **NCC gap**: the NCC of the two review channels under the right transform minus the highest
  NCC under a wrong one (NCC is already normalised: 1 = identical). How much whiter the right
  overlay is.
* **colour gap**: the fraction of lit pixels that show a single colour (green or magenta) under
  the least-coloured wrong transform minus under the right one. How much more the eye sees
  green beside magenta when it is wrong.

Prints per view the median and the worst pair of both, then the per-pair table of the default
view and of the eosin view (the overlay before the views existed). ``--montages DIR`` writes one
PNG per pair (rows: the views; columns: right, 8 px off, 20 px off, 3° off), ``--guide DIR`` the
user guide's before/after pictures.

Usage: ``python benchmarks/review_views.py [--views structure,eosin,haematoxylin,comir]
[--feature-px 8] [--montages DIR] [--guide DIR]``
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from napari_comir.core.defaults import DEFAULT_REVIEW_FEATURE_PX, DEFAULT_REVIEW_VIEW  # noqa: E402
from napari_comir.core.evaluation import pearson, raw_cases  # noqa: E402
from napari_comir.core.io import read_image  # noqa: E402
from napari_comir.core.registration.landmarks import fit_landmarks  # noqa: E402
from napari_comir.core.resampling import resample
from napari_comir.core.review import (  # noqa: E402
    VIEWS,
    overlay_rgb,
    review_channels,
    single_colour_fraction,
)
from napari_comir.core.transforms import AffineTransform  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: The user guide's pictures: a pancreas core, an eosin-dense TMA core, a dim 1B/2B core.
GUIDE_PAIRS = ("sa_stroma_pancreas_2000_95", "X01Y05", "2B_D2")


def pairs():
    """(name, fixed, moving, right transform moving -> fixed, fixed modality) of every real pair;
    the raw BF/SHG pairs twice, the second time with the H&E in grey."""
    cases = raw_cases(SHARED / "bf_shg_raw")
    for case in cases:
        yield case.name, case.fixed, case.moving, case.truth, "shg"
    for case in cases:
        grey = np.rint(case.moving @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
        yield f"{case.name} (grey)", case.fixed, grey, case.truth, "shg"
    folder = SHARED / "he_ihc"
    with open(folder / "pairs.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            points = [np.loadtxt(folder / row[key], delimiter=",", skiprows=1)[:, 1:]
                      for key in ("fixed_landmarks", "moving_landmarks")]
            yield (row["pair_id"], read_image(folder / row["fixed_image"]),
                   read_image(folder / row["moving_image"]), fit_landmarks(*points, "affine")[0], "bf")


def wrong_transforms(shape_rc) -> dict[str, AffineTransform]:
    """Errors made in the fixed frame, applied after the right transform."""
    centre_xy = ((shape_rc[1] - 1) / 2, (shape_rc[0] - 1) / 2)
    return {"8 px": AffineTransform.rigid(0.0, (8 / np.sqrt(2), 8 / np.sqrt(2))),
            "20 px": AffineTransform.rigid(0.0, (20.0, 0.0)),
            "3°": AffineTransform.about_center(3.0, centre_xy)}


def on_fixed(channel, transform, shape_rc):
    """The moving channel on the fixed grid, and where it covers it."""
    inside = resample(np.ones(channel.shape, np.float32), transform, shape_rc) > 0.999
    return resample(channel, transform, shape_rc), inside


def score(fixed_grey, moving_grey, right, shape_rc) -> dict:
    """NCC and single-colour fraction under the right and each wrong transform."""
    out = {}
    transforms = {"right": right} | {k: error.compose(right)
                                     for k, error in wrong_transforms(shape_rc).items()}
    for label, transform in transforms.items():
        warped, inside = on_fixed(moving_grey, transform, shape_rc)
        out[label] = (pearson(fixed_grey, warped, inside),
                      single_colour_fraction(fixed_grey, warped, inside))
    wrong = [v for k, v in out.items() if k != "right"]
    return {"ncc_right": out["right"][0], "ncc_gap": out["right"][0] - max(v[0] for v in wrong),
            "colour_right": out["right"][1],
            "colour_gap": min(v[1] for v in wrong) - out["right"][1], "by_wrong": out}


def comir_pair(model, fixed, moving, fixed_modality):
    from napari_comir.core.inference import compute_comir

    return compute_comir(model, fixed, fixed_modality), compute_comir(model, moving, "bf")


def tile(fixed_grey, moving_grey, transform, shape_rc):
    return overlay_rgb(fixed_grey, on_fixed(moving_grey, transform, shape_rc)[0])


def labelled(image: np.ndarray, text: str):
    from PIL import Image, ImageDraw

    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    draw.rectangle((0, 0, 8 + 7 * len(text), 16), fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255))
    return np.asarray(picture)


def grid(rows, gap=6) -> np.ndarray:
    """Tiles (equal shapes) in rows and columns with white gaps."""
    def join(parts, axis):
        spacer_shape = list(parts[0].shape)
        spacer_shape[axis] = gap
        spacer = np.full(spacer_shape, 255, np.uint8)
        out = [parts[0]]
        for part in parts[1:]:
            out += [spacer, part]
        return np.concatenate(out, axis=axis)
    return join([join(row, 1) for row in rows], 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--views", default=",".join(VIEWS))
    parser.add_argument("--model", default="bf-shg", help="model of the comir view")
    parser.add_argument("--feature-px", type=float, default=DEFAULT_REVIEW_FEATURE_PX,
                        help="feature size of the structure and comir views")
    parser.add_argument("--montages", type=Path, help="folder for one montage per pair")
    parser.add_argument("--guide", type=Path, help="folder for the user guide's pictures")
    args = parser.parse_args()
    views = args.views.split(",")
    model = None
    if "comir" in views:
        from napari_comir import api

        model = api.load_model(args.model, "cpu")
    results, seconds = {}, {view: [] for view in views}
    for name, fixed, moving, right, fixed_modality in pairs():
        shape_rc = fixed.shape[:2]
        comirs = comir_pair(model, fixed, moving, fixed_modality) if model is not None else None
        rows = []
        for view in views:
            start = time.perf_counter()
            fixed_grey, moving_grey = review_channels(*(comirs if view == "comir" else (fixed, moving)),
                                                      view, feature_px=args.feature_px)
            seconds[view].append(time.perf_counter() - start)
            results[name, view] = score(fixed_grey, moving_grey, right, shape_rc)
            r = results[name, view]
            print(f"{name:28s} {view:13s} NCC right {r['ncc_right']:+.3f} gap {r['ncc_gap']:+.3f}"
                  f"  one colour right {r['colour_right']:.2f} gap {r['colour_gap']:+.2f}", flush=True)
            if args.montages or (args.guide and name in GUIDE_PAIRS and view == DEFAULT_REVIEW_VIEW):
                transforms = {"right": right} | {f"{k} off": e.compose(right)
                                                 for k, e in wrong_transforms(shape_rc).items()}
                rows.append([labelled(tile(fixed_grey, moving_grey, t, shape_rc), f"{view}: {k}")
                             for k, t in transforms.items()])
            if args.guide and name in GUIDE_PAIRS and view == DEFAULT_REVIEW_VIEW:
                write_guide_picture(args.guide, name, fixed_grey, moving_grey, right, shape_rc)
        if args.montages and rows:
            from PIL import Image

            args.montages.mkdir(parents=True, exist_ok=True)
            Image.fromarray(grid(rows)).save(args.montages / f"{name}.png")
    report(results, views, seconds)


def write_guide_picture(folder: Path, name, fixed_grey, moving_grey, right, shape_rc) -> None:
    """Before registration, 8 px off, right: the default view, each 320 px wide."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    wrong = wrong_transforms(shape_rc)["8 px"].compose(right)
    size = (320, round(320 * shape_rc[0] / shape_rc[1]))
    tiles = [labelled(np.asarray(Image.fromarray(tile(fixed_grey, moving_grey, t, shape_rc))
                                 .resize(size, Image.Resampling.LANCZOS)), text)
             for t, text in ((AffineTransform.rigid(), "before"), (wrong, "8 px off"),
                             (right, "right"))]
    # 48 colours: green, magenta and their mixes only; keeps each picture under ~150 KB.
    Image.fromarray(grid([tiles])).quantize(48).save(folder / f"review_right_wrong_{name}.png",
                                                       optimize=True)


def report(results, views, seconds) -> None:
    groups = {"BF/SHG raw (20)": lambda n: not n.startswith("lung") and not n.endswith("(grey)"),
              "grey BF/SHG raw (20)": lambda n: n.endswith("(grey)"),
              "H&E/IHC (4)": lambda n: n.startswith("lung")}
    print("\n| pairs | view | NCC gap median | NCC gap worst (pair) | colour gap median "
          "| colour gap worst (pair) | NCC right median | s / pair |")
    print("|---|---|---|---|---|---|---|---|")
    for group, member in groups.items():
        for view in views:
            rows = {n: r for (n, v), r in results.items() if v == view and member(n)}
            if not rows:
                continue
            ncc = {n: r["ncc_gap"] for n, r in rows.items()}
            colour = {n: r["colour_gap"] for n, r in rows.items()}
            worst_ncc, worst_colour = min(ncc, key=ncc.get), min(colour, key=colour.get)
            print(f"| {group} | {view} | {np.median(list(ncc.values())):+.3f} | "
                  f"{ncc[worst_ncc]:+.3f} ({worst_ncc}) | {np.median(list(colour.values())):+.2f} | "
                  f"{colour[worst_colour]:+.2f} ({worst_colour}) | "
                  f"{np.median([r['ncc_right'] for r in rows.values()]):.2f} | "
                  f"{np.mean(seconds[view]):.2f} |")
    shown = [v for v in (DEFAULT_REVIEW_VIEW, "eosin") if v in views]
    print("\nper pair: NCC right / NCC gap / colour gap; NCC under each wrong transform")
    print("| pair | " + " | ".join(shown) + " |")
    print("|---|" + "---|" * len(shown))
    for name in dict.fromkeys(n for n, _ in results):
        cells = []
        for view in shown:
            r = results[name, view]
            wrong = ", ".join(f"{k} {v[0]:+.2f}" for k, v in r["by_wrong"].items() if k != "right")
            cells.append(f"{r['ncc_right']:+.2f} / {r['ncc_gap']:+.2f} / {r['colour_gap']:+.2f} "
                         f"({wrong})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
