"""Exceptions with messages meant for microscopists, not for torch developers."""


class ComirError(Exception):
    """Base class of every error napari-comir raises on purpose."""


class InputError(ComirError, ValueError):
    """An image, file or parameter given by the user is unusable; the message says why."""


class OutputError(ComirError, OSError):
    """An output could not be written (a full disk, a lost permission); nothing half-written
    is left in its place."""


class ModelFileError(ComirError):
    """A model file or model card is missing, corrupt, unsafe or inconsistent."""


class RegistrationError(ComirError):
    """Registration could not run (e.g. constant images, no overlap)."""
