"""Warp-specialized GDN intra kernel in Gluon (Hopper, sm_90): the inversion and the w/u stream run on the same SM
at the same time. Backs :func:`sglang_trinv.ops.gdn_fwd_intra` / ``gdn_cumsum_fwd_intra`` for blockdoubling on
H100/H200 (``ops.gluon_reason``: where it can run, ``ops.gluon_auto_reason``: where it was measured faster); the
Triton template ``gdn_intra`` stays the portable kernel and the twin it is tested against. Gluon has no
interpreter: its CPU check is the sm_90 compile (tests/test_kernels.py), correctness is checked on the GPU
against fp64 and against the Triton kernel.

Why: the intra stage is two halves that want opposite SM shapes. The inversion is a latency-bound chain of small
tensor-core products (a one-warp program at the whole 255-register file per thread, eight per SM); the w/u stream
is memory-bound and wants many light warps. In plain Triton every program does both in turn (nothing of the
inversion hides behind the stream). Here one persistent CTA per SM has two partitions, handing over batches of
W = 4 (chunk, head) tiles:

- inverters (default partition, 4 warps raised to 256 registers, one tile per warp): keys TMA-prefetched into
  shared memory while the previous batch is inverted; KKᵀ (mma_v2 from shared memory), gate, (I + A)^{-1} by
  block doubling exactly as ``gdn_intra`` (16×16 diagonal tiles X ← X − X·A_b·X, then 16→32→64 merges); then
  Ai·diag(β), Ai·diag(β e^g) and Ai (bf16) into shared column panels [64, 16] and one mbarrier arrive ("full")
  once the streamers released the previous batch ("empty"). G = 2: the two value heads of one key head are
  neighbouring tiles and share one TMA-loaded key tile (broadcast in registers; half the key traffic).
- streamers (worker partition, one warpgroup lowered to REGS registers): per tile u = (Ai·diag β)·v and
  w = (Ai·diag β e^g)·k, BN = 64 columns at a time: v/k blocks from an S-deep TMA ring, four chained asynchronous
  K = 16 wgmmas on the panels (two such items in flight, PAIR), results into NSTG staging buffers.
- loader (LD, one warp): the v/k blocks into the ring as far ahead as its slots allow (they do not depend on Ai);
  storer (ST, one warp): the A output by TMA from the plain panels and each staged w/u block by TMA. Without them
  the streamer warpgroup issues both itself (Triton 3.6 puts a partition barrier around each single-thread copy).
- tiles run heads fastest (HF): the CTAs at work at one time cover whole rows of k, v, w, u (all heads of a few
  chunks) instead of one head's 128-byte pieces of many rows — the streamers alone 82.4 → 77.9 µs at T=8192 H=32
  on an H200, 8 % of the memory-bound half (bench/results/2026-11-28-s15).

Varlen: a chunk is [bos + 64j, min(bos + 64j + 64, eos)). Its TMA loads may read the next sequence's first rows;
they only meet zero columns (β of rows past eos is loaded as 0, and the gate of a row past eos is masked), so
nothing leaks. TMA stores clip only at the tensor's end, so a chunk that ends inside the batch (a sequence's
partial last chunk) is stored with masked stores instead: w/u read back from the staging buffer as 16-byte row
vectors (4-byte stores straight from the wgmma accumulator cost T=8192 H=32 8 sequences 131.1 vs 112.0 µs, H200,
bench/results/2026-11-27-s12), A from its plain panels. G_CUMSUM: ``g`` is the raw log-gate; the inverters take
its chunk-local cumsum and store it (SGLang's ``chunk_local_cumsum``, fused in).

Measured (H200, bf16, CUDA graphs; bench/results/2026-11-27-h200-gluon-s7): T=8192 H=32 Hg=16, one sequence,
bf16x3 109.0 µs (tf32 merges 103.0) vs stock 183.2 and the Triton kernel 130.3; alone the inverters take 82 µs and
the streamers 83 µs. Small shapes (under two tile batches per SM) are slower than the Triton kernel, and a
launch costs the host more (gdn_fwd_intra 156.9 vs 71.6 µs with device-built descriptors;
bench/results/2026-11-27-h200-s9), so in eager execution ops.gluon_auto_reason takes it only for large calls.
The panels are one shared allocation each, and written by diagonals: the compiler puts a barrier between any two
stores to one allocation (30 barriers per hand-over otherwise).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import triton

from ..reference.precision import product_pair
from ..registry import merge_levels
from . import direct_launch
from ._host import cdiv
from . import gdn_intra as _k

try:  # Gluon ships with Triton ≥ 3.5 (experimental); without it the Triton kernels serve every call
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.ampere import mma_v2
    from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                                   warpgroup_mma_wait)
    AVAILABLE = True
    IMPORT_ERROR = ""
except Exception as e:  # noqa: BLE001 - any import failure means: no Gluon backend
    AVAILABLE = False
    IMPORT_ERROR = f"{type(e).__name__}: {e}"

# merge / diagonal-tile product precision codes of this kernel (_mm)
P_TF32, P_BF16X3 = 0, 1
PRECISIONS = {"tf32": P_TF32, "bf16x3": P_BF16X3}
# added to a bf16x3 code (1, or 2: _inv_diag's DM form) by GluonLaunch.SB: the hi/lo split by packed conversions
P_SPLIT_BITS = 4


@dataclass(frozen=True)
class GluonLaunch:
    """Launch parameters (measured defaults, H200). W: inverter warps = tiles per batch; BK: KKᵀ reduction tile;
    BN: w/u column block; REGS: streamer registers; S: TMA ring depth; NSTG: staging buffers; PAIR: two items'
    wgmmas in flight; G: heads sharing a key tile (None: 2 when the GQA ratio is even, else 1); DB: double-buffered
    panels (None: on when A is not written and G = 2 — it fits neither beside the A panels nor beside four
    key tiles, see double_buffered); KD: KKᵀ operands loaded from
    shared memory straight into the mma layouts (G = 1 only); CS: the fused cumsum by masked sums per 16-row
    block (0) or by one [W, 64] warp scan (1: pipeline T=8192 H=32 109.0 vs 121.0 µs, inverters alone 83.9 vs
    92.0; bench/results/2026-11-27-h200-s8); DD: TMA descriptors built on the device from plain pointers, or on
    the host (None: on the device in eager launches, on the host under CUDA-graph capture — H200, T=8192 H=32: the
    bare launch enqueues in 82.7 instead of 158.0 µs, the kernel takes 106.4 instead of 103.4 µs; a captured
    launch pays the host cost once); MODE 1 / 2: only the inverters / only the streamers work (timing
    diagnostics, outputs undefined); EP: early puts — the 32 → 64 merges of column block 1 first and its tiles
    stored before block 0's are computed: fewer tiles live at once (None: on for varlen and for launches without A,
    where it pays; bench/results/2026-11-28-s13). All-bf16x3 merges, sm_90 spills (Triton 3.6) varlen with A 56 →
    8 B, pipeline 8 / 24 → 0 B, but one sequence with A 8 → 48 B; H100, A written, 8 sequences T=8192 H=32 145.8 →
    128.6 µs, one sequence 134.5 → 141.3. Results equal to a rounding (the merges' sums accumulate in another
    order), errors vs fp64 unchanged. LD: a one-warp loader partition issues the streamers' k/v TMA loads (the
    ring runs as far ahead as its S slots, across tiles); ST: a one-warp storer partition issues the w/u (and A)
    stores from the staging buffers, so the streamer warpgroup neither issues single-thread TMA copies (Triton 3.6
    puts a partition barrier on each side of each) nor waits for a store to read its buffer; XREGS: their
    registers. DM: bf16x3 diagonal tiles with the doubling levels' block masks on the products (see _inv_diag;
    fewer splits and layout conversions, outputs bitwise the same). GF: the gate of the six blocks below the diagonal
    as rank-1 factors (_gate_factors; 48 → 24 exponentials per thread and tile, both factors in [0, 1]). HF: tiles
    heads fastest (all heads of a chunk, then the next chunk) instead of chunks fastest. Defaults since session 16
    (H200, bench/results/2026-11-28-s16): HF + LD + ST + PAIR (REGS 120, NSTG 2; session 15: at or below the s14
    launch at all 8 shapes timed, heads fastest alone took the streamers alone 82.4 → 77.9 µs at T=8192 H=32) + GF
    + DM: T=8192 H=32 104.6 → 97.8 µs (one sequence), 110.6 → 101.9 (8 sequences), T=32768 H=8 8 sequences 112.6 →
    102.9, T=4096 H=32 8 sequences 71.6 → 67.4; the inverters alone 89.8 → 75.3 µs at T=8192 H=32. Either alone
    gains less or loses (DM alone 104.6 → 106.0). SB (default since session 17): the bf16x3 hi/lo splits by packed
    conversions (_hi_lo; no F2F): sm_90 SASS (Triton 3.6) one sequence / varlen / pipeline 5960 / 6760 / 6560 →
    5608 / 6320 / 6256 instructions, stacks 0 / 8 / 32 → 8 / 8 / 24 B; H200 (bench/results/2026-11-28-s17), A
    written: T=4096 H=32 54.5 → 53.2 µs (one sequence), 67.8 → 62.8 (8 sequences), T=8192 H=32 96.6 → 96.0, T=8192
    H=8 33.0 → 31.3, T=4096 H=8 17.9 → 17.2, T=32768 H=8 8 sequences 103.1 → 97.1. Not bitwise the plain split:
    there the compiler contracts a product feeding the split into an FMA (lo from the unrounded product; 80
    fma.rn.f32 in the Triton template's PTX, none with the packed split), so a few bf16 outputs differ by one ulp
    (2 of 384000 in the GPU test); errors vs fp64 the same. KS: the two warps of a key tile
    (G = 2: two heads of one key head, the same K Kᵀ) compute five of its ten 16×16 blocks each and exchange them
    through 20 KiB of shared memory (_kkt_step_split; ignored where G = 1; single-buffered panels only) — the
    chain's K Kᵀ products halve (160 → 80 HMMA per tile); bitwise the default. At S = 5 (H200 s17, with SB) it gains
    ≤ 1.7 % on one sequence (T=8192 H=32 96.0 → 94.8 µs) and loses at 8 sequences (T=4096 H=32 62.8 → 66.0,
    T=32768 H=8 97.1 → 100.7; why not measured: the 20 KiB exchange and its barrier are the suspects). S and KS
    None (session 18): S = 6 and KS on for one sequence with A written, else S = 5 and KS off (ring_and_split; H200,
    bench/results/2026-11-28-s18, µs S=5 → S=6 → S=6 + KS: T=4096 H=32 53.8 → 52.7 → 50.7, T=8192 H=32 96.0 → 94.2 →
    90.5, T=32768 H=32 358.1 → 343.0 → 330.4; at 8 sequences S = 6 ±1 % and KS +4–6 %, without A S = 6 ±1–3 %)."""
    W: int = 4
    BK: int = 32
    BN: int = 64
    REGS: int = 120
    S: int | None = None
    NSTG: int = 2
    PAIR: bool = True
    G: int | None = None
    DB: bool | None = None
    KD: bool = False
    CS: int = 1
    MODE: int = 0
    DD: bool | None = None
    EP: bool | None = None
    LD: bool = True
    ST: bool = True
    XREGS: int = 64
    HF: bool = True
    DM: bool = True
    GF: bool = True
    SB: bool = True
    KS: bool | None = None


DEFAULT_LAUNCH = GluonLaunch()


if AVAILABLE:
    _SPLIT: gl.constexpr = gl.constexpr(P_SPLIT_BITS)  # P_SPLIT_BITS inside the kernel (globals must be constexpr)

    # every inverter warp's stores before the one-thread arrive: gl.thread_barrier (Triton 3.6) was renamed
    # gl.barrier (3.8); inside a warp-specialized partition it synchronises that partition's warps
    _partition_barrier = gl.thread_barrier if hasattr(gl, "thread_barrier") else gl.barrier

    @gluon.jit
    def _hi_lo(x, BITS: gl.constexpr):
        """bf16 hi/lo parts of fp32 x (x ≈ hi + lo; hi = x rounded to nearest even, lo = the rest rounded).
        BITS (GluonLaunch.SB): both parts by the packed conversion cvt.rn.bf16x2.f32 (one F2FP per two values, the
        same rounding), hi widened back to fp32 by a shift / mask; lo is the difference of the rounded x (the
        plain form's x − hi may be contracted with a product feeding x into one FMA: a one-ulp difference in a few
        outputs). Without it ``x.to(bf16)`` compiles to one F2F.BF16.F32 per value (288 per tile, on the slower
        conversion pipe), an IMAD to widen it and a PRMT to pack it. (Written in plain Gluon the split is either
        wrong — Veltkamp's c − (c − x) is contracted into FMAs, which makes lo = 0 — or longer: integer rounding
        5960 → 6640 instructions.)"""
        if BITS:
            # per pair of neighbouring values: hi = cvt.rn.bf16x2 (one packed conversion, round to nearest even),
            # widened back by shifts, lo = the two differences packed the same way (the Triton template's PTX)
            hi, lo = gl.inline_asm_elementwise(_k.HI_LO_PTX, "=r,=r,r,r", [x], dtype=(gl.bfloat16, gl.bfloat16),
                                               is_pure=True, pack=2)
        else:
            hi = x.to(gl.bfloat16)
            lo = (x - hi.to(gl.float32)).to(gl.bfloat16)
        return hi, lo

    @gluon.jit
    def _mm(a, b, MMA: gl.constexpr, PREC: gl.constexpr):
        """fp32 a @ b of [W, 16, 16] tiles (one per warp): PREC 0 = tf32, 1 = bf16x3 (hi·lo + lo·hi + hi·hi);
        + P_SPLIT_BITS: the hi/lo split by packed conversions (_hi_lo)."""
        acc = gl.zeros(a.shape, gl.float32, MMA)
        if PREC % _SPLIT == 0:
            A1: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=1)
            B1: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=1)
            c = mma_v2(gl.convert_layout(a, A1), gl.convert_layout(b, B1), acc, input_precision="tf32")
        else:
            A2: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
            B2: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=2)
            a_hi, a_lo = _hi_lo(a, PREC >= _SPLIT)
            b_hi, b_lo = _hi_lo(b, PREC >= _SPLIT)
            ah = gl.convert_layout(a_hi, A2)
            bh = gl.convert_layout(b_hi, B2)
            c = mma_v2(ah, gl.convert_layout(b_lo, B2), acc)
            c = mma_v2(gl.convert_layout(a_lo, A2), bh, c)
            c = mma_v2(ah, bh, c)
        return c

    @gluon.jit
    def _safe_exp(x):
        # exp of a non-positive gate difference (as gdn_intra._safe_exp): a positive one (padding) gives 0
        return gl.exp(gl.where(x <= 0, x, float("-inf")))

    @gluon.jit
    def _split_ops(x, L: gl.constexpr, BITS: gl.constexpr):
        """bf16 hi/lo parts of fp32 x (x ≈ hi + lo, see _hi_lo), both in layout L."""
        hi, lo = _hi_lo(x, BITS)
        return gl.convert_layout(hi, L), gl.convert_layout(lo, L)

    @gluon.jit
    def _mm3(ah, al, bh, bl, MMA: gl.constexpr):
        """bf16x3 product of operands already split and in their dot layouts: hi·lo + lo·hi + hi·hi."""
        c = mma_v2(ah, bl, gl.zeros([ah.shape[0], ah.shape[1], bh.shape[2]], gl.float32, MMA))
        c = mma_v2(al, bh, c)
        return mma_v2(ah, bh, c)

    @gluon.jit
    def _inv_diag(a, r, c, MMA: gl.constexpr, PREC: gl.constexpr):
        """(I + a)^{-1} of strictly-lower 16×16 tiles: exact 2×2 blocks, then X ← X − X·A_b·X (b = 2, 4, 8).
        PREC 2 (bf16x3, GluonLaunch.DM): X ← X − (X·A·X) ⊙ M_b — X is block-diagonal in b-blocks, so block
        (I, J) of X·A·X is X_II·A_IJ·X_JJ and masking the product equals masking A (the other terms are exact
        zeros): A is split and converted to its operand layout once for the three levels, X once per level.
        + P_SPLIT_BITS: the hi/lo splits by packed conversions (_hi_lo)."""
        eye = gl.where(r == c, 1.0, 0.0)
        x = eye - gl.where(r // 2 == c // 2, a, 0.0)
        if PREC % _SPLIT == 2:
            A2: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
            B2: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=2)
            abh, abl = _split_ops(a, B2, PREC >= _SPLIT)
        for lvl in gl.static_range(1, 4):
            blk = ((r // (2 << lvl) == c // (2 << lvl)) & ((r // (1 << lvl)) % 2 == 1)
                   & ((c // (1 << lvl)) % 2 == 0))
            if PREC % _SPLIT == 2:
                x_hi, x_lo = _hi_lo(x, PREC >= _SPLIT)
                t = _mm3(gl.convert_layout(x_hi, A2), gl.convert_layout(x_lo, A2), abh, abl, MMA)
                tah, tal = _split_ops(t, A2, PREC >= _SPLIT)
                p = _mm3(tah, tal, gl.convert_layout(x_hi, B2), gl.convert_layout(x_lo, B2), MMA)
                x = x - gl.where(blk, p, 0.0)
            else:
                a_b = gl.where(blk, a, 0.0)
                x = x - _mm(_mm(x, a_b, MMA, PREC), x, MMA, PREC)
        return x

    @gluon.jit
    def _gate_factors(h, ROW: gl.constexpr):
        """GF: for the blocks (I, J) below the diagonal block J, e^{g_i − g_j} = e^{g_i − s}·e^{s − g_j} with s =
        the smallest gate of column block J (its last valid row: a chunk's cumulative log-gate does not increase,
        and rows past the sequence's end read 0 and carry β = 0). Both exponents are ≤ 0 for every i in a later
        block, clipped at 0 otherwise: each factor lies in [0, 1], nothing overflows whatever the decay (an
        underflowed factor stands for a product below fp32's range anyway). Returns the column factors
        e^{min(s − g_j, 0)} and s in the row layout ROW (one [W] value per tile)."""
        s = gl.min(h, axis=1)
        return gl.exp(gl.minimum(s[:, None] - h, 0.0)), gl.convert_layout(s, ROW)

    @gluon.jit
    def _row_factor(b, g, s):
        """GF: β_i·e^{min(g_i − s, 0)} per row of a later block (see _gate_factors)."""
        return b * gl.exp(gl.minimum(g - s[:, None], 0.0))

    @gluon.jit
    def _handover(empty, buf, j, NB: gl.constexpr, s_0, s_1, s_2, s_3, h_0, h_1, h_2, h_3):
        """Before the first panel store of batch j: wait until the streamers released this buffer's panels
        (batch j − NB); then the column scales β e^g of Ai·diag(β e^g), one vector per column block."""
        if j >= NB:
            mbarrier.wait(empty.index(buf), (j // NB - 1) & 1)
        return s_0 * gl.exp(h_0), s_1 * gl.exp(h_1), s_2 * gl.exp(h_2), s_3 * gl.exp(h_3)

    @gluon.jit
    def _put(pb, pe, pa, buf, x, a: gl.constexpr, b: gl.constexpr, sb, se, PLAIN: gl.constexpr):
        """Block (a, b) of the batch's Ai·diag(β) into column panel pb[b] (buffer buf), Ai·diag(β e^g) into
        pe[b] (bf16); PLAIN: Ai itself into pa[b] (stored to A by the streamers; single buffer)."""
        pb[b].index(buf).slice(16 * a, 16, dim=1).store((x * sb[:, None, :]).to(gl.bfloat16))
        pe[b].index(buf).slice(16 * a, 16, dim=1).store((x * se[:, None, :]).to(gl.bfloat16))
        if PLAIN:
            pa[b].index(0).slice(16 * a, 16, dim=1).store(x.to(gl.bfloat16))

    @gluon.jit
    def _tile(t, NC, G: gl.constexpr, HF: gl.constexpr = 0):
        """(chunk, head) of tile t. G = 1: chunk fastest, then head. G > 1: the G heads that share one key head
        next to each other (one TMA-loaded key tile serves G inverter warps), then chunk. HF = H > 0: heads
        fastest (all heads of a chunk, then the next chunk; the G heads of a key head stay neighbours): the CTAs
        running at once then read and write whole rows of k, v, w, u instead of one head's 128-byte pieces."""
        if HF > 0:
            chunk = t // HF
            head = t % HF
        elif G == 1:
            chunk = t % NC
            head = t // NC
        else:
            rest = t // G
            chunk = rest % NC
            head = (rest // NC) * G + t % G
        return chunk, head

    @gluon.jit
    def _chunk_rows(c, T, tab_ptr, IS_VARLEN: gl.constexpr):
        """(first row, end row of its sequence) of chunk c (scalar or vector). Varlen: one int32 pair per chunk
        from the chunk table (:func:`chunk_table`); else one sequence of T rows."""
        if IS_VARLEN:
            row = gl.load(tab_ptr + 2 * c)
            eos = gl.load(tab_ptr + 2 * c + 1)
        else:
            row = c * 64
            eos = c * 0 + T
        return row, eos

    @gluon.jit
    def _batch_rows(first, wb, T, NC, n_tiles, tab_ptr, G: gl.constexpr, IS_VARLEN: gl.constexpr,
                    HF: gl.constexpr = 0):
        """Per warp of the batch starting at tile ``first``: first row, sequence end, head (vectors [W])."""
        chunk, head = _tile(gl.minimum(first + wb, n_tiles - 1), NC, G, HF)
        row, eos = _chunk_rows(chunk, T, tab_ptr, IS_VARLEN)
        return row, eos, head

    @gluon.jit
    def _key_coords(first, i: gl.constexpr, T, NC, n_tiles, tab_ptr, H: gl.constexpr, Hg: gl.constexpr,
                    K: gl.constexpr, G: gl.constexpr, IS_VARLEN: gl.constexpr, HF: gl.constexpr = 0):
        """TMA coordinates of key tile i of the batch at ``first`` (tile first + i·G; a tile past the last loads
        the last one: the barrier counts a fixed number of bytes)."""
        chunk, head = _tile(gl.minimum(first + i * G, n_tiles - 1), NC, G, HF)
        row, _ = _chunk_rows(chunk, T, tab_ptr, IS_VARLEN)
        return row, (head // (H // Hg)) * K

    @gluon.jit
    def _load_k(kin_desc, kbuf2, kready, r0, c0, r1, c1, r2, c2, r3, c3, NKT: gl.constexpr, K: gl.constexpr):
        """TMA: NKT key tiles [64, K] (K / KB boxes [64, KB] each) at (r_i, c_i) into the inverters' buffer."""
        KB: gl.constexpr = kin_desc.block_type.shape[1]
        mbarrier.expect(kready, NKT * 64 * K * 2)
        for q in gl.static_range(K // KB):
            tma.async_copy_global_to_shared(kin_desc, [r0, c0 + q * KB], kready, kbuf2.index(q * NKT))
            if NKT > 1:
                tma.async_copy_global_to_shared(kin_desc, [r1, c1 + q * KB], kready, kbuf2.index(q * NKT + 1))
            if NKT > 2:
                tma.async_copy_global_to_shared(kin_desc, [r2, c2 + q * KB], kready, kbuf2.index(q * NKT + 2))
                tma.async_copy_global_to_shared(kin_desc, [r3, c3 + q * KB], kready, kbuf2.index(q * NKT + 3))

    @gluon.jit
    def _key_batch(first, T, NC, n_tiles, tab_ptr, H: gl.constexpr, Hg: gl.constexpr, K: gl.constexpr,
                   G: gl.constexpr, NKT: gl.constexpr, IS_VARLEN: gl.constexpr, HF: gl.constexpr = 0):
        """TMA coordinates of the batch's NKT ≤ 4 key tiles (unused ones repeat tile 0)."""
        r0, c0 = _key_coords(first, 0, T, NC, n_tiles, tab_ptr, H, Hg, K, G, IS_VARLEN, HF)
        r1, c1, r2, c2, r3, c3 = r0, c0, r0, c0, r0, c0
        if NKT > 1:
            r1, c1 = _key_coords(first, 1, T, NC, n_tiles, tab_ptr, H, Hg, K, G, IS_VARLEN, HF)
        if NKT > 2:
            r2, c2 = _key_coords(first, 2, T, NC, n_tiles, tab_ptr, H, Hg, K, G, IS_VARLEN, HF)
            r3, c3 = _key_coords(first, 3, T, NC, n_tiles, tab_ptr, H, Hg, K, G, IS_VARLEN, HF)
        return r0, c0, r1, c1, r2, c2, r3, c3

    @gluon.jit
    def _gates(beta_ptr, g_ptr, first, wb, ir, row, eos, head, n_tiles, H: gl.constexpr, W: gl.constexpr,
               MMA: gl.constexpr):
        """Per tile (first + warp): β_i and the gate (raw with G_CUMSUM) per 16-row block, SliceLayout(2, MMA),
        0 past the sequence's end."""
        valid = ((first + wb) < n_tiles)[:, None]
        hcol = head[:, None]
        rr = row[:, None] + ir[None, :]
        lim = eos[:, None]
        m0 = (rr < lim) & valid
        m1 = (rr + 16 < lim) & valid
        m2 = (rr + 32 < lim) & valid
        m3 = (rr + 48 < lim) & valid
        b_0 = gl.load(beta_ptr + rr * H + hcol, mask=m0, other=0.0).to(gl.float32)
        b_1 = gl.load(beta_ptr + (rr + 16) * H + hcol, mask=m1, other=0.0).to(gl.float32)
        b_2 = gl.load(beta_ptr + (rr + 32) * H + hcol, mask=m2, other=0.0).to(gl.float32)
        b_3 = gl.load(beta_ptr + (rr + 48) * H + hcol, mask=m3, other=0.0).to(gl.float32)
        g_0 = gl.load(g_ptr + rr * H + hcol, mask=m0, other=0.0).to(gl.float32)
        g_1 = gl.load(g_ptr + (rr + 16) * H + hcol, mask=m1, other=0.0).to(gl.float32)
        g_2 = gl.load(g_ptr + (rr + 32) * H + hcol, mask=m2, other=0.0).to(gl.float32)
        g_3 = gl.load(g_ptr + (rr + 48) * H + hcol, mask=m3, other=0.0).to(gl.float32)
        return b_0, b_1, b_2, b_3, g_0, g_1, g_2, g_3

    @gluon.jit
    def _cumsum_block(x, r, c, carry_r, carry_c):
        """Chunk-local cumsum of one raw 16-row gate block x (rows, SliceLayout(2, MMA)) given the previous
        blocks' sum, in both layouts — row (g) and column (h) — by masked sums inside each warp (no shared-memory
        layout conversion): h_c = Σ_{r ≤ c} x_r; g_r = Σ_{c ≤ r} x_c with x_c = Σ_r [r = c] x_r."""
        h = gl.sum(gl.where(r <= c, x[:, :, None], 0.0), 1) + carry_c[:, None]
        xc = gl.sum(gl.where(r == c, x[:, :, None], 0.0), 1)
        g = gl.sum(gl.where(c <= r, xc[:, None, :], 0.0), 2) + carry_r[:, None]
        return g, h, carry_r + gl.sum(x, 1), carry_c + gl.sum(xc, 1)

    @gluon.jit
    def _add(a, b):
        return a + b

    @gluon.jit
    def _gate64(g_ptr, first, row, eos, head, n_tiles, H: gl.constexpr, W: gl.constexpr):
        """CS = 1: the chunk's 64 raw gates per warp as one [W, 64] row (0 past the sequence's end), with the
        offsets and mask for storing their cumsum."""
        L64: gl.constexpr = gl.BlockedLayout([1, 2], [1, 32], [W, 1], [1, 0])
        V64: gl.constexpr = gl.SliceLayout(1, L64)
        j = gl.arange(0, 64, layout=gl.SliceLayout(0, L64))
        wv = gl.arange(0, W, layout=V64)
        off = (gl.convert_layout(row, V64)[:, None] + j[None, :]) * H + gl.convert_layout(head, V64)[:, None]
        m = (gl.convert_layout(row, V64)[:, None] + j[None, :] < gl.convert_layout(eos, V64)[:, None]) \
            & ((first + wv) < n_tiles)[:, None]
        return gl.load(g_ptr + off, mask=m, other=0.0).to(gl.float32), off, m

    @gluon.jit
    def _cumsum_scan(x, off, m, g_out_ptr, W: gl.constexpr, LROW: gl.constexpr, COL: gl.constexpr):
        """CS = 1: one warp-level scan (shuffles) of the [W, 64] raw gates, stored to g_out, then split into the
        four 16-row blocks in the row (g) and column (h) layouts."""
        cs = gl.associative_scan(x, 1, _add)
        gl.store(g_out_ptr + off, cs, mask=m)
        # [W, 64] → 4 blocks [W, 16]: block b = j // 16 as the last dimension, split twice (b % 2, then b // 2)
        x3 = gl.permute(gl.reshape(cs, [W, 4, 16]), [0, 2, 1])  # [W, 16, 4]: every thread holds a row's 4 blocks
        x3 = gl.convert_layout(x3, gl.BlockedLayout([1, 1, 4], [1, 16, 2], [W, 1, 1], [2, 1, 0]))
        x4 = gl.reshape(x3, [W, 16, 2, 2])
        ev, od = gl.split(x4)
        g_0, g_2 = gl.split(ev)
        g_1, g_3 = gl.split(od)
        return (gl.convert_layout(g_0, LROW), gl.convert_layout(g_1, LROW), gl.convert_layout(g_2, LROW),
                gl.convert_layout(g_3, LROW), gl.convert_layout(g_0, COL), gl.convert_layout(g_1, COL),
                gl.convert_layout(g_2, COL), gl.convert_layout(g_3, COL))

    @gluon.jit
    def _store_gate(g_out_ptr, g, rr, lim, valid, hcol, H: gl.constexpr):
        gl.store(g_out_ptr + rr * H + hcol, g, mask=(rr < lim) & valid)

    @gluon.jit
    def _krows(ks, a: gl.constexpr, LK: gl.constexpr, P4: gl.constexpr, W: gl.constexpr, G: gl.constexpr,
               BK: gl.constexpr):
        """Rows 16a … 16a + 15 of every warp's keys as [W, 16, BK]: straight from the buffer (G = 1), or from
        its W / G shared tiles, each broadcast to its G warps in registers (P4's warps [W / G, G, 1, 1])."""
        if G == 1:
            x = ks.slice(16 * a, 16, dim=1).load(LK)
        else:
            y = gl.expand_dims(ks.slice(16 * a, 16, dim=1).load(gl.SliceLayout(1, P4)), 1)
            y, _ = gl.broadcast(y, gl.zeros([W // G, G, 16, BK], gl.bfloat16, P4))
            x = gl.reshape(y, [W, 16, BK])
        return x

    @gluon.jit
    def _kkt_step(ks, r00, r10, r11, r20, r21, r22, r30, r31, r32, r33, LK: gl.constexpr, P4: gl.constexpr,
                  A2: gl.constexpr, B2: gl.constexpr, W: gl.constexpr, G: gl.constexpr, BK: gl.constexpr,
                  KD: gl.constexpr):
        """The 10 lower 16×16 tiles of K Kᵀ accumulated over one [64, BK] key slice ``ks`` in shared memory."""
        if KD:  # G = 1: operands straight from shared memory (ldmatrix), no register round trip
            a0 = ks.slice(0, 16, dim=1).load(A2)
            a1 = ks.slice(16, 16, dim=1).load(A2)
            a2 = ks.slice(32, 16, dim=1).load(A2)
            a3 = ks.slice(48, 16, dim=1).load(A2)
            # Kᵀ's mma B fragment holds the same elements as K's A fragment (registers only)
            b0 = gl.convert_layout(gl.permute(a0, [0, 2, 1]), B2)
            b1 = gl.convert_layout(gl.permute(a1, [0, 2, 1]), B2)
            b2 = gl.convert_layout(gl.permute(a2, [0, 2, 1]), B2)
            b3 = gl.convert_layout(gl.permute(a3, [0, 2, 1]), B2)
        else:
            k0 = _krows(ks, 0, LK, P4, W, G, BK)
            k1 = _krows(ks, 1, LK, P4, W, G, BK)
            k2 = _krows(ks, 2, LK, P4, W, G, BK)
            k3 = _krows(ks, 3, LK, P4, W, G, BK)
            b0 = gl.convert_layout(gl.permute(k0, [0, 2, 1]), B2)
            b1 = gl.convert_layout(gl.permute(k1, [0, 2, 1]), B2)
            b2 = gl.convert_layout(gl.permute(k2, [0, 2, 1]), B2)
            b3 = gl.convert_layout(gl.permute(k3, [0, 2, 1]), B2)
            a0 = gl.convert_layout(k0, A2)
            a1 = gl.convert_layout(k1, A2)
            a2 = gl.convert_layout(k2, A2)
            a3 = gl.convert_layout(k3, A2)
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
        return r00, r10, r11, r20, r21, r22, r30, r31, r32, r33

    @gluon.jit
    def _kkt_step_split(kb, p0, p1, p2, p3, p4, A2: gl.constexpr, B2: gl.constexpr, W: gl.constexpr,
                        BK: gl.constexpr):
        """KS: the two warps of a key tile (two heads of one key head: the same K Kᵀ) compute five of its ten lower
        16×16 blocks each. ``kb``: the BK-column slice of the batch's key tiles as [tile, h, l, 16, BK] (row block
        2h + l). Per-warp operands (even | odd warp of a tile) come straight from shared memory, the parity one of
        the view's dimensions — T0 = (k0 | k2): h = parity, l = 0; U0 = (k0 | k1), U1 = (k2 | k3): l = parity —
        and T0·k1ᵀ = r10ᵀ | r21, T0·k3ᵀ = r30ᵀ | r32ᵀ, U0·U0ᵀ = r00 | r11, U0·U1ᵀ = r20ᵀ | r31ᵀ, U1·U1ᵀ =
        r22 | r33: each block by the same products in the same order as the default's (a transposed block's
        products commute), exchanged through shared memory (_ks_put / _ks_get)."""
        LH: gl.constexpr = gl.BlockedLayout([1, 1, 1, 1, 8], [1, 1, 1, 4, 8], [W // 2, 2, 1, 1, 1], [4, 3, 2, 1, 0])
        LL: gl.constexpr = gl.BlockedLayout([1, 1, 1, 1, 8], [1, 1, 1, 4, 8], [W // 2, 1, 2, 1, 1], [4, 3, 2, 1, 0])
        t0 = gl.reshape(kb.slice(0, 1, dim=2).load(LH), [W, 16, BK])
        u0 = gl.reshape(kb.slice(0, 1, dim=1).load(LL), [W, 16, BK])
        u1 = gl.reshape(kb.slice(1, 1, dim=1).load(LL), [W, 16, BK])
        y1 = kb.slice(0, 1, dim=1).slice(1, 1, dim=2).load(LH)
        y3 = kb.slice(1, 1, dim=1).slice(1, 1, dim=2).load(LH)
        k1 = gl.reshape(gl.broadcast(y1, gl.zeros([W // 2, 2, 1, 16, BK], gl.bfloat16, LH))[0], [W, 16, BK])
        k3 = gl.reshape(gl.broadcast(y3, gl.zeros([W // 2, 2, 1, 16, BK], gl.bfloat16, LH))[0], [W, 16, BK])
        at0 = gl.convert_layout(t0, A2)
        au0 = gl.convert_layout(u0, A2)
        au1 = gl.convert_layout(u1, A2)
        p0 = mma_v2(at0, gl.convert_layout(gl.permute(k1, [0, 2, 1]), B2), p0)
        p1 = mma_v2(at0, gl.convert_layout(gl.permute(k3, [0, 2, 1]), B2), p1)
        p2 = mma_v2(au0, gl.convert_layout(gl.permute(u0, [0, 2, 1]), B2), p2)
        p3 = mma_v2(au0, gl.convert_layout(gl.permute(u1, [0, 2, 1]), B2), p3)
        p4 = mma_v2(au1, gl.convert_layout(gl.permute(u1, [0, 2, 1]), B2), p4)
        return p0, p1, p2, p3, p4

    @gluon.jit
    def _ks_put(xbuf, n: gl.constexpr, p, W: gl.constexpr):
        """KS: warp w's product n into slot (n, parity w % 2) of xbuf (products 0–3, then 4: [(product, parity,
        pair), 16, 16] fp32 each; power-of-two shapes)."""
        x = gl.reshape(gl.permute(gl.reshape(p, [W // 2, 2, 16, 16]), [1, 0, 2, 3]), [W, 16, 16])
        xbuf[n // 4].slice(2 * (n % 4) * (W // 2), W, dim=0).store(x)

    @gluon.jit
    def _ks_get(xbuf, n: gl.constexpr, q: gl.constexpr, TR: gl.constexpr, P4X: gl.constexpr, MMA: gl.constexpr,
                W: gl.constexpr):
        """KS: product n of the pair's warp of parity q (transposed: TR) for both warps of the pair."""
        x = xbuf[n // 4].slice((2 * (n % 4) + q) * (W // 2), W // 2, dim=0)
        if TR:
            x = x.permute([0, 2, 1])
        y = gl.expand_dims(x.load(gl.SliceLayout(1, P4X)), 1)
        y, _ = gl.broadcast(y, gl.zeros([W // 2, 2, 16, 16], gl.float32, P4X))
        return gl.convert_layout(gl.reshape(y, [W, 16, 16]), MMA)

    @gluon.jit
    def _invert_tiles(beta_ptr, g_ptr, g_out_ptr, tab_ptr, pb, pe, pa, kin_desc, kbuf, kbuf2, kready, T, NC,
                      n_tiles, H: gl.constexpr, Hg: gl.constexpr, K: gl.constexpr, W: gl.constexpr,
                      BK: gl.constexpr, DP: gl.constexpr, MP: gl.constexpr, STORE_A: gl.constexpr,
                      MODE: gl.constexpr, G: gl.constexpr, IS_VARLEN: gl.constexpr, G_CUMSUM: gl.constexpr,
                      full, empty, NB: gl.constexpr, KD: gl.constexpr, CS: gl.constexpr, MP1: gl.constexpr,
                      MPO: gl.constexpr = -1, EP: gl.constexpr = False, HF: gl.constexpr = 0,
                      GF: gl.constexpr = False, KS: gl.constexpr = False, xbuf=None):
        """Inverter partition: W warps, one (chunk, head) tile per warp: KKᵀ from the TMA-prefetched keys, gate,
        (I + A)^{-1} by doubling; then, scaled by β / β e^g per column (and plain, with STORE_A), into the
        shared panels the streamers multiply with."""
        MMA: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[W, 1, 1],
                                                      instr_shape=[1, 16, 8])
        A2: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
        B2: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=2)
        LK: gl.constexpr = gl.BlockedLayout([1, 1, 8], [1, 4, 8], [W, 1, 1], [2, 1, 0])
        P4: gl.constexpr = gl.BlockedLayout([1, 1, 1, 8], [1, 1, 4, 8], [W // G, G, 1, 1], [3, 2, 1, 0])
        COL: gl.constexpr = gl.SliceLayout(1, MMA)   # [W, 16] per-column vectors
        NKT: gl.constexpr = W // G
        KB: gl.constexpr = kbuf.shape[3]  # key box width
        wb = gl.arange(0, W, layout=gl.SliceLayout(1, gl.SliceLayout(2, MMA)))
        ir = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, MMA)))
        ic = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(1, MMA)))
        r = ir[None, :, None]
        c = ic[None, None, :]
        # the panels' blocks above the diagonal stay zero (written once)
        zt = gl.zeros([W, 16, 16], gl.bfloat16, MMA)
        for b in gl.static_range(4):
            for a in gl.static_range(0, b):
                for i in gl.static_range(NB):
                    pb[b].index(i).slice(16 * a, 16, dim=1).store(zt)
                    pe[b].index(i).slice(16 * a, 16, dim=1).store(zt)
                if STORE_A:
                    pa[b].index(0).slice(16 * a, 16, dim=1).store(zt)
        step = gl.num_programs(0) * W
        base0 = gl.program_id(0) * W
        if MODE != 2:
            r0, c0, r1, c1, r2, c2, r3, c3 = _key_batch(base0, T, NC, n_tiles, tab_ptr, H, Hg, K, G, NKT,
                                                        IS_VARLEN, HF)
            _load_k(kin_desc, kbuf2, kready, r0, c0, r1, c1, r2, c2, r3, c3, NKT, K)
        # rows of the batch (loop-carried one batch ahead: varlen's table loads never wait in the chain)
        row, eos, head = _batch_rows(base0, wb, T, NC, n_tiles, tab_ptr, G, IS_VARLEN, HF)
        j = 0
        for base in range(base0, n_tiles, step):
            nxt = base + step
            if MODE != 2:
                # gate loads first: their latency hides behind the keys' wait and KKᵀ
                b_0, b_1, b_2, b_3, g_0, g_1, g_2, g_3 = _gates(beta_ptr, g_ptr, base, wb, ir, row, eos, head,
                                                                n_tiles, H, W, MMA)
                if G_CUMSUM and CS == 1:
                    x64, off64, m64 = _gate64(g_ptr, base, row, eos, head, n_tiles, H, W)
                r0, c0, r1, c1, r2, c2, r3, c3 = _key_batch(nxt, T, NC, n_tiles, tab_ptr, H, Hg, K, G, NKT,
                                                            IS_VARLEN, HF)
                z = gl.zeros([W, 16, 16], gl.float32, MMA)
                # keys from shared memory (TMA-loaded while the previous batch was inverted), BK columns at a time
                mbarrier.wait(kready, j & 1)
                if KS:  # five blocks per warp, exchanged (see _kkt_step_split)
                    KL5: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=min(2 * KB, 128), element_bitwidth=16,
                                                             rank=5)
                    kv = kbuf._reinterpret(gl.bfloat16, [K // KB, W // G, 2, 2, 16, KB], KL5)
                    p0, p1, p2, p3, p4 = z, z, z, z, z
                    for i_k in gl.static_range(K // BK):
                        p0, p1, p2, p3, p4 = _kkt_step_split(
                            kv.index(i_k * BK // KB).slice(i_k * BK % KB, BK, dim=4), p0, p1, p2, p3, p4, A2, B2,
                            W, BK)
                    _ks_put(xbuf, 0, p0, W)
                    _ks_put(xbuf, 1, p1, W)
                    _ks_put(xbuf, 2, p2, W)
                    _ks_put(xbuf, 3, p3, W)
                    _ks_put(xbuf, 4, p4, W)
                else:
                    r00, r10, r11, r20, r21, r22, r30, r31, r32, r33 = z, z, z, z, z, z, z, z, z, z
                    for i_k in gl.static_range(K // BK):
                        r00, r10, r11, r20, r21, r22, r30, r31, r32, r33 = _kkt_step(
                            kbuf.index(i_k * BK // KB).slice(i_k * BK % KB, BK, dim=2), r00, r10, r11, r20, r21,
                            r22, r30, r31, r32, r33, LK, P4, A2, B2, W, G, BK, KD)
                _partition_barrier()  # every warp has read its keys (KS: and put its blocks): load the next batch's
                if nxt < n_tiles:
                    _load_k(kin_desc, kbuf2, kready, r0, c0, r1, c1, r2, c2, r3, c3, NKT, K)
                if KS:
                    P4X: gl.constexpr = gl.BlockedLayout([1, 1, 1, 2], [1, 1, 8, 4], [W // 2, 2, 1, 1], [3, 2, 1, 0])
                    r00 = _ks_get(xbuf, 2, 0, False, P4X, MMA, W)
                    r11 = _ks_get(xbuf, 2, 1, False, P4X, MMA, W)
                    r22 = _ks_get(xbuf, 4, 0, False, P4X, MMA, W)
                    r33 = _ks_get(xbuf, 4, 1, False, P4X, MMA, W)
                    r10 = _ks_get(xbuf, 0, 0, True, P4X, MMA, W)
                    r21 = _ks_get(xbuf, 0, 1, False, P4X, MMA, W)
                    r30 = _ks_get(xbuf, 1, 0, True, P4X, MMA, W)
                    r32 = _ks_get(xbuf, 1, 1, True, P4X, MMA, W)
                    r20 = _ks_get(xbuf, 3, 0, True, P4X, MMA, W)
                    r31 = _ks_get(xbuf, 3, 1, True, P4X, MMA, W)
                # β and g per column: the row vectors in the column layout (no second load)
                s_0, s_1, s_2, s_3 = (gl.convert_layout(b_0, COL), gl.convert_layout(b_1, COL),
                                      gl.convert_layout(b_2, COL), gl.convert_layout(b_3, COL))
                if G_CUMSUM and CS == 1:  # one [W, 64] scan per tile (see _cumsum_scan)
                    g_0, g_1, g_2, g_3, h_0, h_1, h_2, h_3 = _cumsum_scan(x64, off64, m64, g_out_ptr, W,
                                                                          gl.SliceLayout(2, MMA), COL)
                elif G_CUMSUM:  # g holds the raw log-gate: its chunk-local cumsum, stored for the later stages
                    cr = gl.zeros([W], gl.float32, gl.SliceLayout(1, gl.SliceLayout(2, MMA)))
                    cc = gl.zeros([W], gl.float32, gl.SliceLayout(1, COL))
                    g_0, h_0, cr, cc = _cumsum_block(g_0, r, c, cr, cc)
                    g_1, h_1, cr, cc = _cumsum_block(g_1, r, c, cr, cc)
                    g_2, h_2, cr, cc = _cumsum_block(g_2, r, c, cr, cc)
                    g_3, h_3, cr, cc = _cumsum_block(g_3, r, c, cr, cc)
                    valid = ((base + wb) < n_tiles)[:, None]
                    rr = row[:, None] + ir[None, :]
                    _store_gate(g_out_ptr, g_0, rr, eos[:, None], valid, head[:, None], H)
                    _store_gate(g_out_ptr, g_1, rr + 16, eos[:, None], valid, head[:, None], H)
                    _store_gate(g_out_ptr, g_2, rr + 32, eos[:, None], valid, head[:, None], H)
                    _store_gate(g_out_ptr, g_3, rr + 48, eos[:, None], valid, head[:, None], H)
                else:
                    h_0, h_1, h_2, h_3 = (gl.convert_layout(g_0, COL), gl.convert_layout(g_1, COL),
                                          gl.convert_layout(g_2, COL), gl.convert_layout(g_3, COL))
                low = r > c
                a00 = gl.where(low, r00 * b_0[:, :, None] * _safe_exp(g_0[:, :, None] - h_0[:, None, :]), 0.0)
                a11 = gl.where(low, r11 * b_1[:, :, None] * _safe_exp(g_1[:, :, None] - h_1[:, None, :]), 0.0)
                a22 = gl.where(low, r22 * b_2[:, :, None] * _safe_exp(g_2[:, :, None] - h_2[:, None, :]), 0.0)
                a33 = gl.where(low, r33 * b_3[:, :, None] * _safe_exp(g_3[:, :, None] - h_3[:, None, :]), 0.0)
                if GF:  # the six blocks below the diagonal as rank-1 gate factors (see _gate_factors)
                    c_0, q_0 = _gate_factors(h_0, gl.SliceLayout(1, gl.SliceLayout(2, MMA)))
                    c_1, q_1 = _gate_factors(h_1, gl.SliceLayout(1, gl.SliceLayout(2, MMA)))
                    c_2, q_2 = _gate_factors(h_2, gl.SliceLayout(1, gl.SliceLayout(2, MMA)))
                    a10 = r10 * _row_factor(b_1, g_1, q_0)[:, :, None] * c_0[:, None, :]
                    a20 = r20 * _row_factor(b_2, g_2, q_0)[:, :, None] * c_0[:, None, :]
                    a21 = r21 * _row_factor(b_2, g_2, q_1)[:, :, None] * c_1[:, None, :]
                    a30 = r30 * _row_factor(b_3, g_3, q_0)[:, :, None] * c_0[:, None, :]
                    a31 = r31 * _row_factor(b_3, g_3, q_1)[:, :, None] * c_1[:, None, :]
                    a32 = r32 * _row_factor(b_3, g_3, q_2)[:, :, None] * c_2[:, None, :]
                else:
                    a10 = r10 * b_1[:, :, None] * _safe_exp(g_1[:, :, None] - h_0[:, None, :])
                    a20 = r20 * b_2[:, :, None] * _safe_exp(g_2[:, :, None] - h_0[:, None, :])
                    a21 = r21 * b_2[:, :, None] * _safe_exp(g_2[:, :, None] - h_1[:, None, :])
                    a30 = r30 * b_3[:, :, None] * _safe_exp(g_3[:, :, None] - h_0[:, None, :])
                    a31 = r31 * b_3[:, :, None] * _safe_exp(g_3[:, :, None] - h_1[:, None, :])
                    a32 = r32 * b_3[:, :, None] * _safe_exp(g_3[:, :, None] - h_2[:, None, :])
                # the rows of the next batch: loads issued now, used in the next iteration
                row, eos, head = _batch_rows(nxt, wb, T, NC, n_tiles, tab_ptr, G, IS_VARLEN, HF)
                x00 = _inv_diag(a00, r, c, MMA, DP)
                x11 = _inv_diag(a11, r, c, MMA, DP)
                x22 = _inv_diag(a22, r, c, MMA, DP)
                x33 = _inv_diag(a33, r, c, MMA, DP)
                M16: gl.constexpr = MP if MP1 < 0 else MP1  # the 16 → 32 merges' precision
                x10 = -_mm(_mm(x11, a10, MMA, M16), x00, MMA, M16)
                x32 = -_mm(_mm(x33, a32, MMA, M16), x22, MMA, M16)
                MO: gl.constexpr = MP if MPO < 0 else MPO  # the 32 → 64 merges' outer products
                buf = j % NB
                if EP:
                    # column block 1 first; its tiles leave before block 0's are computed (fewer tiles live)
                    t21 = _mm(a21, x11, MMA, MP)
                    t31 = _mm(a31, x11, MMA, MP)
                    x21 = -_mm(x22, t21, MMA, MO)
                    x31 = -(_mm(x32, t21, MMA, MO) + _mm(x33, t31, MMA, MO))
                    e_0, e_1, e_2, e_3 = _handover(empty, buf, j, NB, s_0, s_1, s_2, s_3, h_0, h_1, h_2, h_3)
                    _put(pb, pe, pa, buf, x11, 1, 1, s_1, e_1, STORE_A)
                    _put(pb, pe, pa, buf, x21, 2, 1, s_1, e_1, STORE_A)
                    _put(pb, pe, pa, buf, x33, 3, 3, s_3, e_3, STORE_A)
                    _put(pb, pe, pa, buf, x31, 3, 1, s_1, e_1, STORE_A)
                    t20 = _mm(a20, x00, MMA, MP) + _mm(a21, x10, MMA, MP)
                    t30 = _mm(a30, x00, MMA, MP) + _mm(a31, x10, MMA, MP)
                    _put(pb, pe, pa, buf, x00, 0, 0, s_0, e_0, STORE_A)
                    _put(pb, pe, pa, buf, x10, 1, 0, s_0, e_0, STORE_A)
                    x20 = -_mm(x22, t20, MMA, MO)
                    x30 = -(_mm(x32, t20, MMA, MO) + _mm(x33, t30, MMA, MO))
                    _put(pb, pe, pa, buf, x22, 2, 2, s_2, e_2, STORE_A)
                    _put(pb, pe, pa, buf, x32, 3, 2, s_2, e_2, STORE_A)
                    _put(pb, pe, pa, buf, x20, 2, 0, s_0, e_0, STORE_A)
                    _put(pb, pe, pa, buf, x30, 3, 0, s_0, e_0, STORE_A)
                else:
                    t20 = _mm(a20, x00, MMA, MP) + _mm(a21, x10, MMA, MP)
                    t21 = _mm(a21, x11, MMA, MP)
                    t30 = _mm(a30, x00, MMA, MP) + _mm(a31, x10, MMA, MP)
                    t31 = _mm(a31, x11, MMA, MP)
                    x20 = -_mm(x22, t20, MMA, MO)
                    x21 = -_mm(x22, t21, MMA, MO)
                    x30 = -(_mm(x32, t20, MMA, MO) + _mm(x33, t30, MMA, MO))
                    x31 = -(_mm(x32, t21, MMA, MO) + _mm(x33, t31, MMA, MO))
                    e_0, e_1, e_2, e_3 = _handover(empty, buf, j, NB, s_0, s_1, s_2, s_3, h_0, h_1, h_2, h_3)
                    # by diagonals: one block per panel (separate allocations) between the compiler's
                    # shared-memory barriers, which it places between two writes to one allocation
                    _put(pb, pe, pa, buf, x00, 0, 0, s_0, e_0, STORE_A)
                    _put(pb, pe, pa, buf, x11, 1, 1, s_1, e_1, STORE_A)
                    _put(pb, pe, pa, buf, x22, 2, 2, s_2, e_2, STORE_A)
                    _put(pb, pe, pa, buf, x33, 3, 3, s_3, e_3, STORE_A)
                    _put(pb, pe, pa, buf, x10, 1, 0, s_0, e_0, STORE_A)
                    _put(pb, pe, pa, buf, x21, 2, 1, s_1, e_1, STORE_A)
                    _put(pb, pe, pa, buf, x32, 3, 2, s_2, e_2, STORE_A)
                    _put(pb, pe, pa, buf, x20, 2, 0, s_0, e_0, STORE_A)
                    _put(pb, pe, pa, buf, x31, 3, 1, s_1, e_1, STORE_A)
                    _put(pb, pe, pa, buf, x30, 3, 0, s_0, e_0, STORE_A)
                fence_async_shared()  # generic-proxy stores → read by wgmma and TMA (async proxy)
            else:
                if j >= NB:
                    mbarrier.wait(empty.index(j % NB), (j // NB - 1) & 1)
            _partition_barrier()  # every inverter warp's stores, then one arrive
            mbarrier.arrive(full.index(j % NB))
            j += 1

    @gluon.jit
    def _cta_tiles(n_tiles, W: gl.constexpr):
        """(batches, tiles) of this CTA: batches pid, pid + nprog, … of W tiles (grid ≤ number of batches; the
        last batch may be partial). Every streaming partition walks the same list (see _stile)."""
        pid = gl.program_id(0)
        nprog = gl.num_programs(0)
        my_b = gl.cdiv(gl.cdiv(n_tiles, W) - pid, nprog)
        return my_b, (my_b - 1) * W + gl.minimum(W, n_tiles - (pid + (my_b - 1) * nprog) * W)

    @gluon.jit
    def _stile(ts, pid, nprog, T, NC, n_tiles, tab_ptr, W: gl.constexpr, G: gl.constexpr,
               IS_VARLEN: gl.constexpr, HF: gl.constexpr = 0):
        """(first row, sequence end, head) of this CTA's local tile ts (clamped to the last tile past the end)."""
        t = gl.minimum((pid + (ts // W) * nprog) * W + ts % W, n_tiles - 1)
        chunk, head = _tile(t, NC, G, HF)
        row, eos = _chunk_rows(chunk, T, tab_ptr, IS_VARLEN)
        return row, eos, head

    @gluon.jit
    def _issue(p, sub, row, head, k_desc, v_desc, ring, ready, H: gl.constexpr, Hg: gl.constexpr,
               K: gl.constexpr, V: gl.constexpr, BN: gl.constexpr, S: gl.constexpr):
        """TMA load of the streamer's item p: column block ``sub`` of its tile (v blocks, then k blocks)."""
        bar = ready.index(p % S)
        mbarrier.expect(bar, 64 * BN * 2)
        if sub < V // BN:
            tma.async_copy_global_to_shared(v_desc, [row, head * V + sub * BN], bar, ring.index(p % S))
        else:
            tma.async_copy_global_to_shared(k_desc, [row, (head // (H // Hg)) * K + (sub - V // BN) * BN], bar,
                                            ring.index(p % S))

    @gluon.jit
    def _wg_chain(pset, slot, wi, ACC: gl.constexpr, BN: gl.constexpr):
        """Σ_b pset[b][wi] · slot[16b:16b+16] as four chained asynchronous wgmmas (K = 16 each)."""
        acc = warpgroup_mma(pset[0].index(wi), slot.slice(0, 16, dim=0), gl.zeros([64, BN], gl.float32, ACC),
                            use_acc=False, is_async=True)
        for b in gl.static_range(1, 4):
            acc = warpgroup_mma(pset[b].index(wi), slot.slice(16 * b, 16, dim=0), acc, is_async=True)
        return acc

    @gluon.jit
    def _epi(acc, q, sub: gl.constexpr, row, eos, T, head, stg, u_desc, w_desc, u_ptr, w_ptr,
             NSTG: gl.constexpr, NU: gl.constexpr, H: gl.constexpr, V: gl.constexpr, K: gl.constexpr,
             IS_VARLEN: gl.constexpr):
        """Item q's result out: bf16 into staging buffer q % NSTG (once its previous TMA store has read it), then
        a TMA store; varlen: a chunk that ends before 64 rows inside the tensor (TMA stores clip only at the
        tensor's end) from the same staging buffer by masked 16-byte stores (row-contiguous layout)."""
        BN: gl.constexpr = stg.shape[2]
        o = q % NSTG
        tma.store_wait(NSTG - 1)
        _partition_barrier()
        stg.index(o).store(acc.to(gl.bfloat16))
        fence_async_shared()
        _partition_barrier()
        if IS_VARLEN:
            if (row + 64 > eos) & (eos < T):
                _masked_out(stg.index(o), sub, row, eos, head, u_ptr, w_ptr, NU, H, V, K, 4)
            else:
                _tma_out(q, sub, row, head, stg, u_desc, w_desc, NSTG, NU, V, K)
        else:
            _tma_out(q, sub, row, head, stg, u_desc, w_desc, NSTG, NU, V, K)

    @gluon.jit
    def _masked_out(buf, sub: gl.constexpr, row, eos, head, u_ptr, w_ptr, NU: gl.constexpr, H: gl.constexpr,
                    V: gl.constexpr, K: gl.constexpr, NW: gl.constexpr):
        """A staged w/u block [64, BN] of a partial chunk by masked 16-byte row stores (rows < eos), by NW warps
        (16·NW rows at a time: one warp holds a quarter of the block)."""
        BN: gl.constexpr = buf.shape[1]
        RB: gl.constexpr = 16 * NW
        LS: gl.constexpr = gl.BlockedLayout([1, 8], [32 * 8 // BN, BN // 8], [NW, 1], [1, 0])
        for h in gl.static_range(64 // RB):
            if RB == 64:
                x = buf.load(LS)
            else:
                x = buf.slice(RB * h, RB, dim=0).load(LS)
            rr = row + RB * h + gl.arange(0, RB, layout=gl.SliceLayout(1, LS))
            cc = gl.arange(0, BN, layout=gl.SliceLayout(0, LS))
            if sub < NU:
                ptr = u_ptr + rr.to(gl.int64)[:, None] * (H * V) + (head * V + sub * BN) + cc[None, :]
            else:
                ptr = w_ptr + rr.to(gl.int64)[:, None] * (H * K) + (head * K + (sub - NU) * BN) + cc[None, :]
            gl.store(ptr, x, mask=(rr < eos)[:, None])

    @gluon.jit
    def _tma_out(q, sub: gl.constexpr, row, head, stg, u_desc, w_desc, NSTG: gl.constexpr, NU: gl.constexpr,
                 V: gl.constexpr, K: gl.constexpr):
        """TMA store of staging buffer q % NSTG into u (items sub < NU) or w."""
        BN: gl.constexpr = stg.shape[2]
        if sub < NU:
            tma.async_copy_shared_to_global(u_desc, [row, head * V + sub * BN], stg.index(q % NSTG))
        else:
            tma.async_copy_shared_to_global(w_desc, [row, head * K + (sub - NU) * BN], stg.index(q % NSTG))

    @gluon.jit
    def _tma_a(pa, a_desc, wi, row, head):
        for b in gl.static_range(4):
            tma.async_copy_shared_to_global(a_desc, [row, head * 64 + 16 * b], pa[b].index(wi))  # single buffer

    @gluon.jit
    def _store_a(pa, a_desc, a_ptr, wi, row, eos, T, head, H: gl.constexpr, IS_VARLEN: gl.constexpr,
                 NW: gl.constexpr = 4):
        """The A output of one tile from its plain Ai panels: TMA (rows past the tensor clipped); varlen: masked
        stores (by NW warps) for a chunk that ends inside the tensor before 64 rows."""
        if IS_VARLEN:
            if (row + 64 > eos) & (eos < T):
                LA: gl.constexpr = gl.BlockedLayout([1, 8], [16, 2], [NW, 1], [1, 0])
                rr = row + gl.arange(0, 64, layout=gl.SliceLayout(1, LA))
                cc = gl.arange(0, 16, layout=gl.SliceLayout(0, LA))
                for b in gl.static_range(4):
                    x = pa[b].index(wi).load(LA)
                    gl.store(a_ptr + rr.to(gl.int64)[:, None] * (H * 64) + (head * 64 + 16 * b) + cc[None, :], x,
                             mask=(rr < eos)[:, None])
            else:
                _tma_a(pa, a_desc, wi, row, head)
        else:
            _tma_a(pa, a_desc, wi, row, head)

    @gluon.jit
    def _epi_st(acc, q, stg, staged, sfree, NSTG: gl.constexpr):
        """ST: item q's result into staging buffer q % NSTG once the storer released it (item q − NSTG went out),
        then one arrive: the storer warp issues the store."""
        o = q % NSTG
        if q >= NSTG:
            mbarrier.wait(sfree.index(o), (q // NSTG - 1) & 1)
        stg.index(o).store(acc.to(gl.bfloat16))
        fence_async_shared()  # generic-proxy stores → read by the storer's TMA (async proxy)
        _partition_barrier()  # every warp's part (and its wgmmas on the ring slot) done, then one arrive
        mbarrier.arrive(staged.index(o))

    @gluon.jit
    def _item_out(acc, q, sub: gl.constexpr, row, eos, T, head, stg, u_desc, w_desc, u_ptr, w_ptr, staged, sfree,
                  rfree, NSTG: gl.constexpr, NU: gl.constexpr, H: gl.constexpr, V: gl.constexpr, K: gl.constexpr,
                  S: gl.constexpr, IS_VARLEN: gl.constexpr, LD: gl.constexpr, ST: gl.constexpr):
        """Item q's result out (ST: handed to the storer; else stored here), then (LD) its ring slot released to
        the loader: both after a partition barrier that follows every warp's wgmma wait."""
        if ST:
            _epi_st(acc, q, stg, staged, sfree, NSTG)
        else:
            _epi(acc, q, sub, row, eos, T, head, stg, u_desc, w_desc, u_ptr, w_ptr, NSTG, NU, H, V, K, IS_VARLEN)
        if LD:
            mbarrier.arrive(rfree.index(q % S))

    @gluon.jit
    def _stream_wu(k_desc, v_desc, w_desc, u_desc, a_desc, u_ptr, w_ptr, a_ptr, tab_ptr, pb, pe, pa, ring,
                   ready, rfree, stg, staged, sfree, T, NC, n_tiles, full, empty, H: gl.constexpr,
                   Hg: gl.constexpr, K: gl.constexpr, V: gl.constexpr, W: gl.constexpr, BN: gl.constexpr,
                   S: gl.constexpr, NSTG: gl.constexpr, MODE: gl.constexpr, PAIR: gl.constexpr,
                   STORE_A: gl.constexpr, G: gl.constexpr, IS_VARLEN: gl.constexpr, NB: gl.constexpr,
                   LD: gl.constexpr, ST: gl.constexpr, HF: gl.constexpr = 0):
        """Streamer partition (one warpgroup): u = (Ai·diag β)·v, w = (Ai·diag β e^g)·k for each handed-over tile,
        BN columns at a time: v/k blocks through an S-deep TMA ring (loads run up to one tile ahead, across
        batches: they do not depend on Ai; LD: issued by the loader warp, as far ahead as the ring allows), four
        K=16 wgmmas on the shared panels (NB buffers of them), results out through NSTG staging buffers by TMA
        (ST: the storer warp issues the stores, and the A output's)."""
        ACC: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                      instr_shape=[16, BN, 16])
        NU: gl.constexpr = V // BN
        IPT: gl.constexpr = (V + K) // BN
        L: gl.constexpr = 0 if LD else S - 1 - PAIR    # items issued ahead of the one being multiplied (here)
        gl.static_assert(LD or (L + PAIR <= IPT), "the TMA ring may run at most one tile ahead")
        pid = gl.program_id(0)
        nprog = gl.num_programs(0)
        my_b, n_my = _cta_tiles(n_tiles, W)
        if MODE == 1:
            for jb in range(my_b):
                mbarrier.wait(full.index(jb % NB), (jb // NB) & 1)
                mbarrier.arrive(empty.index(jb % NB))
        else:
            total = n_my * IPT
            # tile infos, loop-carried: this tile (c), the next (n, its items are issued during this one)
            row_c, eos_c, head_c = _stile(0, pid, nprog, T, NC, n_tiles, tab_ptr, W, G, IS_VARLEN, HF)
            row_n, eos_n, head_n = _stile(1, pid, nprog, T, NC, n_tiles, tab_ptr, W, G, IS_VARLEN, HF)
            for p in range(gl.minimum(L, total)):
                _issue(p, p, row_c, head_c, k_desc, v_desc, ring, ready, H, Hg, K, V, BN, S)
            q = 0
            for ts in range(n_my):
                # the tile after next: its table loads wait behind this tile's work, not in front of an issue
                row_nn, eos_nn, head_nn = _stile(ts + 2, pid, nprog, T, NC, n_tiles, tab_ptr, W, G,
                                                 IS_VARLEN, HF)
                wi = ts % W
                bt = ts // W
                if wi == 0:
                    mbarrier.wait(full.index(bt % NB), (bt // NB) & 1)
                pw = (bt % NB) * W + wi  # this tile's panels (buffer, tile of the batch)
                if STORE_A and not ST:
                    _store_a(pa, a_desc, a_ptr, wi, row_c, eos_c, T, head_c, H, IS_VARLEN)
                if PAIR:  # two items in flight: the second's wgmmas run while the first's result goes out
                    for pp in gl.static_range(IPT // 2):
                        if not LD:
                            for d in gl.static_range(2):
                                if q + L + d < total:
                                    if 2 * pp + L + d < IPT:
                                        _issue(q + L + d, 2 * pp + L + d, row_c, head_c, k_desc, v_desc, ring,
                                               ready, H, Hg, K, V, BN, S)
                                    else:
                                        _issue(q + L + d, 2 * pp + L + d - IPT, row_n, head_n, k_desc, v_desc,
                                               ring, ready, H, Hg, K, V, BN, S)
                        mbarrier.wait(ready.index(q % S), (q // S) & 1)
                        acc0 = _wg_chain(pe if 2 * pp >= NU else pb, ring.index(q % S), pw, ACC, BN)
                        mbarrier.wait(ready.index((q + 1) % S), ((q + 1) // S) & 1)
                        acc1 = _wg_chain(pe if 2 * pp + 1 >= NU else pb, ring.index((q + 1) % S), pw, ACC, BN)
                        acc0 = warpgroup_mma_wait(4, deps=[acc0])
                        _item_out(acc0, q, 2 * pp, row_c, eos_c, T, head_c, stg, u_desc, w_desc, u_ptr, w_ptr,
                                  staged, sfree, rfree, NSTG, NU, H, V, K, S, IS_VARLEN, LD, ST)
                        acc1 = warpgroup_mma_wait(0, deps=[acc1])
                        _item_out(acc1, q + 1, 2 * pp + 1, row_c, eos_c, T, head_c, stg, u_desc, w_desc, u_ptr,
                                  w_ptr, staged, sfree, rfree, NSTG, NU, H, V, K, S, IS_VARLEN, LD, ST)
                        q += 2
                else:
                    for sub in gl.static_range(IPT):
                        if not LD:
                            if q + L < total:
                                if sub + L < IPT:
                                    _issue(q + L, sub + L, row_c, head_c, k_desc, v_desc, ring, ready, H, Hg, K,
                                           V, BN, S)
                                else:
                                    _issue(q + L, sub + L - IPT, row_n, head_n, k_desc, v_desc, ring, ready, H,
                                           Hg, K, V, BN, S)
                        mbarrier.wait(ready.index(q % S), (q // S) & 1)
                        acc = _wg_chain(pe if sub >= NU else pb, ring.index(q % S), pw, ACC, BN)
                        acc = warpgroup_mma_wait(0, deps=[acc])
                        _item_out(acc, q, sub, row_c, eos_c, T, head_c, stg, u_desc, w_desc, u_ptr, w_ptr,
                                  staged, sfree, rfree, NSTG, NU, H, V, K, S, IS_VARLEN, LD, ST)
                        q += 1
                if (wi == W - 1) | (ts == n_my - 1):
                    if STORE_A and not ST:
                        tma.store_wait(0)  # the A stores have read their panels
                    _partition_barrier()  # (and every warp's masked A loads are done)
                    mbarrier.arrive(empty.index(bt % NB))  # every warp's wgmmas on the panels are done
                row_c, eos_c, head_c = row_n, eos_n, head_n
                row_n, eos_n, head_n = row_nn, eos_nn, head_nn
            if not ST:
                tma.store_wait(0)

    @gluon.jit
    def _load_wu(k_desc, v_desc, tab_ptr, ring, ready, rfree, T, NC, n_tiles, H: gl.constexpr, Hg: gl.constexpr,
                 K: gl.constexpr, V: gl.constexpr, W: gl.constexpr, BN: gl.constexpr, S: gl.constexpr,
                 MODE: gl.constexpr, G: gl.constexpr, IS_VARLEN: gl.constexpr, HF: gl.constexpr, LD: gl.constexpr):
        """LD: loader partition (one warp): the streamers' v/k blocks into the S-slot ring, each slot once the
        streamers released its previous item (they do not depend on Ai: the ring runs ahead across tiles and
        batches). Without LD (a launch with ST only) it does nothing."""
        if LD and MODE != 1:
            IPT: gl.constexpr = (V + K) // BN
            pid = gl.program_id(0)
            nprog = gl.num_programs(0)
            _, n_my = _cta_tiles(n_tiles, W)
            p = 0
            for ts in range(n_my):
                row, _, head = _stile(ts, pid, nprog, T, NC, n_tiles, tab_ptr, W, G, IS_VARLEN, HF)
                for sub in gl.static_range(IPT):
                    if p >= S:
                        mbarrier.wait(rfree.index(p % S), (p // S - 1) & 1)
                    _issue(p, sub, row, head, k_desc, v_desc, ring, ready, H, Hg, K, V, BN, S)
                    p += 1

    @gluon.jit
    def _store_wu(w_desc, u_desc, a_desc, u_ptr, w_ptr, a_ptr, tab_ptr, pa, stg, staged, sfree, T, NC, n_tiles,
                  full, empty, H: gl.constexpr, K: gl.constexpr, V: gl.constexpr, W: gl.constexpr,
                  BN: gl.constexpr, NSTG: gl.constexpr, MODE: gl.constexpr, STORE_A: gl.constexpr,
                  G: gl.constexpr, IS_VARLEN: gl.constexpr, NB: gl.constexpr, HF: gl.constexpr, ST: gl.constexpr):
        """ST: storer partition (one warp): per tile the A output from the plain panels once the batch is handed
        over, then each staged w/u block by TMA (a partial chunk inside the tensor by masked 16-byte stores);
        a staging buffer is released once its store has read it. With A it also releases the batch's panels
        (empty counts two arrives: the streamers' wgmmas and the A stores). Without ST (a launch with LD only) it
        does nothing."""
        if ST:
            NU: gl.constexpr = V // BN
            IPT: gl.constexpr = (V + K) // BN
            pid = gl.program_id(0)
            nprog = gl.num_programs(0)
            my_b, n_my = _cta_tiles(n_tiles, W)
            if MODE == 1:
                if STORE_A:
                    for jb in range(my_b):
                        mbarrier.wait(full.index(jb % NB), (jb // NB) & 1)
                        mbarrier.arrive(empty.index(jb % NB))
            else:
                q = 0
                for ts in range(n_my):
                    row, eos, head = _stile(ts, pid, nprog, T, NC, n_tiles, tab_ptr, W, G, IS_VARLEN, HF)
                    wi = ts % W
                    bt = ts // W
                    if STORE_A:
                        if wi == 0:
                            mbarrier.wait(full.index(bt % NB), (bt // NB) & 1)
                        _store_a(pa, a_desc, a_ptr, wi, row, eos, T, head, H, IS_VARLEN, 1)
                    for sub in gl.static_range(IPT):
                        o = q % NSTG
                        mbarrier.wait(staged.index(o), (q // NSTG) & 1)
                        if IS_VARLEN:
                            if (row + 64 > eos) & (eos < T):  # TMA stores clip only at the tensor's end
                                _masked_out(stg.index(o), sub, row, eos, head, u_ptr, w_ptr, NU, H, V, K, 1)
                            else:
                                _tma_out(q, sub, row, head, stg, u_desc, w_desc, NSTG, NU, V, K)
                        else:
                            _tma_out(q, sub, row, head, stg, u_desc, w_desc, NSTG, NU, V, K)
                        tma.store_wait(NSTG - 1)  # every store but the last NSTG − 1 has read its buffer
                        if q >= NSTG - 1:
                            mbarrier.arrive(sfree.index((q - NSTG + 1) % NSTG))
                        q += 1
                    if STORE_A:
                        if (wi == W - 1) | (ts == n_my - 1):
                            tma.store_wait(0)  # the A stores have read their panels
                            mbarrier.arrive(empty.index(bt % NB))
                tma.store_wait(0)

    @gluon.jit
    def _flat_panels(p, n: gl.constexpr, PAN2: gl.constexpr):
        """The four [buffer, tile, 64, 16] panels as n [64, 16] wgmma operands each (buffer-major)."""
        return (p[0]._reinterpret(gl.bfloat16, [n, 64, 16], PAN2), p[1]._reinterpret(gl.bfloat16, [n, 64, 16], PAN2),
                p[2]._reinterpret(gl.bfloat16, [n, 64, 16], PAN2), p[3]._reinterpret(gl.bfloat16, [n, 64, 16], PAN2))

    @gluon.jit
    def gluon_intra_kernel(beta_ptr, g_ptr, g_out_ptr, tab_ptr, w_ptr, u_ptr, a_ptr, k_desc, v_desc,
                           w_desc, u_desc, kin_desc, a_desc, T, NC, n_tiles,
                           H: gl.constexpr, Hg: gl.constexpr, K: gl.constexpr, V: gl.constexpr, W: gl.constexpr,
                           BK: gl.constexpr, BN: gl.constexpr, DP: gl.constexpr, MP: gl.constexpr,
                           REGS: gl.constexpr, S: gl.constexpr, NSTG: gl.constexpr, STORE_A: gl.constexpr,
                           MODE: gl.constexpr, PAIR: gl.constexpr, G: gl.constexpr, IS_VARLEN: gl.constexpr,
                           G_CUMSUM: gl.constexpr, DB: gl.constexpr, KD: gl.constexpr, CS: gl.constexpr,
                           DD: gl.constexpr = False, BL: gl.constexpr = None, KBL: gl.constexpr = None,
                           AL: gl.constexpr = None, KBW: gl.constexpr = 64, AW: gl.constexpr = 0,
                           MP1: gl.constexpr = -1, MPO: gl.constexpr = -1, EP: gl.constexpr = False,
                           LD: gl.constexpr = False, ST: gl.constexpr = False, XREGS: gl.constexpr = 64,
                           HF: gl.constexpr = 0, GF: gl.constexpr = False, KS: gl.constexpr = False):
        """Warp-specialized intra: W inverter warps hand batches of W tiles (the β-scaled Ai panels in shared
        memory) to one streamer warpgroup that computes w/u beside the next batch's inversion. T: rows of the
        (flattened) tensor; NC: chunks; n_tiles = NC·H. DD: the *_desc arguments are plain tensors (pointers) and
        the TMA descriptors are built here, on the device (shared layouts BL [64, BN], KBL [64, KBW] keys, AL
        [64, 16] A of row width AW): the host then neither builds nor encodes six descriptors per launch."""
        if DD:
            k_desc = tma.make_tensor_descriptor(k_desc, [T, Hg * K], [Hg * K, 1], [64, BN], BL)
            kin_desc = tma.make_tensor_descriptor(kin_desc, [T, Hg * K], [Hg * K, 1], [64, KBW], KBL)
            v_desc = tma.make_tensor_descriptor(v_desc, [T, H * V], [H * V, 1], [64, BN], BL)
            w_desc = tma.make_tensor_descriptor(w_desc, [T, H * K], [H * K, 1], [64, BN], BL)
            u_desc = tma.make_tensor_descriptor(u_desc, [T, H * V], [H * V, 1], [64, BN], BL)
            a_desc = tma.make_tensor_descriptor(a_desc, [T, AW], [AW, 1], [64, 16], AL)
        # Ai panels [Ai·diag β (4 column panels), Ai·diag β e^g (4), Ai (4, with STORE_A); tile; 64; 16]; the
        # streamers see the same bytes as NP·W [64, 16] wgmma operands (the 32-byte swizzle acts on the last
        # two dimensions only)
        PAN3: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=32, element_bitwidth=16, rank=3)
        PAN2: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=32, element_bitwidth=16, rank=2)
        # DB: two buffers of the β-scaled panels (the inverters fill one while the streamers read the other);
        # the plain Ai panels (A output) are single-buffered, so DB is for launches without A
        gl.static_assert(not (DB and STORE_A), "double-buffered panels only without the A output")
        NB: gl.constexpr = 2 if DB else 1
        pb = (gl.allocate_shared_memory(gl.bfloat16, [NB, W, 64, 16], PAN3),
              gl.allocate_shared_memory(gl.bfloat16, [NB, W, 64, 16], PAN3),
              gl.allocate_shared_memory(gl.bfloat16, [NB, W, 64, 16], PAN3),
              gl.allocate_shared_memory(gl.bfloat16, [NB, W, 64, 16], PAN3))
        pe = (gl.allocate_shared_memory(gl.bfloat16, [NB, W, 64, 16], PAN3),
              gl.allocate_shared_memory(gl.bfloat16, [NB, W, 64, 16], PAN3),
              gl.allocate_shared_memory(gl.bfloat16, [NB, W, 64, 16], PAN3),
              gl.allocate_shared_memory(gl.bfloat16, [NB, W, 64, 16], PAN3))
        if STORE_A:
            pa = (gl.allocate_shared_memory(gl.bfloat16, [1, W, 64, 16], PAN3),
                  gl.allocate_shared_memory(gl.bfloat16, [1, W, 64, 16], PAN3),
                  gl.allocate_shared_memory(gl.bfloat16, [1, W, 64, 16], PAN3),
                  gl.allocate_shared_memory(gl.bfloat16, [1, W, 64, 16], PAN3))
        else:
            pa = pb  # unused
        # the inverters' keys [column box, key tile, 64, KB] (KB = 64, or BK with KD: ldmatrix needs the box as
        # wide as its swizzle); TMA writes them through the rank-2 view kbuf2
        KB: gl.constexpr = kin_desc.block_type.shape[1]
        KL3: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=min(2 * KB, 128), element_bitwidth=16, rank=3)
        kbuf = gl.allocate_shared_memory(gl.bfloat16, [K // KB, W // G, 64, KB], KL3)
        kbuf2 = kbuf._reinterpret(gl.bfloat16, [K // KB * (W // G), 64, KB], kin_desc.layout)
        kready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        mbarrier.init(kready, count=1)
        if KS:  # the K Kᵀ blocks the two warps of a key tile exchange: [(product, parity, pair), 16, 16] fp32
            gl.static_assert(G == 2 and not KD, "KS: two heads per key tile, keys through registers")
            XSL: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[2, 1, 0])
            xbuf = (gl.allocate_shared_memory(gl.float32, [4 * W, 16, 16], XSL),
                    gl.allocate_shared_memory(gl.float32, [W, 16, 16], XSL))
        else:
            xbuf = (kbuf, kbuf)  # unused
        ring = gl.allocate_shared_memory(gl.bfloat16, [S, 64, BN], v_desc.layout)
        stg = gl.allocate_shared_memory(gl.bfloat16, [NSTG, 64, BN], u_desc.layout)
        ready = gl.allocate_shared_memory(gl.int64, [S, 1], mbarrier.MBarrierLayout())
        full = gl.allocate_shared_memory(gl.int64, [NB, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [NB, 1], mbarrier.MBarrierLayout())
        rfree = gl.allocate_shared_memory(gl.int64, [S, 1], mbarrier.MBarrierLayout())  # LD: slot read
        staged = gl.allocate_shared_memory(gl.int64, [NSTG, 1], mbarrier.MBarrierLayout())  # ST: buffer written
        sfree = gl.allocate_shared_memory(gl.int64, [NSTG, 1], mbarrier.MBarrierLayout())  # ST: buffer stored
        for i in gl.static_range(S):
            mbarrier.init(ready.index(i), count=1)
            if LD:
                mbarrier.init(rfree.index(i), count=1)
        if ST:
            for i in gl.static_range(NSTG):
                mbarrier.init(staged.index(i), count=1)
                mbarrier.init(sfree.index(i), count=1)
        for i in gl.static_range(NB):
            mbarrier.init(full.index(i), count=1)
            # ST with A: the streamers' wgmmas and the storer's A stores both release the panels
            mbarrier.init(empty.index(i), count=2 if (ST and STORE_A) else 1)
        # the streamers see each panel as W [64, 16] wgmma operands (the 32-byte swizzle acts on the last two
        # dimensions only)
        sb = _flat_panels(pb, NB * W, PAN2)
        se = _flat_panels(pe, NB * W, PAN2)
        if STORE_A:
            sa = _flat_panels(pa, W, PAN2)
        else:
            sa = sb  # unused
        # the partitions (the argument tuples stay inline: a tuple held in a variable loses its constexprs); with LD
        # or ST both one-warp partitions run (the one whose flag is off returns at once: the CTA is padded to 12 warps
        # either way)
        if LD or ST:
            gl.warp_specialize(
                [(_invert_tiles, (beta_ptr, g_ptr, g_out_ptr, tab_ptr, pb, pe, pa, kin_desc, kbuf, kbuf2, kready, T,
                                  NC, n_tiles, H, Hg, K, W, BK, DP, MP, STORE_A, MODE, G, IS_VARLEN, G_CUMSUM, full,
                                  empty, NB, KD, CS, MP1, MPO, EP, HF, GF, KS, xbuf)),
                 (_stream_wu, (k_desc, v_desc, w_desc, u_desc, a_desc, u_ptr, w_ptr, a_ptr, tab_ptr, sb, se, sa, ring,
                               ready, rfree, stg, staged, sfree, T, NC, n_tiles, full, empty, H, Hg, K, V, W, BN, S,
                               NSTG, MODE, PAIR, STORE_A, G, IS_VARLEN, NB, LD, ST, HF)),
                 (_load_wu, (k_desc, v_desc, tab_ptr, ring, ready, rfree, T, NC, n_tiles, H, Hg, K, V, W, BN, S, MODE,
                             G, IS_VARLEN, HF, LD)),
                 (_store_wu, (w_desc, u_desc, a_desc, u_ptr, w_ptr, a_ptr, tab_ptr, sa, stg, staged, sfree, T, NC,
                              n_tiles, full, empty, H, K, V, W, BN, NSTG, MODE, STORE_A, G, IS_VARLEN, NB, HF, ST))],
                [4, 1, 1], [REGS, XREGS, XREGS])
        else:
            gl.warp_specialize(
                [(_invert_tiles, (beta_ptr, g_ptr, g_out_ptr, tab_ptr, pb, pe, pa, kin_desc, kbuf, kbuf2, kready, T,
                                  NC, n_tiles, H, Hg, K, W, BK, DP, MP, STORE_A, MODE, G, IS_VARLEN, G_CUMSUM, full,
                                  empty, NB, KD, CS, MP1, MPO, EP, HF, GF, KS, xbuf)),
                 (_stream_wu, (k_desc, v_desc, w_desc, u_desc, a_desc, u_ptr, w_ptr, a_ptr, tab_ptr, sb, se, sa, ring,
                               ready, rfree, stg, staged, sfree, T, NC, n_tiles, full, empty, H, Hg, K, V, W, BN, S,
                               NSTG, MODE, PAIR, STORE_A, G, IS_VARLEN, NB, LD, ST, HF))],
                [4], [REGS])


@functools.lru_cache(maxsize=16)  # on the launch path: building a layout costs the host ~6 µs
def _block_layout(rows, cols):
    return gl.NVMMASharedLayout.get_default_for([rows, cols], gl.bfloat16)


@functools.lru_cache(maxsize=16)
def _sm_count(index: int) -> int:
    import torch

    return torch.cuda.get_device_properties(index).multi_processor_count


def pick_group(H: int, Hg: int, launch: GluonLaunch = DEFAULT_LAUNCH) -> int:
    """Heads per shared key tile: the launch's G, else 2 when two value heads share each key head."""
    if launch.G is not None:
        return launch.G
    return 2 if (H // Hg) % 2 == 0 and launch.W % 2 == 0 else 1


_TABLE_CACHE: list = []  # [(cu_seqlens, chunk_indices, versions, table)]: the last few, by tensor identity


def chunk_table(cu_seqlens, chunk_indices, chunk_size: int = 64):
    """int32 [NC, 2]: (first row, end row of its sequence) per chunk, so a kernel reads one pair per tile
    instead of a chunk_indices → cu_seqlens chain (this kernel, and the Triton template's varlen launches). Cached
    by tensor identity and version (SGLang passes the same cu_seqlens / chunk_indices to every GDN layer of a
    forward; holding them keeps their memory from being reused by other tensors, so identity is safe)."""
    import torch

    ver = (cu_seqlens._version, chunk_indices._version, chunk_size)
    for cu, ci, v, tab in _TABLE_CACHE:
        if cu is cu_seqlens and ci is chunk_indices and v == ver:
            return tab
    seq = chunk_indices[:, 0].long()
    tab = torch.stack([cu_seqlens[seq] + chunk_size * chunk_indices[:, 1], cu_seqlens[seq + 1]], 1).to(torch.int32)
    _TABLE_CACHE.insert(0, (cu_seqlens, chunk_indices, ver, tab.contiguous()))
    del _TABLE_CACHE[4:]
    return _TABLE_CACHE[0][3]


def _ensure_allocator() -> None:
    """Device-side TMA descriptors live in a per-launch global scratch that Triton's launcher asks its allocator
    for; install a torch one unless the process (e.g. SGLang's MoE kernels) already set an allocator."""
    import torch
    from triton.runtime import _allocation

    if isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))


@functools.lru_cache(maxsize=64)  # on the launch path (eager serving calls it per GDN layer)
def _constexprs(lc: GluonLaunch, H: int, Hg: int, K: int, V: int, store_A: bool, varlen: bool, g_cumsum: bool,
                diag_precision: str, merge_precision: str, dd: bool) -> dict:
    """Every constexpr of ``gluon_intra_kernel`` for one launch kind (``dd``: device-built descriptors, the
    launch's DD resolved): the launch and the CPU compile report take the same dict (a constexpr left out of a
    compile would become None there, not its default). Cached: callers must not modify it."""
    m16, m32 = merge_levels(merge_precision)  # per doubling level: "P16+P32"
    m32_in, m32_out = product_pair(m32)  # "Pin*Pout": the 32 → 64 merges' inner / outer products
    kb = lc.BK if lc.KD else 64  # key box width (KD: ldmatrix straight from a box as wide as its swizzle)
    dp = 2 if (lc.DM and diag_precision == "bf16x3") else PRECISIONS[diag_precision]  # 2: _inv_diag's DM form

    def code(p: int) -> int:  # SB: bf16x3 products split by packed conversions
        return p + P_SPLIT_BITS if lc.SB and p > P_TF32 else p

    ring, ks = ring_and_split(lc, store_A, varlen)
    const = dict(H=H, Hg=Hg, K=K, V=V, W=lc.W, BK=lc.BK, BN=lc.BN, DP=code(dp),
                 MP=code(PRECISIONS[m32_in]), MP1=code(PRECISIONS[m16]) if m16 != m32 else -1,
                 MPO=code(PRECISIONS[m32_out]) if m32_out != m32_in else -1, REGS=lc.REGS, S=ring,
                 NSTG=lc.NSTG, STORE_A=store_A, MODE=lc.MODE, PAIR=lc.PAIR, G=pick_group(H, Hg, lc),
                 IS_VARLEN=varlen, G_CUMSUM=g_cumsum, DB=double_buffered(lc, H, Hg, store_A, ks), KD=lc.KD,
                 CS=lc.CS, DD=dd, BL=None, KBL=None, AL=None, KBW=kb, AW=0,
                 EP=(varlen or not store_A) if lc.EP is None else lc.EP, LD=lc.LD, ST=lc.ST, XREGS=lc.XREGS,
                 HF=H if lc.HF else 0, GF=lc.GF, KS=ks and pick_group(H, Hg, lc) == 2)
    if const["KS"] and (lc.KD or const["DB"]):
        raise ValueError("GluonLaunch.KS: keys through registers (not KD) and single-buffered panels (not DB): the "
                         "exchange buffer (20 KiB) does not fit beside double-buffered panels")
    if dd:  # the layouts and the A row width of the descriptors the kernel builds
        const.update(BL=_block_layout(64, lc.BN), KBL=_block_layout(64, kb), AL=_block_layout(64, 16),
                     AW=H * (64 if store_A else K))
    return const


def ring_and_split(lc: GluonLaunch, store_A: bool, varlen: bool) -> tuple[int, bool]:
    """The launch's (S, KS): None = measured per launch kind (H200, session 18) — one sequence with A written: a
    ring of 6 and the key split (T=4096 H=32 53.8 → 50.7 µs, T=8192 H=32 96.0 → 90.5); varlen or without A: 5 and
    no split (there KS lost 4–6 % and S = 6 gained nothing)."""
    one_seq_A = store_A and not varlen
    return (6 if one_seq_A else 5) if lc.S is None else lc.S, one_seq_A if lc.KS is None else lc.KS


def double_buffered(lc: GluonLaunch, H: int, Hg: int, store_A: bool, ks: bool) -> bool:
    """The launch's DB: None = on where it fits in the 227 KiB of shared memory a CTA may have — without the A
    panels, and with two heads per key tile (G = 1 holds four key tiles instead of two: 250 KiB double-buffered,
    sm_90 compile of the default launch)."""
    if lc.DB is not None:
        return lc.DB
    return not store_A and pick_group(H, Hg, lc) > 1 and not ks  # ks: the launch's KS (ring_and_split); its 20 KiB
    # exchange buffer leaves no room


def device_descriptors(lc: GluonLaunch) -> bool:
    """Whether this launch builds its TMA descriptors on the device (DD; None: unless a CUDA graph is being
    captured, where the host's descriptors cost nothing at replay and the kernel saves the device's build)."""
    if lc.DD is not None:
        return lc.DD
    import torch

    return not torch.cuda.is_current_stream_capturing()


def launch_intra(k, v, g, beta, w, u, A=None, g_out=None, cu_seqlens=None, chunk_indices=None,
                 diag_precision="bf16x3", merge_precision="tf32", launch: GluonLaunch | None = None,
                 max_ctas: int | None = None) -> None:
    """Fill w, u (and A, and g_out = chunk-local cumsum of the raw gate ``g`` when given) for B = 1 inputs
    [1, T, …] (varlen: cu_seqlens and chunk_indices, both required). Caller checks support (ops.gluon_reason)."""
    import torch
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    lc = launch or DEFAULT_LAUNCH
    _, T, Hg, K = k.shape
    H, V = v.shape[-2], v.shape[-1]
    G = pick_group(H, Hg, lc)
    if K != 128 or V % lc.BN or K % lc.BN or H % Hg or (H // Hg) % G or lc.W % G or lc.W // G > 4:
        raise ValueError(f"gluon intra: unsupported K={K} V={V} H={H} Hg={Hg} G={G} {lc}")
    varlen = cu_seqlens is not None
    NC = int(chunk_indices.shape[0]) if varlen else cdiv(T, 64)
    n_tiles = NC * H
    if n_tiles == 0:
        return
    dd = device_descriptors(lc)
    kind = (lc, H, Hg, K, V, A is not None, varlen, g_out is not None, diag_precision, merge_precision, dd)
    const = _constexprs(*kind)
    a_view = (A if A is not None else w).view(T, -1)  # without A: a valid descriptor that is never used
    if dd:  # plain tensors: the kernel builds the descriptors (in a global scratch the launcher allocates)
        _ensure_allocator()
        descs = [k, v, w, u, k, a_view]
    else:
        blk, kb = _block_layout(64, lc.BN), const["KBW"]
        descs = [TensorDescriptor.from_tensor(x.view(T, -1), [64, lc.BN], blk) for x in (k, v, w, u)]
        descs.append(TensorDescriptor.from_tensor(k.view(T, -1), [64, kb], _block_layout(64, kb)))
        descs.append(TensorDescriptor.from_tensor(a_view, [64, 16], _block_layout(64, 16)))
    n_sm = _sm_count(k.device.index if k.device.index is not None else torch.cuda.current_device())
    grid = (min(max_ctas or n_sm, n_sm, cdiv(n_tiles, lc.W)),)
    args = (beta, g, g_out, chunk_table(cu_seqlens, chunk_indices) if varlen else None,
            w if varlen else None, u if varlen else None, A if (varlen and A is not None) else None,
            *descs, T, NC, n_tiles)
    if dd and direct_launch.enabled():  # host descriptors are objects the argument classes do not cover
        if DIRECT(kind, grid, args, const, {"num_warps": lc.W}):
            return
    gluon_intra_kernel[grid](*args, **const, num_warps=lc.W)


DIRECT = direct_launch.DirectLauncher("the Gluon intra kernel", lambda: gluon_intra_kernel)


def compile_report(launch: GluonLaunch | None = None, varlen=False, g_cumsum=False, store_A=True,
                   merge_precision=None, H=32, Hg=16) -> dict:
    """sm_90 compile on any machine (Triton's bundled ptxas): launch registers, warps, stack (spills), shared
    memory, global scratch per CTA (DD: the device-built descriptors) and the setmaxnreg values of the two
    partitions. merge_precision None: the GDN default's (ops.DEFAULT_PRECISION)."""
    if merge_precision is None:
        from . import split_precision

        merge_precision = split_precision("blockdoubling", None)[1]
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    from ..benchmarks.resources import cubin_usage  # cuobjdump registers / stack / SASS

    lc = launch or DEFAULT_LAUNCH
    desc = f"tensordesc<bf16[64, {lc.BN}],{_block_layout(64, lc.BN)!r}>"
    sig = {"beta_ptr": "*bf16", "g_ptr": "*fp32", "g_out_ptr": "*fp32" if g_cumsum else "constexpr",
           "tab_ptr": "*i32" if varlen else "constexpr",
           "w_ptr": "*bf16" if varlen else "constexpr", "u_ptr": "*bf16" if varlen else "constexpr",
           "a_ptr": "*bf16" if varlen and store_A else "constexpr",
           "k_desc": desc, "v_desc": desc, "w_desc": desc, "u_desc": desc,
           "kin_desc": f"tensordesc<bf16[64, {lc.BK if lc.KD else 64}],"
                       f"{_block_layout(64, lc.BK if lc.KD else 64)!r}>",
           "a_desc": f"tensordesc<bf16[64, 16],{_block_layout(64, 16)!r}>", "T": "i32", "NC": "i32",
           "n_tiles": "i32"}
    fn = gluon_intra_kernel
    dd = bool(lc.DD)  # None (auto) reports the host-descriptor build, as captured launches use it
    const = _constexprs(lc, H, Hg, 128, 128, store_A, varlen, g_cumsum, "bf16x3", merge_precision, dd)
    if dd:  # plain pointers; the descriptors are built in the kernel
        sig.update({n: "*bf16" for n in ("k_desc", "v_desc", "w_desc", "u_desc", "kin_desc", "a_desc")})
    none_args = {n: None for n, t in sig.items() if t == "constexpr"}
    const_all = {**const, **none_args}
    sig.update({n: "constexpr" for n in const})
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n, t in sig.items() if t.startswith("*")}
    src = GluonASTSource(fn=fn, signature=sig, attrs=attrs,
                         constexprs={(fn.arg_names.index(n),): v for n, v in const_all.items()})
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": lc.W})
    use = cubin_usage(c.asm["cubin"], sass=True)
    ops = re.findall(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", use["sass"], re.M)
    return dict(launch_regs=use["regs"], warps=c.metadata.num_warps, stack=use["stack"], smem=c.metadata.shared,
                scratch=c.metadata.global_scratch_size,
                setmaxnreg=sorted({int(x, 16) for x in
                                   re.findall(r"USETMAXREG\.\w+\.CTAPOOL (?:UP0, )?(0x[0-9a-f]+)", use["sass"])}),
                sass_instructions=len(ops), bar_sync=sum(o.startswith("BAR.SYNC") for o in ops),
                # the inversion's operand traffic (bf16 splits, layout conversions) against its tensor-core products
                sass_ops={k: sum(o.split(".")[0] == k for o in ops) for k in ("HMMA", "PRMT", "SHFL", "F2F", "F2FP")},
                bar_after_stsm=_barriers_after_stsm(ops))


def _barriers_after_stsm(ops: list[str]) -> int:
    """BAR.SYNCs whose previous shared-memory or mma instruction is an STSM: the compiler's barriers between the
    panel stores (default launch, Triton 3.6: 52 while the panels shared one allocation, 12 since)."""
    n, prev = 0, ""
    for o in ops:
        if o.startswith("BAR.SYNC") and prev.startswith("STSM"):
            n += 1
        if o.startswith(("STSM", "BAR", "STS", "LDS", "HMMA", "LDSM")):
            prev = o
    return n
