"""PyTorch twin of the fused GDN intra-chunk kernel (:func:`sglang_trinv.ops.gdn_fwd_intra`).

Layouts as SGLang: k ``[B, T, Hg, K]``, v ``[B, T, H, V]``, g (chunk-local cumulative log-gate, fp32) and
β ``[B, T, H]``; value head h reads key head ``h // (H / Hg)``; varlen: B = 1 and ``cu_seqlens``. Each
sequence is cut into chunks of BT tokens (the last one partial). Outputs use the kernel's row layout:
``Ai[b, t, h, c]`` is row ``t`` of its chunk's inverse, column ``c`` of that chunk.
"""

from __future__ import annotations

from typing import Callable

import torch

from .inverse import exact_inverse


def _sequences(T: int, B: int, cu_seqlens: torch.Tensor | None):
    """(batch index, start, end) of every sequence."""
    if cu_seqlens is None:
        return [(b, 0, T) for b in range(B)]
    cu = cu_seqlens.tolist()
    return [(0, cu[i], cu[i + 1]) for i in range(len(cu) - 1)]


def chunk_A(k, g, beta, cu_seqlens=None, BT: int = 64, dtype=torch.float64):
    """``A = tril(diag(β)·(K Kᵀ ⊙ exp(gᵢ − gⱼ)), −1)`` per chunk, as ``[B, T, H, BT]`` in ``dtype``.

    Computed in ``dtype`` from the (possibly bf16) inputs, so ``dtype=float64`` gives the exact matrix the
    kernel should invert."""
    B, T, Hg, K = k.shape
    H = beta.shape[-1]
    out = torch.zeros(B, T, H, BT, dtype=dtype, device=k.device)
    kk = k.to(dtype).repeat_interleave(H // Hg, dim=2)  # [B, T, H, K]
    for b, s, e in _sequences(T, B, cu_seqlens):
        for c0 in range(s, e, BT):
            c1 = min(c0 + BT, e)
            kc = kk[b, c0:c1].transpose(0, 1)  # [H, n, K]
            A = kc @ kc.transpose(-1, -2) * beta[b, c0:c1].to(dtype).T[:, :, None]
            if g is not None:
                gc = g[b, c0:c1].to(dtype).T  # [H, n]
                A = A * torch.exp(gc[:, :, None] - gc[:, None, :]).tril()
            A = torch.tril(A, -1)
            out[b, c0:c1, :, : c1 - c0] = A.transpose(0, 1)
    return out


def chunk_apply(A: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], cu_seqlens=None) -> torch.Tensor:
    """Apply ``fn`` ([..., n, n] -> [..., n, n]) to every chunk matrix of a ``[B, T, H, BT]`` chunk tensor."""
    B, T, H, BT = A.shape
    out = torch.zeros_like(A)
    for b, s, e in _sequences(T, B, cu_seqlens):
        for c0 in range(s, e, BT):
            c1 = min(c0 + BT, e)
            n = c1 - c0
            M = A[b, c0:c1, :, :n].transpose(0, 1)  # [H, n, n]
            out[b, c0:c1, :, :n] = fn(M).transpose(0, 1).to(out.dtype)
    return out


def chunk_inverse(k, g, beta, cu_seqlens=None, BT: int = 64, invert=exact_inverse, dtype=torch.float64):
    """``(I + A)^{-1}`` per chunk (fp64 triangular solve by default), ``[B, T, H, BT]``."""
    return chunk_apply(chunk_A(k, g, beta, cu_seqlens, BT, dtype), invert, cu_seqlens)


