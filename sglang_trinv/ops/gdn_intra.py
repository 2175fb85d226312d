"""Fused GDN intra-chunk kernel: gated KKᵀ + (I + A)^{-1} by a selectable method (+ the w/u recompute).

Per chunk of BT = 64 tokens and value head h (GQA: key head h // (H/Hg)):

    A   = tril(diag(β)·(K Kᵀ ⊙ exp(gᵢ − gⱼ)), −1)          (four 16-row sub-chunks → 10 lower 16×16 tiles)
    Ai  = (I + A)^{-1}                                      (METHOD, see below)
    u   = Ai · (β ⊙ V),   w = Ai · (β·e^{g} ⊙ K)            (FUSE_WU: Ai never round-trips through HBM)

One template; the method and the dot precisions are ``tl.constexpr``s, so each (method, precision) pair
compiles to its own specialised kernel without a copy of the source:

- diagonal 16×16 tiles (``DIAG``): ``SUBST`` row substitution on CUDA cores (SGLang's stock algorithm),
  ``SWEEP`` column sweep, ``DOUBLING`` Bunch–Hopcroft doubling 1→2→4→8→16 on tensor cores,
  ``NEUMANN16`` Neumann product (I−A)(I+A²)(I+A⁴)(I+A⁸) on tensor cores (the paper's MXR inner step);
- off-diagonal tiles (``WHOLE`` = 0): doubling merges 16 → 32 → 64, ``X21 = −X22·A21·X11``;
  or the whole 64×64 matrix by an unstable global method (``WHOLE`` = NEUMANN64 / NEWTON_SCHULZ), kept
  for comparison (block-lower-triangular products of the 10 tiles).

The PyTorch twins are :mod:`sglang_trinv.reference.inverse` (same trees, same operand roundings).
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_wait

# diagonal-tile methods
SUBST: tl.constexpr = tl.constexpr(0)
SWEEP: tl.constexpr = tl.constexpr(1)
DOUBLING: tl.constexpr = tl.constexpr(2)
NEUMANN16: tl.constexpr = tl.constexpr(3)
DOUBLING_MASKED: tl.constexpr = tl.constexpr(4)  # DOUBLING with the level masks on the products (Tuning.diag_masks)
# whole-matrix methods (0 = doubling merges of the inverted diagonal tiles)
MERGE: tl.constexpr = tl.constexpr(0)
NEUMANN64: tl.constexpr = tl.constexpr(1)
NEWTON_SCHULZ: tl.constexpr = tl.constexpr(2)

# dot precisions (ieee/tf32/tf32x3 are Triton's; bf16 and bf16x3 are done by hand)
P_IEEE: tl.constexpr = tl.constexpr(0)
P_TF32: tl.constexpr = tl.constexpr(1)
P_TF32X3: tl.constexpr = tl.constexpr(2)
P_BF16: tl.constexpr = tl.constexpr(3)
P_BF16X3: tl.constexpr = tl.constexpr(4)
P_FP16: tl.constexpr = tl.constexpr(5)
P_TF32R: tl.constexpr = tl.constexpr(6)
P_BF16X3P: tl.constexpr = tl.constexpr(7)  # bf16x3, hi/lo by packed conversions (_hi_lo_packed; GPU only)


# ------------------------------------------------------------------------------------------ tile algebra
@triton.jit
def _round_tf32(x):
    """fp32 → tf32 to nearest, ties away from zero (cvt.rna.tf32.f32; integer ops, so the interpreter runs it):
    add half an ulp of the 10-bit mantissa to the magnitude bits, clear the 13 dropped bits."""
    bits = x.to(tl.int32, bitcast=True)
    return ((bits + 0x1000) & -0x2000).to(tl.float32, bitcast=True)


# bf16 hi/lo of two fp32 values ($2, $3) into two packed registers ($0 = hi pair, $1 = lo pair): cvt.rn.bf16x2 puts
# its first source in the upper half; hi widened back to fp32 by a shift / a mask for the subtraction. Shared with
# the Gluon kernel (gluon_intra._hi_lo).
HI_LO_PTX: tl.constexpr = tl.constexpr("""{
    .reg .b32 h0, h1;
    .reg .f32 r0, r1;
    cvt.rn.bf16x2.f32 $0, $3, $2;
    shl.b32 h0, $0, 16;
    and.b32 h1, $0, 0xffff0000;
    sub.f32 r0, $2, h0;
    sub.f32 r1, $3, h1;
    cvt.rn.bf16x2.f32 $1, r1, r0;
    }""")


@triton.jit
def _hi_lo_packed(x):
    """bf16 hi/lo of fp32 x (x ≈ hi + lo) as the bf16x3 branch of _mm computes them, with one packed conversion
    cvt.rn.bf16x2.f32 per two values for each part and hi widened back by a shift / mask — where ``x.to(bf16)``
    compiles to a single-value F2F.BF16.F32 per value plus an IMAD and a PRMT. Not bit for bit the plain branch:
    there the compiler contracts x − hi with a product feeding x into one FMA (lo of the unrounded product; 80
    fma.rn.f32 in the fused default's PTX, none here), so a few bf16 outputs differ by one ulp, errors vs fp64 the
    same (H200, bench/results/2026-11-28-s17). Inline PTX: GPU only (ops maps Tuning.split_packed to the plain
    branch under the interpreter)."""
    return tl.inline_asm_elementwise(HI_LO_PTX, "=r,=r,r,r", [x], dtype=(tl.bfloat16, tl.bfloat16), is_pure=True,
                                     pack=2)


# one L2 prefetch per address (Tuning.prefetch_v): the line holding it moves into L2, nothing waits for it and no
# register holds it (the dummy output only gives the asm a result)
PREFETCH_L2_PTX: tl.constexpr = tl.constexpr("prefetch.global.L2 [$1]; mov.u32 $0, 0;")
# the same line through the TMA unit (Tuning.prefetch_bulk; sm_90): a bulk copy into L2 that, unlike the plain
# prefetch hint, the memory system does not drop (ncu, H200 s19: the plain one left the L2 hit rate at 60.2 → 60.3 %)
PREFETCH_BULK_L2_PTX: tl.constexpr = tl.constexpr("cp.async.bulk.prefetch.L2.global [$1], 128; mov.u32 $0, 0;")


# the same rows by real loads (Tuning.prefetch_touch): one volatile 4-byte load per 256 bytes of a row, with the
# L2::256B prefetch-size hint so L2 fills the whole 256-byte span (a plain 4-byte load brings one 32-byte sector).
# A load is not a hint the memory system may drop; volatile keeps ptxas from deleting it although its word is
# never used (or used only by _keep_alive's never-taken store)
TOUCH_L2_PTX: tl.constexpr = tl.constexpr("ld.volatile.global.L2::256B.b32 $0, [$1];")
# the one word pattern (two bf16 NaNs) a touched word is stored back under: a store the compiler cannot fold away,
# so neither can the loads, and one that, if it ever runs, rewrites the same bits
KEEP_PATTERN: tl.constexpr = tl.constexpr(0x7FC17FC1)


@triton.jit
def _touch_l2(ptrs):
    """One TOUCH_L2_PTX load per int32 pointer; returns the words (nothing waits for them unless they are used).
    Inline PTX: GPU only."""
    return tl.inline_asm_elementwise(TOUCH_L2_PTX, "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _touch_ptrs(base, t0, T, stride, NCOL: tl.constexpr, BT: tl.constexpr):
    """int32 pointers to the first word of each 256-byte span of BT rows of NCOL elements from row t0 (rows past T
    clamp to T − 1), as one flat vector: the store in _keep_alive then needs no layout conversion (which Triton
    would make by issuing the loads again in the store's layout)."""
    SPAN: tl.constexpr = 2048 // base.dtype.element_ty.primitive_bitwidth  # elements per 256 bytes
    NS: tl.constexpr = (NCOL + SPAN - 1) // SPAN
    tl.static_assert(NS & (NS - 1) == 0, "a power-of-two number of 256-byte spans per row")
    i = tl.arange(0, BT * NS)
    r = tl.minimum(t0 + i // NS, T - 1)
    return (base + r * stride + (i % NS) * SPAN).to(tl.pointer_type(tl.int32))


@triton.jit
def _touch_rows_l2(base, t0, T, stride, NCOL: tl.constexpr, BT: tl.constexpr):
    """The prefetch of _prefetch_rows_l2 by loads (TOUCH_L2_PTX), one per 256-byte span. Returns the loaded words
    ([BT · spans] int32): nothing waits for them unless they are used (_keep_alive). Inline PTX: GPU only."""
    return _touch_l2(_touch_ptrs(base, t0, T, stride, NCOL, BT))


@triton.jit
def _keep_alive(words, base, t0, T, stride, NCOL: tl.constexpr, BT: tl.constexpr):
    """Use the words _touch_rows_l2 loaded, last thing in the program, so their registers stay allocated until
    here and no instruction in between reuses one while its load is in flight (a write-after-write wait). The use
    cannot be folded away: each word is stored back where it came from where it holds KEEP_PATTERN (v unchanged;
    this program alone reads those rows)."""
    tl.store(_touch_ptrs(base, t0, T, stride, NCOL, BT), words, mask=words == KEEP_PATTERN)


@triton.jit
def _warm_l2(v, wi, NW, NROWS, V: tl.constexpr, ASM: tl.constexpr):
    """Warm-up program ``wi`` of ``NW`` (Tuning.l2_warm): its share of v's bytes — v seen as one flat tensor of NROWS
    rows of V elements — into L2 while the chunk programs of the same wave run K Kᵀ and the inversion. One 4-byte
    load per 256-byte span with the L2::256B prefetch-size hint (ASM, TOUCH_L2_PTX; the interpreter: a plain load),
    1024 spans per step (32 loads in flight per lane). The loads' words are stored back where they hold
    KEEP_PATTERN, so the loads cannot be dropped.
    The chunk programs never wait for this: at one-wave shapes the warm-up programs fill resident slots that would
    otherwise stay empty (ops._warm_rows), and the inverting warps issue no loads for it (prefetch_touch did)."""
    WPS: tl.constexpr = 64  # int32 words per 256-byte span
    WB: tl.constexpr = 1024
    words = NROWS.to(tl.int64) * (V * v.dtype.element_ty.primitive_bitwidth // 32)
    spans = (words + WPS - 1) // WPS
    per = (spans + NW - 1) // NW
    s0 = wi * per
    base = v.to(tl.pointer_type(tl.int32))
    for j in range(0, per, WB):
        sp = s0 + j + tl.arange(0, WB)
        p = base + tl.minimum(sp * WPS, words - 1)
        if ASM:
            w = _touch_l2(p)
        else:
            w = tl.load(p)
        tl.store(p, w, mask=(sp < s0 + per) & (w == KEEP_PATTERN))


@triton.jit
def _prefetch_v(v_head0, t0, T, stride, V: tl.constexpr, BT: tl.constexpr, GROUP: tl.constexpr,
                BULK: tl.constexpr, TOUCH: tl.constexpr):
    """The chunk's v rows of the program's GROUP heads (from ``v_head0``, the first head's row 0) into L2
    (Tuning.prefetch_v): by real loads (TOUCH; one head: returns the loaded words for _keep_alive), else by the
    hint or the TMA unit (BULK; returns a placeholder nothing uses)."""
    words = 0
    if TOUCH:  # (a compile-time branch: one return, whichever value it holds)
        words = _touch_rows_l2(v_head0, t0, T, stride, V, BT)
    else:
        for i_hh in tl.static_range(GROUP):
            _prefetch_rows_l2(v_head0 + i_hh * V, t0, T, stride, V, BT, BULK)
    return words


@triton.jit
def _prefetch_rows_l2(base, t0, T, stride, NCOL: tl.constexpr, BT: tl.constexpr, BULK: tl.constexpr = False):
    """Ask L2 for BT rows of NCOL elements from row t0 (rows past T clamp to T − 1): one prefetch per 128-byte
    line. The fused kernel issues it for the chunk's v rows at its start or after K Kᵀ (Tuning.prefetch_v), so
    the w/u loops — which run after the inversion, when every program of a one-wave launch streams at once — read
    v from L2, fetched while the inversion left DRAM idle. BULK: each line by cp.async.bulk.prefetch.L2 (the
    TMA unit; the rows' 128-byte lines are 16-byte aligned where the tensor and its row stride are). Inline PTX:
    GPU only (ops keeps it off under the interpreter); values unchanged."""
    LINE: tl.constexpr = 1024 // base.dtype.element_ty.primitive_bitwidth  # elements per 128 bytes
    NL: tl.constexpr = (NCOL + LINE - 1) // LINE
    r = tl.minimum(t0 + tl.arange(0, BT), T - 1)
    p = base + r[:, None] * stride + (tl.arange(0, NL) * LINE)[None, :]
    if BULK:
        tl.inline_asm_elementwise(PREFETCH_BULK_L2_PTX, "=r,l", [p], dtype=tl.int32, is_pure=False, pack=1)
    else:
        tl.inline_asm_elementwise(PREFETCH_L2_PTX, "=r,l", [p], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _mm(a, b, PREC: tl.constexpr):
    """fp32 ``a @ b`` with the operands rounded as precision PREC rounds them (fp32 accumulation)."""
    if PREC == P_IEEE:
        c = tl.dot(a, b, input_precision="ieee")
    elif PREC == P_TF32:  # the tensor core reads the fp32 registers as tf32: truncation
        c = tl.dot(a, b, input_precision="tf32")
    elif PREC == P_TF32R:  # operands rounded to nearest first: unbiased tf32 products
        c = tl.dot(_round_tf32(a), _round_tf32(b), input_precision="tf32")
    elif PREC == P_TF32X3:
        c = tl.dot(a, b, input_precision="tf32x3")
    elif PREC == P_BF16:
        c = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif PREC == P_FP16:
        c = tl.dot(a.to(tl.float16), b.to(tl.float16))
    elif PREC == P_BF16X3P:  # bf16x3, the splits by packed conversions (_hi_lo_packed)
        a_hi, a_lo = _hi_lo_packed(a)
        b_hi, b_lo = _hi_lo_packed(b)
        c = tl.dot(a_hi, b_lo)
        c = tl.dot(a_lo, b_hi, c)
        c = tl.dot(a_hi, b_hi, c)
    else:  # bf16x3: a·b ≈ hi·hi + hi·lo + lo·hi with x = hi + lo, hi = bf16(x), lo = bf16(x − hi)
        a_hi = a.to(tl.bfloat16)
        b_hi = b.to(tl.bfloat16)
        a_lo = (a - a_hi.to(tl.float32)).to(tl.bfloat16)
        b_lo = (b - b_hi.to(tl.float32)).to(tl.bfloat16)
        c = tl.dot(a_hi, b_lo)
        c = tl.dot(a_lo, b_hi, c)
        c = tl.dot(a_hi, b_hi, c)
    return c


@triton.jit
def _safe_exp(x):
    # exp of a non-positive gate difference; +inf (from padded/garbage positions) is masked to 0
    return tl.exp(tl.where(x <= 0, x, float("-inf")))


@triton.jit
def _inv_diag(a, BC: tl.constexpr, DIAG: tl.constexpr, PREC: tl.constexpr):
    """(I + a)^{-1} of one strictly-lower BC×BC tile ``a`` (fp32)."""
    o_i = tl.arange(0, BC)
    eye = (o_i[:, None] == o_i[None, :]).to(tl.float32)
    if DIAG == SUBST:
        # rows in order: x_i = e_i − Σ_{j<i} a_ij x_j  (BC−2 serial steps, fp32 FMAs; rows 0, 1 are −a)
        x = -a
        for i in range(2, BC):
            row = tl.sum(tl.where((o_i == i)[:, None], -a, 0.0), 0)
            row = tl.where(o_i < i, row, 0.0)
            row = row + tl.sum(row[:, None] * x, 0)
            x = tl.where((o_i == i)[:, None], row, x)
        x = x + eye
    elif DIAG == SWEEP:
        # X ← (I − a_j e_jᵀ) X for j = 0…BC−2: subtract column j of a times row j of X
        x = eye
        for j in range(0, BC - 1):
            col = tl.sum(tl.where((o_i == j)[None, :], a, 0.0), 1)
            row = tl.sum(tl.where((o_i == j)[:, None], x, 0.0), 0)
            x = x - col[:, None] * row[None, :]
    elif DIAG == DOUBLING or DIAG == DOUBLING_MASKED:
        # level 1 exactly: 2×2 blocks [[1,0],[−a,1]]; then b = 2, 4, …: X ← X − X·A_b·X, where A_b keeps
        # the lower-left b×b quadrant of every 2b×2b diagonal block (X block-diagonal ⇒ X21 = −X22·A21·X11).
        # DOUBLING_MASKED: X ← X − (X·A·X) ⊙ M_b, bitwise the same (block (I, J) of X·A·X is X_II·A_IJ·X_JJ, the
        # other terms exact zeros) with one rounding/conversion of A for all levels (gluon_intra._inv_diag, DM)
        r = o_i[:, None]
        c = o_i[None, :]
        x = eye - tl.where((r // 2 == c // 2), a, 0.0)
        for lvl in tl.static_range(1, 4):
            b = 1 << lvl
            m_b = (r // (2 * b) == c // (2 * b)) & ((r // b) % 2 == 1) & ((c // b) % 2 == 0)
            if DIAG == DOUBLING_MASKED:
                x = x - tl.where(m_b, _mm(_mm(x, a, PREC), x, PREC), 0.0)
            else:
                x = x - _mm(_mm(x, tl.where(m_b, a, 0.0), PREC), x, PREC)
    else:  # NEUMANN16: (I − a)(I + a²)(I + a⁴)(I + a⁸): exact for BC = 16 since a^16 = 0
        x = eye - a
        y = _mm(a, a, PREC)
        for step in tl.static_range(3):
            x = x + _mm(x, y, PREC)
            if step < 2:
                y = _mm(y, y, PREC)
    return x


@triton.jit
def _bmm(a00, a10, a11, a20, a21, a22, a30, a31, a32, a33,
         b00, b10, b11, b20, b21, b22, b30, b31, b32, b33, PREC: tl.constexpr):
    """Product of two 4×4 block-lower-triangular matrices given by their 10 tiles: C_ij = Σ_{j≤k≤i} A_ik B_kj."""
    c00 = _mm(a00, b00, PREC)
    c10 = _mm(a10, b00, PREC) + _mm(a11, b10, PREC)
    c11 = _mm(a11, b11, PREC)
    c20 = _mm(a20, b00, PREC) + _mm(a21, b10, PREC) + _mm(a22, b20, PREC)
    c21 = _mm(a21, b11, PREC) + _mm(a22, b21, PREC)
    c22 = _mm(a22, b22, PREC)
    c30 = _mm(a30, b00, PREC) + _mm(a31, b10, PREC) + _mm(a32, b20, PREC) + _mm(a33, b30, PREC)
    c31 = _mm(a31, b11, PREC) + _mm(a32, b21, PREC) + _mm(a33, b31, PREC)
    c32 = _mm(a32, b22, PREC) + _mm(a33, b32, PREC)
    c33 = _mm(a33, b33, PREC)
    return c00, c10, c11, c20, c21, c22, c30, c31, c32, c33


@triton.jit
def _merge16(x11, a10, x00, PREC: tl.constexpr):
    """Doubling 16 → 32: X10 = −X11·A10·X00."""
    return -_mm(_mm(x11, a10, PREC), x00, PREC)


@triton.jit
def _merge32(x00, x10, x11, x22, x32, x33, a20, a21, a30, a31, PREC: tl.constexpr, PREC_OUT: tl.constexpr = -1):
    """Doubling 32 → 64: [X20 X21; X30 X31] = −[X22 0; X32 X33]·([A20 A21; A30 A31]·[X00 0; X10 X11]); the inner
    products in PREC, the outer ones in PREC_OUT (≥ 0; −1: PREC too)."""
    PO: tl.constexpr = PREC if PREC_OUT < 0 else PREC_OUT
    t20 = _mm(a20, x00, PREC) + _mm(a21, x10, PREC)
    t21 = _mm(a21, x11, PREC)
    t30 = _mm(a30, x00, PREC) + _mm(a31, x10, PREC)
    t31 = _mm(a31, x11, PREC)
    x20 = -_mm(x22, t20, PO)
    x21 = -_mm(x22, t21, PO)
    x30 = -(_mm(x32, t20, PO) + _mm(x33, t30, PO))
    x31 = -(_mm(x32, t21, PO) + _mm(x33, t31, PO))
    return x20, x21, x30, x31


@triton.jit
def _invert64(a00, a10, a11, a20, a21, a22, a30, a31, a32, a33,
              BC: tl.constexpr, DIAG: tl.constexpr, WHOLE: tl.constexpr,
              DIAG_PREC: tl.constexpr, MERGE_PREC: tl.constexpr, MERGE16_PREC: tl.constexpr = -1,
              MERGE_OUT_PREC: tl.constexpr = -1, a_base=None, t0=0, T=0, a_stride=0, BT: tl.constexpr = 64,
              ROWS: tl.constexpr = 0, A_FIRST: tl.constexpr = 0):
    """(I + A)^{-1} of the 64×64 strictly-lower A given as 10 fp32 tiles; returns the 10 tiles of X.
    MERGE16_PREC ≥ 0: the 16 → 32 merges in that precision, the 32 → 64 ones in MERGE_PREC; MERGE_OUT_PREC ≥ 0:
    the 32 → 64 merges' outer products (X22·(A·X)) in that one (reference.precision.product_pair).
    A_FIRST (merge trees): ≥ 2 stores the diagonal tiles of X to ``a_base`` as soon as they are final, 3 also X10
    and X32 after the 16 → 32 merges (A_FIRST_*: those tiles' bytes leave during the rest of the chain)."""
    o_i = tl.arange(0, BC)
    eye = (o_i[:, None] == o_i[None, :]).to(tl.float32)
    zero = tl.zeros([BC, BC], dtype=tl.float32)
    if WHOLE == MERGE:
        x00 = _inv_diag(a00, BC, DIAG, DIAG_PREC)
        x11 = _inv_diag(a11, BC, DIAG, DIAG_PREC)
        x22 = _inv_diag(a22, BC, DIAG, DIAG_PREC)
        x33 = _inv_diag(a33, BC, DIAG, DIAG_PREC)
        if A_FIRST >= A_FIRST_DIAG:
            _store_rows(a_base, x00, t0, T, a_stride, 0, BT, BC, BC, ROWS)
            _store_rows(a_base, x11, t0 + BC, T, a_stride, BC, BT, BC, BC, ROWS)
            _store_rows(a_base, x22, t0 + 2 * BC, T, a_stride, 2 * BC, BT, BC, BC, ROWS)
            _store_rows(a_base, x33, t0 + 3 * BC, T, a_stride, 3 * BC, BT, BC, BC, ROWS)
        M16: tl.constexpr = MERGE_PREC if MERGE16_PREC < 0 else MERGE16_PREC
        x10 = _merge16(x11, a10, x00, M16)
        x32 = _merge16(x33, a32, x22, M16)
        if A_FIRST >= A_FIRST_MERGE16:
            _store_rows(a_base, x10, t0 + BC, T, a_stride, 0, BT, BC, BC, ROWS)
            _store_rows(a_base, x32, t0 + 3 * BC, T, a_stride, 2 * BC, BT, BC, BC, ROWS)
        x20, x21, x30, x31 = _merge32(x00, x10, x11, x22, x32, x33, a20, a21, a30, a31, MERGE_PREC, MERGE_OUT_PREC)
    elif WHOLE == NEUMANN64:
        # X = (I − A)(I + A²)(I + A⁴)…(I + A³²): 10 block products; intermediates grow like binomials
        x00, x10, x11, x20, x21, x22, x30, x31, x32, x33 = (eye - a00, -a10, eye - a11, -a20, -a21, eye - a22,
                                                            -a30, -a31, -a32, eye - a33)
        y00, y10, y11, y20, y21, y22, y30, y31, y32, y33 = _bmm(a00, a10, a11, a20, a21, a22, a30, a31, a32, a33,
                                                                a00, a10, a11, a20, a21, a22, a30, a31, a32, a33,
                                                                MERGE_PREC)
        for step in tl.static_range(5):
            p00, p10, p11, p20, p21, p22, p30, p31, p32, p33 = _bmm(
                x00, x10, x11, x20, x21, x22, x30, x31, x32, x33,
                y00, y10, y11, y20, y21, y22, y30, y31, y32, y33, MERGE_PREC)
            x00, x10, x11, x20, x21, x22 = x00 + p00, x10 + p10, x11 + p11, x20 + p20, x21 + p21, x22 + p22
            x30, x31, x32, x33 = x30 + p30, x31 + p31, x32 + p32, x33 + p33
            if step < 4:
                y00, y10, y11, y20, y21, y22, y30, y31, y32, y33 = _bmm(
                    y00, y10, y11, y20, y21, y22, y30, y31, y32, y33,
                    y00, y10, y11, y20, y21, y22, y30, y31, y32, y33, MERGE_PREC)
    else:  # NEWTON_SCHULZ: X ← X + X(I − M X) from X = I, 6 steps (exact for n = 64 in exact arithmetic)
        x00, x10, x11, x20, x21, x22, x30, x31, x32, x33 = (eye, zero, eye, zero, zero, eye,
                                                            zero, zero, zero, eye)
        for _ in tl.static_range(6):
            # R = I − (I + A)X = −X' + I − A·X  (X' = X)
            q00, q10, q11, q20, q21, q22, q30, q31, q32, q33 = _bmm(
                a00, a10, a11, a20, a21, a22, a30, a31, a32, a33,
                x00, x10, x11, x20, x21, x22, x30, x31, x32, x33, MERGE_PREC)
            r00, r10, r11, r20, r21, r22 = eye - x00 - q00, -x10 - q10, eye - x11 - q11, -x20 - q20, -x21 - q21, \
                eye - x22 - q22
            r30, r31, r32, r33 = -x30 - q30, -x31 - q31, -x32 - q32, eye - x33 - q33
            p00, p10, p11, p20, p21, p22, p30, p31, p32, p33 = _bmm(
                x00, x10, x11, x20, x21, x22, x30, x31, x32, x33,
                r00, r10, r11, r20, r21, r22, r30, r31, r32, r33, MERGE_PREC)
            x00, x10, x11, x20, x21, x22 = x00 + p00, x10 + p10, x11 + p11, x20 + p20, x21 + p21, x22 + p22
            x30, x31, x32, x33 = x30 + p30, x31 + p31, x32 + p32, x33 + p33
    return x00, x10, x11, x20, x21, x22, x30, x31, x32, x33


# ------------------------------------------------------------------------------------------ memory
# Row bounds of a chunk's loads and stores (the template's ROWS constexpr): rows past T are masked (0), every chunk
# is whole so no row is (1, Tuning.full_chunks), or the k / v / g loads read row min(r, T − 1) without a row mask
# while β keeps its mask and the stores theirs (2, Tuning.clamp_rows). Why 2 gives the masked build's values: rows
# past T then hold finite copies of the last row with β = 0, so their A rows are exactly 0 as in the masked build,
# as are their w/u operands (β·v, β·e^g·k); a valid row meets a later one only through the zero triangle above the
# diagonal; the fused cumsum is a prefix sum; and the gate factors' anchor (a column block's smallest cumulative
# gate) is the last valid row's either way (for a non-increasing gate, as a cumulative log-decay is; and e^g of the
# last row finite, else its own w is not either).
ROWS_MASKED: tl.constexpr = tl.constexpr(0)
ROWS_WHOLE: tl.constexpr = tl.constexpr(1)
ROWS_CLAMPED: tl.constexpr = tl.constexpr(2)


@triton.jit
def _tile_mask(o_r, o_c, T, NCOL: tl.constexpr, ROWS: tl.constexpr):
    """In-bounds mask of a [rows, columns] tile: rows below T (ROWS = ROWS_WHOLE: whole chunks, every row is),
    columns below NCOL."""
    if ROWS == ROWS_WHOLE:
        m = (o_c < NCOL)[None, :]
    else:
        m = (o_r < T)[:, None] & (o_c < NCOL)[None, :]
    return m


@triton.jit
def _load_rows(base, t0, T, stride, col0, NCOL: tl.constexpr, BC: tl.constexpr, BX: tl.constexpr,
               ROWS: tl.constexpr = 0):
    """[BC, BX] tile of rows t0…t0+BC−1 (zero beyond T; ROWS_CLAMPED: row T − 1 again) and columns col0…col0+BX−1
    (zero beyond NCOL). ROWS = ROWS_WHOLE: every row is below T (whole chunks): no row mask."""
    o_r = t0 + tl.arange(0, BC)
    o_c = col0 + tl.arange(0, BX)
    if ROWS == ROWS_CLAMPED:
        o_r = tl.minimum(o_r, T - 1)
        return tl.load(base + o_r[:, None] * stride + o_c[None, :],
                       mask=_tile_mask(o_r, o_c, T, NCOL, ROWS_WHOLE), other=0.0)
    return tl.load(base + o_r[:, None] * stride + o_c[None, :], mask=_tile_mask(o_r, o_c, T, NCOL, ROWS), other=0.0)


@triton.jit
def _store_rows(base, x, t0, T, stride, col0, NCOL: tl.constexpr, BC: tl.constexpr, BX: tl.constexpr,
                ROWS: tl.constexpr = 0):
    o_r = t0 + tl.arange(0, BC)
    o_c = col0 + tl.arange(0, BX)
    tl.store(base + o_r[:, None] * stride + o_c[None, :], x.to(base.dtype.element_ty),
             mask=_tile_mask(o_r, o_c, T, NCOL, ROWS))


@triton.jit
def _load_vec(base, t0, T, stride, BC: tl.constexpr, ROWS: tl.constexpr = 0):
    o_r = t0 + tl.arange(0, BC)
    if ROWS == ROWS_WHOLE:
        return tl.load(base + o_r * stride).to(tl.float32)
    if ROWS == ROWS_CLAMPED:
        return tl.load(base + tl.minimum(o_r, T - 1) * stride).to(tl.float32)
    return tl.load(base + o_r * stride, mask=o_r < T, other=0.0).to(tl.float32)


@triton.jit
def _x_times_tiles(out, x00, x10, x11, x20, x21, x22, x30, x31, x32, x33, s0, s1, s2, s3, t0, T, out_stride, c0,
                   NCOL: tl.constexpr, BC: tl.constexpr, BX: tl.constexpr, ROWS: tl.constexpr = 0):
    """Columns c0…c0+BX−1 of out = X·[s0; s1; s2; s3] for one chunk, X lower block-triangular (its 10 16×16 tiles in
    the operand dtype), s_J the [BC, BX] tile of sub-chunk J: each 16-row block stored as soon as it is complete."""
    _store_rows(out, tl.dot(x00, s0), t0, T, out_stride, c0, NCOL, BC, BX, ROWS)
    _store_rows(out, tl.dot(x11, s1, tl.dot(x10, s0)), t0 + BC, T, out_stride, c0, NCOL, BC, BX, ROWS)
    _store_rows(out, tl.dot(x22, s2, tl.dot(x21, s1, tl.dot(x20, s0))), t0 + 2 * BC, T, out_stride, c0,
                NCOL, BC, BX, ROWS)
    _store_rows(out, tl.dot(x33, s3, tl.dot(x32, s2, tl.dot(x31, s1, tl.dot(x30, s0)))), t0 + 3 * BC, T,
                out_stride, c0, NCOL, BC, BX, ROWS)


@triton.jit
def _wu_rows(out, src, scale0, scale1, scale2, scale3, x00, x10, x11, x20, x21, x22, x30, x31, x32, x33,
             t0, T, src_stride, out_stride, NCOL: tl.constexpr, BC: tl.constexpr, BX: tl.constexpr,
             FOLD: tl.constexpr, ROWS: tl.constexpr = 0):
    """out = X · (scale ⊙ src) for one chunk, in BX-column tiles; X in the operand dtype (as stock).
    Each 16-row block is stored as soon as it is complete: one [BC, BX] accumulator live instead of four
    (fewer registers per 1-warp program → more programs resident to hide memory latency).
    FOLD: the caller folded the row scales into X's columns (X·diag(s)), so the raw src tiles feed the dots
    directly (no elementwise step between load and dot: the loads can be pipelined into shared memory)."""
    for i_x in range(tl.cdiv(NCOL, BX)):
        c0 = i_x * BX
        if FOLD:
            s0 = _load_rows(src, t0, T, src_stride, c0, NCOL, BC, BX, ROWS).to(x00.dtype)
            s1 = _load_rows(src, t0 + BC, T, src_stride, c0, NCOL, BC, BX, ROWS).to(x00.dtype)
            s2 = _load_rows(src, t0 + 2 * BC, T, src_stride, c0, NCOL, BC, BX, ROWS).to(x00.dtype)
            s3 = _load_rows(src, t0 + 3 * BC, T, src_stride, c0, NCOL, BC, BX, ROWS).to(x00.dtype)
        else:
            s0 = (_load_rows(src, t0, T, src_stride, c0, NCOL, BC, BX, ROWS) * scale0[:, None]).to(x00.dtype)
            s1 = (_load_rows(src, t0 + BC, T, src_stride, c0, NCOL, BC, BX, ROWS) * scale1[:, None]).to(x00.dtype)
            s2 = (_load_rows(src, t0 + 2 * BC, T, src_stride, c0, NCOL, BC, BX, ROWS)
                  * scale2[:, None]).to(x00.dtype)
            s3 = (_load_rows(src, t0 + 3 * BC, T, src_stride, c0, NCOL, BC, BX, ROWS)
                  * scale3[:, None]).to(x00.dtype)
        _x_times_tiles(out, x00, x10, x11, x20, x21, x22, x30, x31, x32, x33, s0, s1, s2, s3, t0, T, out_stride, c0,
                       NCOL, BC, BX, ROWS)


@triton.jit
def _wu_rows_merged(u, v, w, k, b0, b1, b2, b3, e0, e1, e2, e3, x00, x10, x11, x20, x21, x22, x30, x31, x32, x33,
                    t0, T, v_stride, u_stride, k_stride, w_stride, V: tl.constexpr, K: tl.constexpr,
                    BC: tl.constexpr, BX: tl.constexpr):
    """u = X·(β ⊙ v) and w = X·(β e^g ⊙ k) in ONE loop over the cdiv(V, BX) + cdiv(K, BX) column tiles (the
    first ones of u, then those of w; source, destination, strides and row scales picked per iteration).
    Why: two 4-iteration loops each fill and drain the software pipeline; one 8-iteration loop keeps
    num_stages−1 tiles in flight across the u→w boundary (the fused kernel is bound by its load latency)."""
    NV: tl.constexpr = (V + BX - 1) // BX
    o_r = tl.arange(0, BC)
    for i_x in range(NV + (K + BX - 1) // BX):
        is_u = i_x < NV
        src = tl.where(is_u, v, k)
        dst = tl.where(is_u, u, w)
        s_stride = tl.where(is_u, v_stride, k_stride)
        d_stride = tl.where(is_u, u_stride, w_stride)
        ncol = tl.where(is_u, V, K)
        o_c = tl.where(is_u, i_x, i_x - NV) * BX + tl.arange(0, BX)
        m_c = (o_c < ncol)[None, :]
        p = src + o_c[None, :]
        s0 = tl.load(p + (t0 + o_r)[:, None] * s_stride, mask=((t0 + o_r) < T)[:, None] & m_c, other=0.0)
        s1 = tl.load(p + (t0 + BC + o_r)[:, None] * s_stride, mask=((t0 + BC + o_r) < T)[:, None] & m_c, other=0.0)
        s2 = tl.load(p + (t0 + 2 * BC + o_r)[:, None] * s_stride, mask=((t0 + 2 * BC + o_r) < T)[:, None] & m_c,
                     other=0.0)
        s3 = tl.load(p + (t0 + 3 * BC + o_r)[:, None] * s_stride, mask=((t0 + 3 * BC + o_r) < T)[:, None] & m_c,
                     other=0.0)
        s0 = (s0 * tl.where(is_u, b0, e0)[:, None]).to(x00.dtype)
        s1 = (s1 * tl.where(is_u, b1, e1)[:, None]).to(x00.dtype)
        s2 = (s2 * tl.where(is_u, b2, e2)[:, None]).to(x00.dtype)
        s3 = (s3 * tl.where(is_u, b3, e3)[:, None]).to(x00.dtype)
        q = dst + o_c[None, :]
        et = dst.dtype.element_ty
        tl.store(q + (t0 + o_r)[:, None] * d_stride, tl.dot(x00, s0).to(et), mask=((t0 + o_r) < T)[:, None] & m_c)
        tl.store(q + (t0 + BC + o_r)[:, None] * d_stride, tl.dot(x11, s1, tl.dot(x10, s0)).to(et),
                 mask=((t0 + BC + o_r) < T)[:, None] & m_c)
        tl.store(q + (t0 + 2 * BC + o_r)[:, None] * d_stride,
                 tl.dot(x22, s2, tl.dot(x21, s1, tl.dot(x20, s0))).to(et),
                 mask=((t0 + 2 * BC + o_r) < T)[:, None] & m_c)
        tl.store(q + (t0 + 3 * BC + o_r)[:, None] * d_stride,
                 tl.dot(x33, s3, tl.dot(x32, s2, tl.dot(x31, s1, tl.dot(x30, s0)))).to(et),
                 mask=((t0 + 3 * BC + o_r) < T)[:, None] & m_c)


@triton.jit
def _u_rows_with_inversion(out, src, b0, b1, b2, b3, r00, r10, r11, r20, r21, r22, r30, r31, r32, r33,
                           g0, g1, g2, g3, t0, T, src_stride, out_stride, NCOL: tl.constexpr, BC: tl.constexpr,
                           BX: tl.constexpr, STAGES: tl.constexpr, USE_G: tl.constexpr, DIAG: tl.constexpr,
                           WHOLE: tl.constexpr, DIAG_PREC: tl.constexpr, MERGE_PREC: tl.constexpr,
                           MERGE16_PREC: tl.constexpr, MERGE_OUT_PREC: tl.constexpr, GATE_FACTORS: tl.constexpr,
                           ROWS: tl.constexpr, DT: tl.constexpr):
    """u = X·(β ⊙ v) as _wu_rows computes it, with X = (I + A)^{-1} computed INSIDE the first iteration of the
    column loop (Tuning.v_early_stages): the loop's software pipeline (STAGES stages) issues its prologue — v's
    first STAGES − 1 column tiles, cp.async into shared memory — before that iteration, i.e. before the inversion,
    so those reads arrive while the chain runs instead of after it (one-wave launches: every program inverts with
    DRAM idle, then streams; s22 measured the stream waiting on v's DRAM reads). The loaded tiles' first use sits
    below the inversion, so the pipeline's wait does too. Returns X rounded to the operand dtype DT (k's, as the
    default's copies; the w loop and the late A store take it); the same values as the default's two-step form."""
    dt: tl.constexpr = DT
    zy = tl.zeros([BC, BC], dtype=dt)
    y00, y10, y11, y20, y21, y22, y30, y31, y32, y33 = zy, zy, zy, zy, zy, zy, zy, zy, zy, zy
    for i_x in tl.range(0, tl.cdiv(NCOL, BX), num_stages=STAGES):
        c0 = i_x * BX
        v0 = _load_rows(src, t0, T, src_stride, c0, NCOL, BC, BX, ROWS)
        v1 = _load_rows(src, t0 + BC, T, src_stride, c0, NCOL, BC, BX, ROWS)
        v2 = _load_rows(src, t0 + 2 * BC, T, src_stride, c0, NCOL, BC, BX, ROWS)
        v3 = _load_rows(src, t0 + 3 * BC, T, src_stride, c0, NCOL, BC, BX, ROWS)
        if i_x == 0:
            x00, x10, x11, x20, x21, x22, x30, x31, x32, x33 = _gated_inverse(
                r00, r10, r11, r20, r21, r22, r30, r31, r32, r33, b0, b1, b2, b3, g0, g1, g2, g3,
                BC, USE_G, DIAG, WHOLE, DIAG_PREC, MERGE_PREC, MERGE16_PREC, MERGE_OUT_PREC, GATE_FACTORS)
            y00, y10, y11 = x00.to(dt), x10.to(dt), x11.to(dt)
            y20, y21, y22 = x20.to(dt), x21.to(dt), x22.to(dt)
            y30, y31, y32, y33 = x30.to(dt), x31.to(dt), x32.to(dt), x33.to(dt)
        s0, s1 = (v0 * b0[:, None]).to(dt), (v1 * b1[:, None]).to(dt)
        s2, s3 = (v2 * b2[:, None]).to(dt), (v3 * b3[:, None]).to(dt)
        _x_times_tiles(out, y00, y10, y11, y20, y21, y22, y30, y31, y32, y33, s0, s1, s2, s3, t0, T, out_stride, c0,
                       NCOL, BC, BX, ROWS)
    return y00, y10, y11, y20, y21, y22, y30, y31, y32, y33


@triton.jit
def _load_vec4(base, t0, T, stride, BC: tl.constexpr, ROWS: tl.constexpr = 0):
    """A per-token scalar (β, g) of the chunk's 4 sub-chunks: 4 fp32 [BC] vectors, 0 past T."""
    return (_load_vec(base, t0, T, stride, BC, ROWS), _load_vec(base, t0 + BC, T, stride, BC, ROWS),
            _load_vec(base, t0 + 2 * BC, T, stride, BC, ROWS), _load_vec(base, t0 + 3 * BC, T, stride, BC, ROWS))


@triton.jit
def _load_gates(g, g_out, beta, bos, i_h, t0, T, H: tl.constexpr, BC: tl.constexpr, USE_G: tl.constexpr,
                G_CUMSUM: tl.constexpr, ROWS: tl.constexpr = 0):
    """β and the (chunk-local cumulative) gate of the chunk's 4 sub-chunks, fp32 [BC] each (g = 0 without a gate).
    G_CUMSUM: ``g`` is the raw log-gate; its chunk-local cumsum (SGLang's chunk_local_cumsum, fused in) is taken
    here and stored to ``g_out`` for the later pipeline stages (rows past T load as 0, or as row T − 1 when
    clamped: valid prefix sums hold either way)."""
    if ROWS == ROWS_CLAMPED:  # β = 0 past T keeps those rows out of A and of the w/u operands
        b0, b1, b2, b3 = _load_vec4(beta + bos * H + i_h, t0, T, H, BC, ROWS_MASKED)
    else:
        b0, b1, b2, b3 = _load_vec4(beta + bos * H + i_h, t0, T, H, BC, ROWS)
    if USE_G:
        g0, g1, g2, g3 = _load_vec4(g + bos * H + i_h, t0, T, H, BC, ROWS)
        if G_CUMSUM:
            s0 = tl.sum(g0, 0)
            s1 = s0 + tl.sum(g1, 0)
            s2 = s1 + tl.sum(g2, 0)
            g0 = tl.cumsum(g0, 0)
            g1 = tl.cumsum(g1, 0) + s0
            g2 = tl.cumsum(g2, 0) + s1
            g3 = tl.cumsum(g3, 0) + s2
            go = g_out + bos * H + i_h
            o_r = t0 + tl.arange(0, BC)
            tl.store(go + o_r * H, g0, mask=o_r < T)
            tl.store(go + (o_r + BC) * H, g1, mask=o_r + BC < T)
            tl.store(go + (o_r + 2 * BC) * H, g2, mask=o_r + 2 * BC < T)
            tl.store(go + (o_r + 3 * BC) * H, g3, mask=o_r + 3 * BC < T)
    else:
        g0 = tl.zeros([BC], dtype=tl.float32)
        g1, g2, g3 = g0, g0, g0
    return b0, b1, b2, b3, g0, g1, g2, g3


@triton.jit
def _gate(r, bi, gi, gj, BC: tl.constexpr, DIAG_TILE: tl.constexpr, USE_G: tl.constexpr):
    """A tile from its raw k·kᵀ tile: β_i·(k_i·k_j)·exp(g_i − g_j), strictly lower on a diagonal tile."""
    a = r * bi[:, None]
    if DIAG_TILE:
        o_i = tl.arange(0, BC)
        a = tl.where(o_i[:, None] > o_i[None, :], a, 0.0)
    if USE_G:
        a = a * _safe_exp(gi[:, None] - gj[None, :])
    return a


@triton.jit
def _col_factors(gj):
    """GATE_FACTORS, column block J: (e^{min(s − g_j, 0)}, s) with s = the smallest gate of the block. For a block
    (I, J) below the diagonal block J, e^{g_i − g_j} = e^{min(g_i − s, 0)}·e^{min(s − g_j, 0)} (a chunk-local
    cumulative log-gate does not increase; rows past the sequence read 0 or row T − 1's gate and carry β = 0):
    both factors in [0, 1], no overflow at any decay, 2·16 exponentials per block instead of 16·16
    (gluon_intra._gate_factors)."""
    s = tl.min(gj, 0)
    return tl.exp(tl.minimum(s - gj, 0.0)), s


@triton.jit
def _gate_factored(r, bi, gi, cj, s):
    """GATE_FACTORS: a tile below the diagonal from its raw k·kᵀ tile and column block J's factors."""
    return r * (bi * tl.exp(tl.minimum(gi - s, 0.0)))[:, None] * cj[None, :]


@triton.jit
def _chunk_bounds(i_t, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN: tl.constexpr, TABLE: tl.constexpr = False):
    """(chunk index within its sequence, first token, sequence length) of program (i_t, batch i_b);
    varlen: ``chunk_indices[i_t] = (sequence, chunk)`` and ``cu_seqlens`` as in SGLang/FLA — two dependent loads
    before any work; TABLE: ``chunk_indices`` is the int32 chunk table instead (``gluon_intra.chunk_table``: first
    row, end of its sequence), one load, and the chunk is returned as chunk 0 of a sequence starting at its row."""
    if IS_VARLEN:
        if TABLE:
            bos = tl.load(chunk_indices + i_t * 2)
            T = tl.load(chunk_indices + i_t * 2 + 1) - bos
            i_t = 0
        else:
            i_n = tl.load(chunk_indices + i_t * 2).to(tl.int32)
            i_t = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int32)
            bos = tl.load(cu_seqlens + i_n).to(tl.int32)
            T = tl.load(cu_seqlens + i_n + 1).to(tl.int32) - bos
    else:
        bos = i_b * T
    return i_t, bos, T


@triton.jit
def _kkt10(k_base, t0, T, stride, K: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, ROWS: tl.constexpr = 0):
    """Raw K Kᵀ of one chunk as its 10 lower 16×16 tiles (fp32), K reduced in BK-column steps."""
    z = tl.zeros([BC, BC], dtype=tl.float32)
    r00, r10, r11, r20, r21, r22, r30, r31, r32, r33 = z, z, z, z, z, z, z, z, z, z
    for i_k in range(tl.cdiv(K, BK)):
        k0 = _load_rows(k_base, t0, T, stride, i_k * BK, K, BC, BK, ROWS)
        k1 = _load_rows(k_base, t0 + BC, T, stride, i_k * BK, K, BC, BK, ROWS)
        k2 = _load_rows(k_base, t0 + 2 * BC, T, stride, i_k * BK, K, BC, BK, ROWS)
        k3 = _load_rows(k_base, t0 + 3 * BC, T, stride, i_k * BK, K, BC, BK, ROWS)
        r00 = tl.dot(k0, tl.trans(k0), r00)
        r10 = tl.dot(k1, tl.trans(k0), r10)
        r11 = tl.dot(k1, tl.trans(k1), r11)
        r20 = tl.dot(k2, tl.trans(k0), r20)
        r21 = tl.dot(k2, tl.trans(k1), r21)
        r22 = tl.dot(k2, tl.trans(k2), r22)
        r30 = tl.dot(k3, tl.trans(k0), r30)
        r31 = tl.dot(k3, tl.trans(k1), r31)
        r32 = tl.dot(k3, tl.trans(k2), r32)
        r33 = tl.dot(k3, tl.trans(k3), r33)
    return r00, r10, r11, r20, r21, r22, r30, r31, r32, r33


@triton.jit
def _gated_inverse(r00, r10, r11, r20, r21, r22, r30, r31, r32, r33, b0, b1, b2, b3, g0, g1, g2, g3,
                   BC: tl.constexpr, USE_G: tl.constexpr, DIAG: tl.constexpr, WHOLE: tl.constexpr,
                   DIAG_PREC: tl.constexpr, MERGE_PREC: tl.constexpr, MERGE16_PREC: tl.constexpr = -1,
                   MERGE_OUT_PREC: tl.constexpr = -1, GATE_FACTORS: tl.constexpr = False, a_base=None, t0=0, T=0,
                   a_stride=0, BT: tl.constexpr = 64, ROWS: tl.constexpr = 0, A_FIRST: tl.constexpr = 0):
    """(I + A)^{-1} with A_ij = β_i·(k_i·k_j)·exp(g_i − g_j), strictly lower, from the raw K Kᵀ tiles
    (A_FIRST and the arguments after it: see _invert64)."""
    a00 = _gate(r00, b0, g0, g0, BC, True, USE_G)
    a11 = _gate(r11, b1, g1, g1, BC, True, USE_G)
    a22 = _gate(r22, b2, g2, g2, BC, True, USE_G)
    a33 = _gate(r33, b3, g3, g3, BC, True, USE_G)
    if GATE_FACTORS and USE_G:  # the six tiles below the diagonal as rank-1 gate factors (see _col_factors)
        c0, s0 = _col_factors(g0)
        c1, s1 = _col_factors(g1)
        c2, s2 = _col_factors(g2)
        a10 = _gate_factored(r10, b1, g1, c0, s0)
        a20 = _gate_factored(r20, b2, g2, c0, s0)
        a21 = _gate_factored(r21, b2, g2, c1, s1)
        a30 = _gate_factored(r30, b3, g3, c0, s0)
        a31 = _gate_factored(r31, b3, g3, c1, s1)
        a32 = _gate_factored(r32, b3, g3, c2, s2)
    else:
        a10 = _gate(r10, b1, g1, g0, BC, False, USE_G)
        a20 = _gate(r20, b2, g2, g0, BC, False, USE_G)
        a21 = _gate(r21, b2, g2, g1, BC, False, USE_G)
        a30 = _gate(r30, b3, g3, g0, BC, False, USE_G)
        a31 = _gate(r31, b3, g3, g1, BC, False, USE_G)
        a32 = _gate(r32, b3, g3, g2, BC, False, USE_G)
    return _invert64(a00, a10, a11, a20, a21, a22, a30, a31, a32, a33, BC, DIAG, WHOLE, DIAG_PREC, MERGE_PREC,
                     MERGE16_PREC, MERGE_OUT_PREC, a_base, t0, T, a_stride, BT, ROWS, A_FIRST)


# ------------------------------------------------------------------------------------------ the kernel
# Tiles of Ai stored before the rest (the template's A_FIRST, Tuning.a_first): none; the six zero tiles above the
# diagonal, at the program's start (they depend on nothing); those and the four diagonal tiles once inverted; those
# and X10, X32 after the 16 → 32 merges. Why: at one-wave shapes every program inverts at once (memory idle), then
# streams; bytes that can leave earlier shorten the stream. Each 16-column tile row is one 32-byte sector.
A_FIRST_NONE: tl.constexpr = tl.constexpr(0)
A_FIRST_ZEROS: tl.constexpr = tl.constexpr(1)
A_FIRST_DIAG: tl.constexpr = tl.constexpr(2)
A_FIRST_MERGE16: tl.constexpr = tl.constexpr(3)


@triton.jit
def _store_ai_zeros(a_base, t0, T, stride, BT: tl.constexpr, BC: tl.constexpr, ROWS: tl.constexpr):
    """The six zero tiles above Ai's diagonal (no memset pass needed)."""
    zero = tl.zeros([BC, BC], dtype=tl.float32)
    _store_rows(a_base, zero, t0, T, stride, BC, BT, BC, BC, ROWS)
    _store_rows(a_base, zero, t0, T, stride, 2 * BC, BT, BC, BC, ROWS)
    _store_rows(a_base, zero, t0, T, stride, 3 * BC, BT, BC, BC, ROWS)
    _store_rows(a_base, zero, t0 + BC, T, stride, 2 * BC, BT, BC, BC, ROWS)
    _store_rows(a_base, zero, t0 + BC, T, stride, 3 * BC, BT, BC, BC, ROWS)
    _store_rows(a_base, zero, t0 + 2 * BC, T, stride, 3 * BC, BT, BC, BC, ROWS)


@triton.jit
def _store_ai(a_base, x00, x10, x11, x20, x21, x22, x30, x31, x32, x33, t0, T, stride, BT: tl.constexpr,
              BC: tl.constexpr, ROWS: tl.constexpr, A_FIRST: tl.constexpr = 0):
    """Ai [BT, BT] of one chunk from its 10 lower 16×16 tiles and the zero upper ones (no memset pass needed), less
    the tiles A_FIRST stored before."""
    if A_FIRST == A_FIRST_NONE:  # row block by row block (the order every measurement before A_FIRST used)
        zero = tl.zeros([BC, BC], dtype=tl.float32)
        _store_rows(a_base, x00, t0, T, stride, 0, BT, BC, BC, ROWS)
        _store_rows(a_base, zero, t0, T, stride, BC, BT, BC, BC, ROWS)
        _store_rows(a_base, zero, t0, T, stride, 2 * BC, BT, BC, BC, ROWS)
        _store_rows(a_base, zero, t0, T, stride, 3 * BC, BT, BC, BC, ROWS)
        _store_rows(a_base, x10, t0 + BC, T, stride, 0, BT, BC, BC, ROWS)
        _store_rows(a_base, x11, t0 + BC, T, stride, BC, BT, BC, BC, ROWS)
        _store_rows(a_base, zero, t0 + BC, T, stride, 2 * BC, BT, BC, BC, ROWS)
        _store_rows(a_base, zero, t0 + BC, T, stride, 3 * BC, BT, BC, BC, ROWS)
        _store_rows(a_base, x20, t0 + 2 * BC, T, stride, 0, BT, BC, BC, ROWS)
        _store_rows(a_base, x21, t0 + 2 * BC, T, stride, BC, BT, BC, BC, ROWS)
        _store_rows(a_base, x22, t0 + 2 * BC, T, stride, 2 * BC, BT, BC, BC, ROWS)
        _store_rows(a_base, zero, t0 + 2 * BC, T, stride, 3 * BC, BT, BC, BC, ROWS)
        _store_rows(a_base, x30, t0 + 3 * BC, T, stride, 0, BT, BC, BC, ROWS)
        _store_rows(a_base, x31, t0 + 3 * BC, T, stride, BC, BT, BC, BC, ROWS)
        _store_rows(a_base, x32, t0 + 3 * BC, T, stride, 2 * BC, BT, BC, BC, ROWS)
        _store_rows(a_base, x33, t0 + 3 * BC, T, stride, 3 * BC, BT, BC, BC, ROWS)
    else:
        if A_FIRST < A_FIRST_DIAG:
            _store_rows(a_base, x00, t0, T, stride, 0, BT, BC, BC, ROWS)
            _store_rows(a_base, x11, t0 + BC, T, stride, BC, BT, BC, BC, ROWS)
            _store_rows(a_base, x22, t0 + 2 * BC, T, stride, 2 * BC, BT, BC, BC, ROWS)
            _store_rows(a_base, x33, t0 + 3 * BC, T, stride, 3 * BC, BT, BC, BC, ROWS)
        if A_FIRST < A_FIRST_MERGE16:
            _store_rows(a_base, x10, t0 + BC, T, stride, 0, BT, BC, BC, ROWS)
            _store_rows(a_base, x32, t0 + 3 * BC, T, stride, 2 * BC, BT, BC, BC, ROWS)
        _store_rows(a_base, x20, t0 + 2 * BC, T, stride, 0, BT, BC, BC, ROWS)
        _store_rows(a_base, x21, t0 + 2 * BC, T, stride, BC, BT, BC, BC, ROWS)
        _store_rows(a_base, x30, t0 + 3 * BC, T, stride, 0, BT, BC, BC, ROWS)
        _store_rows(a_base, x31, t0 + 3 * BC, T, stride, BC, BT, BC, BC, ROWS)


@triton.jit(do_not_specialize=["T"])
def gdn_intra_kernel(
    k, v, g, beta, A_in, Ai, w, u, cu_seqlens, chunk_indices, g_out,
    T,
    H: tl.constexpr, Hg: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,  # BK: KKᵀ reduction, BV: w/u columns
    GROUP: tl.constexpr,          # value heads per program (they share one key head: KKᵀ computed once)
    DIAG: tl.constexpr, WHOLE: tl.constexpr, DIAG_PREC: tl.constexpr, MERGE_PREC: tl.constexpr,
    USE_G: tl.constexpr, IS_VARLEN: tl.constexpr, STORE_A: tl.constexpr, FUSE_WU: tl.constexpr,
    FROM_A: tl.constexpr,         # stand-alone solve_tril: read strictly-lower A [.., T, H, BT] instead of KKᵀ
    FOLD_SCALE: tl.constexpr = False,  # w/u: fold β, β·e^g into Ai's columns instead of scaling the loaded rows
    G_CUMSUM: tl.constexpr = False,    # g is the raw log-gate: take its chunk-local cumsum here, write it to g_out
    WU_MERGED: tl.constexpr = False,   # w/u in one column-tile loop (_wu_rows_merged) instead of two
    MERGE16_PREC: tl.constexpr = -1,   # ≥ 0: the 16 → 32 merges in this precision (MERGE_PREC: the 32 → 64 ones)
    TABLE: tl.constexpr = False,       # varlen: chunk_indices is the int32 chunk table (one load per program)
    MERGE_OUT_PREC: tl.constexpr = -1,  # ≥ 0: the 32 → 64 merges' outer products in this precision
    HEADS_FASTEST: tl.constexpr = False,  # grid (heads, chunks) instead of (chunks, heads)
    GATE_FACTORS: tl.constexpr = False,  # the gate below the diagonal blocks as rank-1 factors (_col_factors)
    ROWS: tl.constexpr = 0,        # row bounds (ROWS_*): masked / whole chunks, no row masks / loads clamped
    A_STORE: tl.constexpr = 0,     # fused: Ai stored after the inversion (0), the u loop (1) or the w loop (2)
    PREFETCH_V: tl.constexpr = 0,  # fused: the chunk's v rows prefetched into L2 at the start (1) or after K Kᵀ (2)
    PREFETCH_BULK: tl.constexpr = False,  # that prefetch through the TMA unit (Tuning.prefetch_bulk)
    PREFETCH_TOUCH: tl.constexpr = 0,  # that prefetch by loads (Tuning.prefetch_touch): 1 words unused, 2 kept alive
    A_FIRST: tl.constexpr = 0,     # Ai tiles stored before the rest (A_FIRST_*; STORE_A launches, Tuning.a_first)
    W_FIRST: tl.constexpr = False,  # fused, two loops: w's before u's (k's tiles, just read for K Kᵀ, first)
    FOLD_BETA: tl.constexpr = False,  # fused: Y = Ai·diag(β) once; u = Y·v (raw tiles), w = Y·(e^g ⊙ k)
    V_EARLY: tl.constexpr = 0,     # fused, > 0: the inversion inside u's loop of V_EARLY stages (_u_rows_with_inversion)
    L2_WARM: tl.constexpr = 0,     # fused, > 0: the grid's first L2_WARM chunk rows are warm-up programs (_warm_l2)
    WARM_ASM: tl.constexpr = False,  # their loads with the L2::256B hint (inline PTX: GPU only)
    PDL: tl.constexpr = False,     # launched as a programmatic dependent (Tuning.pdl): wait for the previous kernel
):
    tl.static_assert(BT <= 4 * BC, "the template works on (up to) 4 sub-chunks of BC rows")
    if PDL:  # before any load or store: the previous kernel in the stream may still run (griddepcontrol.wait)
        gdc_wait()
    tl.static_assert(PREFETCH_TOUCH == 0 or (GROUP == 1 and PREFETCH_V > 0), "prefetch_touch: one head per program")
    tl.static_assert(V_EARLY == 0 or (FUSE_WU and not FROM_A and not (FOLD_SCALE or FOLD_BETA or WU_MERGED or W_FIRST)
                                      and not (STORE_A and A_STORE == 0) and A_FIRST <= A_FIRST_ZEROS),
                     "v_early_stages: u then w in two plain loops, Ai stored from their copies or not at all "
                     "(ops._v_early_fits)")
    if HEADS_FASTEST:
        i_bg, i_t = tl.program_id(0), tl.program_id(1)
    else:
        i_t, i_bg = tl.program_id(0), tl.program_id(1)
    NG: tl.constexpr = H // GROUP
    if L2_WARM > 0:  # chunk rows [0, L2_WARM) of the grid: v into L2 for the others (Tuning.l2_warm)
        n_bg = tl.num_programs(0) if HEADS_FASTEST else tl.num_programs(1)
        if i_t < L2_WARM:
            _warm_l2(v, i_t * n_bg + i_bg, L2_WARM * n_bg, T * (n_bg // NG) * H, V, WARM_ASM)
            return
        i_t -= L2_WARM
    i_b, i_g = i_bg // NG, i_bg % NG
    i_h0 = i_g * GROUP
    i_hk = i_h0 // (H // Hg)
    i_t, bos, T = _chunk_bounds(i_t, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN, TABLE)
    t0 = i_t * BT
    if t0 >= T:
        return
    T = tl.minimum(T, t0 + BT)  # rows past the chunk (BT < 64: unused sub-chunks) are masked like padding
    o_i = tl.arange(0, BC)
    m_low = o_i[:, None] > o_i[None, :]

    if STORE_A and A_FIRST >= A_FIRST_ZEROS:  # the zero tiles above the diagonal depend on nothing: out first
        for i_hh in tl.static_range(GROUP):
            _store_ai_zeros(Ai + (bos * H + i_h0 + i_hh) * BT, t0, T, H * BT, BT, BC, ROWS)
    if PREFETCH_V == 1:  # before anything else: the lines arrive while K Kᵀ and the inversion run
        touched = _prefetch_v(v + (bos * H + i_h0) * V, t0, T, H * V, V, BT, GROUP, PREFETCH_BULK, PREFETCH_TOUCH)
    if not FROM_A:
        k_base = k + (bos * Hg + i_hk) * K
    # ---- raw K Kᵀ, 10 lower 16×16 tiles, shared by the GROUP value heads of this key head
    if not FROM_A:
        r00, r10, r11, r20, r21, r22, r30, r31, r32, r33 = _kkt10(k_base, t0, T, Hg * K, K, BC, BK, ROWS)
    if PREFETCH_V == 2:  # the keys are in: v's lines arrive during the inversion without delaying them
        touched = _prefetch_v(v + (bos * H + i_h0) * V, t0, T, H * V, V, BT, GROUP, PREFETCH_BULK, PREFETCH_TOUCH)

    for i_hh in tl.static_range(GROUP):
        i_h = i_h0 + i_hh
        a_base = Ai
        if STORE_A:
            a_base = Ai + (bos * H + i_h) * BT
        if FROM_A:
            # stand-alone solve: the strictly-lower A is given ([.., T, H, BT], only BT columns exist)
            ab = A_in + (bos * H + i_h) * BT
            a00 = tl.where(m_low, _load_rows(ab, t0, T, H * BT, 0, BT, BC, BC).to(tl.float32), 0.0)
            a10 = _load_rows(ab, t0 + BC, T, H * BT, 0, BT, BC, BC).to(tl.float32)
            a11 = tl.where(m_low, _load_rows(ab, t0 + BC, T, H * BT, BC, BT, BC, BC).to(tl.float32), 0.0)
            a20 = _load_rows(ab, t0 + 2 * BC, T, H * BT, 0, BT, BC, BC).to(tl.float32)
            a21 = _load_rows(ab, t0 + 2 * BC, T, H * BT, BC, BT, BC, BC).to(tl.float32)
            a22 = tl.where(m_low, _load_rows(ab, t0 + 2 * BC, T, H * BT, 2 * BC, BT, BC, BC).to(tl.float32), 0.0)
            a30 = _load_rows(ab, t0 + 3 * BC, T, H * BT, 0, BT, BC, BC).to(tl.float32)
            a31 = _load_rows(ab, t0 + 3 * BC, T, H * BT, BC, BT, BC, BC).to(tl.float32)
            a32 = _load_rows(ab, t0 + 3 * BC, T, H * BT, 2 * BC, BT, BC, BC).to(tl.float32)
            a33 = tl.where(m_low, _load_rows(ab, t0 + 3 * BC, T, H * BT, 3 * BC, BT, BC, BC).to(tl.float32), 0.0)

            x00, x10, x11, x20, x21, x22, x30, x31, x32, x33 = _invert64(
                a00, a10, a11, a20, a21, a22, a30, a31, a32, a33, BC, DIAG, WHOLE, DIAG_PREC, MERGE_PREC,
                MERGE16_PREC, MERGE_OUT_PREC, a_base, t0, T, H * BT, BT, ROWS, A_FIRST)
        else:
            # ---- gate and β: A_ij = β_i·(k_i·k_j)·exp(g_i − g_j), strictly lower; then (I + A)^{-1}
            b0, b1, b2, b3, g0, g1, g2, g3 = _load_gates(g, g_out, beta, bos, i_h, t0, T, H, BC, USE_G, G_CUMSUM,
                                                         ROWS)
            if V_EARLY == 0:  # else inside u's loop, below (ops: V_EARLY only with the two-loop default forms)
                x00, x10, x11, x20, x21, x22, x30, x31, x32, x33 = _gated_inverse(
                    r00, r10, r11, r20, r21, r22, r30, r31, r32, r33, b0, b1, b2, b3, g0, g1, g2, g3,
                    BC, USE_G, DIAG, WHOLE, DIAG_PREC, MERGE_PREC, MERGE16_PREC, MERGE_OUT_PREC, GATE_FACTORS,
                    a_base, t0, T, H * BT, BT, ROWS, A_FIRST)

        # ---- store Ai [T, H, BT] (A_STORE 1 / 2: later, from the w/u operand-dtype copies; Tuning.a_store)
        if STORE_A and A_STORE == 0:
            _store_ai(a_base, x00, x10, x11, x20, x21, x22, x30, x31, x32, x33, t0, T, H * BT, BT, BC, ROWS,
                      A_FIRST)

        # ---- u = Ai·(β ⊙ v), w = Ai·(β·e^g ⊙ k), with Ai rounded to the input dtype as stock does
        if FUSE_WU:
            dt = k.dtype.element_ty
            if USE_G:
                e0, e1, e2, e3 = b0 * tl.exp(g0), b1 * tl.exp(g1), b2 * tl.exp(g2), b3 * tl.exp(g3)
            else:
                e0, e1, e2, e3 = b0, b1, b2, b3
            if FOLD_SCALE:
                # X·diag(β) and X·diag(β e^g), each rounded once to the operand dtype
                _wu_rows(u + (bos * H + i_h) * V, v + (bos * H + i_h) * V, b0, b1, b2, b3,
                         (x00 * b0[None, :]).to(dt), (x10 * b0[None, :]).to(dt), (x11 * b1[None, :]).to(dt),
                         (x20 * b0[None, :]).to(dt), (x21 * b1[None, :]).to(dt), (x22 * b2[None, :]).to(dt),
                         (x30 * b0[None, :]).to(dt), (x31 * b1[None, :]).to(dt), (x32 * b2[None, :]).to(dt),
                         (x33 * b3[None, :]).to(dt), t0, T, H * V, H * V, V, BC, BV, True, ROWS)
                _wu_rows(w + (bos * H + i_h) * K, k_base, e0, e1, e2, e3,
                         (x00 * e0[None, :]).to(dt), (x10 * e0[None, :]).to(dt), (x11 * e1[None, :]).to(dt),
                         (x20 * e0[None, :]).to(dt), (x21 * e1[None, :]).to(dt), (x22 * e2[None, :]).to(dt),
                         (x30 * e0[None, :]).to(dt), (x31 * e1[None, :]).to(dt), (x32 * e2[None, :]).to(dt),
                         (x33 * e3[None, :]).to(dt), t0, T, Hg * K, H * K, K, BC, BV, True, ROWS)
            else:
                # y: Ai rounded to k's dtype (as stock), or (FOLD_BETA, Tuning.fold_beta) Y = Ai·diag(β) — tile IJ's
                # columns scaled by β of sub-chunk J — so that u = Y·v takes v's tiles unscaled and w = Y·(e^g ⊙ k)
                # (without a gate k's tiles unscaled too); Ai itself was then stored above (ops forces A_STORE 0)
                tl.static_assert(not FOLD_BETA or (A_STORE == 0 and not WU_MERGED), "fold_beta: early A, two loops")
                if V_EARLY > 0:  # u's loop with the inversion in its first iteration: y = Ai in k's dtype
                    y00, y10, y11, y20, y21, y22, y30, y31, y32, y33 = _u_rows_with_inversion(
                        u + (bos * H + i_h) * V, v + (bos * H + i_h) * V, b0, b1, b2, b3,
                        r00, r10, r11, r20, r21, r22, r30, r31, r32, r33, g0, g1, g2, g3, t0, T, H * V, H * V, V, BC,
                        BV, V_EARLY, USE_G, DIAG, WHOLE, DIAG_PREC, MERGE_PREC, MERGE16_PREC, MERGE_OUT_PREC,
                        GATE_FACTORS, ROWS, dt)
                elif FOLD_BETA:
                    y00, y10, y11 = (x00 * b0[None, :]).to(dt), (x10 * b0[None, :]).to(dt), (x11 * b1[None, :]).to(dt)
                    y20, y21 = (x20 * b0[None, :]).to(dt), (x21 * b1[None, :]).to(dt)
                    y22, y30 = (x22 * b2[None, :]).to(dt), (x30 * b0[None, :]).to(dt)
                    y31, y32, y33 = (x31 * b1[None, :]).to(dt), (x32 * b2[None, :]).to(dt), (x33 * b3[None, :]).to(dt)
                    if USE_G:
                        e0, e1, e2, e3 = tl.exp(g0), tl.exp(g1), tl.exp(g2), tl.exp(g3)
                else:
                    y00, y10, y11 = x00.to(dt), x10.to(dt), x11.to(dt)
                    y20, y21, y22 = x20.to(dt), x21.to(dt), x22.to(dt)
                    y30, y31, y32, y33 = x30.to(dt), x31.to(dt), x32.to(dt), x33.to(dt)
                if WU_MERGED:
                    _wu_rows_merged(u + (bos * H + i_h) * V, v + (bos * H + i_h) * V, w + (bos * H + i_h) * K,
                                    k_base, b0, b1, b2, b3, e0, e1, e2, e3,
                                    y00, y10, y11, y20, y21, y22, y30, y31, y32, y33,
                                    t0, T, H * V, H * V, Hg * K, H * K, V, K, BC, BV)
                else:
                    for p in tl.static_range(2):  # u then w, or (W_FIRST) w then u
                        if (p == 0) != W_FIRST:
                            if V_EARLY == 0:  # (else u is already out)
                                _wu_rows(u + (bos * H + i_h) * V, v + (bos * H + i_h) * V, b0, b1, b2, b3,
                                         y00, y10, y11, y20, y21, y22, y30, y31, y32, y33, t0, T, H * V, H * V, V, BC,
                                         BV, FOLD_BETA, ROWS)
                        else:
                            _wu_rows(w + (bos * H + i_h) * K, k_base, e0, e1, e2, e3,
                                     y00, y10, y11, y20, y21, y22, y30, y31, y32, y33, t0, T, Hg * K, H * K, K, BC, BV,
                                     FOLD_BETA and not USE_G, ROWS)
                        if p == 0 and STORE_A and A_STORE == 1:  # y = x rounded to k's dtype, Ai's (ops._launch checks)
                            _store_ai(a_base, y00, y10, y11, y20, y21, y22, y30, y31, y32, y33, t0, T, H * BT, BT, BC,
                                      ROWS, A_FIRST)
                if STORE_A and A_STORE == 2:
                    _store_ai(a_base, y00, y10, y11, y20, y21, y22, y30, y31, y32, y33, t0, T, H * BT, BT, BC, ROWS,
                              A_FIRST)
            if PREFETCH_TOUCH == 2:  # v's touched words held in their registers to the end (GROUP == 1: i_h = i_h0)
                _keep_alive(touched, v + (bos * H + i_h) * V, t0, T, H * V, V, BT)
