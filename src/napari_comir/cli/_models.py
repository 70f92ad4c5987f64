"""``napari-comir models``: the bundled and user models."""

from __future__ import annotations


def add_parser(sub) -> None:
    """The ``models`` sub-command's options."""
    models = sub.add_parser("models", help="list bundled and user models")
    models.set_defaults(func=run)


def run(args) -> int:
    from ..core.errors import ComirError
    from ..core.zoo import BUNDLED_DIR, list_models, read_card

    for name, card_path in list_models().items():
        origin = "bundled" if card_path.parent == BUNDLED_DIR else "user"
        try:  # a broken user card is listed as such; it does not stop the listing
            card = read_card(card_path)
        except ComirError as exc:
            print(f"{name:20s} {origin:8s} unusable: {str(exc).splitlines()[0]}")
            continue
        modalities = (f"fixed {card.fixed_modality} ({card.modalities[card.fixed_modality].channels} "
                      f"ch), moving {card.moving_modality} "
                      f"({card.modalities[card.moving_modality].channels} ch)")
        print(f"{name:20s} {origin:8s} {modalities:40s} {card.description}")
    return 0
