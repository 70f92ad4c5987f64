"""The verdict of a result in words, as every dock and notification says it."""

from __future__ import annotations

from ..core.registration import RegistrationResult


def verdict_text(result: RegistrationResult) -> tuple[str, bool]:
    """The verdict line and whether it is good news; never a tick before a failure."""
    if result.method == "landmarks":
        unchecked = ("fitted to the landmarks only, not checked against the images: 'refine from' "
                     "refines and judges it")
        if result.success_likely:
            return unchecked, True
        return f"⚠ {'; '.join(result.reasons)}. {unchecked[0].upper()}{unchecked[1:]}", False
    if result.success_likely:
        return "✓ likely right", True
    why = "; ".join(result.reasons) or "the images do not agree"
    return (f"⚠ probably WRONG: {why}. Check the overlay; try another transform, a narrower "
            "rotation range, the pixel sizes, or landmarks"), False
