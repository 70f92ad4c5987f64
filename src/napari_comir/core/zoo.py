"""CoMIR models on disk: model cards, safe weight files, bundled and user models.

A model is two files side by side: ``<name>.safetensors`` (weights; loading it cannot run code)
and ``<name>.json`` (the model card: modalities, normalisation, architecture, training, metrics,
and the SHA-256 of the weights, checked on load).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .data import ModalitySpec
from .defaults import DEFAULT_ARCHITECTURE
from .errors import ModelFileError
from .io import atomic_path, write_text_atomic
from .io.files import as_path, write_errors
from .models import build_network
from .registration.confidence import DETAIL_THRESHOLD

CARD_FORMAT = 1
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"
USER_DIR_ENV = "NAPARI_COMIR_MODELS_DIR"
#: Largest model files read: a card is a few KiB; the widest, deepest network the card bounds
#: allow (base 64, depth 6, RGB + grey, 3 CoMIR channels) has about 1 GiB of weights.
MAX_CARD_BYTES, MAX_WEIGHTS_BYTES = 1 << 20, 3 << 30
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class ModelCard:
    """Human-readable description of a CoMIR model, stored as JSON beside its weights."""

    name: str
    modalities: dict[str, ModalitySpec]
    fixed_modality: str
    moving_modality: str
    comir_channels: int = 1
    tau: float = 0.5
    critic: str = "mse"
    architecture: dict = field(default_factory=lambda: dict(DEFAULT_ARCHITECTURE))
    # Default inference mode: average over the 4 quarter-turns (exact C4 equivariance, 4x compute).
    c4_average: bool = False
    # success_likely thresholds on the NCC of this model's CoMIRs and on that of their details
    # (a high-pass), measured by benchmarks/confidence.py
    score_threshold: float = 0.33
    detail_threshold: float = DETAIL_THRESHOLD
    # The pixel size (µm) the networks were trained at, where known: whole slides are refined at
    # it (pyramid.register_pyramid), since tissue at another scale looks unlike the training data.
    pixel_size_um: float | None = None
    version: str = "0.1.0"
    description: str = ""
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    sha256: str = ""

    def to_dict(self) -> dict:
        card = asdict(self)
        card["modalities"] = {k: v.to_dict() for k, v in self.modalities.items()}
        return {"format": CARD_FORMAT, **card}

    @classmethod
    def from_dict(cls, card: dict, source: str = "model card") -> ModelCard:
        """Validate a card dict (schema, types, consistency) and build the card."""
        if not isinstance(card, dict):
            raise ModelFileError(f"{source}: expected a JSON object")
        if card.get("format") != CARD_FORMAT:
            raise ModelFileError(f"{source}: unsupported card format {card.get('format')!r} "
                                 f"(this napari-comir reads format {CARD_FORMAT})")
        required = ("name", "modalities", "fixed_modality", "moving_modality")
        missing = [key for key in required if key not in card]
        if missing:
            raise ModelFileError(f"{source}: missing field(s) {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        for key, kinds in _CARD_TYPES.items():
            value = card.get(key)
            if key in card and (not isinstance(value, kinds)
                                or (isinstance(value, bool) and bool not in kinds)):
                raise ModelFileError(f"{source}: invalid field ({key} must be "
                                     f"{' or '.join(k.__name__ for k in kinds)}, got {type(value).__name__})")
        try:
            fields = {k: v for k, v in card.items() if k in known}
            modalities = {str(k): ModalitySpec.from_dict(v) for k, v in card["modalities"].items()}
            fields["modalities"] = modalities
            result = cls(**fields)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ModelFileError(f"{source}: invalid field ({exc})") from exc
        if len(modalities) != 2 or {result.fixed_modality, result.moving_modality} != set(modalities):
            raise ModelFileError(f"{source}: needs exactly two modalities, fixed and moving, "
                                 f"got {list(modalities)} / {result.fixed_modality}, "
                                 f"{result.moving_modality}")
        _check_architecture(result.architecture, source)
        if isinstance(result.comir_channels, bool) or not isinstance(result.comir_channels, int):
            raise ModelFileError(f"{source}: comir_channels must be a whole number, got "
                                 f"{result.comir_channels!r}")
        if not 1 <= result.comir_channels <= 3 or any(not 1 <= s.channels <= 4 for s in modalities.values()):
            raise ModelFileError(f"{source}: channel counts out of range (CoMIR 1-3, inputs 1-4)")
        if not 0 < result.tau <= 10:  # the contrastive loss divides by it
            raise ModelFileError(f"{source}: tau must be a number in (0, 10], got {result.tau!r}")
        for key, (low, high) in (("score_threshold", (0, 1)), ("detail_threshold", (0, 20))):
            value = getattr(result, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < high:
                raise ModelFileError(f"{source}: {key} must be a number in [{low}, {high}), got {value!r}")
        size = result.pixel_size_um
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float))
                                 or not 0 < size <= MAX_CARD_PIXEL_SIZE_UM):
            raise ModelFileError(f"{source}: pixel_size_um must be null or a number of µm in (0, "
                                 f"{MAX_CARD_PIXEL_SIZE_UM:g}], got {size!r}")
        return result


#: Largest training pixel size a card may state (µm): 10 m, beyond aerial imagery.
MAX_CARD_PIXEL_SIZE_UM = 1e7


#: Types of a card's fields (numbers and architecture are also range-checked).
_CARD_TYPES = {"name": (str,), "modalities": (dict,), "fixed_modality": (str,),
               "moving_modality": (str,), "tau": (int, float), "critic": (str,),
               "c4_average": (bool,), "version": (str,), "description": (str,), "training": (dict,),
               "metrics": (dict,), "sha256": (str,)}

#: Bounds of a card's architecture: the bundled models use width 8 and depth 4; width 64 at depth
#: 6 already asks ~4x the memory of a bundled model per pixel, and a card must not be able to ask
#: for more (a crafted 2 KB card with width 1024 made `register` take 9 GiB).
ARCHITECTURE_BOUNDS = {"base_channels": (1, 64), "depth": (1, 6)}


def _check_architecture(architecture, source: str) -> None:
    if not isinstance(architecture, dict):
        raise ModelFileError(f"{source}: architecture must be an object like "
                             f'{{"type": "unet", "base_channels": 8, "depth": 4}}, got '
                             f"{type(architecture).__name__}")
    unknown = set(architecture) - {"type", *ARCHITECTURE_BOUNDS}
    if unknown or architecture.get("type", "unet") != "unet":
        raise ModelFileError(f"{source}: unknown architecture field(s) or type: "
                             f"{sorted(unknown) or architecture.get('type')!r} (known: type unet, "
                             f"{', '.join(ARCHITECTURE_BOUNDS)})")
    for key, (low, high) in ARCHITECTURE_BOUNDS.items():
        if key not in architecture:  # the default; an explicit null is refused below
            continue
        value = architecture[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ModelFileError(f"{source}: architecture {key} must be a whole number from "
                                 f"{low} to {high}, got {value!r}")


class ComirModel(nn.Module):
    """Two networks, one per modality, plus the card that says how to feed them.

    ``model.networks[modality]`` maps normalised (N, C_in, H, W) input to (N, comir_channels, H, W).
    """

    def __init__(self, card: ModelCard):
        super().__init__()
        self.card = card
        self.networks = nn.ModuleDict({
            modality: build_network(spec.channels, card.comir_channels, card.architecture)
            for modality, spec in card.modalities.items()
        })

    @property
    def modalities(self) -> list[str]:
        return list(self.card.modalities)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def user_models_dir() -> Path:
    """Where saved user models live: ``$NAPARI_COMIR_MODELS_DIR`` or the per-user data folder."""
    if os.environ.get(USER_DIR_ENV):
        return Path(os.environ[USER_DIR_ENV])
    base = os.environ.get("XDG_DATA_HOME") or (
        Path(os.environ.get("APPDATA", Path.home())) if os.name == "nt" else Path.home() / ".local" / "share")
    return Path(base) / "napari-comir" / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_file_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """The ``(.safetensors, .json)`` paths of a model saved as ``path``.

    ``path`` may end in either suffix or in neither; other dots belong to the name
    (``tissue-v1.2`` -> ``tissue-v1.2.json``, not ``tissue-v1.json``).
    """
    path = as_path(path, "a model path")
    if path.suffix in (".json", ".safetensors"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_model(model: ComirModel, path: str | os.PathLike) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json`` so that a reader never pairs a card with
    the other save's weights; return the card path.

    The old weights step aside as ``<path>.safetensors.previous`` first, the new weights and then
    the new card replace theirs atomically, and the old weights go last. A reader (or a crash) at
    any moment finds, beside each card, weights whose SHA-256 it names (:func:`load_model` falls
    back to ``.previous``). ``path`` may be given with or without suffix (see
    :func:`model_file_paths`).
    """
    from safetensors.torch import save_file

    weights_path, card_path = model_file_paths(path)
    previous = _previous(weights_path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with _one_save_at_a_time(card_path):  # two saves interleaved would mix cards and weights
        with atomic_path(weights_path) as tmp:
            mode = tmp.stat().st_mode  # a new file's (the umask's)
            save_file(state, str(tmp), metadata={"napari_comir_card_format": str(CARD_FORMAT)})
            os.chmod(tmp, mode)  # safetensors may write its own file, 0600; the card has the umask's
            model.card.sha256 = _sha256(tmp)
            if weights_path.is_file() and card_path.is_file():
                _keep_as_previous(weights_path, previous)
        write_text_atomic(card_path, json.dumps(model.card.to_dict(), indent=2) + "\n")
        previous.unlink(missing_ok=True)
    return card_path


@contextlib.contextmanager
def _one_save_at_a_time(card_path: Path):
    """Saves into one folder, from any process, take turns (an advisory lock on the folder
    itself: no file is left behind): a reader then always finds a card beside weights it
    names. Where the system has no such locks, saves run as before."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with write_errors(card_path):
        folder = os.open(card_path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # closing releases the lock


def _previous(weights_path: Path) -> Path:
    return weights_path.with_name(weights_path.name + ".previous")


def _keep_as_previous(weights_path: Path, previous: Path) -> None:
    """The old card's weights stay readable as ``previous`` until the card changes: a hard link
    (the weights file itself never goes missing), or a move where links are not supported."""
    previous.unlink(missing_ok=True)
    try:
        os.link(weights_path, previous)
    except OSError:
        os.replace(weights_path, previous)


def check_user_model_name(name: str) -> str:
    """``name`` if it can name a user model, else a ModelFileError saying what can: letters,
    digits, '-', '_' or '.', and not a bundled model's name (the bundled one would always win,
    so the saved model could never be loaded or listed)."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ModelFileError(f"invalid model name {name!r}: use letters, digits, '-', '_' or '.' (≤ 64)")
    if (BUNDLED_DIR / f"{name}.json").is_file():
        raise ModelFileError(f"model name {name!r} is a bundled model's: a user model of that name "
                             "could never be loaded; choose another name")
    return name


