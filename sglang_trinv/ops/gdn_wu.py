"""w/u from a stored inverse, as a persistent kernel that can trail the inversion kernel chunk by chunk.

    u = Ai · (β ⊙ V),   w = Ai · (β·e^{g} ⊙ K)        per 64-token chunk and value head, Ai = (I + A)^{-1}

(SGLang's ``recompute_w_u_fwd`` computes the same with the same operand roundings: Ai, β⊙v and β e^g⊙k in the
input dtype, fp32 accumulation.)

Why a second kernel: the fused intra kernel runs 1-warp programs of 255 registers (8 warps per SM), too few to
keep the w/u memory stream busy, and two ordinary kernels on two streams do not share SMs (the block scheduler
fills every SM with the first one: measured, bench/bench_overlap.py). Here the w/u kernel is *persistent*
(``programs`` blocks, a few per SM, launched first on a side stream) and waits on a per-tile flag that the
inversion kernel (``gdn_intra_kernel`` with ``SIGNAL``) releases after storing the tile's Ai; the inversion
kernel's programs fill the SM space that is left. The latency-bound inversion and the bandwidth-bound w/u
stream then run on the same SMs at the same time, and Ai is read back while still in L2.
The tile order (chunk fastest, then batch·head) is the order in which the inversion kernel's grid is
dispatched, so the w/u programs wait on tiles that are being produced, not on the last ones.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .gdn_intra import _chunk_bounds


@triton.jit(do_not_specialize=["T", "NT", "n_tiles"])
def gdn_wu_kernel(
    k, v, beta, g, Ai, w, u, flags, cu_seqlens, chunk_indices,
    T, NT, n_tiles,
    H: tl.constexpr, Hg: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, IS_VARLEN: tl.constexpr,
    WAIT: tl.constexpr,   # wait for flags[tile] != 0 (set by the inversion kernel after Ai is stored)
    SPIN_LIMIT: tl.constexpr = 1 << 22,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    o_r = tl.arange(0, BT)
    for tile in range(pid, n_tiles, nprog):
        i_tp = tile % NT          # the inversion kernel's program_id(0) (chunk, or varlen chunk-list index)
        i_bh = tile // NT
        i_b, i_h = i_bh // H, i_bh % H
        i_t, bos, Tn = _chunk_bounds(i_tp, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN)
        t0 = i_t * BT
        if t0 < Tn:               # the inversion kernel skips (and never flags) the same empty tiles
            if WAIT:
                # bounded spin (~seconds): if the inversion kernel never ran, give up rather than hang the GPU,
                # and leave −1 in the flag (gdn_fwd_intra_split(check=True) raises on it)
                f = tl.atomic_add(flags + tile, 0, sem="acquire")
                n = 0
                while (f == 0) & (n < SPIN_LIMIT):
                    f = tl.atomic_add(flags + tile, 0, sem="acquire")
                    n += 1
                if f == 0:
                    tl.atomic_xchg(flags + tile, -1)
            o_t = t0 + o_r
            m_t = o_t < Tn
            b_beta = tl.load(beta + (bos + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
            if USE_G:
                b_e = b_beta * tl.exp(tl.load(g + (bos + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32))
            else:
                b_e = b_beta
            # Ai [BT, BT] (bypass L1: written by another SM moments ago)
            p_a = Ai + ((bos + o_t) * H + i_h)[:, None] * BT + o_r[None, :]
            b_a = tl.load(p_a, mask=m_t[:, None], other=0.0, cache_modifier=".cg")
            for i_v in range(tl.cdiv(V, BV)):
                o_c = i_v * BV + tl.arange(0, BV)
                m = m_t[:, None] & (o_c < V)[None, :]
                rows = ((bos + o_t) * H + i_h)[:, None] * V + o_c[None, :]
                b_v = tl.load(v + rows, mask=m, other=0.0)
                b_vb = (b_v * b_beta[:, None]).to(b_v.dtype)
                tl.store(u + rows, tl.dot(b_a, b_vb).to(u.dtype.element_ty), mask=m)
            for i_k in range(tl.cdiv(K, BK)):
                o_c = i_k * BK + tl.arange(0, BK)
                m = m_t[:, None] & (o_c < K)[None, :]
                b_k = tl.load(k + ((bos + o_t) * Hg + i_h // (H // Hg))[:, None] * K + o_c[None, :], mask=m,
                              other=0.0)
                b_kb = (b_k * b_e[:, None]).to(b_k.dtype)
                tl.store(w + ((bos + o_t) * H + i_h)[:, None] * K + o_c[None, :],
                         tl.dot(b_a, b_kb).to(w.dtype.element_ty), mask=m)
