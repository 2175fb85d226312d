"""PROTOTYPE (bench/NOTES.md item 0 (d), s28; not used by the package; timed in s29: 2× slower, closed): the GDN
intra kernel as one-warp Gluon CTAs, one (chunk, head) tile each (the Triton template's shape: 8 per SM at T=8192
H=8), with v brought ON CHIP first.

Why: at T=8192 H=8 (1024 tiles, one wave) every SM inverts (~10 µs, DRAM idle) and then streams w/u; the stream
waits on v's DRAM reads (s22: with v L2-resident the same Triton code takes 23.0 µs instead of 27.5; the 1.8× intra
target needs 25.8). Triton cannot hold v across the inversion (registers spill; its loop prologue lost, s23). Here
each CTA issues v's TMA load into shared memory (16 KB) before anything else, so v arrives while the warp computes
K Kᵀ and inverts; u = (X·diag β)·v then reads v from shared memory, w = (X·diag β e^g)·k re-reads the keys (L2).

Math, per tile (as ops.gdn_fwd_intra): A = tril(diag(β)·(K Kᵀ ⊙ e^{g_i − g_j}), −1), X = (I + A)^{-1} by block
doubling (16×16 diagonal tiles X ← X − X·A_b·X, then the 16 → 32 → 64 merges; gluon_intra's helpers, W = 1),
u = X·diag(β)·v, w = X·diag(β e^g)·k, A_out = X (bf16). Fixed length only (B ≥ 1, no cu_seqlens): rows past T
load β = 0 and k = 0, TMA fills v's rows past T with zeros, and the stores are masked.

Shared memory per CTA: v 16 KB (boxes of [64, NCU]) + the compiler's conversion scratch; keys go global →
registers in BK-column slices (budget: NOTES item 0 (d)).

    PYTHONPATH=<triton 3.6 dir> python bench/proto_onchip_intra.py          # CPU: sm_90 registers / spills / smem
    python bench/proto_onchip_intra.py --gpu OUT_DIR                        # GPU: errors vs fp64, times vs Triton
    PYTHONPATH=<triton 3.6 dir> python bench/proto_onchip_intra.py --sass-compare   # SASS mix vs the Triton kernel

Measured (s29, H200, bench/results/2026-11-29-s29 §1): 54.2 µs at T=8192 H=8 against the Triton kernel's 27.6, v
early or late alike (53.8): closed.
"""

import json
import os
import re
import sys

os.environ.pop("TRITON_INTERPRET", None)
import triton  # noqa: E402
from triton.experimental import gluon  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon.language.nvidia.ampere import mma_v2  # noqa: E402
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma  # noqa: E402

from sglang_trinv.ops import gluon_intra as gi  # noqa: E402

BT = 64


@gluon.jit
def _row_vec(ptr, t0, T, head, H: gl.constexpr, blk: gl.constexpr, L: gl.constexpr):
    """[1, 16] values of rows t0 + 16·blk … of a [B·T, H] tensor at ``head`` (0 past T), fp32, layout L."""
    i = gl.arange(0, 16, layout=gl.SliceLayout(0, L))
    t = t0 + 16 * blk + i
    return gl.load(ptr + t * H + head, mask=t < T, other=0.0).to(gl.float32)[None, :]


@gluon.jit
def _key_rows(k_ptr, t0, T, kcol, blk: gl.constexpr, kc: gl.constexpr, BK: gl.constexpr, KS: gl.constexpr,
              LK: gl.constexpr):
    """[1, 16, BK] keys: rows t0 + 16·blk …, columns kcol + kc … (row stride KS), zeros past T."""
    ir = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, LK)))
    ic = gl.arange(0, BK, layout=gl.SliceLayout(0, gl.SliceLayout(1, LK)))
    t = (t0 + 16 * blk + ir)[None, :, None]
    return gl.load(k_ptr + t * KS + kcol + kc + ic[None, None, :], mask=t < T, other=0.0)


