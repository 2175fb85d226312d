"""The one list of inversion methods. The CLIs, configs, kernels and the SGLang plugin all read it.

Each entry names the reference (PyTorch) twin, whether the Triton kernel template implements it, its
default precision and whether it is numerically stable (bounded intermediates). ``stock`` is not a method
here: it means "leave SGLang's own kernel in place" and is handled by the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from .reference import inverse as ref
from .reference.precision import PRECISIONS, merge_levels, parse_precision  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class Method:
    name: str
    reference: Callable[..., torch.Tensor]  # reference(A, precision=...) -> (I + A)^{-1}
    stable: bool
    default_precision: str
    math: str
    cost: str

    def invert(self, A: torch.Tensor, precision: str | None = None) -> torch.Tensor:
        return self.reference(A, precision=precision or self.default_precision)


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("forward_substitution", ref.forward_substitution, True, "tf32",
               "16×16 row substitution x_i = e_i − Σ a_ij x_j, then merges X21 = −X22·A21·X11",
               "15 serial vector steps + 2 merge levels"),
        Method("column_sweep", ref.column_sweep, True, "ieee",
               "X ← (I − a_j e_jᵀ)·X for j = 1…n−1", "n−1 serial rank-1 updates"),
        Method("neumann", ref.neumann, False, "ieee",
               "(I − A)(I + A²)(I + A⁴)⋯", "~2·log2 n matmuls; unstable"),
        Method("blockdoubling", ref.blockdoubling, True, "tf32",
               "from 1×1 blocks: X21 = −X22·A21·X11, b → 2b", "2·log2 n matmul levels; log-stable"),
        # The paper's MXR. Measured here (evals/results/stability, tests/test_kernels.py): NOT stable when
        # keys are correlated and β ≥ 1 — A⁸ inside a 16×16 block reaches β⁸·C(15,7) and cancels even in fp32.
        Method("hybrid", partial(ref.hybrid, block=16, inner="neumann"), False, "tf32",
               "Neumann product on 16×16 diagonal blocks, then doubling 16 → n",
               "2·log2 16 + 2·log2(n/16) matmuls; growth-limited by the block size (16: unstable for β ≥ 1)"),
        Method("newton_schulz", ref.newton_schulz, False, "ieee",
               "X ← X(2I − M X) from X₀ = I, ⌈log2 n⌉ steps", "2·⌈log2 n⌉ full matmuls; unstable"),
    ]
}

METHOD_NAMES = tuple(METHODS)


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown inversion method {name!r}; choose from: {', '.join(METHOD_NAMES)}") from None


def check_precision(precision: str) -> str:
    """A precision name, or ``"DIAG/MERGE"`` (kernels: diagonal-tile products / merge products apart), MERGE
    optionally per doubling level ``"M16+M32"``, M32 optionally ``"Pin*Pout"`` (reference.precision.parse_precision
    says what is wrong)."""
    parse_precision(precision)
    return precision


def invert(A: torch.Tensor, method: str = "blockdoubling", precision: str | None = None) -> torch.Tensor:
    """``(I + tril(A, −1))^{-1}`` by the reference implementation of ``method``."""
    m = get_method(method)
    if precision is not None and "/" in check_precision(precision):
        raise ValueError("the reference implementations take one precision; DIAG/MERGE is for the kernels")
    return m.invert(A, precision)