def user_model_path(name: str) -> Path:
    """Where :func:`save_user_model` writes ``name`` (without suffix), checked before any work:
    a valid name and a models folder that exists or can be created, and is writable."""
    check_user_model_name(name)
    folder = user_models_dir()
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not existing.is_dir():
        raise ModelFileError(f"the user models folder {folder} cannot be made: {existing} is a file "
                             f"(set {USER_DIR_ENV} to a folder)")
    if not os.access(existing, os.W_OK):
        raise ModelFileError(f"the user models folder {existing} is not writable (set "
                             f"{USER_DIR_ENV} to a writable folder)")
    return folder / name


def save_user_model(model: ComirModel, name: str) -> Path:
    """Save under the user models folder as ``name`` so it shows in :func:`list_models`."""
    path = user_model_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(f"cannot create the user models folder {path.parent}: "
                             f"{exc.strerror or exc}") from exc
    model.card.name = name
    return save_model(model, path)


def list_models() -> dict[str, Path]:
    """Names of bundled and user models mapped to their card paths (user models shadow none)."""
    found = {}
    for folder in (user_models_dir(), BUNDLED_DIR):  # bundled last: a bundled name always wins
        if folder.is_dir():
            found.update({card.stem: card for card in sorted(folder.glob("*.json"))
                          if card.with_suffix(".safetensors").is_file()})
    return found


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """The card path of a bundled/user model name, or of a model file path (.json or .safetensors)."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".json", ".safetensors") or candidate.exists():
        card_path = candidate.with_suffix(".json")
        if not card_path.is_file():
            raise ModelFileError(f"no model card {card_path.name} beside {candidate}; a model is a "
                                 ".safetensors file with its .json card")
        return card_path
    models = list_models()
    if str(name_or_path) not in models:
        raise ModelFileError(f"unknown model {str(name_or_path)!r}; available: {', '.join(models) or 'none'} "
                             "(or give a path to a .json/.safetensors model file)")
    return models[str(name_or_path)]


def model_files(model, label: str = "--model") -> dict[str, Path]:
    """The files a model given by name or path is read from (card, weights, and the weights a
    save keeps aside), as inputs for :func:`~napari_comir.core.io.check_outputs_apart`; none
    for a model object or a name that does not resolve (loading it says why)."""
    if not isinstance(model, (str, os.PathLike)):
        return {}
    try:
        card_path = resolve_model_path(model)
    except ModelFileError:
        return {}
    weights_path = card_path.with_suffix(".safetensors")
    return {f"{label} card": card_path, f"{label} weights": weights_path,
            f"{label} weights kept aside": _previous(weights_path)}


def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> ComirModel:
    """Load a model by bundled/user name or file path, safely (no pickle, hash checked).

    Raises
    ------
    ModelFileError
        Unknown name, missing/corrupt file, invalid card, hash mismatch or weights that do
        not fit the card's architecture.
    """
    card_path = resolve_model_path(name_or_path)
    try:
        return _load_pair(card_path, device)
    except ModelFileError:  # once more: a save may have switched the pair while it was read
        return _load_pair(card_path, device)


def read_model_file(path: Path, limit: int) -> bytes | None:
    """A model file's bytes, ``None`` if it is not there (a save may have just moved it).

    Only a regular file of at most ``limit`` bytes is read: a link to ``/dev/zero`` or a pipe
    would be read until memory runs out, or for ever.
    """
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(info.st_mode):
        return None
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(f"{path.name}: not a regular file (a device, a pipe or a socket); "
                             "a model is a .safetensors file with its .json card")
    if info.st_size > limit:
        raise ModelFileError(f"{path.name}: {info.st_size / 2**20:.0f} MiB, more than the "
                             f"{limit / 2**20:.0f} MiB a model file may have")
    try:
        with open(path, "rb") as handle:
            return handle.read(limit + 1)[:limit]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_card(card_path: Path) -> ModelCard:
    """The model card at ``card_path``, validated (:meth:`ModelCard.from_dict`)."""
    try:
        text = read_model_file(card_path, MAX_CARD_BYTES)
        if text is None:
            raise ModelFileError(f"model card missing: {card_path}")
        card_dict = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # RecursionError: JSON nested thousands deep (a crafted card)
        raise ModelFileError(f"{card_path.name}: not a readable JSON model card ({exc})") from exc
    return ModelCard.from_dict(card_dict, source=card_path.name)


def _load_pair(card_path: Path, device) -> ComirModel:
    from safetensors import SafetensorError
    from safetensors.torch import load

    weights_path = card_path.with_suffix(".safetensors")
    card = read_card(card_path)
    # Mid-save, the card's own weights may be the ones that stepped aside (see save_model).
    # Read once, then hash and parse those bytes: a save cannot swap the file in between.
    data = read_model_file(weights_path, MAX_WEIGHTS_BYTES)
    if card.sha256 and (data is None or hashlib.sha256(data).hexdigest() != card.sha256):
        # Mid-save, the card's own weights may be the ones kept aside (see save_model).
        kept = read_model_file(_previous(weights_path), MAX_WEIGHTS_BYTES)
        if kept is not None and hashlib.sha256(kept).hexdigest() == card.sha256:
            data = kept
        elif data is not None:
            raise ModelFileError(f"{weights_path.name}: SHA-256 does not match the model card — "
                                 "the file is corrupt or was replaced")
    if data is None:
        raise ModelFileError(f"weights file missing: {weights_path}")
    try:
        state = load(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{weights_path.name}: not a valid safetensors weights file ({exc}); "
                             "pickled .pt/.pth files are refused because loading them can run code") from exc
    model = ComirModel(card)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{weights_path.name}: weights do not fit the card's architecture "
                             f"{card.architecture} ({str(exc).splitlines()[0]})") from exc
    return model.to(device).eval()
