"""Warp-specialized GDN intra kernel in Gluon (Hopper): inversion and the w/u stream on the same SM at the same
time. Experimental, not in the package (B = 1, no varlen, no cumsum fusion): Gluon has no interpreter, so its only
CPU check is the sm_90 compile (tests/test_kernels.py); correctness is checked on the GPU against fp64.

One persistent CTA per SM, two partitions, batches of W = 4 (chunk, head) tiles:
- inverters (default partition, 4 warps at 256 registers, one tile per warp): keys TMA-prefetched into shared
  memory while the previous batch is inverted; KKᵀ (mma_v2 from shared memory), gate, block-doubling (I + A)^{-1}
  exactly as ``gdn_intra`` (bf16x3 diagonal 16×16 tiles, tf32 merges); then Ai·diag(β), Ai·diag(β e^g) and Ai
  (bf16) into shared column panels [64, 16] and one mbarrier arrive ("full") once the streamers released the
  previous batch ("empty");
- streamers (worker partition, one warpgroup at 72 registers): per tile the A output by TMA from the plain panels,
  then u = (Ai·diag β)·v and w = (Ai·diag β e^g)·k, BN = 64 columns at a time: v/k blocks through an S-deep TMA
  ring that runs ahead across tiles and batches (it does not depend on Ai), four chained asynchronous K = 16
  wgmmas on the panels, results out through a staging buffer by TMA stores.

Measured on an H200 (bench/results/2026-11-27-h200-gluon, CUDA-graph times, T=8192 H=32 Hg=16, bf16): 119 µs
vs stock 183 µs (1.54×) and our Triton fused kernel 130 µs; 114 µs without the A output. Alone, the inverters
take 86 µs and the streamers 82 µs: four inverter warps per SM is what the register file (4 × 256 + 4 × 72 per
thread) and shared memory (panels 96 KiB + keys 64 KiB + ring and staging ~48 KiB) leave, against eight 1-warp
programs in the Triton inverse-only kernel (48 µs). Errors vs fp64 ≤ ours; u's halves (β folded into Ai).

    PYTHONPATH=<triton 3.6 dir> python bench/gluon_intra.py               # CPU: registers / spills (sm_90)
    python bench/gluon_intra.py --gpu OUT_DIR                             # GPU: errors vs fp64, times vs ours/stock
    python bench/gluon_intra.py --ncu                                     # GPU, under ncu: one launch of each
"""

import inspect
import os
import re
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.language.nvidia.ampere import mma_v2
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                               warpgroup_mma_wait)

from sglang_trinv.benchmarks.resources import cubin_usage  # sm_90 registers / stack via cuobjdump


@gluon.jit
def _mm(a, b, MMA: gl.constexpr, PREC: gl.constexpr):
    """fp32 a @ b of [W, 16, 16] tiles (one per warp): PREC 0 = tf32, 1 = bf16x3 (hi·lo + lo·hi + hi·hi)."""
    acc = gl.zeros(a.shape, gl.float32, MMA)
    if PREC == 0:
        A1: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=1)
        B1: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=1)
        c = mma_v2(gl.convert_layout(a, A1), gl.convert_layout(b, B1), acc, input_precision="tf32")
    else:
        A2: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
        B2: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=2)
        a_hi = a.to(gl.bfloat16)
        b_hi = b.to(gl.bfloat16)
        a_lo = (a - a_hi.to(gl.float32)).to(gl.bfloat16)
        b_lo = (b - b_hi.to(gl.float32)).to(gl.bfloat16)
        ah = gl.convert_layout(a_hi, A2)
        bh = gl.convert_layout(b_hi, B2)
        c = mma_v2(ah, gl.convert_layout(b_lo, B2), acc)
        c = mma_v2(gl.convert_layout(a_lo, A2), bh, c)
        c = mma_v2(ah, bh, c)
    return c


# every inverter warp's stores before the one-thread arrive: gl.thread_barrier (Triton 3.6) was renamed
# gl.barrier (3.8); inside a warp-specialized partition it synchronises that partition's warps
_partition_barrier = gl.thread_barrier if hasattr(gl, "thread_barrier") else gl.barrier


@gluon.jit
def _safe_exp(x):
    # exp of a non-positive gate difference (as gdn_intra._safe_exp): +inf from padding masked to 0
    return gl.exp(gl.where(x <= 0, x, float("-inf")))


