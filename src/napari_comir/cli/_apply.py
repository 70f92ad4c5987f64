"""``napari-comir apply``: annotations or an image carried with a found transform."""

from __future__ import annotations

import argparse

from ._output import add_compression, run_with_progress_bar

EPILOG = """The transform is the JSON `register --out` writes (or an exported transform: JSON, CSV,
ITK, NGFF, QuPath): it maps MOVING pixels to FIXED pixels. Without --inverse, the input belongs to the
moving image and goes onto the fixed image; with --inverse, it belongs to the fixed image and
goes onto the moving image.
GeoJSON (e.g. QuPath's "Export objects as GeoJSON"): every geometry is transformed, properties,
ids and measurements are kept. QuPath's coordinates are full-resolution pixels with (0, 0) at
the top-left corner of the top-left pixel (--origin corner, the default); --origin centre puts
(0, 0) at its centre. Coordinates in µm: give that image's --moving-pixel-size or
--fixed-pixel-size.
Images: resampled onto the grid of --like (the fixed image; the moving image with --inverse),
bilinear; --labels for a label image or mask (nearest neighbour: values kept, none invented).

examples:
  napari-comir apply --transform result.json --geojson he_annotations.geojson \\
      --out annotations_on_shg.geojson
  napari-comir apply --transform result.json --geojson shg_annotations.geojson --inverse \\
      --out annotations_on_he.geojson
  napari-comir apply --transform result.json --image ch2.tif --like shg.tif --out ch2_on_shg.tif
  napari-comir apply --transform result.json --image nuclei.tif --labels --like shg.tif \\
      --out nuclei_on_shg.tif
"""


def add_parser(sub) -> None:
    """The ``apply`` sub-command's options."""
    apply = sub.add_parser("apply", help="carry annotations (GeoJSON), another channel or a label "
                           "image with a found transform, moving -> fixed or back",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    apply.add_argument("--transform", required=True, metavar="JSON",
                       help="the transform: `register --out` JSON, or an export (napari-comir "
                       "JSON or CSV, ITK .tfm, .ngff.json, .qupath.txt)")
    what = apply.add_mutually_exclusive_group(required=True)
    what.add_argument("--geojson", help="annotations to carry (GeoJSON, e.g. exported from QuPath)")
    what.add_argument("--image", help="image to carry (TIFF, PNG, JPEG): another channel, a mask, "
                      "a label image")
    apply.add_argument("--out", required=True, help="output GeoJSON; for --image a .tif, .ome.tif "
                       "(tiled pyramid) or .ome.zarr, written tile by tile")
    apply.add_argument("--inverse", action="store_true", help="the input belongs to the fixed "
                       "image: carry it onto the moving image (default: moving -> fixed)")
    apply.add_argument("--like", metavar="IMAGE", help="with --image: the image whose grid the "
                       "output takes (the fixed image; the moving image with --inverse)")
    apply.add_argument("--labels", action="store_true", help="with --image: a label image or mask "
                       "(nearest neighbour: every value kept, none invented)")
    add_compression(apply, "--image")
    apply.add_argument("--origin", choices=["corner", "centre"], help="with --geojson: (0, 0) at "
                       "the top-left corner of the top-left pixel (default, as QuPath) or at its "
                       "centre")
    apply.add_argument("--moving-pixel-size", type=float, metavar="UM", help="with --geojson: "
                       "coordinates in the moving image's frame are µm, this many per pixel "
                       "(default: pixels)")
    apply.add_argument("--fixed-pixel-size", type=float, metavar="UM", help="with --geojson: "
                       "coordinates in the fixed image's frame are µm, this many per pixel "
                       "(default: pixels)")
    apply.set_defaults(func=run)


def run(args) -> int:
    """Carry annotations or an image between the moving and the fixed image (no networks)."""
    from ..core.apply import apply_transform_to_geojson, image_file_events
    from ..core.errors import InputError
    from ..core.io.geojson import count_positions

    direction = ("from the fixed onto the moving image" if args.inverse else
                 "from the moving onto the fixed image")
    geojson_only = (("--origin", args.origin), ("--moving-pixel-size", args.moving_pixel_size),
                    ("--fixed-pixel-size", args.fixed_pixel_size))
    image_only = (("--like", args.like), ("--labels", args.labels))
    misplaced = [name for name, value in (image_only if args.geojson else geojson_only)
                 if value not in (None, False)]
    if misplaced:
        this, other = ("--geojson", "--image") if args.geojson else ("--image", "--geojson")
        raise InputError(f"{', '.join(misplaced)}: only with {other}, not with {this}")
    if args.geojson:
        carried = apply_transform_to_geojson(
            args.transform, args.geojson, args.out, inverse=args.inverse,
            origin=args.origin or "corner", moving_pixel_size=args.moving_pixel_size,
            fixed_pixel_size=args.fixed_pixel_size)
        print(f"{count_positions(carried)} positions carried {direction} -> {args.out}")
        return 0
    if not args.like:
        raise InputError("--image needs --like: the image whose grid the output takes (the fixed "
                         "image; the moving image with --inverse)")
    events = image_file_events(args.transform, args.image, args.like, args.out, inverse=args.inverse,
                               labels=args.labels, compression=args.compression)
    rows, cols = run_with_progress_bar(events, "apply").result
    kind = "labels" if args.labels else "image"
    print(f"{kind} carried {direction} ({rows}x{cols}) -> {args.out}")
    return 0
