"""Choice of the torch device: CUDA when present, CPU otherwise, or what the user asked for."""
from __future__ import annotations

from core.errors import ValidationError


def resolve_device(requested: str | None = None) -> str:
    """Return ``"cuda"`` or ``"cpu"``.

    Parameters
    ----------
    requested : {"auto", "cpu", "cuda", None}
        ``None`` and ``"auto"`` pick CUDA when torch sees a GPU. Asking for ``"cuda"`` on a machine
        without one is an error rather than a silent fallback.
    """
    import torch

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValidationError(
                f"The 'device' parameter must name a device this machine has. Got {requested!r}, "
                "but torch sees no CUDA GPU here; use --device cpu or leave it out."
            )
        return requested
    raise ValidationError(f"The 'device' parameter must be one of 'auto', 'cpu', 'cuda'. Got {requested!r}.")
