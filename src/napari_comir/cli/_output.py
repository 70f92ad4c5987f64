"""What every ``napari-comir`` command shares: progress bars on stderr, range checks, the
tile-compression option and a quiet exit when the output's reader is gone."""

from __future__ import annotations

import sys

from ..core.defaults import DEFAULT_TILE_COMPRESSION, TILE_COMPRESSIONS


def require_range(args, *limits) -> None:
    """Refuse, before any work, a whole-number option outside its range (one line, exit 2)."""
    from ..core.errors import InputError

    for name, low, high in limits:
        value = getattr(args, name)
        if value is not None and not low <= value <= high:
            raise InputError(f"--{name.replace('_', '-')} must be between {low} and {high}, got {value}")


def progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr)


def run_with_progress_bar(events, description: str):
    """Run a pipeline's Progress events with a progress bar on stderr, each stage its own count,
    rate and time; returns the last event."""
    with progress_bar(0, description) as bar:
        stage = None
        for event in events:
            if event.stage != stage:
                if stage is not None:
                    bar.refresh()  # the finished stage's last count, not a throttled earlier one
                stage = event.stage
                bar.set_description(stage, refresh=False)
                bar.reset(total=event.total)
            bar.total = event.total
            bar.update(event.step - bar.n)  # update(), not n =: keeps tqdm's rate right
    return event


def add_compression(parser, output: str) -> None:
    parser.add_argument("--compression", choices=TILE_COMPRESSIONS, default=DEFAULT_TILE_COMPRESSION,
                        help=f"with {output}: how a TIFF output's tiles are compressed (default "
                        f"{DEFAULT_TILE_COMPRESSION}: JPEG for 8-bit RGB, as slide scanners write it; "
                        "lossless zlib for grey images and labels; zstd is the fastest lossless "
                        "one, but QuPath before 0.5 cannot read it)")


def silence_output() -> None:
    """Point stdout and stderr at /dev/null: their reader is gone, and any later write (a
    progress bar closing, a library's log line) must not raise again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass
