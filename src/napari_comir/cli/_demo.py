"""``napari-comir demo``: the bundled sample pair registered, in napari or headless."""

from __future__ import annotations

from ..core.defaults import DEFAULT_MODEL_NAME


def add_parser(sub) -> None:
    """The ``demo`` sub-command's options."""
    demo = sub.add_parser("demo", help="register the bundled sample pair (opens napari unless "
                          "--headless)")
    demo.add_argument("--headless", action="store_true", help="no GUI: print the result")
    demo.add_argument("--model", default=DEFAULT_MODEL_NAME,
                      help=f"model name or file (default {DEFAULT_MODEL_NAME})")
    demo.add_argument("--screenshot", metavar="PNG", help="run the GUI main job end to end (open, "
                      "register, the default review view), save the whole window here, exit "
                      "(needs a display; under Xvfb: xvfb-run -a napari-comir demo --screenshot x.png)")
    demo.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo

    return run_demo(headless=args.headless, model=args.model, screenshot=args.screenshot)
