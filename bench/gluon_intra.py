"""Warp-specialized GDN intra kernel in Gluon (Hopper): inversion and the w/u stream on the same SM at the same
time — the kernel planned in bench/NOTES.md. Experimental, not in the package: Gluon has no interpreter, so its
only CPU check is the sm_90 compile (tests/test_kernels.py); correctness is checked on the GPU against fp64.

One persistent CTA per SM, two partitions:
- inverters (default partition, W = 8 warps at 224–240 registers): per batch of W (chunk, head) tiles, one tile
  per warp, KKᵀ + gate + block-doubling (I + A)^{-1}; Ai stored (bf16, the A output) and the batch handed over
  with an mbarrier ("full"), at most one batch ahead of the streamers ("empty");
- streamers (worker partition, one warpgroup at 56 registers): u = Ai·(β ⊙ v), w = Ai·(β e^g ⊙ k) with
  warpgroup MMAs (Ai from L2 into registers, the scaled v/k tile through shared memory), BV columns at a time,
  while the inverters work on the next batch.

Same algorithm and operand roundings as ``ops.gdn_kkt_inverse`` (blockdoubling, bf16x3 diagonal tiles, tf32
merges): per tile KKᵀ as 10 lower 16×16 tiles (bf16 mma_v2), the gate β_i·exp(g_i − g_j), doubling on the four
diagonal tiles, merges 16 → 32 → 64. Tensors are [W, 16, 16] with the mma layout's warps along the first
axis, so each warp inverts its own tile as a 1-warp program of ``gdn_intra`` does.

    PYTHONPATH=<triton 3.6 dir> python bench/gluon_intra.py               # CPU: registers / spills (sm_90)
    python bench/gluon_intra.py --gpu OUT_DIR                             # GPU: errors vs fp64, times vs ours/stock

CPU compile, 2026-11-27 (Triton 3.6.0 and 3.8.0, sm_90): 168 registers × 12 warps at launch (one CTA per SM),
rebalanced to 224–240 for the inverters and 56 for the streamers; no spills with BK=32, BV=16 (BV=32: 96 B;
inverters at 216 registers: 56 B). Not yet run on a GPU.
"""

