"""SGLang's GDN state recurrence and output stage, from copies: at launch constants tuned per shape (the plugin's
default since s26: the state kernel 1.19-1.58x faster on an H200, bit for bit SGLang's values; :func:`tuned_launch`),
and optionally side by side (``overlap``; experimental, measured slower at every shape in s26, off by default).

The overlap's reasoning, as designed in s25: at few heads, SGLang's ``chunk_gated_delta_rule_fwd_h`` (``fwd_h``) is
most of the whole forward. At T=8192 H=8 it takes 214 µs on 32 CTAs of a 132-SM H200: one CTA per (sequence,
head, 32 value columns), each walking the chunks in order. The output stage ``chunk_fwd_o`` (30 µs there, 117 at
T=32768 H=8) then starts only when the last chunk is done, although chunk t's output needs just that chunk's state
``h_t`` and new values ``v_new_t``.

Here both run at the same time:
- ``fwd_h_kernel`` is SGLang's kernel, copied with the features the plugin's forward uses (gate g, initial state
  with indices, in-place final state, v_new saved; no per-key gate, no state tracking). The copy adds two things:
  - after storing ``v_new_t`` (``h_t`` is stored earlier in the same step) it signals one flag per (chunk, head,
    value block) with release semantics (SIGNAL: how; s26 measured the forms);
  - on a GPU it lets the next kernel launch once all its CTAs have started (``griddepcontrol.launch_dependents``).
- ``fwd_o_kernel`` is SGLang's ``chunk_fwd_kernel_o``, copied. Each program first waits for the flags of its chunk
  (acquire semantics), then sets them back to 0. The flags are then zero for the next forward without a memset,
  even inside a CUDA graph. The grid runs chunk-major, so programs start in the order the chunks become ready. It is
  launched as a programmatic dependent of ``fwd_h``, so every ``fwd_h`` CTA is resident before any of it waits: no
  deadlock. It ends with ``griddepcontrol.wait``, so its completion implies ``fwd_h``'s (the final state included).

Both kernels are adapted from SGLang's ``chunk_delta_h.py`` and ``chunk_o.py`` (0.5.23), themselves adapted from
flash-linear-attention (Copyright (c) 2023-2025, Songlin Yang, Yu Zhang). The values are SGLang's: the same
operations in the same order (tests: bitwise against SGLang's two stages under
the interpreter, where the launches run one after the other, and on the GPU). ``overlap=False`` launches the same
two kernels one after the other, without flags.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from importlib import import_module

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from ._host import cdiv

FLA = "sglang.kernels.ops.attention.fla"
_op = import_module(f"{FLA}.op")
exp, safe_exp = _op.exp, _op.safe_exp  # SGLang's (FLA_USE_FAST_OPS, the interpreter shim): bitwise its stages

# How the two kernels signal (gdn_fwd_h_o's ``signal``; s26 measured the forms, bench/diag_overlap.py):
# - release "cta": a CTA barrier (every thread's stores issued), then one atomic exchange with release semantics.
#   The barrier inside the state kernel's loop stops Triton's pipeliner (no cp.async prefetch of w, v, k): s26
#   measured the state kernel 218 -> 553 µs at T=8192 H=8 from that alone. The interpreter's form.
# - release "thread": no barrier; every thread adds 1 with release semantics (red.release: its own stores are
#   visible first), and the waiter waits for the count of one CTA's threads. The loop stays pipelined.
# - lag: the release of chunk t at the start of step t+1 (its stores a step old), the last chunk's after the loop.
# - sleep_ns: the waiter's pause between two polls; stride: int32 elements between two flags (32: 128 B apart).
SIGNAL = dict(release="thread", lag=0, sleep_ns=200, stride=1)
RED_RELEASE_PTX = "red.release.gpu.global.add.s32 [$1], 1; mov.u32 $0, 0;"


@triton.jit
def _release(f, RELEASE_PTX: tl.constexpr):
    """Signal flag ``f``: every thread's earlier stores are in memory (module comment: the two forms)."""
    if RELEASE_PTX != "":  # each thread: its own stores, then +1
        tl.inline_asm_elementwise(RELEASE_PTX, "=r,l", [f], dtype=tl.int32, is_pure=False, pack=1)
    else:  # every thread's stores, then one release
        tl.debug_barrier()
        tl.atomic_xchg(f, 1, sem="release", scope="gpu")