@gluon.jit
def _store_rows(ptr, x, t0, T, col, blk: gl.constexpr, NCOL: gl.constexpr, RS: gl.constexpr, L: gl.constexpr):
    """x [1, 16, NCOL] (layout L) into rows t0 + 16·blk … of a row-stride-RS tensor at column ``col``."""
    ir = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, L)))
    ic = gl.arange(0, NCOL, layout=gl.SliceLayout(0, gl.SliceLayout(1, L)))
    t = (t0 + 16 * blk + ir)[None, :, None]
    gl.store(ptr + t * RS + col + ic[None, None, :], x.to(ptr.dtype.element_ty), mask=t < T)


@gluon.jit
def _row_block(x0, x1, x2, x3, s0, s1, s2, s3, n: gl.constexpr, MMA: gl.constexpr):
    """Σ_{j<n} x_j · s_j: one 16-row block of X·S ([1, 16, 16] bf16 A operands, [1, 16, NC] bf16 B operands)."""
    acc = mma_v2(x0, s0, gl.zeros([1, 16, s0.shape[2]], gl.float32, MMA))
    if n > 1:
        acc = mma_v2(x1, s1, acc)
    if n > 2:
        acc = mma_v2(x2, s2, acc)
    if n > 3:
        acc = mma_v2(x3, s3, acc)
    return acc


