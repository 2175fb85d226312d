"""PyTorch twin of the fused KDA intra-chunk kernel (:func:`sglang_trinv.ops.kda_fwd_intra`) and of SGLang's
``chunk_kda_fwd_intra``.

Layouts as SGLang: q, k, gk ``[B, T, H, K]`` (``gk`` the chunk-local cumulative per-channel **log2** gate, as
``chunk_kda_fwd`` passes it), v ``[B, T, H, V]``, β ``[B, T, H]``; varlen: B = 1 and ``cu_seqlens``. Each
sequence is cut into chunks of BT tokens. The gated KKᵀ is :func:`families.kda_A` (one sequence at a time);
outputs use the kernel's row layout ``[B, T, H, BT]`` (row t of its chunk, column c of that chunk).
:func:`recurrent_fwd` is the token-by-token definition of SGLang's whole ``chunk_kda_fwd`` (test reference for the
whole forward); :func:`chunk_fwd` the same per chunk (the benchmarks' reference: fast on a GPU).
"""

from __future__ import annotations

import math

import torch

from .families import _gate_factor, kda_A, to_token_layout
from .gdn import _sequences, chunk_apply, chunk_matmul, delta_rule_chunks, delta_rule_tokens
from .inverse import exact_inverse


def chunk_A(k, gk, beta, cu_seqlens=None, BT: int = 64, dtype=torch.float64):
    """``A = tril(diag(β)·Σ_c k_c k_cᵀ ⊙ 2^{g_ic − g_jc}, −1)`` per chunk, ``[B, T, H, BT]`` in ``dtype``."""
    B, T, H, K = k.shape
    out = torch.zeros(B, T, H, BT, dtype=dtype, device=k.device)
    for b, s, e in _sequences(T, B, cu_seqlens):
        if e > s:
            A = kda_A(k[b:b + 1, s:e], gk[b:b + 1, s:e], beta[b:b + 1, s:e], BT=BT, base2=True, dtype=dtype)
            out[b:b + 1, s:e] = to_token_layout(A, e - s)
    return out


def chunk_Aqk(q, k, gk, scale, cu_seqlens=None, BT: int = 64, dtype=torch.float64):
    """SGLang's ``Aqk = scale·tril(Σ_c q_c k_cᵀ ⊙ 2^{g_ic − g_jc})`` (diagonal included), ``[B, T, H, BT]``."""
    B, T, H, K = k.shape
    out = torch.zeros(B, T, H, BT, dtype=dtype, device=k.device)
    ln2 = math.log(2.0)
    for b, s, e in _sequences(T, B, cu_seqlens):
        for c0 in range(s, e, BT):
            c1 = min(c0 + BT, e)
            qc, kc = (x[b, c0:c1].to(dtype).transpose(0, 1) for x in (q, k))  # [H, n, K]
            gc = gk[b, c0:c1].to(dtype).transpose(0, 1).transpose(-1, -2) * ln2  # [H, K, n]
            gate = _gate_factor(gc, gc)  # [H, K, n, n]: exp(g_i − g_j) for i ≥ j
            A = torch.einsum("hic,hjc,hcij->hij", qc, kc, gate).tril() * scale
            out[b, c0:c1, :, : c1 - c0] = A.transpose(0, 1)
    return out


def kg_of(k, gk, cu_seqlens=None, BT: int = 64, dtype=torch.float64):
    """``kg = k ⊙ 2^{g_last − g}`` with ``g_last`` the gate at the last token of the chunk."""
    B, T, H, K = k.shape
    out = torch.zeros(B, T, H, K, dtype=dtype, device=k.device)
    for b, s, e in _sequences(T, B, cu_seqlens):
        for c0 in range(s, e, BT):
            c1 = min(c0 + BT, e)
            g = gk[b, c0:c1].to(dtype)
            out[b, c0:c1] = k[b, c0:c1].to(dtype) * torch.exp2(g[-1:] - g)
    return out


def fwd_intra(q, k, v, gk, beta, scale=None, cu_seqlens=None, BT: int = 64, dtype=torch.float64, invert=exact_inverse):
    """Twin of ``chunk_kda_fwd_intra``: ``(w, u, kg, Aqk, Akk)`` in ``dtype`` with ``Akk = (I + A)^{-1}``,
    ``u = Akk·(β⊙v)``, ``w = Akk·(β ⊙ k ⊙ 2^{g})``, ``kg = k ⊙ 2^{g_last − g}``."""
    if scale is None:
        scale = k.shape[-1] ** -0.5
    Akk = chunk_apply(chunk_A(k, gk, beta, cu_seqlens, BT, dtype), invert, cu_seqlens)
    b = beta.to(dtype)[..., None]
    u = chunk_matmul(Akk, v.to(dtype) * b, cu_seqlens)
    w = chunk_matmul(Akk, k.to(dtype) * b * torch.exp2(gk.to(dtype)), cu_seqlens)
    return w, u, kg_of(k, gk, cu_seqlens, BT, dtype), chunk_Aqk(q, k, gk, scale, cu_seqlens, BT, dtype), Akk


def recurrent_fwd(q, k, v, g, beta, scale, initial_state, cu_seqlens=None, dtype=torch.float64):
    """Token-by-token KDA (per-channel gated delta rule), the definition SGLang's whole ``chunk_kda_fwd`` must
    reproduce. Its layouts: q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, ``g`` the activated per-channel
    **natural-log** gate before the chunk cumsum (what ``chunk_kda_fwd`` takes without ``A_log``), β ``[B, T, H]``,
    states ``[N, H, V, K]``. Per head, with S ``[V, K]``:

        S ← S·diag(e^{g_t});   S ← S + β_t (v_t − S k_t) k_tᵀ;   o_t = scale · S q_t

    Returns ``(o [B, T, H, V], final states [N, H, V, K])`` in ``dtype``."""
    return delta_rule_tokens(q, k, v, g, beta, scale, initial_state, cu_seqlens, dtype)


def chunk_fwd(q, k, v, g, beta, scale, initial_state, cu_seqlens=None, BT: int = 64, dtype=torch.float64):
    """The same as :func:`recurrent_fwd` one chunk at a time (:func:`gdn.delta_rule_chunks`, the exact inverse): per
    chunk one state update instead of one per token, so the benchmarks can take the fp64 reference at T=8192 H=32
    on a GPU (the token recurrence moves the whole fp64 state ~5 times per token there)."""
    return delta_rule_chunks(q, k, v, g, beta, scale, initial_state, cu_seqlens, BT, dtype)
