"""Training and fine-tuning as a generator of progress events (the GUI and CLI consume the same stream)."""

from __future__ import annotations

import json
import math
import os
import pickle
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .data import AlignedPair, PatchSampler
from .defaults import DEFAULT_BATCH_SIZE, DEFAULT_PATCH_SIZE, DEFAULT_STEPS
from .device import resolve_device
from .errors import ComirError, InputError, ModelFileError
from .io import atomic_path
from .losses import activation_penalty, equivariance_penalty, equivariant_forward, info_nce, partner_accuracy
from .progress import Progress
from .zoo import ComirModel, ModelCard

# Fine-tuning a pretrained model: at 3e-4, 30 s on one pair made bf-shg 2.0.0 worse, even on
# that pair; 1e-4 keeps it where it was (docs/benchmarks.md).
FINE_TUNE_LR = 1e-4


@dataclass
class TrainConfig:
    """Hyper-parameters of a training or fine-tuning run.

    The defaults suit CPU fine-tuning on a few pairs (Adam); the paper used SGD
    (lr 1e-2, momentum 0.9, batch 32) for longer GPU runs.
    """

    steps: int = DEFAULT_STEPS
    batch_size: int = DEFAULT_BATCH_SIZE
    patch_size: int = DEFAULT_PATCH_SIZE
    lr: float = 1e-3
    optimizer: str = "adam"
    l1: float = 1e-4
    l2: float = 1e-4
    equivariant: bool = True
    # Weight of the arbitrary-angle equivariance term (losses.equivariance_penalty); 0 = off.
    # It costs a second forward pass per network, so it is for (GPU) training of bundled models.
    equivariance_weight: float = 0.0
    # Partners turned by 90/180/270° as extra InfoNCE negatives (losses.info_nce): helped
    # training from scratch on one pair.
    turned_negatives: bool = False
    # Fine-tuning on one or two pairs: keep BatchNorm statistics of the pretrained model, so
    # the network does not re-centre itself on the new pair's intensities (learned scales train).
    freeze_batchnorm: bool = False
    # Augmentations (core.data.PatchSampler): RGB patches' hue turned within ±hue_degrees, and
    # the second modality's patch up to shift_px off the first's (serial sections).
    hue_degrees: float = 0.0
    shift_px: float = 0.0
    # Networks left as they are (modality names): the others learn to meet their CoMIRs, e.g. a
    # new stain's network taught against the bright-field network it started from.
    frozen_modalities: tuple[str, ...] = ()
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    checkpoint: str | None = None
    checkpoint_every: int = 100
    # Wall-clock budget: training ends when it is spent, and the learning-rate decay is planned
    # for the steps that fit (measured as training goes), so the run still anneals.
    max_seconds: float | None = None
    # Every this many steps, the share of held-out patch pairs that find their partner
    # (metrics "heldout_match"); the held-out band (one patch wide, along the right or bottom
    # edge of every pair) is never trained on. 0 = off: train on every pixel.
    holdout_every: int = 0

    def validate(self) -> None:
        for name in ("steps", "batch_size", "patch_size", "checkpoint_every", "holdout_every", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"{name} must be a whole number, got {value!r}")
        for name, high in (("lr", 10.0), ("l1", 1e3), ("l2", 1e3), ("equivariance_weight", 1e3),
                           ("hue_degrees", 180.0), ("shift_px", 64.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value <= high:
                raise InputError(f"{name} must be a number of at most {high:g}, got {value!r}")
        if self.checkpoint_every < 1:
            raise InputError(f"checkpoint_every must be ≥ 1, got {self.checkpoint_every}")
        if self.steps < 1 or self.batch_size < 2 or self.patch_size < 32:
            raise InputError("need steps ≥ 1, batch_size ≥ 2 (negatives come from the batch) "
                             "and patch_size ≥ 32")
        for name in ("equivariance_weight", "hue_degrees", "shift_px"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise InputError(f"learning rate must be positive, got {self.lr}")
        if self.holdout_every < 0:
            raise InputError(f"holdout_every must be ≥ 0, got {self.holdout_every}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise InputError(f"max_seconds must be positive, got {self.max_seconds}")
        if len(set(self.frozen_modalities)) > 1:
            raise InputError("at most one network can be frozen: the other must learn")
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")


def fine_tune_config(**settings) -> TrainConfig:
    """The training settings for fine-tuning a trained model, ``settings`` overriding them: a
    gentle rate (``FINE_TUNE_LR``) and the pretrained BatchNorm statistics kept (without them,
    30 s on one pair dropped success on other tissue from 93 % to 67 %,
    benchmarks/train_one_pair.py)."""
    return TrainConfig(**{"lr": FINE_TUNE_LR, "freeze_batchnorm": True, **settings})


def _optimizer(model: ComirModel, config: TrainConfig) -> torch.optim.Optimizer:
    parameters = [parameter for modality, network in model.networks.items()
                  if modality not in config.frozen_modalities for parameter in network.parameters()]
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=0.9)
    return torch.optim.Adam(parameters, lr=config.lr)


def _replan(plan: dict, config: TrainConfig, start: int, step: int, elapsed: float) -> None:
    """Plan the run for the steps that fit in ``config.max_seconds`` at the pace measured so far."""
    timed = step - start
    if elapsed >= config.max_seconds:
        plan["steps"] = step
    elif timed >= 3:  # the first steps include warm-up; a few are enough for a pace
        plan["steps"] = min(config.steps, max(step + 1, start + int(config.max_seconds * timed / elapsed)))


def _training_mode(model: ComirModel, freeze_batchnorm: bool, frozen_modalities=()) -> None:
    model.train()
    for modality in frozen_modalities:
        model.networks[modality].eval()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()  # use and keep the pretrained running statistics


def save_checkpoint(path: str | os.PathLike, model: ComirModel, optimizer: torch.optim.Optimizer,
                    step: int, sampler: PatchSampler, config: TrainConfig) -> None:
    """Atomically write everything needed to resume (tensors and plain types only)."""
    state = {
        "card": json.dumps(model.card.to_dict()),
        "config": json.dumps(asdict(config)),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "sampler_rng": sampler.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``weights_only=True``: a crafted pickle cannot execute code."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no such checkpoint: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(f"{path.name}: not a napari-comir checkpoint — refused, it holds Python "
                             "objects other than tensors, and loading them could run code") from exc
    except Exception as exc:
        raise ModelFileError(f"{path.name}: not a napari-comir checkpoint or corrupt "
                             f"({type(exc).__name__})") from exc
    try:
        state["card"] = ModelCard.from_dict(json.loads(state["card"]), source=path.name)
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{path.name}: not a napari-comir checkpoint or corrupt "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
    return state


#: Held-out patch pairs compared by ``holdout_every``: chance is 1 in 2 x 16 - 1 = 31.
HELDOUT_PAIRS = 16


def split_off_band(pair: AlignedPair, width: int) -> tuple[AlignedPair, AlignedPair]:
    """(the pair without a band ``width`` px wide along its right edge, or its bottom edge when
    it is taller than wide; the band), both still pixel-aligned."""
    rows, cols = np.shape(next(iter(pair.images.values())))[:2]
    along_cols = cols >= rows
    if (cols if along_cols else rows) < 2 * width:
        raise InputError(f"pair {pair.name!r} ({rows}x{cols} px) is too small to hold out a "
                         f"{width} px band for the held-out measure: use a smaller patch size")
    cut = (slice(None), slice(None, -width)) if along_cols else (slice(None, -width), slice(None))
    band = (slice(None), slice(-width, None)) if along_cols else (slice(-width, None), slice(None))
    return (AlignedPair({k: v[cut] for k, v in pair.images.items()}, name=pair.name),
            AlignedPair({k: v[band] for k, v in pair.images.items()}, name=f"{pair.name} (held out)"))


@torch.inference_mode()
def _heldout_match(model: ComirModel, heldout, device) -> float:
    """:func:`partner_accuracy` of the held-out batch, networks in eval mode."""
    first, second = model.modalities
    training = {name: net.training for name, net in model.networks.items()}
    model.eval()
    try:
        z_a, z_b = (model.networks[m](x.to(device)) for m, x in zip((first, second), heldout,
                                                                     strict=True))
        return partner_accuracy(z_a, z_b, model.card.critic)
    finally:
        for name, net in model.networks.items():
            net.train(training[name])


def train(model: ComirModel, pairs: Sequence[AlignedPair], config: TrainConfig | None = None,
          *, resume: str | os.PathLike | None = None) -> Iterator[Progress]:
    """Train ``model`` in place on aligned pairs; yield a :class:`Progress` after every step.

    Stop at any time by closing the generator (or simply not iterating further): the model
    then holds the weights of the last finished step. The last event's ``result`` is the model.

    Parameters
    ----------
    model : ComirModel
        Freshly built or loaded (fine-tuning); its card gives modalities, τ and critic.
    pairs : sequence of AlignedPair
        Images keyed by the model's modality names.
    config : TrainConfig
    resume : path, optional
        Checkpoint to continue from (model, optimiser, step and random state).
    """
    config = config or TrainConfig()
    config.validate()
    unknown = set(config.frozen_modalities) - set(model.modalities)
    if unknown:
        raise InputError(f"cannot freeze {', '.join(sorted(unknown))}: the model's networks are "
                         f"{', '.join(model.modalities)}")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    heldout = None
    if config.holdout_every:
        pairs, held = zip(*(split_off_band(pair, config.patch_size) for pair in pairs), strict=True)
        held_sampler = PatchSampler(held, model.card.modalities, config.patch_size,
                                    seed=config.seed + 1, jitter=False)
        heldout = held_sampler.sample(HELDOUT_PAIRS)  # one fixed batch, compared every time
    sampler = PatchSampler(pairs, model.card.modalities, config.patch_size, seed=config.seed,
                           hue_degrees=config.hue_degrees, shift_px=config.shift_px)
    model.to(device)
    optimizer = _optimizer(model, config)
    start = 0
    if resume is not None:
        state = load_checkpoint(resume)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ModelFileError(f"{Path(resume).name} was saved for another model (architecture "
                                 f"{state['card'].architecture}, not {model.card.architecture}); "
                                 "resume it with the same model and options") from exc
        sampler.generator.set_state(state["sampler_rng"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        if start >= config.steps:
            raise InputError(f"{Path(resume).name} already finished {start} steps (asked for "
                             f"{config.steps}): give a larger --steps to continue it")
    plan = {"steps": config.steps}  # shrinks to what fits in max_seconds once steps are timed
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / plan["steps"], 1.0))),
        last_epoch=start - 1 if start else -1)
    run_start = time.perf_counter()
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    first, second = model.modalities
    nets = model.networks
    forward = equivariant_forward if config.equivariant else (lambda net, x, generator=None: net(x))
    card = model.card
    try:
        for step in range(start + 1, config.steps + 1):
            tic = time.perf_counter()
            # per step: a consumer may run inference
            _training_mode(model, config.freeze_batchnorm, config.frozen_modalities)
            x_a, x_b = (t.to(device, non_blocking=True) for t in sampler.sample(config.batch_size))
            with torch.autocast(device.type, enabled=use_amp):
                with torch.set_grad_enabled(first not in config.frozen_modalities):
                    z_a = forward(nets[first], x_a, sampler.generator)
                with torch.set_grad_enabled(second not in config.frozen_modalities):
                    z_b = forward(nets[second], x_b, sampler.generator)
                loss = info_nce(z_a, z_b, card.tau, card.critic, config.turned_negatives)
                total = loss + activation_penalty(z_a, z_b, l1=config.l1, l2=config.l2)
                if config.equivariance_weight:
                    total = total + config.equivariance_weight * (
                        equivariance_penalty(nets[first], x_a, z_a, sampler.generator)
                        + equivariance_penalty(nets[second], x_b, z_b, sampler.generator))
            if not torch.isfinite(total):
                raise ComirError(f"training diverged at step {step} (loss {total.item()}); "
                                 "lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
            if config.max_seconds:
                _replan(plan, config, start, step, time.perf_counter() - run_start)
            schedule.step()
            done = step >= plan["steps"]
            if config.checkpoint and (step % config.checkpoint_every == 0 or done):
                save_checkpoint(config.checkpoint, model, optimizer, step, sampler, config)
            seconds = time.perf_counter() - tic
            metrics = {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"],
                       "patches_per_s": config.batch_size / seconds}
            # With a time budget the steps that fit are known once a few are timed: until then
            # the total is unknown (0), not the 10^9 steps the budget allows.
            total = plan["steps"] if not config.max_seconds or step - start >= 3 or done else 0
            message = (f"step {step}/{total}" if total else
                       f"step {step}, timing the steps that fit in {config.max_seconds:g} s")
            message += f" loss {loss.item():.3g}"
            if heldout is not None and (step % config.holdout_every == 0 or done or step == 1):
                metrics["heldout_match"] = _heldout_match(model, heldout, device)
                message += f", held-out patches matched {metrics['heldout_match']:.0%}"
            if done:
                model.eval()
            yield Progress("train", step, total, message, metrics,
                           result=model if done else None)
            if done:
                break
    finally:
        model.eval()  # also when the caller stops early: leave an inference-ready model