import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.language.nvidia.ampere import mma_v2
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, warpgroup_mma

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


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
        a_b = gl.where((r // (2 << lvl) == c // (2 << lvl)) & ((r // (1 << lvl)) % 2 == 1) & ((c // (1 << lvl)) % 2 == 0), a, 0.0)
        x = x - _mm(_mm(x, a_b, MMA, PREC), x, MMA, PREC)
    return x


@gluon.jit
def _krows(k_ptr, rows, T, cols, valid, Hg: gl.constexpr, K: gl.constexpr):
    """[W, 16, BK] bf16 key rows of one sub-chunk per warp (0 past T and for tiles past the last one)."""
    return gl.load(k_ptr + rows * (Hg * K) + cols, mask=(rows < T) & valid, other=0.0)


@gluon.jit
def _invert_tiles(k_ptr, beta_ptr, g_ptr, ai_ptr, T, n_tiles, H: gl.constexpr, Hg: gl.constexpr, K: gl.constexpr,
                  W: gl.constexpr, BK: gl.constexpr, DP: gl.constexpr, MP: gl.constexpr,
                  full, empty):
    """Inverter partition: W warps, one (chunk, head) tile per warp: KKᵀ, gate, (I + A)^{-1} by doubling."""
    MMA: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[W, 1, 1], instr_shape=[1, 16, 8])
    A2: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    B2: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=2)
    LK: gl.constexpr = gl.BlockedLayout([1, 1, 8], [1, 4, 8], [W, 1, 1], [2, 1, 0])
    COL: gl.constexpr = gl.SliceLayout(1, MMA)   # [W, 16] per-column vectors
    wb = gl.arange(0, W, layout=gl.SliceLayout(1, gl.SliceLayout(2, MMA)))
    ir = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, MMA)))
    ic = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(1, MMA)))
    r = ir[None, :, None]
    c = ic[None, None, :]
    kb = gl.arange(0, W, layout=gl.SliceLayout(1, gl.SliceLayout(2, LK)))
    kr = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, LK)))
    kc = gl.arange(0, BK, layout=gl.SliceLayout(0, gl.SliceLayout(1, LK)))
    NT = gl.cdiv(T, 64)
    j = 0
    for base in range(gl.program_id(0) * W, n_tiles, gl.num_programs(0) * W):
        # tile = base + warp; chunk fastest, then head
        kt = base + kb
        k_valid = (kt < n_tiles)[:, None, None]
        k_chunk = kt % NT
        k_head = gl.minimum(kt // NT, H - 1)
        k_base = k_ptr + (k_head // (H // Hg)) * K
        t_rows = (k_chunk * 64)[:, None, None] + kr[None, :, None]
        z = gl.zeros([W, 16, 16], gl.float32, MMA)
        r00, r10, r11, r20, r21, r22, r30, r31, r32, r33 = z, z, z, z, z, z, z, z, z, z
        for i_k in range(K // BK):
            cols = (i_k * BK + kc)[None, None, :]
            k0 = _krows(k_base[:, None, None], t_rows, T, cols, k_valid, Hg, K)
            k1 = _krows(k_base[:, None, None], t_rows + 16, T, cols, k_valid, Hg, K)
            k2 = _krows(k_base[:, None, None], t_rows + 32, T, cols, k_valid, Hg, K)
            k3 = _krows(k_base[:, None, None], t_rows + 48, T, cols, k_valid, Hg, K)
            a0, a1, a2, a3 = (gl.convert_layout(k0, A2), gl.convert_layout(k1, A2), gl.convert_layout(k2, A2),
                              gl.convert_layout(k3, A2))
            b0 = gl.convert_layout(gl.permute(k0, [0, 2, 1]), B2)
            b1 = gl.convert_layout(gl.permute(k1, [0, 2, 1]), B2)
            b2 = gl.convert_layout(gl.permute(k2, [0, 2, 1]), B2)
            b3 = gl.convert_layout(gl.permute(k3, [0, 2, 1]), B2)
            r00 = mma_v2(a0, b0, r00)
            r10 = mma_v2(a1, b0, r10)
            r11 = mma_v2(a1, b1, r11)
            r20 = mma_v2(a2, b0, r20)
            r21 = mma_v2(a2, b1, r21)
            r22 = mma_v2(a2, b2, r22)
            r30 = mma_v2(a3, b0, r30)
            r31 = mma_v2(a3, b1, r31)
            r32 = mma_v2(a3, b2, r32)
            r33 = mma_v2(a3, b3, r33)
        # gates: β_i, g_i per row (SliceLayout(2, MMA)) and g_j per column (COL)
        t = base + wb
        valid = (t < n_tiles)[:, None]
        chunk = t % NT
        head = gl.minimum(t // NT, H - 1)
        rr = (chunk * 64)[:, None] + ir[None, :]
        b_0 = gl.load(beta_ptr + rr * H + head[:, None], mask=(rr < T) & valid, other=0.0).to(gl.float32)
        b_1 = gl.load(beta_ptr + (rr + 16) * H + head[:, None], mask=(rr + 16 < T) & valid, other=0.0).to(gl.float32)
        b_2 = gl.load(beta_ptr + (rr + 32) * H + head[:, None], mask=(rr + 32 < T) & valid, other=0.0).to(gl.float32)
        b_3 = gl.load(beta_ptr + (rr + 48) * H + head[:, None], mask=(rr + 48 < T) & valid, other=0.0).to(gl.float32)
        g_0 = gl.load(g_ptr + rr * H + head[:, None], mask=(rr < T) & valid, other=0.0)
        g_1 = gl.load(g_ptr + (rr + 16) * H + head[:, None], mask=(rr + 16 < T) & valid, other=0.0)
        g_2 = gl.load(g_ptr + (rr + 32) * H + head[:, None], mask=(rr + 32 < T) & valid, other=0.0)
        g_3 = gl.load(g_ptr + (rr + 48) * H + head[:, None], mask=(rr + 48 < T) & valid, other=0.0)
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
        # store Ai [T, H, 64] in bf16 (the 10 lower tiles; the caller zeroes the upper ones)
        o = ai_ptr + (chunk * 64)[:, None, None] * (H * 64) + head[:, None, None] * 64 + r * (H * 64) + c
        rows = (chunk * 64)[:, None, None] + r
        sv = valid[:, :, None]
        gl.store(o, x00.to(gl.bfloat16), mask=(rows < T) & sv)
        gl.store(o + 16 * H * 64, x10.to(gl.bfloat16), mask=(rows + 16 < T) & sv)
        gl.store(o + 16 * H * 64 + 16, x11.to(gl.bfloat16), mask=(rows + 16 < T) & sv)
        gl.store(o + 32 * H * 64, x20.to(gl.bfloat16), mask=(rows + 32 < T) & sv)
        gl.store(o + 32 * H * 64 + 16, x21.to(gl.bfloat16), mask=(rows + 32 < T) & sv)
        gl.store(o + 32 * H * 64 + 32, x22.to(gl.bfloat16), mask=(rows + 32 < T) & sv)
        gl.store(o + 48 * H * 64, x30.to(gl.bfloat16), mask=(rows + 48 < T) & sv)
        gl.store(o + 48 * H * 64 + 16, x31.to(gl.bfloat16), mask=(rows + 48 < T) & sv)
        gl.store(o + 48 * H * 64 + 32, x32.to(gl.bfloat16), mask=(rows + 48 < T) & sv)
        gl.store(o + 48 * H * 64 + 48, x33.to(gl.bfloat16), mask=(rows + 48 < T) & sv)
        # the upper tiles too (the streamer reads whole 64×64 Ai), then hand the batch over: every inverter
        # warp's stores, one arrive on "full" once the streamer has released the previous batch ("empty")
        zt = gl.zeros([W, 16, 16], gl.bfloat16, MMA)
        gl.store(o + 16, zt, mask=(rows < T) & sv)
        gl.store(o + 32, zt, mask=(rows < T) & sv)
        gl.store(o + 48, zt, mask=(rows < T) & sv)
        gl.store(o + 16 * H * 64 + 32, zt, mask=(rows + 16 < T) & sv)
        gl.store(o + 16 * H * 64 + 48, zt, mask=(rows + 16 < T) & sv)
        gl.store(o + 32 * H * 64 + 48, zt, mask=(rows + 32 < T) & sv)
        _partition_barrier()
        if j > 0:
            mbarrier.wait(empty, (j - 1) & 1)
        mbarrier.arrive(full)
        j += 1


@gluon.jit
def _stream_wu(k_ptr, v_ptr, beta_ptr, g_ptr, ai_ptr, w_ptr, u_ptr, T, n_tiles, full, empty,
               H: gl.constexpr, Hg: gl.constexpr, K: gl.constexpr, V: gl.constexpr, W: gl.constexpr,
               BV: gl.constexpr, NS: gl.constexpr):
    """Streamer partition (one warpgroup): for each handed-over batch of W tiles, u = Ai·(β ⊙ v) and
    w = Ai·(β e^g ⊙ k) with warpgroup MMAs (Ai from L2 into registers, the scaled v/k tile through shared memory),
    stored BV columns at a time; then release the batch ("empty")."""
    ACC: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NS, 1], instr_shape=[16, BV, 16])
    A_OP: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=ACC, k_width=2)
    LD: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [NS, 1], [1, 0])
    SMEM: gl.constexpr = gl.NVMMASharedLayout.get_default_for([64, BV], gl.bfloat16)
    b_smem = gl.allocate_shared_memory(gl.bfloat16, [64, BV], SMEM)
    r = gl.arange(0, 64, layout=gl.SliceLayout(1, LD))
    c64 = gl.arange(0, 64, layout=gl.SliceLayout(0, LD))
    cb = gl.arange(0, BV, layout=gl.SliceLayout(0, LD))
    ra = gl.arange(0, 64, layout=gl.SliceLayout(1, ACC))
    ca = gl.arange(0, BV, layout=gl.SliceLayout(0, ACC))
    NT = gl.cdiv(T, 64)
    j = 0
    for base in range(gl.program_id(0) * W, n_tiles, gl.num_programs(0) * W):
        mbarrier.wait(full, j & 1)
        for wi in range(W):
            t = base + wi
            if t < n_tiles:
                chunk = t % NT
                head = t // NT
                rows = chunk * 64 + r
                m_r = rows < T
                ai = gl.load(ai_ptr + (rows * H + head)[:, None] * 64 + c64[None, :], mask=m_r[:, None], other=0.0,
                             cache_modifier=".cg")
                a_op = gl.convert_layout(ai, A_OP)
                b = gl.load(beta_ptr + rows * H + head, mask=m_r, other=0.0).to(gl.float32)
                e = b * gl.exp(gl.load(g_ptr + rows * H + head, mask=m_r, other=0.0))
                rows_a = chunk * 64 + ra
                for i_v in gl.static_range(V // BV):
                    x = gl.load(v_ptr + (rows * H + head)[:, None] * V + (i_v * BV + cb)[None, :], mask=m_r[:, None],
                                other=0.0)
                    b_smem.store((x.to(gl.float32) * b[:, None]).to(gl.bfloat16))
                    fence_async_shared()
                    acc = warpgroup_mma(a_op, b_smem, gl.zeros([64, BV], gl.float32, ACC), use_acc=False)
                    gl.store(u_ptr + (rows_a * H + head)[:, None] * V + (i_v * BV + ca)[None, :],
                             acc.to(gl.bfloat16), mask=(rows_a < T)[:, None])
                for i_k in gl.static_range(K // BV):
                    x = gl.load(k_ptr + (rows * Hg + head // (H // Hg))[:, None] * K + (i_k * BV + cb)[None, :],
                                mask=m_r[:, None], other=0.0)
                    b_smem.store((x.to(gl.float32) * e[:, None]).to(gl.bfloat16))
                    fence_async_shared()
                    acc = warpgroup_mma(a_op, b_smem, gl.zeros([64, BV], gl.float32, ACC), use_acc=False)
                    gl.store(w_ptr + (rows_a * H + head)[:, None] * K + (i_k * BV + ca)[None, :],
                             acc.to(gl.bfloat16), mask=(rows_a < T)[:, None])
        mbarrier.arrive(empty)
        j += 1


@gluon.jit
def gluon_intra_kernel(k_ptr, v_ptr, beta_ptr, g_ptr, ai_ptr, w_ptr, u_ptr, T, n_tiles, H: gl.constexpr,
                       Hg: gl.constexpr, K: gl.constexpr, V: gl.constexpr, W: gl.constexpr, BK: gl.constexpr,
                       BV: gl.constexpr, DP: gl.constexpr, MP: gl.constexpr, REGS: gl.constexpr, NS: gl.constexpr):
    """Warp-specialized intra: W inverter warps (default partition) hand batches of W tiles (Ai in global, L2)
    to NS streamer warps that compute w/u beside the next batch's inversion."""
    full = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(full, count=1)
    mbarrier.init(empty, count=1)
    gl.warp_specialize([(_invert_tiles, (k_ptr, beta_ptr, g_ptr, ai_ptr, T, n_tiles, H, Hg, K, W, BK, DP, MP,
                                         full, empty)),
                        (_stream_wu, (k_ptr, v_ptr, beta_ptr, g_ptr, ai_ptr, w_ptr, u_ptr, T, n_tiles, full, empty,
                                      H, Hg, K, V, W, BV, NS))], [NS], [REGS])


def _compile(fn, sig, const, W) -> dict:
    sig = dict(sig)
    sig.update({k: "constexpr" for k in const})
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n, t in sig.items() if t.startswith("*")}
    src = GluonASTSource(fn=fn, signature=sig, attrs=attrs,
                         constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": W})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(c.asm["cubin"])
        f.flush()
        res = subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([CUOBJDUMP, "-sass", f.name], capture_output=True, text=True).stdout
    return dict(launch_regs=int(re.search(r"REG:(\d+)", res).group(1)), warps=c.metadata.num_warps,
                stack=int(re.search(r"STACK:(\d+)", res).group(1)), smem=c.metadata.shared,
                setmaxnreg=sorted({int(v, 16) for v in re.findall(r"USETMAXREG\.\w+\.CTAPOOL (?:UP0, )?(0x[0-9a-f]+)", sass)}))


def compile_report(W=8, BK=32, BV=16, REGS=56, NS=4) -> dict:
    """sm_90 compile on any machine: launch registers, warps, stack, shared memory, setmaxnreg values."""
    sig = {"k_ptr": "*bf16", "v_ptr": "*bf16", "beta_ptr": "*bf16", "g_ptr": "*fp32", "ai_ptr": "*bf16",
           "w_ptr": "*bf16", "u_ptr": "*bf16", "T": "i32", "n_tiles": "i32"}
    const = dict(H=32, Hg=16, K=128, V=128, W=W, BK=BK, BV=BV, DP=1, MP=0, REGS=REGS, NS=NS)
    return _compile(gluon_intra_kernel, sig, const, W)


VARIANTS = [dict(BV=32), dict(BV=32, REGS=72), dict(W=4, BV=32, REGS=96)]


def gluon_fwd_intra(k, v, g, beta, W=8, BK=32, BV=16, REGS=56, NS=4, out=None):
    """(w, u, Ai) for one sequence, as ops.gdn_fwd_intra (blockdoubling, bf16x3 diagonal tiles, tf32 merges)."""
    import torch

    B, T, Hg, K = k.shape
    H, V = v.shape[-2], v.shape[-1]
    assert B == 1 and H % Hg == 0 and K % BK == 0 and K % BV == 0 and V % BV == 0
    n_tiles = triton.cdiv(T, 64) * H
    w, u, Ai = out if out is not None else (k.new_empty(1, T, H, K), torch.empty_like(v), k.new_empty(1, T, H, 64))
    n_sm = torch.cuda.get_device_properties(k.device).multi_processor_count
    grid = (min(n_sm, triton.cdiv(n_tiles, W)),)
    gluon_intra_kernel[grid](k, v, beta, g, Ai, w, u, T, n_tiles, H=H, Hg=Hg, K=K, V=V, W=W, BK=BK, BV=BV, DP=1,
                             MP=0, REGS=REGS, NS=NS, num_warps=W)
    return w, u, Ai


def gpu_check(out: str) -> int:
    """Errors vs fp64 and CUDA-graph times beside ops.gdn_fwd_intra (same method/precisions) and stock."""
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
    # launch variants at T=8192 H=32 (compile: BV=32 spills 96 B at 56 streamer registers; 4 inverter warps
    # leave room for streamers of 96 registers but halve the inversions in flight)
    a = bk.make_inputs(8192, 32, 16, 128, 128, 1, 0)
    k, v, g, beta = a["k"], a["v"], a["g"], a["beta"]
    base = gluon_fwd_intra(k, v, g, beta)
    sweep = []
    for kw in VARIANTS:
        got = gluon_fwd_intra(k, v, g, beta, **kw)
        bufs = tuple(torch.empty_like(x) for x in got)
        sweep.append(dict(kw, maxdiff=max(float((x.float() - y.float()).abs().max()) for x, y in zip(got, base)),
                          us=events_us(lambda: gluon_fwd_intra(k, v, g, beta, out=bufs, **kw))))
        print(sweep[-1], flush=True)
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
    md += ["", "Launch variants, T=8192 H=32 (maxdiff: largest |w, u, A| difference to the default launch):", "",
           "| W | BV | streamer registers | µs | maxdiff |", "|---|---|---|---|---|"]
    for r in sweep:
        md.append(f"| {r.get('W', 8)} | {r.get('BV', 16)} | {r.get('REGS', 56)} | {r['us']:.1f} | {r['maxdiff']:.1e} |")
    return common.write_report(out, "gluon_intra", meta, [dict(r, kind="shape") for r in rows]
                               + [dict(r, kind="launch variant", T=8192, H=32, Hg=16) for r in sweep], md)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--gpu":
        sys.exit(gpu_check(sys.argv[2]))
    os.environ.pop("TRITON_INTERPRET", None)
    print(f"Triton {triton.__version__}, sm_90")
    for kw in [dict(), dict(BV=32), dict(REGS=64)]:
        print(kw, compile_report(**kw), flush=True)
