"""The verdict of a result in words, as every dock and notification says it."""

from __future__ import annotations

from ..core.registration import RegistrationResult

#: How a verdict reads: judged right, not judged (a fit to landmarks alone), or a warning.
GOOD, UNCHECKED, BAD = "good", "unchecked", "bad"


def verdict_text(result: RegistrationResult) -> tuple[str, str]:
    """The verdict line and its tone (:data:`GOOD`, :data:`UNCHECKED` or :data:`BAD`); never a
    tick before a failure, nor on a fit the images did not judge."""
    if result.method == "landmarks":
        unchecked = ("fitted to the landmarks only, not checked against the images: 'refine from' "
                     "refines and judges it")
        if result.success_likely:
            return unchecked, UNCHECKED
        return f"⚠ {'; '.join(result.reasons)}. {unchecked[0].upper()}{unchecked[1:]}", BAD
    if result.success_likely:
        return "✓ likely right", GOOD
    why = "; ".join(result.reasons) or "the images do not agree"
    return (f"⚠ probably WRONG: {why}. Check the overlay; try another transform, a narrower "
            "rotation range, the pixel sizes, or landmarks"), BAD
