"""``napari-comir infer``: the CoMIR of one image, written as a TIFF."""

from __future__ import annotations

import argparse

from ..core.defaults import DEFAULT_MODEL_NAME
from ._output import progress_bar, require_range


def add_parser(sub) -> None:
    """The ``infer`` sub-command's options."""
    infer = sub.add_parser("infer", help="compute the CoMIR of an image and write it as TIFF",
                           epilog="example:\n  napari-comir infer bf.tif --model bf-shg --modality bf "
                           "--out bf_comir.tif", formatter_class=argparse.RawDescriptionHelpFormatter)
    infer.add_argument("image", help="input image (TIFF, PNG, JPEG)")
    infer.add_argument("--model", default=DEFAULT_MODEL_NAME,
                       help=f"model name or file (default {DEFAULT_MODEL_NAME})")
    infer.add_argument("--modality", required=True, help="which network, e.g. bf or shg")
    infer.add_argument("--out", required=True, help="output TIFF (float32)")
    infer.add_argument("--tile", type=int, default=1024, help="tile side in px (default 1024)")
    infer.add_argument("--overlap", type=int, default=64, help="tile overlap in px (default 64)")
    infer.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    infer.set_defaults(func=run)


def run(args) -> int:
    from .. import api
    from ..core.inference import comir_tiles
    from ..core.io import check_output_path, check_outputs_apart, write_tiff
    from ..core.zoo import model_files

    require_range(args, ("tile", 64, 16384), ("overlap", 0, 4096))
    check_outputs_apart({"--out": args.out}, {"image": args.image, **model_files(args.model)})
    check_output_path(args.out)
    model = api.load_model(args.model, args.device)
    image = api.read_image(args.image)
    events = comir_tiles(model, image, args.modality, tile=args.tile, overlap=args.overlap)
    with progress_bar(0, f"CoMIR {args.modality}") as bar:
        for event in events:
            bar.total, bar.n = event.total, event.step
            bar.refresh()
    comir = event.result
    write_tiff(args.out, comir.squeeze(-1) if comir.shape[-1] == 1 else comir)
    print(f"wrote {args.out} ({comir.shape[0]}x{comir.shape[1]}, {comir.shape[-1]} channel(s))")
    return 0