@gluon.jit
def _load_v(v_desc, vtma, bar, row, col, V: gl.constexpr, NCU: gl.constexpr):
    """v's [64, V] tile (boxes of [64, NCU]) into shared memory by TMA, completion on ``bar``."""
    mbarrier.expect(bar, V * 64 * 2)
    for i in gl.static_range(V // NCU):
        tma.async_copy_global_to_shared(v_desc, [row, col + NCU * i], bar, vtma.index(i))


@gluon.jit
def onchip_intra_kernel(k_ptr, v_desc, beta_ptr, g_ptr, w_ptr, u_ptr, a_ptr, T, H: gl.constexpr,
                        Hg: gl.constexpr, K: gl.constexpr, V: gl.constexpr, BK: gl.constexpr, DP: gl.constexpr,
                        MP: gl.constexpr, STORE_A: gl.constexpr, NCU: gl.constexpr,
                        EARLY_V: gl.constexpr):
    MMA: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, 1, 1], instr_shape=[1, 16, 8])
    A2: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    B2: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=2)
    LK: gl.constexpr = gl.BlockedLayout([1, 1, 8], [1, 4, 8], [1, 1, 1], [2, 1, 0])
    ROW: gl.constexpr = gl.SliceLayout(2, MMA)  # [1, 16] per-row vectors
    COL: gl.constexpr = gl.SliceLayout(1, MMA)  # [1, 16] per-column vectors
    NT = gl.cdiv(T, 64)
    pid = gl.program_id(0)
    head = pid % H  # heads fastest: the CTAs at work at once cover whole rows of k, v, w, u
    i_bt = pid // H
    b = i_bt // NT
    t0 = (i_bt % NT) * 64
    kh = head // (H // Hg)
    # 1. v's tile into shared memory first (TMA; rows past T come back as zeros): it arrives during K Kᵀ + inversion
    # (boxes of [64, NCU]: allocated in the rank-3 form the mma operand loads read, [1, 64, NCU] per box, and
    # written through the descriptor's 2-D view, as gluon_intra's key buffer)
    VL3: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=min(2 * NCU, 128), element_bitwidth=16, rank=3)
    vbuf = gl.allocate_shared_memory(gl.bfloat16, [V // NCU, 1, 64, NCU], VL3)
    vtma = vbuf._reinterpret(gl.bfloat16, [V // NCU, 64, NCU], v_desc.layout)
    bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(bar, count=1)
    if EARLY_V:
        _load_v(v_desc, vtma, bar, b * T + t0, head * V, V, NCU)
    # 2. β and g per row (ROW) and per column (COL)
    bk = beta_ptr + b * T * H
    gk = g_ptr + b * T * H
    b_0 = _row_vec(bk, t0, T, head, H, 0, ROW)
    b_1 = _row_vec(bk, t0, T, head, H, 1, ROW)
    b_2 = _row_vec(bk, t0, T, head, H, 2, ROW)
    b_3 = _row_vec(bk, t0, T, head, H, 3, ROW)
    g_0 = _row_vec(gk, t0, T, head, H, 0, ROW)
    g_1 = _row_vec(gk, t0, T, head, H, 1, ROW)
    g_2 = _row_vec(gk, t0, T, head, H, 2, ROW)
    g_3 = _row_vec(gk, t0, T, head, H, 3, ROW)
    # 3. K Kᵀ's 10 lower 16×16 blocks, BK key columns at a time (keys global → registers)
    kb = k_ptr + b * T * Hg * K
    z = gl.zeros([1, 16, 16], gl.float32, MMA)
    r00, r10, r11, r20, r21, r22, r30, r31, r32, r33 = z, z, z, z, z, z, z, z, z, z
    for kc in range(0, K, BK):  # a loop, not unrolled: one slice of keys in registers at a time
        k0 = _key_rows(kb, t0, T, kh * K, 0, kc, BK, Hg * K, LK)
        k1 = _key_rows(kb, t0, T, kh * K, 1, kc, BK, Hg * K, LK)
        k2 = _key_rows(kb, t0, T, kh * K, 2, kc, BK, Hg * K, LK)
        k3 = _key_rows(kb, t0, T, kh * K, 3, kc, BK, Hg * K, LK)
        a0 = gl.convert_layout(k0, A2)
        a1 = gl.convert_layout(k1, A2)
        a2 = gl.convert_layout(k2, A2)
        a3 = gl.convert_layout(k3, A2)
        c0 = gl.convert_layout(gl.permute(k0, [0, 2, 1]), B2)
        c1 = gl.convert_layout(gl.permute(k1, [0, 2, 1]), B2)
        c2 = gl.convert_layout(gl.permute(k2, [0, 2, 1]), B2)
        c3 = gl.convert_layout(gl.permute(k3, [0, 2, 1]), B2)
        r00 = mma_v2(a0, c0, r00)
        r10 = mma_v2(a1, c0, r10)
        r11 = mma_v2(a1, c1, r11)
        r20 = mma_v2(a2, c0, r20)
        r21 = mma_v2(a2, c1, r21)
        r22 = mma_v2(a2, c2, r22)
        r30 = mma_v2(a3, c0, r30)
        r31 = mma_v2(a3, c1, r31)
        r32 = mma_v2(a3, c2, r32)
        r33 = mma_v2(a3, c3, r33)
    # 4. A = β_i (K Kᵀ)_ij e^{g_i − g_j} below the diagonal; X = (I + A)^{-1} (gluon_intra's doubling, W = 1)
    ir = gl.arange(0, 16, layout=gl.SliceLayout(0, ROW))
    ic = gl.arange(0, 16, layout=gl.SliceLayout(0, COL))
    r = ir[None, :, None]
    c = ic[None, None, :]
    h_0 = gl.convert_layout(g_0, COL)
    h_1 = gl.convert_layout(g_1, COL)
    h_2 = gl.convert_layout(g_2, COL)
    h_3 = gl.convert_layout(g_3, COL)
    low = r > c
    a00 = gl.where(low, r00 * b_0[:, :, None] * gi._safe_exp(g_0[:, :, None] - h_0[:, None, :]), 0.0)
    a11 = gl.where(low, r11 * b_1[:, :, None] * gi._safe_exp(g_1[:, :, None] - h_1[:, None, :]), 0.0)
    a22 = gl.where(low, r22 * b_2[:, :, None] * gi._safe_exp(g_2[:, :, None] - h_2[:, None, :]), 0.0)
    a33 = gl.where(low, r33 * b_3[:, :, None] * gi._safe_exp(g_3[:, :, None] - h_3[:, None, :]), 0.0)
    a10 = r10 * b_1[:, :, None] * gi._safe_exp(g_1[:, :, None] - h_0[:, None, :])
    a20 = r20 * b_2[:, :, None] * gi._safe_exp(g_2[:, :, None] - h_0[:, None, :])
    a21 = r21 * b_2[:, :, None] * gi._safe_exp(g_2[:, :, None] - h_1[:, None, :])
    a30 = r30 * b_3[:, :, None] * gi._safe_exp(g_3[:, :, None] - h_0[:, None, :])
    a31 = r31 * b_3[:, :, None] * gi._safe_exp(g_3[:, :, None] - h_1[:, None, :])
    a32 = r32 * b_3[:, :, None] * gi._safe_exp(g_3[:, :, None] - h_2[:, None, :])
    x00 = gi._inv_diag(a00, r, c, MMA, DP)
    x11 = gi._inv_diag(a11, r, c, MMA, DP)
    x22 = gi._inv_diag(a22, r, c, MMA, DP)
    x33 = gi._inv_diag(a33, r, c, MMA, DP)
    x10 = -gi._mm(gi._mm(x11, a10, MMA, MP), x00, MMA, MP)
    x32 = -gi._mm(gi._mm(x33, a32, MMA, MP), x22, MMA, MP)
    t20 = gi._mm(a20, x00, MMA, MP) + gi._mm(a21, x10, MMA, MP)
    t21 = gi._mm(a21, x11, MMA, MP)
    t30 = gi._mm(a30, x00, MMA, MP) + gi._mm(a31, x10, MMA, MP)
    t31 = gi._mm(a31, x11, MMA, MP)
    x20 = -gi._mm(x22, t20, MMA, MP)
    x21 = -gi._mm(x22, t21, MMA, MP)
    x30 = -(gi._mm(x32, t20, MMA, MP) + gi._mm(x33, t30, MMA, MP))
    x31 = -(gi._mm(x32, t21, MMA, MP) + gi._mm(x33, t31, MMA, MP))
    if STORE_A:  # X in bf16, [B, T, H, 64] (the blocks above the diagonal are zeros)
        ab = a_ptr + b * T * H * 64 + head * 64
        zt = gl.zeros([1, 16, 16], gl.float32, MMA)
        _store_rows(ab, x00, t0, T, 0, 0, 16, H * 64, MMA)
        _store_rows(ab, zt, t0, T, 16, 0, 16, H * 64, MMA)
        _store_rows(ab, zt, t0, T, 32, 0, 16, H * 64, MMA)
        _store_rows(ab, zt, t0, T, 48, 0, 16, H * 64, MMA)
        _store_rows(ab, x10, t0, T, 0, 1, 16, H * 64, MMA)
        _store_rows(ab, x11, t0, T, 16, 1, 16, H * 64, MMA)
        _store_rows(ab, zt, t0, T, 32, 1, 16, H * 64, MMA)
        _store_rows(ab, zt, t0, T, 48, 1, 16, H * 64, MMA)
        _store_rows(ab, x20, t0, T, 0, 2, 16, H * 64, MMA)
        _store_rows(ab, x21, t0, T, 16, 2, 16, H * 64, MMA)
        _store_rows(ab, x22, t0, T, 32, 2, 16, H * 64, MMA)
        _store_rows(ab, zt, t0, T, 48, 2, 16, H * 64, MMA)
        _store_rows(ab, x30, t0, T, 0, 3, 16, H * 64, MMA)
        _store_rows(ab, x31, t0, T, 16, 3, 16, H * 64, MMA)
        _store_rows(ab, x32, t0, T, 32, 3, 16, H * 64, MMA)
        _store_rows(ab, x33, t0, T, 48, 3, 16, H * 64, MMA)
    # 5. u = X·diag(β)·v: X's columns scaled by β_j, bf16 A operands; v from shared memory (waited for only now)
    s_0 = gl.convert_layout(b_0, COL)
    s_1 = gl.convert_layout(b_1, COL)
    s_2 = gl.convert_layout(b_2, COL)
    s_3 = gl.convert_layout(b_3, COL)
    p00 = gl.convert_layout((x00 * s_0[:, None, :]).to(gl.bfloat16), A2)
    p10 = gl.convert_layout((x10 * s_0[:, None, :]).to(gl.bfloat16), A2)
    p11 = gl.convert_layout((x11 * s_1[:, None, :]).to(gl.bfloat16), A2)
    p20 = gl.convert_layout((x20 * s_0[:, None, :]).to(gl.bfloat16), A2)
    p21 = gl.convert_layout((x21 * s_1[:, None, :]).to(gl.bfloat16), A2)
    p22 = gl.convert_layout((x22 * s_2[:, None, :]).to(gl.bfloat16), A2)
    p30 = gl.convert_layout((x30 * s_0[:, None, :]).to(gl.bfloat16), A2)
    p31 = gl.convert_layout((x31 * s_1[:, None, :]).to(gl.bfloat16), A2)
    p32 = gl.convert_layout((x32 * s_2[:, None, :]).to(gl.bfloat16), A2)
    p33 = gl.convert_layout((x33 * s_3[:, None, :]).to(gl.bfloat16), A2)
    # w's operands: X·diag(β e^g) (computed here, so X's fp32 blocks die before the streams)
    e_0 = s_0 * gl.exp(h_0)
    e_1 = s_1 * gl.exp(h_1)
    e_2 = s_2 * gl.exp(h_2)
    e_3 = s_3 * gl.exp(h_3)
    q00 = gl.convert_layout((x00 * e_0[:, None, :]).to(gl.bfloat16), A2)
    q10 = gl.convert_layout((x10 * e_0[:, None, :]).to(gl.bfloat16), A2)
    q11 = gl.convert_layout((x11 * e_1[:, None, :]).to(gl.bfloat16), A2)
    q20 = gl.convert_layout((x20 * e_0[:, None, :]).to(gl.bfloat16), A2)
    q21 = gl.convert_layout((x21 * e_1[:, None, :]).to(gl.bfloat16), A2)
    q22 = gl.convert_layout((x22 * e_2[:, None, :]).to(gl.bfloat16), A2)
    q30 = gl.convert_layout((x30 * e_0[:, None, :]).to(gl.bfloat16), A2)
    q31 = gl.convert_layout((x31 * e_1[:, None, :]).to(gl.bfloat16), A2)
    q32 = gl.convert_layout((x32 * e_2[:, None, :]).to(gl.bfloat16), A2)
    q33 = gl.convert_layout((x33 * e_3[:, None, :]).to(gl.bfloat16), A2)
    if not EARLY_V:  # the control: v requested only now, as the Triton program's stream does
        _load_v(v_desc, vtma, bar, b * T + t0, head * V, V, NCU)
    mbarrier.wait(bar, 0)
    mbarrier.invalidate(bar)
    ub = u_ptr + b * T * H * V + head * V
    for i in range(V // NCU):  # NCU value columns at a time (a loop: one box's operands in registers)
        vs = vbuf.index(i)
        v0 = vs.slice(0, 16, dim=1).load(B2)
        v1 = vs.slice(16, 16, dim=1).load(B2)
        v2 = vs.slice(32, 16, dim=1).load(B2)
        v3 = vs.slice(48, 16, dim=1).load(B2)
        _store_rows(ub, _row_block(p00, p00, p00, p00, v0, v0, v0, v0, 1, MMA), t0, T, NCU * i, 0, NCU, H * V, MMA)
        _store_rows(ub, _row_block(p10, p11, p11, p11, v0, v1, v1, v1, 2, MMA), t0, T, NCU * i, 1, NCU, H * V, MMA)
        _store_rows(ub, _row_block(p20, p21, p22, p22, v0, v1, v2, v2, 3, MMA), t0, T, NCU * i, 2, NCU, H * V, MMA)
        _store_rows(ub, _row_block(p30, p31, p32, p33, v0, v1, v2, v3, 4, MMA), t0, T, NCU * i, 3, NCU, H * V, MMA)
    # w = X·diag(β e^g)·k: the keys re-read (L2), NCU columns at a time
    LW: gl.constexpr = gl.BlockedLayout([1, 1, 8], [1, 4, 8], [1, 1, 1], [2, 1, 0])
    wb = w_ptr + b * T * H * K + head * K
    for i in range(K // NCU):
        w0 = gl.convert_layout(_key_rows(kb, t0, T, kh * K, 0, NCU * i, NCU, Hg * K, LW), B2)
        w1 = gl.convert_layout(_key_rows(kb, t0, T, kh * K, 1, NCU * i, NCU, Hg * K, LW), B2)
        w2 = gl.convert_layout(_key_rows(kb, t0, T, kh * K, 2, NCU * i, NCU, Hg * K, LW), B2)
        w3 = gl.convert_layout(_key_rows(kb, t0, T, kh * K, 3, NCU * i, NCU, Hg * K, LW), B2)
        _store_rows(wb, _row_block(q00, q00, q00, q00, w0, w0, w0, w0, 1, MMA), t0, T, NCU * i, 0, NCU, H * K, MMA)
        _store_rows(wb, _row_block(q10, q11, q11, q11, w0, w1, w1, w1, 2, MMA), t0, T, NCU * i, 1, NCU, H * K, MMA)
        _store_rows(wb, _row_block(q20, q21, q22, q22, w0, w1, w2, w2, 3, MMA), t0, T, NCU * i, 2, NCU, H * K, MMA)
        _store_rows(wb, _row_block(q30, q31, q32, q33, w0, w1, w2, w3, 4, MMA), t0, T, NCU * i, 3, NCU, H * K, MMA)


def constexprs(H, Hg, K=128, V=128, BK=32, store_A=True, diag="bf16x3", merge="bf16x3", NCU=32, sb=True,
               early_v=True):
    """sb: bf16x3 operands split by packed conversions (gluon_intra's GluonLaunch.SB; the same rounding, fewer
    instructions: 5256 against 5624 SASS here, the same 88 B of stack)."""
    def code(name):
        c = gi.PRECISIONS[name]
        return c + gi.P_SPLIT_BITS if sb and c == gi.P_BF16X3 else c

    return dict(H=H, Hg=Hg, K=K, V=V, BK=BK, DP=code(diag), MP=code(merge), STORE_A=store_A, NCU=NCU,
                EARLY_V=early_v)


def launch(k, v, g, beta, w, u, A=None, **kw):
    """w, u (and A) for [B, T, …] inputs, fixed length; g the chunk-local cumulative log-gate (fp32)."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    B, T, Hg, K = k.shape
    H, V = v.shape[-2], v.shape[-1]
    if B > 1 and T % 64:  # v's TMA box of a partial last chunk would read the next batch row's first rows
        raise ValueError(f"prototype: B={B} needs T % 64 == 0 (T={T})")
    const = constexprs(H, Hg, K, V, store_A=A is not None, **kw)
    desc = TensorDescriptor.from_tensor(v.reshape(B * T, H * V), [64, const["NCU"]],
                                        gi._block_layout(64, const["NCU"]))
    grid = (B * triton.cdiv(T, 64) * H,)
    onchip_intra_kernel[grid](k, desc, beta, g, w, u, A if A is not None else w, T, **const, num_warps=1)


def compile_report(H=8, Hg=4, **kw) -> dict:
    """sm_90 compile on any machine: registers, spills (stack), shared memory, SASS counts."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    from sglang_trinv.benchmarks.resources import cubin_usage

    fn = onchip_intra_kernel
    const = constexprs(H, Hg, **kw)
    nc = const["NCU"]
    sig = {"k_ptr": "*bf16", "v_desc": f"tensordesc<bf16[64, {nc}],{gi._block_layout(64, nc)!r}>",
           "beta_ptr": "*bf16", "g_ptr": "*fp32", "w_ptr": "*bf16", "u_ptr": "*bf16", "a_ptr": "*bf16", "T": "i32"}
    sig.update({n: "constexpr" for n in const})
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n, t in sig.items() if t.startswith("*")}
    src = GluonASTSource(fn=fn, signature=sig, attrs=attrs,
                         constexprs={(fn.arg_names.index(n),): v for n, v in const.items()})
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 1})
    use = cubin_usage(c.asm["cubin"], sass=True)
    ops = re.findall(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", use["sass"], re.M)
    per_sm = min(228 * 1024 // max(c.metadata.shared + 1024, 1), 65536 // (32 * max(use["regs"], 1)), 32)
    return dict(regs=use["regs"], stack=use["stack"], smem=c.metadata.shared, ctas_per_sm=per_sm,
                sass_instructions=len(ops), hmma=sum(o.startswith("HMMA") for o in ops),
                ldgsts=sum(o.startswith("LDGSTS") for o in ops), utmaldg=sum(o.startswith("UTMALDG") for o in ops),
                bar_sync=sum(o.startswith("BAR.SYNC") for o in ops))


def gpu(out: str) -> int:
    """Errors vs the fp64 twin and times (CUDA graphs) beside ops.gdn_fwd_intra (Triton, with A) and stock, at
    T=8192 H=8 Hg=4 one sequence: the 1.8× intra target's shape."""
    import torch

    from sglang_trinv import ops
    from sglang_trinv.benchmarks import common
    from sglang_trinv.benchmarks import kernels as bk

    os.makedirs(out, exist_ok=True)
    rows = []
    for T, H, Hg in ((8192, 8, 4), (4096, 8, 4), (8192, 32, 16)):
        a = bk.make_inputs(T, H, Hg, 128, 128, 1, 0)
        k, v, g, beta = a["k"], a["v"], a["g"], a["beta"]
        w, u, A = k.new_empty(1, T, H, 128), torch.empty_like(v), k.new_empty(1, T, H, 64)
        launch(k, v, g, beta, w, u, A)
        torch.cuda.synchronize()
        w_t, u_t, A_t = ops.gdn_fwd_intra(k, v, g, beta, backend="triton")
        w_s, u_s, A_s = bk.stock_intra(k, v, g, beta, None, None)
        refs = bk.ref.fwd_intra(k, v, g, beta, None)  # fp64 twin: w, u, A
        err = {}
        for who, outs in (("onchip", (w, u, A)), ("triton", (w_t, u_t, A_t)), ("stock", (w_s, u_s, A_s))):
            for n, x, r in zip(("w", "u", "A"), outs, refs):
                err[f"{who} {n} vs fp64"] = float((x.double() - r).abs().max() / r.abs().max())
            err[f"{who} nonfinite"] = int(sum((~torch.isfinite(x.float())).sum() for x in outs))
        t_on = common.graph_us(lambda: launch(k, v, g, beta, w, u, A), "cuda")
        # the control: the same kernel with v requested after the inversion (what "on chip first" buys)
        t_late = common.graph_us(lambda: launch(k, v, g, beta, w, u, A, early_v=False), "cuda")
        t_tr = common.graph_us(lambda: ops.gdn_fwd_intra(k, v, g, beta, backend="triton"), "cuda")
        t_st = common.graph_us(lambda: bk.stock_intra(k, v, g, beta, None, None), "cuda")
        rows.append(dict(T=T, H=H, Hg=Hg, onchip_us=t_on, onchip_late_v_us=t_late, triton_us=t_tr, stock_us=t_st,
                         **err))
        print(rows[-1], flush=True)
    with open(os.path.join(out, "proto_onchip.json"), "w") as f:
        json.dump(dict(meta=common.run_meta("cuda"), rows=rows), f, indent=1)
    return 0


def sass_compare(H=8, Hg=4) -> list[tuple[str, int, int]]:
    """(opcode, count in the Triton kernel's SASS, count in this prototype's), most frequent first: the static sm_90
    instruction mix of both builds at one head shape (s29: what the 2× slower prototype does differently)."""
    import collections

    from sglang_trinv.benchmarks import resources

    texts = []
    usage = resources.cubin_usage

    def keep(cubin, sass=False):
        use = usage(cubin, sass=True)
        texts.append(use["sass"])
        return use

    resources.cubin_usage = keep
    try:
        resources.compile_gdn(H=H, Hg=Hg)
        compile_report(H=H, Hg=Hg)
    finally:
        resources.cubin_usage = usage
    op = r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)"
    tri, glu = (collections.Counter(re.findall(op, t, re.M)) for t in (texts[0], texts[-1]))
    return sorted(((o, tri[o], glu[o]) for o in set(tri) | set(glu)), key=lambda x: -(x[1] + x[2]))


if __name__ == "__main__":
    if "--gpu" in sys.argv:
        sys.exit(gpu(sys.argv[sys.argv.index("--gpu") + 1]))
    if "--sass-compare" in sys.argv:
        print("| opcode | Triton kernel | on-chip prototype |\n|---|---|---|")
        for o, a, b in sass_compare():
            print(f"| {o} | {a} | {b} |")
        sys.exit(0)
    for kw in (dict(), dict(early_v=False), dict(sb=False), dict(NCU=64), dict(store_A=False), dict(BK=64),
               dict(merge="tf32")):
        print(kw, compile_report(**kw), flush=True)
