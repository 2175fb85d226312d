"""Reference algorithms for ``(I + A)^{-1}`` with ``A`` strictly lower triangular.

Plain PyTorch, batched over ``[..., n, n]``, any float dtype, CPU or GPU. These are the "naive" twins of the
Triton kernels in :mod:`sglang_trinv.ops` and the subjects of the stability analysis. Every matrix product
goes through :func:`precision.matmul`, so ``precision=`` emulates what the GPU's dots do.

Notation: ``M = I + A`` (unit lower triangular), ``X ≈ M^{-1}``. Sizes that are not powers of two (partial
chunks) are padded with identity rows/columns: the inverse of ``diag(M, I)`` is ``diag(M^{-1}, I)``.
"""

from __future__ import annotations

import math

import torch

from .precision import matmul, merge_levels, mul, product_pair, work_dtype


# ---------------------------------------------------------------------------------------------- helpers
def _prepare(A: torch.Tensor) -> tuple[torch.Tensor, int, torch.dtype]:
    if A.shape[-1] != A.shape[-2]:
        raise ValueError(f"expected square matrices [..., n, n], got {tuple(A.shape)}")
    if not A.is_floating_point():
        raise TypeError(f"expected a float tensor, got {A.dtype}")
    return torch.tril(A.to(work_dtype(A.dtype)), -1), A.shape[-1], A.dtype


def _pad_pow2(A: torch.Tensor, multiple: int = 1) -> torch.Tensor:
    """Zero-pad A to the next power of two (and a multiple of ``multiple``): M becomes diag(M, I)."""
    n = A.shape[-1]
    m = max(multiple, 1 << max(0, math.ceil(math.log2(max(n, 1)))))
    m = math.ceil(m / multiple) * multiple
    if m == n:
        return A
    return torch.nn.functional.pad(A, (0, m - n, 0, m - n))


def _eye_like(A: torch.Tensor) -> torch.Tensor:
    n = A.shape[-1]
    return torch.eye(n, dtype=A.dtype, device=A.device).expand_as(A).clone()


def diag_blocks(X: torch.Tensor, s: int) -> torch.Tensor:
    """The ``n/s`` diagonal ``s×s`` blocks of ``X [..., n, n]`` as ``[..., n/s, s, s]``."""
    n = X.shape[-1]
    m = n // s
    Xb = X.reshape(*X.shape[:-2], m, s, m, s)
    return torch.diagonal(Xb, dim1=-4, dim2=-2).permute(*range(X.dim() - 2), -1, -3, -2)