@triton.jit
def _wait(f, COUNT: tl.constexpr, SLEEP_PTX: tl.constexpr):
    """Poll flag ``f`` until it reaches COUNT (acquire: what was stored before its releases is then visible),
    sleeping between polls (SLEEP_PTX, GPU; the interpreter runs the kernels in order and never waits)."""
    poll = 0
    seen = tl.atomic_add(f, 0, sem="acquire", scope="gpu")
    while seen < COUNT:
        if SLEEP_PTX != "":
            poll = tl.inline_asm_elementwise(SLEEP_PTX, "=r,r", [poll], dtype=tl.int32, is_pure=False, pack=1)
        seen = tl.atomic_add(f, 0, sem="acquire", scope="gpu")


@triton.jit(do_not_specialize=["T"])
def fwd_h_kernel(k, v, w, v_new, g, h, initial_state, initial_state_indices, stride_init_state, cu_seqlens,
                 chunk_offsets, flags, T, H: tl.constexpr, Hg: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                 BT: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr, USE_INITIAL_STATE: tl.constexpr,
                 INPLACE_UPDATE: tl.constexpr, IS_VARLEN: tl.constexpr, FLAGS: tl.constexpr,
                 PDL: tl.constexpr, LAG: tl.constexpr = 0, FSTRIDE: tl.constexpr = 1,
                 RELEASE_PTX: tl.constexpr = ""):
    """SGLang's chunk_gated_delta_rule_fwd_kernel_h_blockdim64 (0.5.17–0.5.23) for USE_GK, USE_EXP2, TRACK_STATE
    off and SAVE_NEW_VALUE on; FLAGS: flag (chunk, head, value block) set once h_t and v_new_t are stored (LAG:
    at the start of the next step, the last chunk's after the loop); FSTRIDE: int32 elements between two flags."""
    if PDL:  # the output kernel may launch once every CTA of this one has started
        gdc_launch_dependents()
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    if IS_VARLEN:
        bos, eos = tl.load(cu_seqlens + i_n).to(tl.int32), tl.load(cu_seqlens + i_n + 1).to(tl.int32)
        T = eos - bos
        NT = tl.cdiv(T, BT)
        boh = tl.load(chunk_offsets + i_n).to(tl.int32)
    else:
        bos, eos = i_n * T, i_n * T + T
        NT = tl.cdiv(T, BT)
        boh = i_n * NT
    b_h1 = tl.zeros([BV, 64], dtype=tl.float32)
    if K > 64:
        b_h2 = tl.zeros([BV, 64], dtype=tl.float32)
    if K > 128:
        b_h3 = tl.zeros([BV, 64], dtype=tl.float32)
    if K > 192:
        b_h4 = tl.zeros([BV, 64], dtype=tl.float32)
    h += ((boh * H + i_h) * V * K).to(tl.int64)
    v += ((bos * H + i_h) * V).to(tl.int64)
    k += ((bos * Hg + i_h // (H // Hg)) * K).to(tl.int64)
    w += ((bos * H + i_h) * K).to(tl.int64)
    v_new += ((bos * H + i_h) * V).to(tl.int64)
    NV: tl.constexpr = (V + BV - 1) // BV
    stride_v = H * V
    stride_h = H * V * K
    stride_k = Hg * K
    stride_w = H * K
    index = tl.load(initial_state_indices + i_n).to(tl.int64)
    valid_state = index >= 0  # padded rows carry the -1 sentinel
    h0 = initial_state + index * stride_init_state
    ht = initial_state + index * stride_init_state
    if USE_INITIAL_STATE:
        h0 = h0 + i_h * V * K
    if INPLACE_UPDATE:
        ht = ht + i_h * V * K
    if USE_INITIAL_STATE and valid_state:
        p_h0_1 = tl.make_block_ptr(h0, (V, K), (K, 1), (i_v * BV, 0), (BV, 64), (1, 0))
        b_h1 += tl.load(p_h0_1, boundary_check=(0, 1)).to(tl.float32)
        if K > 64:
            p_h0_2 = tl.make_block_ptr(h0, (V, K), (K, 1), (i_v * BV, 64), (BV, 64), (1, 0))
            b_h2 += tl.load(p_h0_2, boundary_check=(0, 1)).to(tl.float32)
        if K > 128:
            p_h0_3 = tl.make_block_ptr(h0, (V, K), (K, 1), (i_v * BV, 128), (BV, 64), (1, 0))
            b_h3 += tl.load(p_h0_3, boundary_check=(0, 1)).to(tl.float32)
        if K > 192:
            p_h0_4 = tl.make_block_ptr(h0, (V, K), (K, 1), (i_v * BV, 192), (BV, 64), (1, 0))
            b_h4 += tl.load(p_h0_4, boundary_check=(0, 1)).to(tl.float32)
    f = flags + ((boh * H + i_h) * NV + i_v) * FSTRIDE  # this CTA's flag of chunk 0 (chunk t's: t·H·NV flags on)
    for i_t in range(NT):
        if FLAGS and LAG:
            if i_t > 0:
                _release(f + ((i_t - 1) * H * NV) * FSTRIDE, RELEASE_PTX)
        p_h1 = tl.make_block_ptr(h + i_t * stride_h, (V, K), (K, 1), (i_v * BV, 0), (BV, 64), (1, 0))
        tl.store(p_h1, b_h1.to(p_h1.dtype.element_ty), boundary_check=(0, 1))
        if K > 64:
            p_h2 = tl.make_block_ptr(h + i_t * stride_h, (V, K), (K, 1), (i_v * BV, 64), (BV, 64), (1, 0))
            tl.store(p_h2, b_h2.to(p_h2.dtype.element_ty), boundary_check=(0, 1))
        if K > 128:
            p_h3 = tl.make_block_ptr(h + i_t * stride_h, (V, K), (K, 1), (i_v * BV, 128), (BV, 64), (1, 0))
            tl.store(p_h3, b_h3.to(p_h3.dtype.element_ty), boundary_check=(0, 1))
        if K > 192:
            p_h4 = tl.make_block_ptr(h + i_t * stride_h, (V, K), (K, 1), (i_v * BV, 192), (BV, 64), (1, 0))
            tl.store(p_h4, b_h4.to(p_h4.dtype.element_ty), boundary_check=(0, 1))
        p_w = tl.make_block_ptr(w, (T, K), (stride_w, 1), (i_t * BT, 0), (BT, 64), (1, 0))
        b_w = tl.load(p_w, boundary_check=(0, 1))
        b_v = tl.dot(b_w, tl.trans(b_h1).to(b_w.dtype))
        if K > 64:
            p_w = tl.make_block_ptr(w, (T, K), (stride_w, 1), (i_t * BT, 64), (BT, 64), (1, 0))
            b_w = tl.load(p_w, boundary_check=(0, 1))
            b_v += tl.dot(b_w, tl.trans(b_h2).to(b_w.dtype))
        if K > 128:
            p_w = tl.make_block_ptr(w, (T, K), (stride_w, 1), (i_t * BT, 128), (BT, 64), (1, 0))
            b_w = tl.load(p_w, boundary_check=(0, 1))
            b_v += tl.dot(b_w, tl.trans(b_h3).to(b_w.dtype))
        if K > 192:
            p_w = tl.make_block_ptr(w, (T, K), (stride_w, 1), (i_t * BT, 192), (BT, 64), (1, 0))
            b_w = tl.load(p_w, boundary_check=(0, 1))
            b_v += tl.dot(b_w, tl.trans(b_h4).to(b_w.dtype))
        p_v = tl.make_block_ptr(v, (T, V), (stride_v, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        b_v = tl.load(p_v, boundary_check=(0, 1)) - b_v
        p_v = tl.make_block_ptr(v_new, (T, V), (stride_v, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
        tl.store(p_v, b_v.to(p_v.dtype.element_ty), boundary_check=(0, 1))
        if FLAGS and not LAG:  # h_t and v_new_t of this block are stored
            _release(f + (i_t * H * NV) * FSTRIDE, RELEASE_PTX)
        last_idx = min((i_t + 1) * BT, T) - 1
        if USE_G:
            b_g_last = tl.load(g + bos * H + last_idx * H + i_h)
            p_g = tl.make_block_ptr(g + bos * H + i_h, (T,), (H,), (i_t * BT,), (BT,), (0,))
            b_g = tl.load(p_g, boundary_check=(0,))
            b_v = b_v * safe_exp(b_g_last - b_g)[:, None]
            b_g_last = exp(b_g_last)
            b_h1 = b_h1 * b_g_last
            if K > 64:
                b_h2 = b_h2 * b_g_last
            if K > 128:
                b_h3 = b_h3 * b_g_last
            if K > 192:
                b_h4 = b_h4 * b_g_last
        b_v = b_v.to(k.dtype.element_ty)
        p_k = tl.make_block_ptr(k, (K, T), (1, stride_k), (0, i_t * BT), (64, BT), (0, 1))
        b_k = tl.load(p_k, boundary_check=(0, 1))
        b_h1 += tl.trans(tl.dot(b_k, b_v))
        if K > 64:
            p_k = tl.make_block_ptr(k, (K, T), (1, stride_k), (64, i_t * BT), (64, BT), (0, 1))
            b_k = tl.load(p_k, boundary_check=(0, 1))
            b_h2 += tl.trans(tl.dot(b_k, b_v))
        if K > 128:
            p_k = tl.make_block_ptr(k, (K, T), (1, stride_k), (128, i_t * BT), (64, BT), (0, 1))
            b_k = tl.load(p_k, boundary_check=(0, 1))
            b_h3 += tl.trans(tl.dot(b_k, b_v))
        if K > 192:
            p_k = tl.make_block_ptr(k, (K, T), (1, stride_k), (192, i_t * BT), (64, BT), (0, 1))
            b_k = tl.load(p_k, boundary_check=(0, 1))
            b_h4 += tl.trans(tl.dot(b_k, b_v))
    if FLAGS and LAG:
        if NT > 0:
            _release(f + ((NT - 1) * H * NV) * FSTRIDE, RELEASE_PTX)
    if INPLACE_UPDATE and valid_state:
        p_ht = tl.make_block_ptr(ht, (V, K), (K, 1), (i_v * BV, 0), (BV, 64), (1, 0))
        tl.store(p_ht, b_h1.to(p_ht.dtype.element_ty), boundary_check=(0, 1))
        if K > 64:
            p_ht = tl.make_block_ptr(ht, (V, K), (K, 1), (i_v * BV, 64), (BV, 64), (1, 0))
            tl.store(p_ht, b_h2.to(p_ht.dtype.element_ty), boundary_check=(0, 1))
        if K > 128:
            p_ht = tl.make_block_ptr(ht, (V, K), (K, 1), (i_v * BV, 128), (BV, 64), (1, 0))
            tl.store(p_ht, b_h3.to(p_ht.dtype.element_ty), boundary_check=(0, 1))
        if K > 192:
            p_ht = tl.make_block_ptr(ht, (V, K), (K, 1), (i_v * BV, 192), (BV, 64), (1, 0))
            tl.store(p_ht, b_h4.to(p_ht.dtype.element_ty), boundary_check=(0, 1))


@triton.jit(do_not_specialize=["T"])
def fwd_o_kernel(q, k, v, h, g, o, cu_seqlens, chunk_indices, flags, scale, T, H: tl.constexpr, Hg: tl.constexpr,
                 K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                 BV_H: tl.constexpr, USE_G: tl.constexpr, IS_VARLEN: tl.constexpr, FLAGS: tl.constexpr,
                 PDL: tl.constexpr, FSTRIDE: tl.constexpr = 1, COUNT: tl.constexpr = 1,
                 SLEEP_PTX: tl.constexpr = ""):
    """SGLang's chunk_fwd_kernel_o on a chunk-major grid (value block, batch·head, chunk); FLAGS: first wait until
    fwd_h_kernel has stored this chunk's h and v_new for the BV // BV_H state blocks of its BV columns."""
    i_v, i_bh, i_t = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    if IS_VARLEN:
        i_tg = i_t
        i_n, i_t = tl.load(chunk_indices + i_t * 2).to(tl.int32), tl.load(chunk_indices + i_t * 2 + 1).to(tl.int32)
        bos, eos = tl.load(cu_seqlens + i_n).to(tl.int32), tl.load(cu_seqlens + i_n + 1).to(tl.int32)
        T = eos - bos
        NT = tl.cdiv(T, BT)
    else:
        NT = tl.cdiv(T, BT)
        i_tg = i_b * NT + i_t
        bos, eos = i_b * T, i_b * T + T
    if FLAGS:  # wait for each flag (acquire: h_t, v_new_t then visible), then set it back to 0 for the next forward
        NV_H: tl.constexpr = (V + BV_H - 1) // BV_H
        for j in tl.static_range(BV // BV_H):
            if i_v * (BV // BV_H) + j < NV_H:  # (V < BV: fewer state blocks than the output block spans)
                f = flags + ((i_tg * H + i_h) * NV_H + i_v * (BV // BV_H) + j) * FSTRIDE
                _wait(f, COUNT, SLEEP_PTX)
                tl.store(f, 0)  # (read by no one before the next forward's fwd_h_kernel, a later kernel)
    q += (bos * Hg + i_h // (H // Hg)) * K
    k += (bos * Hg + i_h // (H // Hg)) * K
    v += (bos * H + i_h) * V
    o += (bos * H + i_h) * V
    h += (i_tg * H + i_h).to(tl.int64) * V * K
    b_o = tl.zeros([BT, BV], dtype=tl.float32)
    b_A = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        p_q = tl.make_block_ptr(q, (T, K), (Hg * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
        p_k = tl.make_block_ptr(k, (K, T), (1, Hg * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1))
        p_h = tl.make_block_ptr(h, (V, K), (K, 1), (i_v * BV, i_k * BK), (BV, BK), (1, 0))
        b_q = tl.load(p_q, boundary_check=(0, 1))
        b_k = tl.load(p_k, boundary_check=(0, 1))
        b_h = tl.load(p_h, boundary_check=(0, 1))
        b_o += tl.dot(b_q, tl.trans(b_h))
        b_A += tl.dot(b_q, b_k)
    if USE_G:
        g += bos * H + i_h
        p_g = tl.make_block_ptr(g, (T,), (H,), (i_t * BT,), (BT,), (0,))
        b_g = tl.load(p_g, boundary_check=(0,))
        b_o = b_o * exp(b_g)[:, None]
        b_A = b_A * safe_exp(b_g[:, None] - b_g[None, :])
    o_i = tl.arange(0, BT)
    m_A = o_i[:, None] >= o_i[None, :]
    b_A = tl.where(m_A, b_A, 0)
    p_v = tl.make_block_ptr(v, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    p_o = tl.make_block_ptr(o, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    b_v = tl.load(p_v, boundary_check=(0, 1))
    b_o = b_o * scale + tl.dot(b_A.to(b_v.dtype), b_v) * scale
    tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))
    if PDL:  # this kernel completes only after fwd_h_kernel has (its final-state stores included)
        gdc_wait()


# What fwd_h_kernel copies of SGLang's state kernel (0.5.23): its parameters. stock_reason() checks them against
# the installed SGLang before the plugin uses the copy.
STOCK_KERNEL = "chunk_gated_delta_rule_fwd_kernel_h_blockdim64"
STOCK_PARAMS = ("k", "v", "w", "v_new", "g", "gk", "h", "initial_state", "initial_state_indices",
                "stride_init_state", "cu_seqlens", "chunk_offsets", "track_state", "track_chunk_idx",
                "stride_track_state", "T", "H", "Hg", "K", "V", "BT", "BV", "USE_G", "USE_GK", "USE_INITIAL_STATE",
                "INPLACE_UPDATE", "SAVE_NEW_VALUE", "IS_VARLEN", "NT_BUCKET", "USE_EXP2", "TRACK_STATE")


def _stock_kernel():
    """SGLang's state kernel (its autotuner), or the reason it cannot be found (a str)."""
    try:
        chunk_h = sys.modules.get(f"{FLA}.chunk_delta_h") or import_module(f"{FLA}.chunk_delta_h")
        return getattr(chunk_h, STOCK_KERNEL)
    except (ImportError, AttributeError) as e:
        return f"{STOCK_KERNEL} not found ({type(e).__name__}: {e})"


def stock_reason() -> str | None:
    """None if the installed SGLang's state kernel has the parameters this copy was made from, else why not."""
    kernel = _stock_kernel()
    if isinstance(kernel, str):
        return kernel
    fn = getattr(kernel, "fn", kernel)  # (the autotuner wraps the JIT function)
    params = tuple(getattr(fn, "arg_names", ()))
    return None if params == STOCK_PARAMS else f"{STOCK_KERNEL}{params} is not the copied signature"


# The state kernel's launch constants where gdn_fwd_h_o(launch="tuned") picks them (s26, bench/sweep_fwd_h.py on an
# H200: 27 forms at 4 shapes, every one bit for bit SGLang's defaults BV=32, 4 warps, 2 stages, since each value
# column's recurrence is the same arithmetic whatever the block). A third pipeline stage paid at every shape (BV=32,
# 4 warps: 212.7 -> 166.0 µs at T=8192 H=8; 269.1 -> 169.8 at T=8192 H=32; 70.8 -> 59.5 with 8 sequences). Where
# BV=16 programs still fit in one wave (one sequence, 8 heads: 64 CTAs), BV=16 with 2 warps and 3 stages is faster
# again (139.5 µs; T=32768 H=8: 840.8 -> 550.2). More programs than SMs at BV=16 (T=8192 H=32: 256): BV=32 won.
TUNED_LAUNCH = {16: (2, 3), 32: (4, 3), 64: (4, 2)}  # BV -> (num_warps, num_stages)
# KDA's per-key gate (``gk``, SGLang's own kernel: the copy here leaves gk out; :func:`sglang_fwd_h`). s27, the same
# sweep with gk (FWDH_GATE=gk) on an H200, again every form bit for bit SGLang's: its 32/4/2 took 254.9 µs at T=8192
# H=8, 1008.8 at T=32768 H=8, 283.2 at T=8192 H=32, 206.0 at T=8192 H=32 with 8 sequences. One wave at BV=16: BV=16
# with 4 warps (the heavier gk step wants them) and 3 stages, 166.5 and 651.3 µs; else BV=32, 4 warps, 3 stages,
# 206.5 µs; at the 8 sequences (1024 programs at BV=32) BV=64 w4 s2 168.4 against 177.5.
TUNED_LAUNCH_GK = {16: (4, 3), 32: (4, 3), 64: (4, 2)}
# Many programs of short sequences (s28 sweeps, scalar gate, H200, µs: SGLang's 32/4/2 / BV32 w4 s3 / BV64 w4 s2):
#   1024 programs at BV=32, mean sequence 1024 tokens (T=8192 H=32, 8 seqs): 161.4 / 177.3 / 156.0
#                          mean  512 (T=4096 H=32, 8 seqs):                  88.0 /  87.2 /  79.6
#                          mean 4096 (T=32768 H=32, 8 seqs):                590.3 / 588.6 / 605.2
#    512 programs,         mean 1024 (T=8192 H=16, 8 seqs):                 100.6 /  96.9 /  91.2
#                          mean 2048 (T=8192 H=32, 4 seqs):                 153.3 / 156.6 / 157.2
#    256 programs,         mean 1024 (T=8192 H=8, 8 seqs, s26):              70.8 /  59.5 /  79.5
# BV=64 halves the programs (and its 2 stages are SGLang's): it wins where BV=32 makes more than 3 programs per SM and
# the sequences are short (few steps for a third stage to pipeline); with KDA's gk too (s27, 1024 programs, mean
# 1024: 177.5 at BV32 w4 s3, 168.4 at BV64 w4 s2). The cuts lie between the measured points.
MANY_PROGRAMS_PER_SM = 3
SHORT_SEQUENCE = 2048  # mean tokens per sequence
SGLANG_LAUNCH_ENV = ("SGLANG_GDN_CHUNK_H_BV", "SGLANG_GDN_CHUNK_H_NUM_WARPS", "SGLANG_GDN_CHUNK_H_NUM_STAGES")


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (132, an H100 / H200 SXM's, off a GPU: the interpreter's runs)."""
    if device.type != "cuda":
        return 132
    from .gluon_intra import _sm_count  # (cached per device)

    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def tuned_launch(n_seqs: int, H: int, V: int, device: torch.device, gk: bool = False,
                 tokens: int | None = None) -> tuple[int, int, int]:
    """(BV, num_warps, num_stages) of the state kernel (TUNED_LAUNCH's comments; ``gk``: KDA's, TUNED_LAUNCH_GK's):
    BV=16 while its programs (sequence, head, 16 value columns) fit in one wave of the GPU's SMs; BV=64 where BV=32
    would make more than MANY_PROGRAMS_PER_SM programs per SM and the sequences (``tokens`` in all; None: unknown,
    no BV=64) average at most SHORT_SEQUENCE tokens; else BV=32."""
    pairs, sms = n_seqs * H, sm_count(device)
    if pairs * cdiv(V, 16) <= sms:
        bv = 16
    elif (V >= 64 and tokens is not None and pairs * cdiv(V, 32) > MANY_PROGRAMS_PER_SM * sms
          and tokens <= SHORT_SEQUENCE * n_seqs):
        bv = 64
    else:
        bv = 32
    return (bv, *(TUNED_LAUNCH_GK if gk else TUNED_LAUNCH)[bv])


def sglang_launch_set() -> list[str]:
    """SGLang's state-kernel launch variables set in the environment (the user's choice: "tuned" then keeps it)."""
    return [name for name in SGLANG_LAUNCH_ENV if os.environ.get(name, "").strip()]


def stock_kernel_reason() -> str | None:
    """None if SGLang's state kernel is an autotuner of one config (:func:`sglang_fwd_h` can swap it), else why not."""
    kernel = _stock_kernel()
    if isinstance(kernel, str):
        return kernel
    configs = getattr(kernel, "configs", None)
    if not isinstance(configs, list) or len(configs) != 1:
        return f"{STOCK_KERNEL} is not an autotuner of one config ({type(kernel).__name__})"
    return None


_LAUNCH_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def _one_config(bv: int, num_warps: int, num_stages: int) -> list:
    """The autotuner's config list for one launch form (built once: sglang_fwd_h runs per prefill layer)."""
    return [triton.Config({"BV": bv}, num_warps=num_warps, num_stages=num_stages)]


def sglang_fwd_h(fwd_h, launch: tuple[int, int, int], **kwargs):
    """``fwd_h(**kwargs)``: SGLang's own ``chunk_gated_delta_rule_fwd_h`` (its launcher, its kernel) with the kernel
    launched at ``launch`` = (BV, num_warps, num_stages). SGLang's kernel is an autotuner holding one config (its
    launch variables, read at import; one so that autotuning never runs it twice on the in-place state pool): that
    config is swapped for this call and put back. The values stay SGLang's bit for bit (each value column's
    recurrence is the same arithmetic whatever the block; s26 / s27 sweeps)."""
    kernel = _stock_kernel()
    with _LAUNCH_LOCK:  # (one launch at a time; the swap lasts the host side of one launch)
        saved = kernel.configs
        kernel.configs = _one_config(*launch)
        try:
            return fwd_h(**kwargs)
        finally:
            kernel.configs = saved


# device -> int32 flags, all 0 between forwards (each waiter sets its flags back to 0). One set per device: forwards
# on two streams of one GPU at once would share them (SGLang runs a GPU's forwards on one stream)
_FLAGS: dict = {}


def _flags(device: torch.device, n: int) -> torch.Tensor:
    buf = _FLAGS.get(device)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 1 << 14), dtype=torch.int32, device=device)
        _FLAGS[device] = buf
    return buf


def gdn_fwd_h_o(q, k, w, u, g, scale, initial_state, initial_state_indices, cu_seqlens=None, chunk_indices=None,
                inplace_update: bool = True, overlap: bool = True, signal: dict | None = None,
                output: bool = True, launch: str = "sglang"):
    """SGLang's ``chunk_gated_delta_rule_fwd_h`` then ``chunk_fwd_o`` (no memset of o: every row is written, rows
    past ``cu_seqlens[-1]`` zeroed as in :func:`gdn_output.gdn_fwd_o`), with the output stage running beside the
    recurrence (``overlap``; module doc; ``signal``: how, :data:`SIGNAL`'s fields). Returns ``(h, v_new, o)``; the
    final state goes into ``initial_state``'s slots (``inplace_update``), as SGLang's. The state kernel's launch
    constants: SGLang's (``launch="sglang"``, its module's values), or ``"tuned"``: :func:`tuned_launch`'s, unless
    SGLang's launch variables are set in the environment (:func:`sglang_launch_set`). ``output=False`` (timing the
    signal's cost): the state kernel alone, its flags left set (``o`` None; zero them with :func:`clear_flags`)."""
    from . import gdn_output

    chunk_h = sys.modules.get(f"{FLA}.chunk_delta_h") or import_module(f"{FLA}.chunk_delta_h")
    B, T, Hg, K = k.shape
    H, V = u.shape[-2], u.shape[-1]
    BT = 64
    if cu_seqlens is not None and chunk_indices is None:
        chunk_indices = chunk_h.prepare_chunk_indices(cu_seqlens, BT)
    if cu_seqlens is None:
        N, NT, chunk_offsets = B, cdiv(T, BT), None
    else:
        N, NT = len(cu_seqlens) - 1, len(chunk_indices)
        chunk_offsets = chunk_h.prepare_chunk_offsets(cu_seqlens, BT)
    if K > 256:
        raise ValueError(f"head dimension K={K} > 256")
    if launch == "tuned" and not sglang_launch_set():
        BV_H, warps_h, stages_h = tuned_launch(N, H, V, k.device, tokens=B * T)
    elif launch in ("tuned", "sglang"):
        BV_H = getattr(chunk_h, "GDN_CHUNK_H_BV", 32)  # SGLang's own launch constants (its env knobs)
        warps_h = getattr(chunk_h, "GDN_CHUNK_H_NUM_WARPS", 4)
        stages_h = getattr(chunk_h, "GDN_CHUNK_H_NUM_STAGES", 2)
    else:
        raise ValueError(f"launch {launch!r}: 'sglang' or 'tuned'")
    LO = gdn_output.LAUNCH
    if LO["BV"] % BV_H:
        raise ValueError(f"the output's BV={LO['BV']} must be a multiple of the state's BV={BV_H}")
    from . import compiled

    gpu = k.is_cuda and compiled()
    pdl = overlap and gpu and output
    if overlap:
        sig = dict(SIGNAL, **(signal or {}))
        if set(sig) != set(SIGNAL) or sig["release"] not in ("cta", "thread") or sig["stride"] < 1:
            raise ValueError(f"signal {signal}: fields {sorted(SIGNAL)}, release 'cta' or 'thread', stride >= 1")
        lag, stride = int(bool(sig["lag"])), sig["stride"]
        sleep_ptx = f"nanosleep.u32 {int(sig['sleep_ns'])}; mov.u32 $0, $1;" if gpu and sig["sleep_ns"] > 0 else ""
        release_ptx = RED_RELEASE_PTX if gpu and sig["release"] == "thread" else ""
        count = 32 * warps_h if release_ptx else 1  # (per thread: one CTA's threads; else the one exchange's 1)
        n_tiles = B * NT if cu_seqlens is None else NT
        flags = _flags(k.device, n_tiles * H * cdiv(V, BV_H) * stride)
    else:  # no flags: the neutral constexprs (one build whatever ``signal``), the device's buffer never touched
        lag, stride, sleep_ptx, release_ptx, count = 0, 1, "", "", 1
        flags = _flags(k.device, 1)
    h = k.new_empty(B, NT, H, V, K)
    v_new = torch.empty_like(u)
    o = torch.empty_like(u)
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError(f"varlen inputs (cu_seqlens) need batch size 1, got B={B}")
        gdn_output.zero_tail(o, cu_seqlens)
    fwd_h_kernel[(cdiv(V, BV_H), N * H)](
        k, u, w, v_new, g, h, initial_state, initial_state_indices,
        initial_state.stride(0) if initial_state is not None else 0, cu_seqlens, chunk_offsets, flags, T,
        H=H, Hg=Hg, K=K, V=V, BT=BT, BV=BV_H, USE_G=g is not None, USE_INITIAL_STATE=initial_state is not None,
        INPLACE_UPDATE=inplace_update, IS_VARLEN=cu_seqlens is not None, FLAGS=overlap, PDL=pdl,
        LAG=lag, FSTRIDE=stride, RELEASE_PTX=release_ptx, num_warps=warps_h,
        num_stages=stages_h)
    if not output:
        return h, v_new, None
    fwd_o_kernel[(cdiv(V, LO["BV"]), B * H, NT)](
        q, k, v_new, h, g, o, cu_seqlens, chunk_indices, flags, scale, T, H=H, Hg=Hg, K=K, V=V, BT=BT,
        BK=LO["BK"], BV=LO["BV"], BV_H=BV_H, USE_G=g is not None, IS_VARLEN=cu_seqlens is not None, FLAGS=overlap,
        PDL=pdl, FSTRIDE=stride, COUNT=count, SLEEP_PTX=sleep_ptx, num_warps=LO["num_warps"],
        num_stages=LO["num_stages"], **({"launch_pdl": True} if pdl else {}))
    return h, v_new, o


def clear_flags() -> None:
    """Every device's flags back to 0 (after ``gdn_fwd_h_o(output=False)``, which sets them and waits on none)."""
    for buf in _FLAGS.values():
        buf.zero_()
