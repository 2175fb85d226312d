"""sglang-trinv: fast and stable (I + A)^{-1} for delta-rule linear attention chunk prefill in SGLang."""

__version__ = "0.1.0"


def patch(method: str = "blockdoubling", precision: str | None = None) -> None:
    """Route SGLang's GDN/KDA chunk prefill through our inversion kernels (notebooks, offline engines)."""
    from .plugin import patch as _patch

    _patch(method=method, precision=precision)


def unpatch() -> None:
    """Restore SGLang's stock kernels."""
    from .plugin import unpatch as _unpatch

    _unpatch()