def block_diag(D: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`diag_blocks`: ``[..., m, s, s]`` -> block-diagonal ``[..., m·s, m·s]``."""
    *batch, m, s, _ = D.shape
    out = D.new_zeros(*batch, m, s, m, s)
    idx = torch.arange(m, device=D.device)
    out[..., idx, :, idx, :] = D.movedim(-3, 0)
    return out.reshape(*batch, m * s, m * s)


def _double(A: torch.Tensor, D: torch.Tensor, precision: str) -> torch.Tensor:
    """Bunch–Hopcroft doubling from the inverted diagonal blocks ``D [..., m, b, b]`` of ``I + A``:

    per pair of neighbouring blocks ``[[M11, 0], [A21, M22]]^{-1} = [[X11, 0], [−X22·A21·X11, X22]]``,
    b → 2b until one block is left. Only products of already-inverted (bounded) blocks: log-stable.
    ``precision`` "P1+P2": the first level's products in P1, the later levels' in P2 (as the kernels' per-level
    merge precision); a level "Pin*Pout" splits its inner A21·X11 and outer X22·(…) product (``product_pair``).
    """
    b = D.shape[-1]
    first, later = merge_levels(precision)
    p = first
    while D.shape[-3] > 1:
        X11, X22 = D[..., 0::2, :, :], D[..., 1::2, :, :]
        A21 = diag_blocks(A, 2 * b)[..., b:, :b]
        p_in, p_out = product_pair(p)
        X21 = -matmul(X22, matmul(A21, X11, p_in), p_out)
        p = later
        top = torch.cat([X11, torch.zeros_like(X11)], dim=-1)
        bottom = torch.cat([X21, X22], dim=-1)
        D = torch.cat([top, bottom], dim=-2)
        b *= 2
    return D[..., 0, :, :]


def _row_substitution(A: torch.Tensor) -> torch.Tensor:
    """``(I+A)^{-1}`` row by row: ``x_i = e_i − Σ_{j<i} a_ij·x_j`` (fp32 CUDA-core FMAs in the kernel)."""
    n = A.shape[-1]
    X = _eye_like(A)
    for i in range(1, n):
        X[..., i, :] = X[..., i, :] - (A[..., i, :i, None] * X[..., :i, :]).sum(-2)
    return X


# ---------------------------------------------------------------------------------------------- methods
def forward_substitution(A: torch.Tensor, block: int = 16, precision: str = "tf32") -> torch.Tensor:
    """Stock SGLang/FLA algorithm: ``b×b`` diagonal blocks by row substitution
    ``x_i = e_i − Σ_{j<i} a_ij x_j`` (b−1 serial steps, elementwise fp32), then 2×2 block merges
    ``Ai21 = −Ai22·A21·Ai11`` up to n with matrix products in ``precision`` (stock: tf32).
    Cost: O(b) serial vector steps + 2·log2(n/b) matmul levels. Stable (backward error O(u))."""
    return hybrid(A, block=block, inner="substitution", precision=precision)


def column_sweep(A: torch.Tensor, precision: str = "ieee") -> torch.Tensor:
    """MCS: ``M = L_1 L_2 ⋯ L_{n−1}`` with ``L_j = I + a_j e_jᵀ`` (a_j = column j of A), hence
    ``M^{-1} = L_{n−1}^{-1} ⋯ L_1^{-1}``, ``L_j^{-1} = I − a_j e_jᵀ``: sweep ``X ← X − a_j ⊗ X[j, :]``.
    n−1 rank-1 updates (sequential). Stable."""
    A, n, dtype = _prepare(A)
    X = _eye_like(A)
    for j in range(n - 1):
        X = X - mul(A[..., :, j, None], X[..., j, None, :], precision)
    return X.to(dtype)


def neumann(A: torch.Tensor, precision: str = "ieee") -> torch.Tensor:
    """MCH: nilpotent Neumann series in product form
    ``M^{-1} = Σ_k (−A)^k = (I − A)(I + A²)(I + A⁴)⋯`` (factors up to A^{2^{k}} with 2^{k+1} ≥ n).
    ~2·log2 n matmuls. UNSTABLE: the powers A^{2^k} grow like binomials (identical unit keys, β=1:
    (A^m)_ij = C(i−j−1, m−1)) while the inverse stays O(1): overflow/cancellation in low precision."""
    A, n, dtype = _prepare(A)
    eye = _eye_like(A)
    X = eye - A
    Y = matmul(A, A, precision)
    p = 2  # Y = A^p
    while p < n:
        X = X + matmul(X, Y, precision)
        Y = matmul(Y, Y, precision)
        p *= 2
    return X.to(dtype)


def blockdoubling(A: torch.Tensor, precision: str = "ieee") -> torch.Tensor:
    """MBH: bottom-up Bunch–Hopcroft doubling from 1×1 blocks. With the inverted diagonal blocks X of size
    b: ``X ← L + R − L·A·R`` (L, R the even/odd b-blocks), i.e. ``X21 = −X22·A21·X11``, b → 2b until n.
    2·log2 n matmul levels. Log-stable (Demmel–Dumitriu–Holtz 2007)."""
    return hybrid(A, block=1, inner="substitution", precision=precision)


def hybrid(A: torch.Tensor, block: int = 16, inner: str = "substitution",
           precision: str = "ieee", inner_precision: str | None = None) -> torch.Tensor:
    """MXR: the ``block×block`` diagonal blocks of ``I + A`` by an ``inner`` method (``substitution``,
    ``column_sweep``, ``neumann``, ``blockdoubling``, ``newton_schulz``), then doubling from ``block`` to n.
    With a small block the unstable inner methods see only short products (bounded growth)."""
    A, n, dtype = _prepare(A)
    Ap = _pad_pow2(A, multiple=block)
    inner_precision = inner_precision or precision
    blocks = diag_blocks(Ap, block)
    if block == 1:
        D = torch.ones_like(blocks)
    elif inner == "substitution":
        D = _row_substitution(blocks)
    else:
        D = INNER_METHODS[inner](blocks, precision=inner_precision).to(Ap.dtype)
    X = _double(Ap, D, precision)
    return X[..., :n, :n].to(dtype)


def newton_schulz(A: torch.Tensor, precision: str = "ieee", steps: int | None = None) -> torch.Tensor:
    """Newton–Schulz ``X ← X(2I − M X) = X + X(I − M X)`` from ``X₀ = I``: the residual ``E = I − M X``
    squares each step, ``E_k = (−A)^{2^k}``, so it is exact after ⌈log2 n⌉ steps (A nilpotent).
    2 matmuls per step. Intermediates grow like Neumann's: unstable in low precision."""
    A, n, dtype = _prepare(A)
    M = _eye_like(A) + A
    X = _eye_like(A)
    steps = max(1, math.ceil(math.log2(max(n, 2)))) if steps is None else steps
    for _ in range(steps):
        X = X + matmul(X, _eye_like(A) - matmul(M, X, precision), precision)
    return X.to(dtype)


def refine(A: torch.Tensor, X: torch.Tensor, precision: str = "ieee", steps: int = 1) -> torch.Tensor:
    """Iterative refinement ``X ← X + X(I − M X)``, ``M = I + A``: squares the residual; composable with any
    method (e.g. ``refine(A, blockdoubling(A, 'tf32'), 'tf32x3')``)."""
    A2, n, _ = _prepare(A)
    out_dtype = X.dtype
    M = _eye_like(A2) + A2
    X = X.to(A2.dtype)
    for _ in range(steps):
        X = X + matmul(X, _eye_like(A2) - matmul(M, X, precision), precision)
    return X.to(out_dtype)


def exact_inverse(A: torch.Tensor) -> torch.Tensor:
    """fp64 reference: ``(I + tril(A, −1))^{-1}`` by a triangular solve in float64."""
    A64 = torch.tril(A.to(torch.float64), -1)
    M = A64 + torch.eye(A.shape[-1], dtype=torch.float64, device=A.device)
    eye = torch.eye(A.shape[-1], dtype=torch.float64, device=A.device).expand_as(M)
    return torch.linalg.solve_triangular(M, eye, upper=False, unitriangular=True)


INNER_METHODS = {
    "column_sweep": column_sweep,
    "neumann": neumann,
    "blockdoubling": blockdoubling,
    "newton_schulz": newton_schulz,
}
