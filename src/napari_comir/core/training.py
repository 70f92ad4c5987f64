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

import torch

from .data import AlignedPair, PatchSampler
from .device import resolve_device
from .errors import ComirError, InputError, ModelFileError
from .io import atomic_path
from .losses import activation_penalty, equivariance_penalty, equivariant_forward, info_nce
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

    steps: int = 300
    batch_size: int = 16
    patch_size: int = 128
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
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    checkpoint: str | None = None
    checkpoint_every: int = 100
    # Wall-clock budget: training ends when it is spent, and the learning-rate decay is planned
    # for the steps that fit (measured as training goes), so the run still anneals.
    max_seconds: float | None = None

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.patch_size < 32:
            raise InputError("need steps ≥ 1, batch_size ≥ 2 (negatives come from the batch) "
                             "and patch_size ≥ 32")
        if not self.equivariance_weight >= 0:
            raise InputError(f"equivariance_weight must be ≥ 0, got {self.equivariance_weight}")
        if not self.lr > 0:
            raise InputError(f"learning rate must be positive, got {self.lr}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise InputError(f"max_seconds must be positive, got {self.max_seconds}")
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")


def _optimizer(model: ComirModel, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    return torch.optim.Adam(model.parameters(), lr=config.lr)


def _replan(plan: dict, config: TrainConfig, start: int, step: int, elapsed: float) -> None:
    """Plan the run for the steps that fit in ``config.max_seconds`` at the pace measured so far."""
    timed = step - start
    if elapsed >= config.max_seconds:
        plan["steps"] = step
    elif timed >= 3:  # the first steps include warm-up; a few are enough for a pace
        plan["steps"] = min(config.steps, max(step + 1, start + int(config.max_seconds * timed / elapsed)))


def _training_mode(model: ComirModel, freeze_batchnorm: bool) -> None:
    model.train()
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
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    sampler = PatchSampler(pairs, model.card.modalities, config.patch_size, seed=config.seed)
    model.to(device)
    optimizer = _optimizer(model, config)
    start = 0
    if resume is not None:
        state = load_checkpoint(resume)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.generator.set_state(state["sampler_rng"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
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
            _training_mode(model, config.freeze_batchnorm)  # per step: a consumer may run inference
            x_a, x_b = (t.to(device, non_blocking=True) for t in sampler.sample(config.batch_size))
            with torch.autocast(device.type, enabled=use_amp):
                z_a = forward(nets[first], x_a, sampler.generator)
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
            if done:
                model.eval()
            yield Progress("train", step, plan["steps"],
                           f"step {step}/{plan['steps']} loss {loss.item():.3g}",
                           {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"],
                            "patches_per_s": config.batch_size / seconds},
                           result=model if done else None)
            if done:
                break
    finally:
        model.eval()  # also when the caller stops early: leave an inference-ready model
