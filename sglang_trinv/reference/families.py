"""The matrices a delta-rule layer inverts, built the way the layer builds them, plus stress families.

Gated DeltaNet (GDN) chunk prefill, per chunk of ``BT`` (64) tokens and value head ``h``::

    A = tril(diag(β) · (K Kᵀ ⊙ Γ), −1),   Γ_ij = exp(g_i − g_j),   M = I + A,   solve M⁻¹

with ``g`` the chunk-local cumulative log-gate (non-increasing, so Γ_ij ≤ 1 below the diagonal) and, for
GQA, key head ``h // (H // Hg)``. KDA (Kimi-Linear) has one gate per key channel:
``A_ij = β_i Σ_c k_ic k_jc exp(g_ic − g_jc)``.

:func:`gdn_A`, :func:`gdn_A_varlen` and :func:`kda_A` are the plain-PyTorch twins of SGLang's fused
``kkt`` kernels (same layouts, same masking of padded tokens: a partial last chunk gets zero rows and
columns, i.e. identity rows in ``M``). The family generators below make batches ``[batch, n, n]`` of such
matrices with controlled keys / β / decay for the stability sweep; they are deterministic given a seed.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Sequence

import torch

from .precision import matmul

BT_DEFAULT = 64


# --------------------------------------------------------------------------------- layer twins (SGLang layout)
def _gate_factor(g_rows: torch.Tensor, g_cols: torch.Tensor) -> torch.Tensor:
    """``Γ_ij = exp(g_i − g_j)`` for i ≥ j (exp of min(d, 0)), 0 above the diagonal (masked there anyway; the
    clamp avoids inf).

    A cumulative log-gate is non-increasing, so d ≤ 0 below the diagonal — up to the rounding of the cumsum
    that produced it: with near-zero gates (e.g. the safe gate's ``lower_bound·sigmoid(…)`` of ~1e-24) a later
    token's sum can come out above an earlier one's by an ulp, and a test of d ≤ 0 would then zero a gate that
    is 1 to working precision (the kernels keep it; whether it happens depends on the summation order of the
    machine's cumsum).
    """
    d = g_rows[..., :, None] - g_cols[..., None, :]
    n_r, n_c = d.shape[-2], d.shape[-1]
    lower = torch.ones(n_r, n_c, dtype=torch.bool, device=d.device).tril()
    return torch.where(lower, torch.exp(torch.clamp(d, max=0.0)), torch.zeros_like(d))


def _pad_time(x: torch.Tensor, T_padded: int) -> torch.Tensor:
    """Zero-pad dim 1 (time) of ``[B, T, ...]`` to ``T_padded`` (padded tokens load as 0 in the kernels)."""
    T = x.shape[1]
    if T == T_padded:
        return x
    pad = x.new_zeros(x.shape[0], T_padded - T, *x.shape[2:])
    return torch.cat([x, pad], dim=1)


def gdn_A(k: torch.Tensor, g: torch.Tensor | None, beta: torch.Tensor, BT: int = BT_DEFAULT,
          precision: str = "ieee", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-chunk GDN matrices ``A = tril(diag(β)·(K Kᵀ ⊙ exp(g_i − g_j)), −1)``.

    Args:
        k: keys ``[B, T, Hg, K]`` (SGLang layout; already L2-normalised in GDN).
        g: chunk-local cumulative log-gate ``[B, T, H]`` (fp32), or ``None`` for no decay.
        beta: ``[B, T, H]``. Value head ``h`` reads key head ``h // (H // Hg)`` (GQA).
        BT: chunk size (64 in SGLang); sequences are cut into ``NT = ceil(T / BT)`` chunks.
        precision: how the ``K Kᵀ`` product rounds its operands (see :func:`precision.matmul`);
            ``ieee`` = exact fp32 products as for bf16 keys or the CPU interpreter.
        dtype: working dtype (fp32 like the kernel; fp64 for a reference).

    Returns:
        ``[B, NT, H, BT, BT]``; rows/columns of tokens past ``T`` in the last chunk are zero.
    """
    B, T, Hg, K = k.shape
    H = beta.shape[-1]
    if beta.shape[:2] != (B, T) or (g is not None and g.shape != beta.shape):
        raise ValueError(f"shape mismatch: k {tuple(k.shape)}, beta {tuple(beta.shape)}, "
                         f"g {None if g is None else tuple(g.shape)} (expected [B, T, H])")
    if H % Hg:
        raise ValueError(f"value heads H={H} must be a multiple of key heads Hg={Hg}")
    NT = max(1, math.ceil(T / BT))
    Tp = NT * BT
    # expand key heads to value heads (GQA): value head h uses key head h // (H // Hg)
    k_h = k.to(dtype).repeat_interleave(H // Hg, dim=2)                       # [B, T, H, K]
    k_c = _pad_time(k_h, Tp).reshape(B, NT, BT, H, K).transpose(2, 3)        # [B, NT, H, BT, K]
    kkt = matmul(k_c, k_c.transpose(-1, -2), precision)                      # [B, NT, H, BT, BT]
    if g is not None:
        g_c = _pad_time(g.to(dtype), Tp).reshape(B, NT, BT, H).transpose(2, 3)  # [B, NT, H, BT]
        kkt = kkt * _gate_factor(g_c, g_c)
    valid = _pad_time(torch.ones(B, T, H, dtype=torch.bool, device=k.device), Tp)
    valid = valid.reshape(B, NT, BT, H).transpose(2, 3)                       # [B, NT, H, BT]
    mask = torch.tril(torch.ones(BT, BT, dtype=torch.bool, device=k.device), -1)
    mask = mask & valid[..., :, None] & valid[..., None, :]
    b_c = _pad_time(beta.to(dtype), Tp).reshape(B, NT, BT, H).transpose(2, 3)
    return torch.where(mask, kkt, torch.zeros_like(kkt)) * b_c[..., :, None]


def chunk_spans(cu_seqlens: torch.Tensor | Sequence[int], BT: int = BT_DEFAULT) -> list[tuple[int, int, int]]:
    """The chunks of a varlen batch in kernel order, as ``(sequence, start token, end token)``.

    Each sequence is chunked independently from its own start (same order as SGLang's
    ``prepare_chunk_indices``: sequence-major, chunk index inside the sequence minor).
    """
    cu = [int(x) for x in (cu_seqlens.tolist() if torch.is_tensor(cu_seqlens) else cu_seqlens)]
    spans = []
    for s, (bos, eos) in enumerate(zip(cu[:-1], cu[1:])):
        for start in range(bos, eos, BT):
            spans.append((s, start, min(start + BT, eos)))
    return spans


def gdn_A_varlen(k: torch.Tensor, g: torch.Tensor | None, beta: torch.Tensor,
                 cu_seqlens: torch.Tensor | Sequence[int], BT: int = BT_DEFAULT,
                 precision: str = "ieee", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Varlen (``B = 1``, packed sequences delimited by ``cu_seqlens``) twin of :func:`gdn_A`.

    Returns ``[NT_total, H, BT, BT]``, one matrix per chunk in :func:`chunk_spans` order; a chunk never
    crosses a sequence boundary and a sequence's partial last chunk is zero-padded.
    """
    if k.shape[0] != 1:
        raise ValueError(f"varlen expects B = 1 (packed sequences), got k of shape {tuple(k.shape)}")
    out = []
    for _, start, end in chunk_spans(cu_seqlens, BT):
        sl = slice(start, end)
        out.append(gdn_A(k[:, sl], None if g is None else g[:, sl], beta[:, sl], BT, precision, dtype)[0, 0])
    H = beta.shape[-1]
    if not out:
        return torch.zeros(0, H, BT, BT, dtype=dtype, device=k.device)
    return torch.stack(out)


def kda_A(k: torch.Tensor, gk: torch.Tensor | None, beta: torch.Tensor, BT: int = BT_DEFAULT,
          base2: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-chunk KDA matrices ``A_ij = β_i Σ_c k_ic k_jc exp(g_ic − g_jc)`` (i > j), ``[B, NT, H, BT, BT]``.

    ``k`` and ``gk`` are ``[B, T, H, K]`` (no GQA in KDA), ``gk`` the chunk-local cumulative per-channel
    log-gate (natural log, or log2 with ``base2=True`` as SGLang's KDA kernels take it).
    Evaluated directly as ``Σ_c k_ic k_jc Γ_ijc`` with ``Γ = safe_exp(g_i − g_j)`` (one chunk index at a time
    to bound memory): no rescaling tricks, so it stays exact for any gate strength.
    """
    B, T, H, K = k.shape
    NT = max(1, math.ceil(T / BT))
    Tp = NT * BT
    k_c = _pad_time(k.to(dtype), Tp).reshape(B, NT, BT, H, K).transpose(2, 3)   # [B, NT, H, BT, K]
    if gk is None:
        kkt = k_c @ k_c.transpose(-1, -2)
    else:
        g_c = _pad_time(gk.to(dtype), Tp).reshape(B, NT, BT, H, K).transpose(2, 3)
        if base2:
            g_c = g_c * math.log(2.0)
        kkt = torch.empty(B, NT, H, BT, BT, dtype=dtype, device=k.device)
        for c in range(NT):
            gate = _gate_factor(g_c[:, c].transpose(-1, -2), g_c[:, c].transpose(-1, -2))  # [B, H, K, BT, BT]
            kkt[:, c] = torch.einsum("bhic,bhjc,bhcij->bhij", k_c[:, c], k_c[:, c], gate)
    valid = _pad_time(torch.ones(B, T, H, dtype=torch.bool, device=k.device), Tp)
    valid = valid.reshape(B, NT, BT, H).transpose(2, 3)
    mask = torch.tril(torch.ones(BT, BT, dtype=torch.bool, device=k.device), -1)
    mask = mask & valid[..., :, None] & valid[..., None, :]
    b_c = _pad_time(beta.to(dtype), Tp).reshape(B, NT, BT, H).transpose(2, 3)
    return torch.where(mask, kkt, torch.zeros_like(kkt)) * b_c[..., :, None]


def to_token_layout(A_chunks: torch.Tensor, T: int) -> torch.Tensor:
    """``[B, NT, H, BT, BT]`` -> SGLang's ``[B, T, H, BT]`` (row ``t`` of its chunk, padding rows dropped)."""
    B, NT, H, BT, _ = A_chunks.shape
    return A_chunks.permute(0, 1, 3, 2, 4).reshape(B, NT * BT, H, BT)[:, :T]


def varlen_to_token_layout(A_chunks: torch.Tensor, cu_seqlens: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """``[NT_total, H, BT, BT]`` from :func:`gdn_A_varlen` -> SGLang's packed ``[1, T, H, BT]``."""
    NT, H, BT, _ = A_chunks.shape
    spans = chunk_spans(cu_seqlens, BT)
    T = spans[-1][2] if spans else 0
    out = A_chunks.new_zeros(1, T, H, BT)
    for c, (_, start, end) in enumerate(spans):
        out[0, start:end] = A_chunks[c, :, : end - start, :].transpose(0, 1)
    return out


# --------------------------------------------------------------------------------------- family generators
@dataclass
class FamilyBatch:
    """A batch of matrices of one family: ``A [batch, n, n]`` (strictly lower, fp32) and what made it.

    ``k [batch, valid, d]``, ``g``/``beta [batch, valid]`` are ``None`` for synthetic families;
    ``valid`` < n means the last ``n − valid`` rows/columns are padding (identity rows of ``M``).
    """
    A: torch.Tensor
    k: torch.Tensor | None = None
    g: torch.Tensor | None = None
    beta: torch.Tensor | None = None
    valid: int | None = None


def family_seed(seed: int, name: str, n: int) -> int:
    """A stable per-(family, n) seed (``zlib.crc32``: Python's ``hash`` is salted per process)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode()) + 7919 * n) % (2**63 - 1)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def make_keys(kind: str, batch: int, n: int, d: int, gen: torch.Generator, *, cos: float = 0.99,
              rank: int = 4) -> torch.Tensor:
    """Unit keys ``[batch, n, d]`` (fp64).

    - ``random``: i.i.d. directions (off-diagonal ``k_i·k_j ~ N(0, 1/d)``: a near-diagonal, easy ``M``).
    - ``identical``: one direction per matrix (``K Kᵀ = 1``): with β = 1 the powers of A are binomials.
    - ``correlated``: ``√c·u + √(1−c)·z_i`` normalised, so ``k_i·k_j ≈ c`` (default 0.99).
    - ``low_rank``: rows of ``C W`` with ``C [n, r]``, ``W [r, d]`` Gaussian: keys spanning ``r`` dims.
    """
    normal = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    if kind == "random":
        return _unit_rows(normal(batch, n, d))
    if kind == "identical":
        return _unit_rows(normal(batch, 1, d)).expand(batch, n, d).clone()
    if kind == "correlated":
        u = _unit_rows(normal(batch, 1, d))
        z = _unit_rows(normal(batch, n, d))
        return _unit_rows(math.sqrt(cos) * u + math.sqrt(1.0 - cos) * z)
    if kind == "low_rank":
        return _unit_rows(normal(batch, n, rank) @ normal(batch, rank, d))
    raise ValueError(f"unknown key kind {kind!r}; choose from random, identical, correlated, low_rank")


def _uniform(lo: float, hi: float, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=torch.float64)


def make_beta(spec: float | Sequence[float], batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """β ``[batch, n]``: a constant, or ``[lo, hi]`` uniform (``[0, 1]`` = sigmoid range, ``(1, 2]`` =
    negative-eigenvalue DeltaNet's ``2·sigmoid``; uniform draws are half-open ``[lo, hi)``)."""
    if isinstance(spec, (int, float)):
        return torch.full((batch, n), float(spec), dtype=torch.float64)
    lo, hi = spec
    return _uniform(float(lo), float(hi), (batch, n), gen)


def make_log_gate(spec: Sequence[float] | None, batch: int, n: int, gen: torch.Generator) -> torch.Tensor | None:
    """Chunk-local cumulative log-gate ``g [batch, n]`` = cumsum of per-token ``log α_t = −U[lo, hi]``
    (``None`` = no decay). E.g. ``[0, 0.05]`` (mild: α ≥ 0.95) keeps ``e^{g_i − g_j}`` ≳ 0.2 over 64 tokens;
    ``[0.5, 1.0]`` (strong) makes A banded."""
    if spec is None:
        return None
    lo, hi = spec
    return torch.cumsum(-_uniform(float(lo), float(hi), (batch, n), gen), dim=-1)


def delta_rule_family(n: int, batch: int, *, seed: int = 0, name: str = "delta_rule", keys: str = "random",
                      head_dim: int = 128, cos: float = 0.99, rank: int = 4,
                      beta: float | Sequence[float] = (0.0, 1.0), decay: Sequence[float] | None = (0.0, 0.05),
                      valid_fraction: float = 1.0) -> FamilyBatch:
    """Delta-rule matrices via :func:`gdn_A` (one chunk of size n, one head): keys of kind ``keys``,
    β from ``beta``, log-gate from ``decay``; ``valid_fraction < 1`` keeps only the first
    ``round(valid_fraction·n)`` tokens (a partial last chunk padded to n). Built in fp64, returned as fp32
    (the fp32 matrix is the exact input every method and the fp64 reference invert)."""
    gen = torch.Generator().manual_seed(family_seed(seed, name, n))
    valid = max(1, min(n, round(valid_fraction * n)))
    k = make_keys(keys, batch, valid, head_dim, gen, cos=cos, rank=rank)
    b = make_beta(beta, batch, valid, gen)
    g = make_log_gate(decay, batch, valid, gen)
    A = gdn_A(k[:, :, None, :], None if g is None else g[..., None], b[..., None], BT=n,
              dtype=torch.float64)[:, 0, 0]
    return FamilyBatch(A=A.to(torch.float32), k=k.to(torch.float32), beta=b.to(torch.float32),
                       g=None if g is None else g.to(torch.float32), valid=valid)


def uniform_family(n: int, batch: int, *, seed: int = 0, name: str = "uniform", low: float = 0.0,
                   high: float = 0.5) -> FamilyBatch:
    """The paper's synthetic test: strictly lower entries i.i.d. ``U[low, high)``. All-positive entries make
    the powers ``A^m`` grow fast (no cancellation), while ``M⁻¹`` of these stays moderate."""
    gen = torch.Generator().manual_seed(family_seed(seed, name, n))
    A = torch.tril(_uniform(low, high, (batch, n, n), gen), -1)
    return FamilyBatch(A=A.to(torch.float32), valid=n)


GENERATORS = {"delta_rule": delta_rule_family, "uniform": uniform_family}


def make_family(name: str, n: int, batch: int, seed: int = 0, spec: dict | None = None) -> FamilyBatch:
    """Build family ``name`` as defined in ``configs/families.yaml`` (or by an explicit ``spec`` dict with
    ``generator`` and ``params``)."""
    if spec is None:
        spec = family_specs()[name]
    generator = spec.get("generator", "delta_rule")
    if generator not in GENERATORS:
        raise ValueError(f"family {name!r}: unknown generator {generator!r}; choose from {', '.join(GENERATORS)}")
    params = dict(spec.get("params") or {})
    for key in ("beta", "decay"):  # YAML lists -> tuples
        if isinstance(params.get(key), list):
            params[key] = tuple(params[key])
    return GENERATORS[generator](n, batch, seed=seed, name=name, **params)


def family_specs() -> dict[str, dict]:
    """The family definitions of ``configs/families.yaml`` (name -> {generator, params, description})."""
    from ..presets import load_config

    return load_config("families")["families"]
