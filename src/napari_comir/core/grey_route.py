"""Teaching a model's grey route: the palette that colours a grey bright field for its RGB network.

A model whose bright-field network takes RGB meets a grey bright field through its card's grey
palette (:func:`~napari_comir.core.data.colourise`: 33 colours, one per grey level knot). Taught
pairs whose bright field is grey teach that palette alone, against the frozen networks: the
networks' weights stay bit-identical, so colour images, and the other modality, register
exactly as before, by construction. Training the bright-field network on one grey pair instead
changed what it does for every input (``bf-shg`` taught ``1B_D2`` in grey registered 3 of the 20
grey raw cases and 0 of the 20 colour ones; a separate copy for grey alone, 1.6 % of its weights
moved, 8 of 20 grey), where the palette taught on that pair registered 19 of 20 grey, and
taught on the two cases the bundled model misses by hundreds of px, 20 of 20
(docs/benchmarks.md, "The grey route taught alone").

The palette starts as the card's, so teaching starts exactly where the model is. Each step
colours the grey patches with it (linear between knots, as :func:`colourise`), normalises them
by the percentiles of the whole image coloured with the current palette (as inference does),
and descends the contrastive loss between the two frozen networks' CoMIRs. Each knot keeps its
luminance (only hue and saturation learn: a grey level is coloured with a colour of that grey,
as the card's palette does): at 36 steps, 18, 19, 19 of 20 for seeds 0-2, where a free palette
gave 18, 18, 19.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .data import AlignedPair, PatchSampler, grey_levels, intensity_range, subsample
from .device import resolve_device
from .errors import InputError
from .losses import info_nce
from .progress import Progress
from .training import TrainConfig
from .zoo import ComirModel, ModelCard

#: Pixels of each taught image coloured per step for its normalisation's percentiles.
RANGE_PIXELS = 250_000
#: The palette keeps each knot's luminance (only hue and saturation learn).
KEEP_LUMINANCE = True
_LUMINANCE_WEIGHTS = torch.tensor([0.299, 0.587, 0.114])  # ITU-R BT.601, as the grey was made


def grey_routes(card: ModelCard, pairs) -> list[str]:
    """The modalities whose grey route ``pairs`` teach: RGB modalities with a grey palette whose
    image is grey in every pair (``pairs``: :class:`AlignedPair` or objects with
    ``fixed_image`` and ``moving_image``)."""
    def image(pair, modality):
        if isinstance(pair, AlignedPair):
            return pair.images[modality]
        return pair.fixed_image if modality == card.fixed_modality else pair.moving_image

    def is_grey(array) -> bool:
        shape = np.shape(array)
        return len(shape) == 2 or (len(shape) == 3 and shape[-1] == 1)

    return [modality for modality in (card.fixed_modality, card.moving_modality)
            if card.modalities[modality].channels == 3
            and card.modalities[modality].grey_palette is not None
            and all(is_grey(image(pair, modality)) for pair in pairs)]


def colourise_levels(levels: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """(N, 1, P, P) 8-bit grey levels -> (N, 3, P, P) colours of ``palette`` ((knots, 3)),
    linear between knots as :func:`~napari_comir.core.data.colourise`; differentiable in
    ``palette``."""
    position = levels[:, 0].clamp(0.0, 255.0) * ((len(palette) - 1) / 255.0)
    lower = position.floor().clamp(max=len(palette) - 2).long()
    weight = (position - lower)[..., None]
    return (palette[lower] * (1 - weight) + palette[lower + 1] * weight).permute(0, 3, 1, 2)


def grey_route_events(model: ComirModel, modalities: Sequence[str], pairs: Sequence[AlignedPair],
                      config: TrainConfig) -> Iterator[Progress]:
    """Teach the grey palettes of ``modalities`` (:func:`grey_routes`) on ``pairs``; a generator.

    ``config``: ``lr`` (palette colours, 0-255, per Adam step), ``steps``, ``max_seconds``,
    ``batch_size``, ``patch_size``, ``seed``, ``device``. Patches are turned and flipped but not
    jittered: the palette is a function of the grey level, and jittered levels taught it a
    distorted one (12 of the 20 grey raw cases, not 18-19). The networks run in eval mode and
    are never changed. The last event's ``result`` is ``model``, its card's palettes replaced.
    """
    config.validate()
    if not modalities:
        raise InputError("no grey route to teach: the pairs' bright field is not grey, or the "
                         "model's card has no grey palette")
    card = model.card
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    model.eval().to(device)
    palettes = {m: torch.tensor(card.modalities[m].grey_palette, dtype=torch.float32,
                                device=device, requires_grad=True) for m in modalities}
    initial = {m: palette.detach().clone() for m, palette in palettes.items()}
    optimizer = torch.optim.Adam(list(palettes.values()), lr=config.lr)
    # One sampler per pair: each pair's patches are normalised by that image's own percentiles.
    levels, samplers = [], []
    for index, pair in enumerate(pairs):
        images = dict(pair.images)
        levels.append({m: grey_levels(images[m]) for m in modalities})
        images.update({m: (value / 255.0)[..., None] for m, value in levels[-1].items()})
        samplers.append(PatchSampler([AlignedPair(images, pair.name)], card.modalities,
                                     config.patch_size, seed=config.seed + index,
                                     jitter=False, as_given=modalities))
    shares = np.bincount(np.arange(config.batch_size) % len(pairs), minlength=len(pairs))
    start = time.perf_counter()
    step = 0
    while step < config.steps:
        step += 1
        batches = [_colour_patches(card, [x.to(device) for x in sampler.sample(int(share))],
                                   palettes, levels[index])
                   for index, (sampler, share) in enumerate(zip(samplers, shares, strict=True))
                   if share]
        first, second = (torch.cat(parts) for parts in zip(*batches, strict=True))
        loss = info_nce(*(model.networks[m](x) for m, x in zip(model.modalities, (first, second),
                                                                strict=True)),
                        card.tau, card.critic)
        if not torch.isfinite(loss):
            raise InputError(f"teaching the grey palette diverged at step {step}; lower its rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=list(palettes.values()))  # the networks' weights get no gradient
        optimizer.step()
        with torch.no_grad():
            for modality, palette in palettes.items():
                if KEEP_LUMINANCE:  # the change, less its component along the luminance weights
                    weights = _LUMINANCE_WEIGHTS.to(palette.device)
                    change = palette - initial[modality]
                    palette.copy_(initial[modality] + change
                                  - (change @ weights)[:, None] * weights / (weights @ weights))
                palette.clamp_(0.0, 255.0)
        done = step >= config.steps or (config.max_seconds is not None
                                        and time.perf_counter() - start >= config.max_seconds)
        if done:
            for modality, palette in palettes.items():
                card.modalities[modality] = dataclasses.replace(
                    card.modalities[modality],
                    grey_palette=tuple(tuple(float(v) for v in row) for row in palette.tolist()))
        yield Progress("train", step, step if done else config.steps,
                       f"grey palette step {step}/{config.steps} loss {loss.item():.3g}",
                       {"loss": loss.item(), "lr": config.lr}, result=model if done else None)
        if done:
            break


def _colour_patches(card: ModelCard, patches, palettes: dict, levels: dict):
    """The sampler's (first, second) patches with the grey routes' levels coloured by their
    palettes and normalised as inference normalises the whole image."""
    out = []
    for modality, x in zip(card.modalities, patches, strict=True):
        if modality in palettes:
            spec = card.modalities[modality]
            coloured = colourise_levels(x * 255.0, palettes[modality])
            with torch.no_grad():  # the percentiles of the image in the current colours
                whole = colourise_levels(torch.from_numpy(subsample(levels[modality], RANGE_PIXELS)
                                                          )[None, None], palettes[modality].cpu())
                low, high = intensity_range(whole[0].permute(1, 2, 0).numpy(), spec, x.device)
            if spec.log1p:
                coloured = torch.log1p(coloured.clamp_min(0.0))
            x = ((coloured - low.view(1, 3, 1, 1)) / (high - low).view(1, 3, 1, 1)).clamp(0.0, 1.0)
        out.append(x)
    return out