def chunk_matmul(Ai: torch.Tensor, x: torch.Tensor, cu_seqlens=None) -> torch.Tensor:
    """``Ai · x`` chunk by chunk: Ai ``[B, T, H, BT]``, x ``[B, T, H, D]`` -> ``[B, T, H, D]``."""
    B, T, H, BT = Ai.shape
    out = torch.zeros(*x.shape, dtype=Ai.dtype, device=x.device)
    for b, s, e in _sequences(T, B, cu_seqlens):
        for c0 in range(s, e, BT):
            c1 = min(c0 + BT, e)
            n = c1 - c0
            M = Ai[b, c0:c1, :, :n].transpose(0, 1)  # [H, n, n]
            out[b, c0:c1] = (M @ x[b, c0:c1].to(Ai.dtype).transpose(0, 1)).transpose(0, 1)
    return out


def fwd_intra(k, v, g, beta, cu_seqlens=None, BT: int = 64, dtype=torch.float64):
    """Twin of ``chunk_gated_delta_rule_fwd_intra``: ``(w, u, Ai)`` with ``u = Ai·(β⊙v)``,
    ``w = Ai·(β e^{g} ⊙ k)`` (GQA-expanded k), all in ``dtype``."""
    H = beta.shape[-1]
    Hg = k.shape[-2]
    Ai = chunk_inverse(k, g, beta, cu_seqlens, BT, dtype=dtype)
    b = beta.to(dtype)[..., None]
    u = chunk_matmul(Ai, v.to(dtype) * b, cu_seqlens)
    scale = b * (torch.exp(g.to(dtype))[..., None] if g is not None else 1.0)
    w = chunk_matmul(Ai, k.to(dtype).repeat_interleave(H // Hg, dim=2) * scale, cu_seqlens)
    return w, u, Ai


# ------------------------------------------------------------------------------------------ whole forward
def _gdn_inputs(q, k, v, g, beta, dtype):
    """GQA-expanded fp64 (``dtype``) copies: q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, g, β ``[B, T, H]``."""
    H, Hg = v.shape[-2], k.shape[-2]
    rep = H // Hg
    return (q.to(dtype).repeat_interleave(rep, dim=2), k.to(dtype).repeat_interleave(rep, dim=2), v.to(dtype),
            g.to(dtype), beta.to(dtype))


def recurrent_fwd(q, k, v, g, beta, scale, initial_state, cu_seqlens=None, dtype=torch.float64):
    """Token-by-token gated delta rule, the definition the chunked forms must reproduce.

    SGLang's layouts: q, k ``[B, T, Hg, K]``, v ``[B, T, H, V]``, ``g`` the raw per-token log-gate (not yet
    cumulated) and β ``[B, T, H]``, states ``[N, H, V, K]`` (one per sequence). Per head, with S ``[V, K]``:

        S ← e^{g_t}·S;   S ← S + β_t (v_t − S k_t) k_tᵀ;   o_t = scale · S q_t

    Returns ``(o [B, T, H, V], final states [N, H, V, K])`` in ``dtype``."""
    q, k, v, g, beta = _gdn_inputs(q, k, v, g, beta, dtype)
    return delta_rule_tokens(q, k, v, g[..., None].expand(k.shape), beta, scale, initial_state, cu_seqlens, dtype)


def delta_rule_tokens(q, k, v, gk, beta, scale, initial_state, cu_seqlens=None, dtype=torch.float64):
    """The delta-rule recurrence with a per-channel log-gate ``gk [B, T, H, K]`` (GDN: one value per head
    broadcast over K; KDA: one per channel), q, k ``[B, T, H, K]`` (GQA already expanded), v ``[B, T, H, V]``,
    β ``[B, T, H]``, states ``[N, H, V, K]``. Per head, with S ``[V, K]``:

        S ← S·diag(e^{gk_t});   S ← S + β_t (v_t − S k_t) k_tᵀ;   o_t = scale · S q_t"""
    q, k, v, gk, beta = (x.to(dtype) for x in (q, k, v, gk, beta))
    o = torch.zeros_like(v)
    states = initial_state.to(dtype).clone()
    for n, (b, s, e) in enumerate(_sequences(v.shape[1], v.shape[0], cu_seqlens)):
        S = states[n]  # [H, V, K]
        for t in range(s, e):
            S = S * torch.exp(gk[b, t])[:, None, :]
            err = v[b, t] - (S @ k[b, t][:, :, None])[..., 0]  # [H, V]
            S = S + beta[b, t][:, None, None] * err[:, :, None] * k[b, t][:, None, :]
            o[b, t] = scale * (S @ q[b, t][:, :, None])[..., 0]
        states[n] = S
    return o, states


def chunk_fwd(q, k, v, g, beta, scale, initial_state, cu_seqlens=None, BT: int = 64, dtype=torch.float64):
    """Twin of SGLang's whole ``chunk_gated_delta_rule_fwd`` (cumsum → intra → state recurrence → output), in
    ``dtype`` with the exact ``(I + A)^{-1}``: same inputs/returns as :func:`recurrent_fwd`, one chunk at a time
    (:func:`delta_rule_chunks` with one gate per head; fast enough for benchmark shapes on a GPU)."""
    q, k, v, g, beta = _gdn_inputs(q, k, v, g, beta, dtype)
    return delta_rule_chunks(q, k, v, g[..., None], beta, scale, initial_state, cu_seqlens, BT, dtype)


def _gated_gram(a, b, decay):
    """Σ_c a_ic b_jc Γ_ijc per head; a head-wide gate (Γ's channel dimension 1) factors out of the channel sum."""
    if decay.shape[-1] == 1:
        return (a @ b.transpose(-1, -2)) * decay[..., 0]
    return torch.einsum("hic,hjc,hijc->hij", a, b, decay)


def delta_rule_chunks(q, k, v, gk, beta, scale, initial_state, cu_seqlens=None, BT: int = 64,
                      dtype=torch.float64):
    """:func:`delta_rule_tokens` (log-gate ``gk [B, T, H, K]`` per channel, or ``[B, T, H, 1]`` one per head as GDN
    has it; not cumulated; same layouts) one chunk at a time, SGLang's chunked algorithm with the exact
    ``(I + A)^{-1}``. Per chunk, gᶜ the chunk-local cumsum ``[n, K]`` (or ``[n, 1]``), S ``[V, K]``,
    Γ_ijc = e^{gᶜ_ic − gᶜ_jc} for j ≤ i (every exponent ≤ 0: no overflow for any gate):

        A_ij = β_i Σ_c k_ic k_jc Γ_ijc (j < i),   u = Ai(β⊙v),   w = Ai(β⊙k⊙e^{gᶜ}),   v' = u − w Sᵀ,
        o_i = scale·((q_i⊙e^{gᶜ_i}) Sᵀ + Σ_{j≤i} (Σ_c q_ic k_jc Γ_ijc) v'_j),
        S ← S·diag(e^{gᶜ_last}) + v'ᵀ (k ⊙ e^{gᶜ_last − gᶜ})"""
    q, k, v, gk, beta = (x.to(dtype) for x in (q, k, v, gk, beta))
    o = torch.zeros_like(v)
    states = initial_state.to(dtype).clone()
    for n, (b, s, e) in enumerate(_sequences(v.shape[1], v.shape[0], cu_seqlens)):
        S = states[n]  # [H, V, K]
        for c0 in range(s, e, BT):
            c1 = min(c0 + BT, e)
            qc, kc, vc, gc = (x[b, c0:c1].transpose(0, 1) for x in (q, k, v, gk))  # [H, n, D]
            gc = gc.cumsum(1)
            bc = beta[b, c0:c1].T  # [H, n]
            causal = torch.ones(c1 - c0, c1 - c0, dtype=torch.bool, device=v.device).tril()[None, :, :, None]
            decay = torch.exp(torch.where(causal, gc[:, :, None, :] - gc[:, None, :, :], float("-inf")))  # Γ
            A = torch.tril(_gated_gram(kc, kc, decay) * bc[:, :, None], -1)
            Ai = exact_inverse(A)
            u = Ai @ (vc * bc[..., None])
            w = Ai @ (kc * bc[..., None] * torch.exp(gc))
            v_new = u - w @ S.transpose(-1, -2)
            o[b, c0:c1] = (scale * ((qc * torch.exp(gc)) @ S.transpose(-1, -2)
                                    + _gated_gram(qc, kc, decay) @ v_new)).transpose(0, 1)
            g_last = gc[:, -1:]  # [H, 1, K] (or [H, 1, 1])
            S = S * torch.exp(g_last) + v_new.transpose(-1, -2) @ (kc * torch.exp(g_last - gc))
        states[n] = S
    return o, states


def _bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).to(x.dtype)


def chunk_fwd_rounded(q, k, v, g, beta, scale, initial_state, invert, wu: str = "ours", BT: int = 64):
    """The whole forward with the GPU pipeline's roundings (one sequence, fp32 arithmetic), to predict on a CPU
    how an inversion scheme's error reaches the output o: ``invert`` maps each chunk's fp32 ``[H, n, n]`` A to its
    inverse (a twin with the kernel's operand rounding, e.g. ``ops.kernel_twin``). Roundings as the kernels
    round: w/u in bf16 from bf16 operands — ``wu="ours"``: β (β e^g) folded into the bf16 Ai panels times the bf16
    k / v tiles; ``"stock"``: SGLang's recompute_w_u, bf16 A times bf16(β e^g k) / bf16(β v) —; the state
    recurrence as SGLang's fwd_h (fp32 state, its bf16 copy in v' = u − w·Sᵀ and in the output, v' rounded to
    bf16 before the state update); the output as fwd_o (bf16 gated q·kᵀ block, bf16 o). Returns o ``[1, T, H, V]``
    (fp32). Inputs as :func:`chunk_fwd` (g the raw log-gate)."""
    if wu not in ("ours", "stock"):
        raise ValueError(f"wu={wu!r}: 'ours' or 'stock'")
    q, k, v, g, beta = _gdn_inputs(q, k, v, g, beta, torch.float32)
    T = v.shape[1]
    o = torch.zeros_like(v)
    S = initial_state[0].float().clone()  # [H, V, K]
    for c0 in range(0, T, BT):
        c1 = min(c0 + BT, T)
        qc, kc, vc = (x[0, c0:c1].transpose(0, 1) for x in (q, k, v))  # [H, n, D]
        gc = g[0, c0:c1].T.cumsum(-1)
        bc = beta[0, c0:c1].T
        causal = torch.ones(c1 - c0, c1 - c0, dtype=torch.bool, device=v.device).tril()
        decay = torch.exp(torch.where(causal, gc[:, :, None] - gc[:, None, :], float("-inf")))
        Ai = invert(torch.tril(kc @ kc.transpose(-1, -2) * decay * bc[:, :, None], -1))
        eg = bc * torch.exp(gc)
        if wu == "stock":
            w = _bf16(_bf16(Ai) @ _bf16(kc * eg[..., None]))
            u = _bf16(_bf16(Ai) @ _bf16(vc * bc[..., None]))
        else:
            w = _bf16(_bf16(Ai * eg[:, None, :]) @ kc)
            u = _bf16(_bf16(Ai * bc[:, None, :]) @ vc)
        Sb = _bf16(S)
        v_new = _bf16(u - w @ Sb.transpose(-1, -2))
        qk = _bf16(qc @ kc.transpose(-1, -2) * decay)
        o[0, c0:c1] = _bf16(scale * ((qc @ Sb.transpose(-1, -2)) * torch.exp(gc)[..., None] + qk @ v_new)
                            ).transpose(0, 1)
        g_last = gc[:, -1:]
        S = S * torch.exp(g_last)[..., None] + v_new.transpose(-1, -2) @ _bf16(kc * torch.exp(g_last - gc)[..., None])
    return o
