"""Plain-PyTorch reference ("naive") implementations: the math every kernel is checked against."""

from .inverse import (blockdoubling, column_sweep, exact_inverse, forward_substitution, hybrid, neumann,
                      newton_schulz, refine)
from .precision import PRECISIONS, matmul

__all__ = ["blockdoubling", "column_sweep", "exact_inverse", "forward_substitution", "hybrid", "neumann",
           "newton_schulz", "refine", "PRECISIONS", "matmul"]