@gluon.jit
def _inv_diag(a, r, c, MMA: gl.constexpr, PREC: gl.constexpr):
    """(I + a)^{-1} of strictly-lower 16×16 tiles: exact 2×2 blocks, then X ← X − X·A_b·X (b = 2, 4, 8)."""
    eye = gl.where(r == c, 1.0, 0.0)
    x = eye - gl.where(r // 2 == c // 2, a, 0.0)
    for lvl in gl.static_range(1, 4):
        blk = (r // (2 << lvl) == c // (2 << lvl)) & ((r // (1 << lvl)) % 2 == 1) & ((c // (1 << lvl)) % 2 == 0)
        a_b = gl.where(blk, a, 0.0)
        x = x - _mm(_mm(x, a_b, MMA, PREC), x, MMA, PREC)
    return x


@gluon.jit
def _put(apan, x, a: gl.constexpr, b: gl.constexpr, sb, se, first, WSET: gl.constexpr, PLAIN: gl.constexpr):
    """Block (a, b) of the batch's Ai·diag(β) (bf16) into column panel first + b of the shared buffer; WSET: also
    Ai·diag(β e^g) (panels first + 4 …); PLAIN: Ai itself too (the next 4 panels, stored to A by TMA)."""
    apan.index(first + b).slice(16 * a, 16, dim=1).store((x * sb[:, None, :]).to(gl.bfloat16))
    if WSET:
        apan.index(first + 4 + b).slice(16 * a, 16, dim=1).store((x * se[:, None, :]).to(gl.bfloat16))
    if PLAIN:
        apan.index(first + 4 + 4 * WSET + b).slice(16 * a, 16, dim=1).store(x.to(gl.bfloat16))


@gluon.jit
def _tile(t, NT, G: gl.constexpr):
    """(chunk, head) of tile t. G = 1: chunk fastest, then head. G > 1: the G heads that share one key head
    next to each other (they share the keys: one TMA-loaded key tile serves G inverter warps), then chunk."""
    if G == 1:
        chunk = t % NT
        head = t // NT
    else:
        rest = t // G
        chunk = rest % NT
        head = (rest // NT) * G + t % G
    return chunk, head


@gluon.jit
def _gates(beta_ptr, g_ptr, first, wb, wc, ir, ic, T, n_tiles, NT, H: gl.constexpr, G: gl.constexpr):
    """Per tile (first + warp): β_i, g_i per row (SliceLayout(2, MMA)) and the column scales β_j (COL), 0 past T."""
    t = first + wb
    valid = (t < n_tiles)[:, None]
    chunk, head = _tile(t, NT, G)
    head = gl.minimum(head, H - 1)
    rr = (chunk * 64)[:, None] + ir[None, :]
    b_0 = gl.load(beta_ptr + rr * H + head[:, None], mask=(rr < T) & valid, other=0.0).to(gl.float32)
    b_1 = gl.load(beta_ptr + (rr + 16) * H + head[:, None], mask=(rr + 16 < T) & valid, other=0.0).to(gl.float32)
    b_2 = gl.load(beta_ptr + (rr + 32) * H + head[:, None], mask=(rr + 32 < T) & valid, other=0.0).to(gl.float32)
    b_3 = gl.load(beta_ptr + (rr + 48) * H + head[:, None], mask=(rr + 48 < T) & valid, other=0.0).to(gl.float32)
    g_0 = gl.load(g_ptr + rr * H + head[:, None], mask=(rr < T) & valid, other=0.0)
    g_1 = gl.load(g_ptr + (rr + 16) * H + head[:, None], mask=(rr + 16 < T) & valid, other=0.0)
    g_2 = gl.load(g_ptr + (rr + 32) * H + head[:, None], mask=(rr + 32 < T) & valid, other=0.0)
    g_3 = gl.load(g_ptr + (rr + 48) * H + head[:, None], mask=(rr + 48 < T) & valid, other=0.0)
    tc = first + wc
    c_chunk, c_head = _tile(tc, NT, G)
    cc = (c_chunk * 64)[:, None] + ic[None, :]
    hc = gl.minimum(c_head, H - 1)[:, None]
    cv = (tc < n_tiles)[:, None]
    s_0 = gl.load(beta_ptr + cc * H + hc, mask=(cc < T) & cv, other=0.0).to(gl.float32)
    s_1 = gl.load(beta_ptr + (cc + 16) * H + hc, mask=(cc + 16 < T) & cv, other=0.0).to(gl.float32)
    s_2 = gl.load(beta_ptr + (cc + 32) * H + hc, mask=(cc + 32 < T) & cv, other=0.0).to(gl.float32)
    s_3 = gl.load(beta_ptr + (cc + 48) * H + hc, mask=(cc + 48 < T) & cv, other=0.0).to(gl.float32)
    return b_0, b_1, b_2, b_3, g_0, g_1, g_2, g_3, s_0, s_1, s_2, s_3


@gluon.jit
def _load_k(kin_desc, kbuf2, kready, first, n_tiles, NT, H: gl.constexpr, Hg: gl.constexpr, K: gl.constexpr,
            W: gl.constexpr, G: gl.constexpr):
    """TMA: the keys of tiles first … first + W − 1 ([64, 128] each, two [64, 64] boxes; one per G tiles that
    share them) into the inverters' buffer; a tile past the last loads the last one (the barrier counts a fixed
    number of bytes)."""
    NKT: gl.constexpr = W // G
    mbarrier.expect(kready, NKT * 2 * 64 * 64 * 2)
    for i in gl.static_range(NKT):
        chunk, head = _tile(gl.minimum(first + i * G, n_tiles - 1), NT, G)
        hk = head // (H // Hg)
        tma.async_copy_global_to_shared(kin_desc, [chunk * 64, hk * K], kready, kbuf2.index(i))
        tma.async_copy_global_to_shared(kin_desc, [chunk * 64, hk * K + 64], kready, kbuf2.index(NKT + i))


@gluon.jit
def _krows(ks, a: gl.constexpr, LK: gl.constexpr, P4: gl.constexpr, W: gl.constexpr, G: gl.constexpr,
           BK: gl.constexpr):
    """Rows 16a … 16a + 15 of every warp's keys as [W, 16, BK]: straight from the buffer (G = 1), or from its
    W / G shared tiles, each broadcast to its G warps in registers (P4's warps [W / G, G, 1, 1])."""
    if G == 1:
        x = ks.slice(16 * a, 16, dim=1).load(LK)
    else:
        y = gl.expand_dims(ks.slice(16 * a, 16, dim=1).load(gl.SliceLayout(1, P4)), 1)
        y, _ = gl.broadcast(y, gl.zeros([W // G, G, 16, BK], gl.bfloat16, P4))
        x = gl.reshape(y, [W, 16, BK])
    return x


@gluon.jit
def _invert_tiles(beta_ptr, g_ptr, apan, kin_desc, kbuf, kbuf2, kready, T, n_tiles, H: gl.constexpr,
                  Hg: gl.constexpr, K: gl.constexpr, W: gl.constexpr, BK: gl.constexpr, DP: gl.constexpr,
                  MP: gl.constexpr, STORE_A: gl.constexpr, MODE: gl.constexpr, HOIST: gl.constexpr,
                  DB: gl.constexpr, NPB: gl.constexpr, G: gl.constexpr, full, empty):
    """Inverter partition: W warps, one (chunk, head) tile per warp: KKᵀ from the TMA-prefetched keys, gate,
    (I + A)^{-1} by doubling; then, scaled by β / β e^g per column (and plain, with STORE_A), into the shared
    panels the streamers multiply with."""
    MMA: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[W, 1, 1], instr_shape=[1, 16, 8])
    A2: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    B2: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=2)
    LK: gl.constexpr = gl.BlockedLayout([1, 1, 8], [1, 4, 8], [W, 1, 1], [2, 1, 0])
    P4: gl.constexpr = gl.BlockedLayout([1, 1, 1, 8], [1, 1, 4, 8], [W // G, G, 1, 1], [3, 2, 1, 0])
    COL: gl.constexpr = gl.SliceLayout(1, MMA)   # [W, 16] per-column vectors
    wb = gl.arange(0, W, layout=gl.SliceLayout(1, gl.SliceLayout(2, MMA)))
    ir = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, MMA)))
    ic = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(1, MMA)))
    wc = gl.arange(0, W, layout=gl.SliceLayout(1, COL))
    r = ir[None, :, None]
    c = ic[None, None, :]
    NT = gl.cdiv(T, 64)
    # the panels' blocks above the diagonal stay zero (written once)
    zt = gl.zeros([W, 16, 16], gl.bfloat16, MMA)
    for i in gl.static_range((1 + DB) * NPB):
        for pa in gl.static_range(0, i % 4):
            apan.index(i).slice(16 * pa, 16, dim=1).store(zt)
    if MODE != 2:
        _load_k(kin_desc, kbuf2, kready, gl.program_id(0) * W, n_tiles, NT, H, Hg, K, W, G)
    j = 0
    for base in range(gl.program_id(0) * W, n_tiles, gl.num_programs(0) * W):
        if MODE != 2:
            # tile = base + warp (chunk fastest, then head)
            if HOIST:  # gate loads first: their latency hides behind the keys' wait and KKᵀ
                b_0, b_1, b_2, b_3, g_0, g_1, g_2, g_3, s_0, s_1, s_2, s_3 = _gates(
                    beta_ptr, g_ptr, base, wb, wc, ir, ic, T, n_tiles, NT, H, G)
            z = gl.zeros([W, 16, 16], gl.float32, MMA)
            r00, r10, r11, r20, r21, r22, r30, r31, r32, r33 = z, z, z, z, z, z, z, z, z, z
            # keys from shared memory (TMA-loaded while the previous batch was inverted), BK columns at a time
            mbarrier.wait(kready, j & 1)
            for i_k in gl.static_range(K // BK):
                ks = kbuf.index(i_k * BK // 64).slice(i_k * BK % 64, BK, dim=2)
                k0 = _krows(ks, 0, LK, P4, W, G, BK)
                k1 = _krows(ks, 1, LK, P4, W, G, BK)
                k2 = _krows(ks, 2, LK, P4, W, G, BK)
                k3 = _krows(ks, 3, LK, P4, W, G, BK)
                b0 = gl.convert_layout(gl.permute(k0, [0, 2, 1]), B2)
                b1 = gl.convert_layout(gl.permute(k1, [0, 2, 1]), B2)
                b2 = gl.convert_layout(gl.permute(k2, [0, 2, 1]), B2)
                b3 = gl.convert_layout(gl.permute(k3, [0, 2, 1]), B2)
                a0 = gl.convert_layout(k0, A2)
                r00 = mma_v2(a0, b0, r00)
                a1 = gl.convert_layout(k1, A2)
                r10 = mma_v2(a1, b0, r10)
                r11 = mma_v2(a1, b1, r11)
                a2 = gl.convert_layout(k2, A2)
                r20 = mma_v2(a2, b0, r20)
                r21 = mma_v2(a2, b1, r21)
                r22 = mma_v2(a2, b2, r22)
                a3 = gl.convert_layout(k3, A2)
                r30 = mma_v2(a3, b0, r30)
                r31 = mma_v2(a3, b1, r31)
                r32 = mma_v2(a3, b2, r32)
                r33 = mma_v2(a3, b3, r33)
            _partition_barrier()  # every warp has read its keys: load the next batch's
            nxt = base + gl.num_programs(0) * W
            if nxt < n_tiles:
                _load_k(kin_desc, kbuf2, kready, nxt, n_tiles, NT, H, Hg, K, W, G)
            if not HOIST:
                b_0, b_1, b_2, b_3, g_0, g_1, g_2, g_3, s_0, s_1, s_2, s_3 = _gates(
                    beta_ptr, g_ptr, base, wb, wc, ir, ic, T, n_tiles, NT, H, G)
            h_0, h_1, h_2, h_3 = (gl.convert_layout(g_0, COL), gl.convert_layout(g_1, COL), gl.convert_layout(g_2, COL),
                                  gl.convert_layout(g_3, COL))
            low = r > c
            a00 = gl.where(low, r00 * b_0[:, :, None] * _safe_exp(g_0[:, :, None] - h_0[:, None, :]), 0.0)
            a11 = gl.where(low, r11 * b_1[:, :, None] * _safe_exp(g_1[:, :, None] - h_1[:, None, :]), 0.0)
            a22 = gl.where(low, r22 * b_2[:, :, None] * _safe_exp(g_2[:, :, None] - h_2[:, None, :]), 0.0)
            a33 = gl.where(low, r33 * b_3[:, :, None] * _safe_exp(g_3[:, :, None] - h_3[:, None, :]), 0.0)
            a10 = r10 * b_1[:, :, None] * _safe_exp(g_1[:, :, None] - h_0[:, None, :])
            a20 = r20 * b_2[:, :, None] * _safe_exp(g_2[:, :, None] - h_0[:, None, :])
            a21 = r21 * b_2[:, :, None] * _safe_exp(g_2[:, :, None] - h_1[:, None, :])
            a30 = r30 * b_3[:, :, None] * _safe_exp(g_3[:, :, None] - h_0[:, None, :])
            a31 = r31 * b_3[:, :, None] * _safe_exp(g_3[:, :, None] - h_1[:, None, :])
            a32 = r32 * b_3[:, :, None] * _safe_exp(g_3[:, :, None] - h_2[:, None, :])
            x00 = _inv_diag(a00, r, c, MMA, DP)
            x11 = _inv_diag(a11, r, c, MMA, DP)
            x22 = _inv_diag(a22, r, c, MMA, DP)
            x33 = _inv_diag(a33, r, c, MMA, DP)
            x10 = -_mm(_mm(x11, a10, MMA, MP), x00, MMA, MP)
            x32 = -_mm(_mm(x33, a32, MMA, MP), x22, MMA, MP)
            t20 = _mm(a20, x00, MMA, MP) + _mm(a21, x10, MMA, MP)
            t21 = _mm(a21, x11, MMA, MP)
            t30 = _mm(a30, x00, MMA, MP) + _mm(a31, x10, MMA, MP)
            t31 = _mm(a31, x11, MMA, MP)
            x20 = -_mm(x22, t20, MMA, MP)
            x21 = -_mm(x22, t21, MMA, MP)
            x30 = -(_mm(x32, t20, MMA, MP) + _mm(x33, t30, MMA, MP))
            x31 = -(_mm(x32, t21, MMA, MP) + _mm(x33, t31, MMA, MP))
            # hand over: the streamers must have released this buffer's panels (batch j − NB) before they are
            # rewritten (DB: two buffers, the inverters may run a batch further ahead)
            if j >= 1 + DB:
                mbarrier.wait(empty.index(j % (1 + DB)), (j // (1 + DB) - 1) & 1)
            pfirst = (j % (1 + DB)) * NPB
            e_0 = s_0 * gl.exp(h_0)  # column scales of Ai·diag(β e^g), one per column block
            e_1 = s_1 * gl.exp(h_1)
            e_2 = s_2 * gl.exp(h_2)
            e_3 = s_3 * gl.exp(h_3)
            _put(apan, x00, 0, 0, s_0, e_0, pfirst, not DB, STORE_A)
            _put(apan, x10, 1, 0, s_0, e_0, pfirst, not DB, STORE_A)
            _put(apan, x20, 2, 0, s_0, e_0, pfirst, not DB, STORE_A)
            _put(apan, x30, 3, 0, s_0, e_0, pfirst, not DB, STORE_A)
            _put(apan, x11, 1, 1, s_1, e_1, pfirst, not DB, STORE_A)
            _put(apan, x21, 2, 1, s_1, e_1, pfirst, not DB, STORE_A)
            _put(apan, x31, 3, 1, s_1, e_1, pfirst, not DB, STORE_A)
            _put(apan, x22, 2, 2, s_2, e_2, pfirst, not DB, STORE_A)
            _put(apan, x32, 3, 2, s_2, e_2, pfirst, not DB, STORE_A)
            _put(apan, x33, 3, 3, s_3, e_3, pfirst, not DB, STORE_A)
            fence_async_shared()  # generic-proxy stores → read by wgmma and TMA (async proxy)
        else:
            if j >= 1 + DB:
                mbarrier.wait(empty.index(j % (1 + DB)), (j // (1 + DB) - 1) & 1)
        _partition_barrier()  # every inverter warp's stores, then one arrive
        mbarrier.arrive(full.index(j % (1 + DB)))
        j += 1


@gluon.jit
def _issue(p, k_desc, v_desc, ring, ready, pid, nprog, NT, H: gl.constexpr, Hg: gl.constexpr, K: gl.constexpr,
           V: gl.constexpr, W: gl.constexpr, BN: gl.constexpr, S: gl.constexpr, G: gl.constexpr):
    """TMA load of the streamer's item p (tile p // IPT of this CTA; v column blocks, then k column blocks)."""
    IPT: gl.constexpr = (V + K) // BN
    ts = p // IPT
    sub = p % IPT
    t = (pid + (ts // W) * nprog) * W + ts % W
    chunk, head = _tile(t, NT, G)
    bar = ready.index(p % S)
    mbarrier.expect(bar, 64 * BN * 2)
    if sub < V // BN:
        tma.async_copy_global_to_shared(v_desc, [chunk * 64, head * V + sub * BN], bar, ring.index(p % S))
    else:
        tma.async_copy_global_to_shared(k_desc, [chunk * 64, (head // (H // Hg)) * K + (sub - V // BN) * BN], bar,
                                        ring.index(p % S))


@gluon.jit
def _wg_chain(apan, slot, first, W: gl.constexpr, ACC: gl.constexpr, BN: gl.constexpr):
    """Σ_b panel_b · slot[16b:16b+16] as four chained asynchronous wgmmas (K = 16 each); wait on the result."""
    acc = warpgroup_mma(apan.index(first), slot.slice(0, 16, dim=0), gl.zeros([64, BN], gl.float32, ACC),
                        use_acc=False, is_async=True)
    for b in gl.static_range(1, 4):
        acc = warpgroup_mma(apan.index(first + b * W), slot.slice(16 * b, 16, dim=0), acc, is_async=True)
    return acc


@gluon.jit
def _epi(acc, q, sub: gl.constexpr, row, head, stg, u_desc, w_desc, NSTG: gl.constexpr, NU: gl.constexpr,
         V: gl.constexpr, K: gl.constexpr):
    """Item q's result out: bf16 into staging buffer q % NSTG (once its previous TMA store has read it), TMA store."""
    BN: gl.constexpr = stg.shape[2]
    o = q % NSTG
    tma.store_wait(NSTG - 1)
    _partition_barrier()
    stg.index(o).store(acc.to(gl.bfloat16))
    fence_async_shared()
    _partition_barrier()
    if sub < NU:
        tma.async_copy_shared_to_global(u_desc, [row, head * V + sub * BN], stg.index(o))
    else:
        tma.async_copy_shared_to_global(w_desc, [row, head * K + (sub - NU) * BN], stg.index(o))


@gluon.jit
def _stream_wu(k_desc, v_desc, w_desc, u_desc, a_desc, g_ptr, apan, ring, kscr, ready, stg, T, n_tiles, full,
               empty, H: gl.constexpr, Hg: gl.constexpr, K: gl.constexpr, V: gl.constexpr, W: gl.constexpr,
               BN: gl.constexpr, S: gl.constexpr, NSTG: gl.constexpr, MODE: gl.constexpr, PAIR: gl.constexpr,
               STORE_A: gl.constexpr, DB: gl.constexpr, NPB: gl.constexpr, G: gl.constexpr):
    """Streamer partition (one warpgroup): u = (Ai·diag β)·v, w = (Ai·diag β e^g)·k for each handed-over tile, BN
    columns at a time: v/k blocks through an S-deep TMA ring (loads run ahead across tiles and batches, they do not
    depend on Ai), four K=16 wgmmas on the shared panels, results out through NSTG staging buffers by TMA.
    DB: panels double-buffered and only Ai·diag β shared; w's keys are scaled by e^g here (into kscr)."""
    BLK: gl.constexpr = gl.BlockedLayout([1, 8], [32 // (BN // 8), BN // 8], [4, 1], [1, 0])
    r64 = gl.arange(0, 64, layout=gl.SliceLayout(1, BLK))
    ACC: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BN, 16])
    NU: gl.constexpr = V // BN
    IPT: gl.constexpr = (V + K) // BN
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    NT = gl.cdiv(T, 64)
    my_b = gl.cdiv(gl.cdiv(n_tiles, W) - pid, nprog)   # this CTA's batches (grid ≤ number of batches)
    n_my = (my_b - 1) * W + gl.minimum(W, n_tiles - (pid + (my_b - 1) * nprog) * W)
    if MODE == 1:
        for jb in range(my_b):
            mbarrier.wait(full.index(jb % (1 + DB)), (jb // (1 + DB)) & 1)
            mbarrier.arrive(empty.index(jb % (1 + DB)))
    else:
        total = n_my * IPT
        for p in range(gl.minimum(S - 1 - PAIR, total)):
            _issue(p, k_desc, v_desc, ring, ready, pid, nprog, NT, H, Hg, K, V, W, BN, S, G)
        q = 0
        for ts in range(n_my):
            wi = ts % W
            t = (pid + (ts // W) * nprog) * W + wi
            chunk, head = _tile(t, NT, G)
            row = chunk * 64
            bt = ts // W
            if wi == 0:
                mbarrier.wait(full.index(bt % (1 + DB)), (bt // (1 + DB)) & 1)
            pfirst = (bt % (1 + DB)) * NPB * W + wi
            if DB:  # e^g of the tile's rows, for w's keys
                eg = gl.exp(gl.load(g_ptr + (row + r64) * H + head, mask=row + r64 < T, other=0.0))
            if STORE_A:  # the A output: the plain Ai panels of this tile, by TMA (rows past T clipped)
                for b in gl.static_range(4):
                    tma.async_copy_shared_to_global(a_desc, [row, head * 64 + 16 * b],
                                                    apan.index(pfirst + (8 - 4 * DB + b) * W))
            if PAIR:  # two items in flight: the second's wgmmas run while the first's result goes out
                for pp in gl.static_range(IPT // 2):
                    if q + S - 2 < total:
                        _issue(q + S - 2, k_desc, v_desc, ring, ready, pid, nprog, NT, H, Hg, K, V, W, BN, S, G)
                    if q + S - 1 < total:
                        _issue(q + S - 1, k_desc, v_desc, ring, ready, pid, nprog, NT, H, Hg, K, V, W, BN, S, G)
                    mbarrier.wait(ready.index(q % S), (q // S) & 1)
                    acc0 = _wg_chain(apan, ring.index(q % S), pfirst + ((2 * pp >= NU) * 4) * W, W, ACC, BN)
                    mbarrier.wait(ready.index((q + 1) % S), ((q + 1) // S) & 1)
                    acc1 = _wg_chain(apan, ring.index((q + 1) % S), pfirst + ((2 * pp + 1 >= NU) * 4) * W, W, ACC,
                                     BN)
                    acc0 = warpgroup_mma_wait(4, deps=[acc0])
                    _epi(acc0, q, 2 * pp, row, head, stg, u_desc, w_desc, NSTG, NU, V, K)
                    acc1 = warpgroup_mma_wait(0, deps=[acc1])
                    _epi(acc1, q + 1, 2 * pp + 1, row, head, stg, u_desc, w_desc, NSTG, NU, V, K)
                    q += 2
            else:
                for sub in gl.static_range(IPT):
                    if q + S - 1 < total:
                        _issue(q + S - 1, k_desc, v_desc, ring, ready, pid, nprog, NT, H, Hg, K, V, W, BN, S, G)
                    mbarrier.wait(ready.index(q % S), (q // S) & 1)
                    if DB and sub >= NU:  # w: (Ai·diag β)·(diag(e^g)·k), the keys scaled on the way through
                        kx = ring.index(q % S).load(BLK)
                        kscr.store((kx.to(gl.float32) * eg[:, None]).to(gl.bfloat16))
                        fence_async_shared()
                        _partition_barrier()
                        acc = _wg_chain(apan, kscr, pfirst, W, ACC, BN)
                    else:
                        acc = _wg_chain(apan, ring.index(q % S), pfirst + ((sub >= NU) * 4) * W, W, ACC, BN)
                    acc = warpgroup_mma_wait(0, deps=[acc])
                    _epi(acc, q, sub, row, head, stg, u_desc, w_desc, NSTG, NU, V, K)
                    q += 1
            if (wi == W - 1) | (ts == n_my - 1):
                if STORE_A:
                    tma.store_wait(0)  # the A stores have read their panels
                    _partition_barrier()
                mbarrier.arrive(empty.index(bt % (1 + DB)))  # every warp's wgmmas on the panels are done
        tma.store_wait(0)


@gluon.jit
def gluon_intra_kernel(beta_ptr, g_ptr, k_desc, v_desc, w_desc, u_desc, kin_desc, a_desc, T, n_tiles,
                       H: gl.constexpr, Hg: gl.constexpr, K: gl.constexpr, V: gl.constexpr, W: gl.constexpr,
                       BK: gl.constexpr, BN: gl.constexpr, DP: gl.constexpr, MP: gl.constexpr, REGS: gl.constexpr,
                       S: gl.constexpr, NSTG: gl.constexpr, STORE_A: gl.constexpr, MODE: gl.constexpr,
                       PAIR: gl.constexpr, HOIST: gl.constexpr, DB: gl.constexpr, G: gl.constexpr):
    """Warp-specialized intra: W inverter warps hand batches of W tiles (the β-scaled Ai panels in shared memory)
    to one streamer warpgroup that computes w/u beside the next batch's inversion.
    The inverters are the default partition (W warps, launch num_warps=W), the streamers one worker at REGS
    registers. PAIR: two items' wgmmas in flight. STORE_A: also the A output (TMA from plain Ai panels).
    MODE 0: both; 1: inverters only (streamers just hand back); 2: streamers only (timing diagnostics)."""
    # Ai panels [(buffer,) Ai·diag β (4 column panels), Ai·diag β e^g (4, not DB), Ai (4, with STORE_A); tile of
    # the batch; 64; 16];
    # the streamers see the same bytes as NP·W [64, 16] wgmma operands (the 32-byte swizzle acts on the last
    # two dimensions only)
    PAN3: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=32, element_bitwidth=16, rank=3)
    PAN2: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=32, element_bitwidth=16, rank=2)
    NPB: gl.constexpr = (4 if DB else 8) + 4 * STORE_A   # panels per buffer: Ai·diag β, Ai·diag β e^g (not DB), Ai
    NP: gl.constexpr = NPB * (1 + DB)
    apan = gl.allocate_shared_memory(gl.bfloat16, [NP, W, 64, 16], PAN3)
    # the inverters' keys [column half, tile, 64, 64]; TMA writes them through the rank-2 view kbuf2
    KL3: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=3)
    kbuf = gl.allocate_shared_memory(gl.bfloat16, [2, W // G, 64, 64], KL3)
    kbuf2 = kbuf._reinterpret(gl.bfloat16, [2 * (W // G), 64, 64], kin_desc.layout)
    kready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(kready, count=1)
    ring = gl.allocate_shared_memory(gl.bfloat16, [S, 64, BN], v_desc.layout)
    if DB:
        kscr = gl.allocate_shared_memory(gl.bfloat16, [64, BN], v_desc.layout)
    else:
        kscr = ring  # unused
    stg = gl.allocate_shared_memory(gl.bfloat16, [NSTG, 64, BN], u_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [S, 1], mbarrier.MBarrierLayout())
    full = gl.allocate_shared_memory(gl.int64, [1 + DB, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [1 + DB, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(S):
        mbarrier.init(ready.index(i), count=1)
    for i in gl.static_range(1 + DB):
        mbarrier.init(full.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    pan2 = apan._reinterpret(gl.bfloat16, [NP * W, 64, 16], PAN2)
    gl.warp_specialize([(_invert_tiles, (beta_ptr, g_ptr, apan, kin_desc, kbuf, kbuf2, kready, T, n_tiles, H, Hg, K,
                                         W, BK, DP, MP, STORE_A, MODE, HOIST, DB, NPB, G, full, empty)),
                        (_stream_wu, (k_desc, v_desc, w_desc, u_desc, a_desc, g_ptr, pan2, ring, kscr, ready, stg, T,
                                      n_tiles, full, empty, H, Hg, K, V, W, BN, S, NSTG, MODE, PAIR, STORE_A, DB,
                                      NPB, G))],
                       [4], [REGS])


def _compile(fn, sig, const, W) -> dict:
    sig = dict(sig)
    sig.update({k: "constexpr" for k in const})
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n, t in sig.items() if t.startswith("*")}
    src = GluonASTSource(fn=fn, signature=sig, attrs=attrs,
                         constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": W})
    use = cubin_usage(c.asm["cubin"], sass=True)
    return dict(launch_regs=use["regs"], warps=c.metadata.num_warps, stack=use["stack"], smem=c.metadata.shared,
                setmaxnreg=sorted({int(v, 16) for v in
                                   re.findall(r"USETMAXREG\.\w+\.CTAPOOL (?:UP0, )?(0x[0-9a-f]+)", use["sass"])}))


def _block_layout(BN):
    return gl.NVMMASharedLayout.get_default_for([64, BN], gl.bfloat16)


def compile_report(W=4, BK=32, BN=64, REGS=72, S=5, NSTG=1, STORE_A=True, MODE=0, PAIR=False, HOIST=True,
                   DB=False, G=1) -> dict:
    """sm_90 compile on any machine: launch registers, warps, stack, shared memory, setmaxnreg values."""
    desc = f"tensordesc<bf16[64, {BN}],{_block_layout(BN)!r}>"
    sig = {"beta_ptr": "*bf16", "g_ptr": "*fp32", "k_desc": desc, "v_desc": desc, "w_desc": desc, "u_desc": desc,
           "kin_desc": f"tensordesc<bf16[64, 64],{_block_layout(64)!r}>",
           "a_desc": f"tensordesc<bf16[64, 16],{_block_layout(16)!r}>", "T": "i32", "n_tiles": "i32"}
    const = dict(H=32, Hg=16, K=128, V=128, W=W, BK=BK, BN=BN, DP=1, MP=0, REGS=REGS, S=S, NSTG=NSTG,
                 STORE_A=STORE_A, MODE=MODE, PAIR=PAIR, HOIST=HOIST, DB=DB, G=G)
    return _compile(gluon_intra_kernel, sig, const, W)


# launch variants timed beside the default at T=8192 H=32 (MODE 1 / 2: each partition alone)
VARIANTS = [dict(MODE=1), dict(MODE=2), dict(PAIR=True, REGS=120, S=4, NSTG=2), dict(STORE_A=False, S=6), dict(G=2),
            dict(DB=True, G=2), dict(DB=True, G=2, MODE=1), dict(DB=True, G=2, MODE=2),
            dict(DB=True, STORE_A=False, G=2, S=6), dict(DB=True, STORE_A=False, S=6)]


def gluon_fwd_intra(k, v, g, beta, W=4, BK=32, BN=64, REGS=72, S=5, NSTG=1, STORE_A=True, MODE=0, PAIR=False,
                    HOIST=True, DB=False, G=1, DP=1, max_ctas=None, out=None):
    """(w, u, Ai) for one sequence, as ops.gdn_fwd_intra (blockdoubling, bf16x3 diagonal tiles, tf32 merges;
    u and w from Ai·diag(β) and Ai·diag(β e^g) rounded to bf16). STORE_A=False leaves Ai unwritten; DB: panels
    double-buffered, w from Ai·diag(β) and e^g·k; G > 1: G heads of one key head share a key tile (less shared
    memory); max_ctas caps the persistent grid (tests: several batches per CTA on small inputs)."""
    import torch
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    B, T, Hg, K = k.shape
    H, V = v.shape[-2], v.shape[-1]
    assert B == 1 and H % Hg == 0 and K % BK == 0 and K % BN == 0 and V % BN == 0
    assert not (DB and PAIR), "double-buffered panels: one item at a time"
    assert (H // Hg) % G == 0 and W % G == 0, "G heads that share a key head per key tile"
    n_tiles = triton.cdiv(T, 64) * H
    w, u, Ai = out if out is not None else (k.new_empty(1, T, H, K), torch.empty_like(v), k.new_empty(1, T, H, 64))
    lay = _block_layout(BN)
    descs = [TensorDescriptor.from_tensor(x.view(T, -1), [64, BN], lay) for x in (k, v, w, u)]
    descs.append(TensorDescriptor.from_tensor(k.view(T, -1), [64, 64], _block_layout(64)))
    descs.append(TensorDescriptor.from_tensor(Ai.view(T, -1), [64, 16], _block_layout(16)))
    n_sm = torch.cuda.get_device_properties(k.device).multi_processor_count
    grid = (min(max_ctas or n_sm, n_sm, triton.cdiv(n_tiles, W)),)
    gluon_intra_kernel[grid](beta, g, *descs, T, n_tiles, H=H, Hg=Hg, K=K, V=V, W=W, BK=BK, BN=BN, DP=DP, MP=0,
                             REGS=REGS, S=S, NSTG=NSTG, STORE_A=STORE_A, MODE=MODE, PAIR=PAIR, HOIST=HOIST,
                             DB=DB, G=G, num_warps=W)
    return w, u, Ai


def gpu_check(out: str) -> int:
    """Errors vs fp64 and CUDA-graph times beside ops.gdn_fwd_intra (same method/precisions) and stock."""
    from importlib import import_module

    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_overlap import events_us

    from sglang_trinv import ops
    from sglang_trinv.benchmarks import common
    from sglang_trinv.benchmarks import kernels as bk
    from sglang_trinv.reference import gdn as ref

    rows = []
    for T, H, Hg in [(1000, 4, 2), (8192, 32, 16), (32768, 8, 4), (32768, 32, 16)]:
        a = bk.make_inputs(T, H, Hg, 128, 128, 1, 0)
        k, v, g, beta = a["k"], a["v"], a["g"], a["beta"]
        w64, u64, A64 = ref.fwd_intra(k, v, g, beta, None)
        got = gluon_fwd_intra(k, v, g, beta)
        torch.cuda.synchronize()
        print(f"T={T} H={H}: first call done", flush=True)
        ours = ops.gdn_fwd_intra(k, v, g, beta)
        stock = bk.stock_intra(k, v, g, beta, None, None)
        r = dict(T=T, H=H, Hg=Hg, finite=all(bool(torch.isfinite(x.float()).all()) for x in got))
        for name, res in (("gluon", got), ("ours", ours), ("stock", stock)):
            for x, x64, lab in zip(res, (w64, u64, A64), ("w", "u", "A")):
                r[f"err_{lab}_{name}"] = bk.rel_err(x, x64)["max_rel"]
        bufs = tuple(torch.empty_like(x) for x in got)
        r["us_gluon"] = events_us(lambda: gluon_fwd_intra(k, v, g, beta, out=bufs))
        r["us_ours"] = events_us(lambda: ops.gdn_fwd_intra(k, v, g, beta))
        r["us_stock"] = events_us(lambda: bk.stock_intra(k, v, g, beta, None, None))
        rows.append(r)
        print(r, flush=True)
        del w64, u64, A64
        torch.cuda.empty_cache()
    # launch variants at T=8192 H=32; MODE 1 / 2 time the inverters / the streamers alone (outputs not compared)
    a = bk.make_inputs(8192, 32, 16, 128, 128, 1, 0)
    k, v, g, beta = a["k"], a["v"], a["g"], a["beta"]
    base = gluon_fwd_intra(k, v, g, beta)
    w64, u64, _ = ref.fwd_intra(k, v, g, beta, None)
    sweep = []
    for kw in VARIANTS:
        got = gluon_fwd_intra(k, v, g, beta, **kw)
        n_cmp = 0 if kw.get("MODE", 0) else (3 if kw.get("STORE_A", True) else 2)
        diff = max([float((x.float() - y.float()).abs().max()) for x, y in zip(got[:n_cmp], base[:n_cmp])],
                   default=float("nan"))
        err = ("/".join(f"{bk.rel_err(x, x64)['max_rel']:.1e}" for x, x64 in zip(got[:2], (w64, u64)))
               if n_cmp else "–")
        bufs = tuple(torch.empty_like(x) for x in got)
        sweep.append(dict(kw, maxdiff=diff, err_wu=err,
                          us=events_us(lambda: gluon_fwd_intra(k, v, g, beta, out=bufs, **kw))))
        print(sweep[-1], flush=True)
    del w64, u64
    # the two halves as the Triton kernels do them (what each partition should approach)
    wu = import_module(f"{bk.FLA}.wy_fast").recompute_w_u_fwd
    A = ops.gdn_kkt_inverse(k, g, beta)
    sweep.append(dict(ref="ours: ops.gdn_kkt_inverse alone", maxdiff=float("nan"), err_wu="–",
                      us=events_us(lambda: ops.gdn_kkt_inverse(k, g, beta))))
    sweep.append(dict(ref="stock: recompute_w_u_fwd alone", maxdiff=float("nan"), err_wu="–",
                      us=events_us(lambda: wu(k=k, v=v, beta=beta, A=A, g_cumsum=g, cu_seqlens=None))))
    meta = common.run_meta("cuda", dtype="bfloat16")
    md = common.md_header("Warp-specialized Gluon intra vs ours (Triton) vs stock", meta,
                          "bf16, K=V=128, one sequence; "
                          "µs per call over CUDA-graph replays (outputs preallocated for the Gluon kernel); errors "
                          "max|X − X64| / max|X64| of w / u / A.")
    md += ["| T | H/Hg | stock µs | ours µs | Gluon µs | stock/Gluon | err stock | err ours | err Gluon |",
           "|" + "---|" * 9]
    for r in rows:
        e = lambda n: "/".join(f"{r[f'err_{x}_{n}']:.1e}" for x in "wuA")  # noqa: E731
        md.append(f"| {r['T']} | {r['H']}/{r['Hg']} | {r['us_stock']:.1f} | {r['us_ours']:.1f} | {r['us_gluon']:.1f} | "
                  f"{r['us_stock'] / r['us_gluon']:.2f}× | {e('stock')} | {e('ours')} | {e('gluon')} |")
    defaults = " ".join(f"{n}={p.default}" for n, p in inspect.signature(gluon_fwd_intra).parameters.items()
                        if p.default is not inspect.Parameter.empty and n != "out")
    md += ["", f"Launch variants, T=8192 H=32 (default: {defaults}; MODE 1 = "
           "inverters alone, 2 = streamers alone; maxdiff: largest |w, u(, A)| difference to the default launch):", "",
           "| variant | µs | maxdiff | err w/u vs fp64 |", "|---|---|---|---|"]
    for r in sweep:
        name = " ".join(f"{k}={v}" for k, v in r.items() if k not in ("us", "maxdiff", "err_wu"))
        md.append(f"| {name} | {r['us']:.1f} | {r['maxdiff']:.1e} | {r['err_wu']} |")
    return common.write_report(out, "gluon_intra", meta, [dict(r, kind="shape") for r in rows]
                               + [dict(r, kind="launch variant", T=8192, H=32, Hg=16) for r in sweep], md)


def ncu_launches() -> int:
    """One profiled launch each (for ncu, `--profile-from-start off`): the Gluon kernel with the inverters alone
    (MODE 1), the whole Gluon kernel and the Triton inverse-only kernel at T=8192 H=32."""
    import torch

    from sglang_trinv import ops
    from sglang_trinv.benchmarks import kernels as bk

    a = bk.make_inputs(8192, 32, 16, 128, 128, 1, 0)
    k, v, g, beta = a["k"], a["v"], a["g"], a["beta"]
    for prof in (False, True):
        if prof:
            torch.cuda.synchronize()
            torch.cuda.cudart().cudaProfilerStart()
        gluon_fwd_intra(k, v, g, beta, MODE=1)
        gluon_fwd_intra(k, v, g, beta)
        ops.gdn_kkt_inverse(k, g, beta)
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--gpu":
        sys.exit(gpu_check(sys.argv[2]))
    if len(sys.argv) > 1 and sys.argv[1] == "--ncu":
        sys.exit(ncu_launches())
    os.environ.pop("TRITON_INTERPRET", None)
    print(f"Triton {triton.__version__}, sm_90")
    for kw in [dict(), dict(G=2), dict(DB=True, G=2), dict(DB=True, STORE_A=False, S=6)]:
        print(kw, compile_report(**kw), flush=True)
