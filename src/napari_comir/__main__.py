"""``python -m napari_comir`` runs the command-line interface."""

from napari_comir.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
