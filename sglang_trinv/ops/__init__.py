"""Triton kernels (public API). Same tensor layouts as SGLang/FLA: ``[B, T, H, …]``; varlen via
``cu_seqlens`` with B = 1 and optional precomputed ``chunk_indices``; GQA when k has Hg < H heads.

``method`` is a registry name (:data:`sglang_trinv.registry.METHOD_NAMES`); ``precision`` is one name for
every tensor-core product (``ieee``, ``tf32``, ``tf32x3``, ``bf16``, ``bf16x3``, ``fp16``) or
``"DIAG/MERGE"`` to set the diagonal-tile and the merge products apart (e.g. ``"tf32x3/tf32"``), MERGE optionally
per doubling level, ``"M16+M32"`` (e.g. ``"bf16x3/bf16x3+tf32"``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from dataclasses import dataclass

import torch

from ..reference.precision import PRECISIONS, parse_precision, product_pair
from ..registry import get_method, merge_levels
from . import gdn_intra as _k
from . import direct_launch as _direct_launch
from ._host import cdiv, next_pow2
from . import gluon_intra as _gluon
from .gdn_output import gdn_fwd_o  # noqa: F401 (public: the output stage without the memset of o)

log = logging.getLogger("sglang_trinv")

CHUNK_SIZE = 64
SUB_CHUNK = 16


def compiled() -> bool:
    """Kernels are compiled for a GPU (False under the Triton interpreter): inline PTX and launch attributes only
    then."""
    return os.environ.get("TRITON_INTERPRET") != "1"


# kernel constexprs for each registry method: (diagonal 16×16 tiles, whole-matrix stage)
KERNEL_METHODS = {
    "forward_substitution": (_k.SUBST, _k.MERGE),
    "column_sweep": (_k.SWEEP, _k.MERGE),
    "blockdoubling": (_k.DOUBLING, _k.MERGE),
    "hybrid": (_k.NEUMANN16, _k.MERGE),
    "neumann": (_k.SUBST, _k.NEUMANN64),
    "newton_schulz": (_k.SUBST, _k.NEWTON_SCHULZ),
}

_PRECISION_CODES = {"ieee": _k.P_IEEE, "tf32": _k.P_TF32, "tf32r": _k.P_TF32R, "tf32x3": _k.P_TF32X3,
                    "bf16": _k.P_BF16, "bf16x3": _k.P_BF16X3, "fp16": _k.P_FP16}
assert set(_PRECISION_CODES) == set(PRECISIONS)  # parse_precision checks names against PRECISIONS

# Default (diag/merge) precision per method, from GPU measurements (bench/results/2026-11-26-h200/, -s9/, -s12/,
# 2026-11-28-s13/). DEFAULT_PRECISION is for the fused GDN intra kernels (gdn_fwd_intra, the plugin's path).
# blockdoubling: bf16x3 everywhere (diagonal tiles and both merge levels), the one scheme measured at or below
# stock's error in w, u, A and the whole forward's o on both adversarial families (8 random draws each, H100,
# s13: identical keys o median 2.18e-2 vs stock 2.40e-2, w 1.09e-3 vs 1.03e-2; β ∈ (1, 2] o 2.76e-2 / 2.84e-2
# (Triton / Gluon) vs 2.99e-2). Cheaper schemes lose there: tf32 32 → 64 merges ("bf16x3/bf16x3+tf32", the default
# until s13) put w above stock (identical keys 2.22e-2), and bf16x3 inner with tf32 outer products
# ("bf16x3/bf16x3+bf16x3*tf32") fixes w but not o (identical keys 2.77e-2, above stock on 8 of 8 draws: Triton's tf32
# products truncate their operands, so with equal keys their errors share a sign and the state sums them; the CPU
# emulation with truncated tf32 reproduces it, tests/test_kernels.py). Cost against those (H100, s13): whole
# forward 0–2.3 %, the intra kernels 0–4 % (Gluon varlen with early puts, GluonLaunch.EP).
DEFAULT_PRECISION = {
    "forward_substitution": "tf32",  # stock: CUDA-core substitution + tf32 merges
    "column_sweep": "tf32",
    "blockdoubling": "bf16x3",
    "hybrid": "tf32",
    "neumann": "ieee",
    "newton_schulz": "ieee",
}
# The fused KKᵀ + inverse kernel (gdn_kkt_inverse) is latency-bound: bf16x3 diagonal tiles and tf32 merges whose
# operands the kernel rounds to nearest first ("tf32r"; Triton's tf32 dots truncate them). Measured side by side
# (bench/results/2026-11-28-s14/, H100 and H200, 8 draws per family): A error 6.80e-3 / 6.47e-3 on identical keys /
# β ∈ (1, 2] vs stock's 1.35e-2 / 1.20e-2, ≤ stock on every draw (truncated tf32 merges, the default until s14:
# 1.35e-2 / 1.21e-2, above stock on 6 of 8 β draws); 1–4 % slower than those, ≥ 2.01× stock at all 12 shapes on
# both GPUs. All-bf16x3 merges: 1.4e-3 / 2.0e-3, but down to 1.89× / 1.91× (H100 / H200).
INVERSE_ONLY_PRECISION = {**DEFAULT_PRECISION, "blockdoubling": "bf16x3/tf32r"}
# solve_tril (FLA's stand-alone API: fp32 A in and out) is compared with FLA 0.6.0's fp32 solve (error ~3e-8): ieee
# products keep blockdoubling at that level (family medians at or below FLA's) at 1.6–2.1× FLA's speed (H200, s14);
# precision="bf16x3" (~2e-6, 2.9–4.1×) or "bf16x3/tf32" (~3e-4, 3.2–4.2×) trade accuracy for speed.
SOLVE_TRIL_PRECISION = {**INVERSE_ONLY_PRECISION, "blockdoubling": "ieee"}
# The KDA kernel has one merge precision (no per-level split): bf16x3 merges there (H200 runs of
# bench/results/2026-11-27-h200-kda-all/)
KDA_DEFAULT_PRECISION = {**DEFAULT_PRECISION, "blockdoubling": "bf16x3"}


# The string fields of Tuning -> the template's constexprs (also the values Tuning accepts)
_A_STORES = {"early": 0, "mid": 1, "late": 2}  # Tuning.a_store -> A_STORE (the merged w/u loop has no "mid": it stores
# early there)
_PREFETCH_V = {"off": 0, "start": 1, "kkt": 2}  # Tuning.prefetch_v -> PREFETCH_V
_A_FIRST = {"none": 0, "zeros": 1, "diag": 2, "merge16": 3}  # Tuning.a_first -> A_FIRST


@dataclass(frozen=True)
class Tuning:
    """Launch parameters. ``group``: value heads per program sharing one key head (KKᵀ computed once);
    ``BK``: KKᵀ reduction tile; ``BV``: column tile of the fused w/u products."""
    num_warps: int = 1
    group: int = 1
    BK: int = 64
    BV: int = 64
    num_stages: int = 2
    fold_scale: bool = False  # fused w/u: Ai·diag(β) instead of diag(β)·rows (see gdn_intra._wu_rows)
    maxnreg: int | None = None  # register cap per thread (ptxas spills above it): more resident programs per SM
    wu_merged: bool = False  # fused w/u: one column-tile loop for u then w (see gdn_intra._wu_rows_merged)
    chunk_table: bool = True  # varlen: one int32 (row, end) load per program (gluon_intra.chunk_table) instead of
    # chunk_indices → cu_seqlens (two dependent loads before any work)
    heads_fastest: bool = False  # grid (heads, chunks): the programs running at once cover whole rows of k, v, w, u
    gate_factors: bool = False  # the gate below the diagonal blocks as rank-1 factors (gdn_intra._col_factors)
    diag_masks: bool = False  # doubling diagonal tiles: the level masks on the products (gdn_intra.DOUBLING_MASKED)
    split_packed: bool = False  # bf16x3 hi/lo splits by packed conversions (gdn_intra._hi_lo_packed; GPU only)
    full_chunks: bool = False  # one sequence of whole chunks (T % 64 == 0, not varlen): loads/stores without row masks
    # (elsewhere the launch keeps its masks: the flag only allows the unmasked build. For varlen, a per-program choice
    # between an unmasked and a masked copy of the body lost: T=8192 H=8 8 sequences fused 31.4 → 52.9 µs, H200 s17)
    clamp_rows: bool = False  # where full_chunks does not apply (varlen, a partial last chunk): k / v / g loads read
    # row min(r, T − 1) without a row mask, β and the stores keep theirs (gdn_intra.ROWS_CLAMPED; same values)
    a_store: str = "early"  # fused, when A is written: "early" = Ai stored right after the inversion; "mid" = after the
    # u loop, "late" = after the w loop, both from the k-dtype copies the loops use (where Ai has k's dtype: the same
    # values; else early, with one log line) — the w/u stream starts before Ai's conversions and stores. "late" is
    # the fused default since session 19 (DEFAULT_TUNING_FUSED)
    prefetch_v: str = "off"  # fused: the chunk's v rows prefetched into L2 — "start": at the program's start, "kkt":
    # right after K Kᵀ (the keys have arrived, the inversion's ~10 µs chain follows). One-wave shapes: every program
    # inverts at once and then streams, so v read during the inversion leaves the stream the writes
    # (gdn_intra._prefetch_rows_l2; GPU only, same values). Off: H200 s19, "start" lost up to 5 µs at five of six
    # shapes, "kkt" was within 0.2 µs at T=8192 H=8 one sequence (−1.0 at 8) and lost 1.5–3.7 µs at multi-wave ones
    prefetch_bulk: bool = False  # that prefetch by cp.async.bulk.prefetch.L2 (the TMA unit, sm_90) instead of the
    # prefetch.global.L2 hint, which ncu found without effect on the L2 hit rate (H200 s19). Lost everywhere (H200
    # s20: +1.1 to +10.9 µs, with and without A)
    prefetch_touch: int = 0  # that prefetch by real loads: one volatile 4-byte load per 256-byte span of a v row with
    # the L2::256B prefetch-size hint (gdn_intra._touch_rows_l2) — a load is not a hint the memory system may drop;
    # 1: the loaded words unused, 2: kept in their registers to the program's end (_keep_alive), so no instruction
    # waits on a load in flight to reuse its register. One head per program (group 1), v 4-byte aligned (else the
    # hint, with a log line). Same values. H200 s24 (bench/results/2026-11-29-s24): with A −0.3 / −1.3 µs at T=8192
    # H=8 one / 8 sequences, without A +0.9 to +2.0 (the inverting warps wait on their own loads): 0. See l2_warm
    a_first: str = "none"  # launches writing A: Ai tiles stored before the rest — "zeros": the six zero tiles above
    # the diagonal at the program's start; "diag": those and the four diagonal tiles once inverted; "merge16": those
    # and X10, X32 after the 16 → 32 merges (merge trees; other methods store the zeros first only). One-wave
    # shapes: every program inverts at once with the memory idle, then streams (gdn_intra.A_FIRST_*; same values).
    # Lost everywhere (H200 s20: fused +0.4 to +4.8 µs, inverse-only +0.5 to +2.4): "none"
    w_first: bool = False  # fused, two w/u loops: w's loop (k's tiles, read for K Kᵀ just before: likely still in L2)
    # before u's (v from DRAM); same values ("mid" then stores Ai between w and u). H200 s21, T=8192 H=8 one / 8
    # sequences: +0.9 / +0.7 µs with A, +0.6 / −0.3 without: off
    fold_beta: bool = False  # fused: one copy Y = Ai·diag(β) feeds both loops — u = Y·v (v's tiles straight into
    # the dots), w = Y·(e^g ⊙ k) — instead of scaling every loaded row by β (u) and β·e^g (w). Not the same bits:
    # u rounds Ai·β once instead of β·v (fold_scale's u error), w moves β from k's rounding to Ai's. Where A is
    # written, Ai is stored right after the inversion (the late store needs the unscaled copy). H200 s21: ±0.8 µs at
    # four shapes, u's error halved but w's above stock's at T=8192 H=32 (5.37e-3 vs 4.28e-3): off
    v_early_stages: int = 0  # fused, > 0: the inversion runs inside the first iteration of u's column loop, pipelined
    # with this many stages, so the loop's prologue requests v's first (stages − 1) column tiles (cp.async into shared
    # memory) BEFORE the inversion (gdn_intra._u_rows_with_inversion). Why: at one-wave shapes every program inverts
    # with DRAM idle and then streams, and the stream waits on v's DRAM reads (s22: with v L2-resident the same code
    # takes 23.0 instead of 27.5 µs at T=8192 H=8, 90 instead of 102 at T=8192 H=32), which no L2 prefetch delivered.
    # The same values (interpreter bit test); sm_90 (Triton 3.6, H=8 one sequence): 3 stages 255 registers + 192 B of
    # stack, 5 stages + 128 B (the default: 244, none). Only with u then w in two loops, Ai stored from their copies
    # (a_store "mid" / "late") or not at all, a_first "none" / "zeros", no folds (else off, with a log line). Lost
    # (H200 s23, bench/results/2026-11-28-s23): T=8192 H=8 27.5 → 30.1 µs (5 stages), T=8192 H=32 101.5 → 111.2,
    # T=32768 H=8 100.2 → 111.1 with A; slower at every shape and stage count but one (8 sequences, no A: −0.5): 0
    l2_warm: int = 0  # fused, > 0: about this many extra one-warp programs ahead of the chunk programs, each loading
    # its share of v into L2 (one 4-byte load per 256-byte span, the L2::256B hint: gdn_intra._warm_l2) while the chunk
    # programs run K Kᵀ and the inversion. Only where chunk and warm-up programs fit in one wave of resident programs
    # (ops._warm_rows; else none): there every program inverts at once with DRAM idle, then streams and waits on v's
    # DRAM reads (s22: with v L2-resident 23.0 instead of 27.5 µs at T=8192 H=8), and slots are left over (1024 tiles
    # in 132 SMs × 8). Unlike prefetch_touch the inverting warps issue nothing. Same values. And only where the chunk
    # programs fill at least L2_WARM_MIN_FILL of that wave: H200 s25 (variants bench, stock in the same process, 32
    # programs), with A / without, µs: T=8192 H=8 one sequence (0.97 of a wave) 27.8 → 24.7 / 25.1 → 23.3; T=4096 H=8
    # one sequence (0.48) 14.6 → 16.3 / 13.7 → 15.5, 8 sequences (0.52) 17.4 → 17.6 / 16.6 → 16.6; 128 programs
    # worse than 32 at all three. Off (0): the gain stays in the kernel timed alone. Interleaved A/B at T=8192 H=8
    # (bench/ab_tuning.py, 7 rounds, graph µs, on / off): intra with A 24.8 / 27.6, the pipeline launch 24.1 /
    # 25.4, but the whole forward through the plugin 262.9 / 262.0 (fused pipeline) and 275.6 / 275.1 (intra only)
    pdl: bool = False  # launched as a programmatic dependent (Triton's launch_pdl: CUDA's programmatic stream
    # serialization, kept as such in a CUDA graph): the programs may become resident while the previous kernel in the
    # stream finishes, and wait for it (griddepcontrol.wait) before their first load or store — its launch and ramp
    # hidden behind that kernel's tail. GPU only (sm_90+; the interpreter launches plainly). Same values. Off: no
    # gain in the whole forward (s26, H200, bench/ab_tuning.py, 3 rounds, on / off µs: T=8192 H=8 265.2 / 264.9,
    # 8 sequences 129.9 / 129.4, T=32768 H=8 1063.7 / 1064.1)

    def __post_init__(self):
        for name, codes in (("a_store", _A_STORES), ("prefetch_v", _PREFETCH_V), ("a_first", _A_FIRST),
                            ("prefetch_touch", (0, 1, 2))):
            if getattr(self, name) not in codes:
                raise ValueError(f"Tuning.{name} must be one of {tuple(codes)}, got {getattr(self, name)!r}")


# Measured on an H200 (bench/results/2026-11-26-h200): one warp per (chunk, head) program is best for both
# kernels; the fused w/u stage streams 16×32 tiles best with a 3-stage pipeline (135.4 → 129.6 µs at T=8192,
# 560.4 → 515.9 µs at T=32768, H=32, bf16x3/tf32), the inverse-only kernel keeps its swept best.
# Diagonal masks on the products + gate factors (session 16, H200, bench/results/2026-11-28-s16), inverse-only /
# fused µs: T=4096 H=8 9.85 → 9.14 / 17.73 → 16.87, T=8192 H=8 12.23 → 11.48 / 32.28 → 31.39, T=8192 H=32 48.71 →
# 45.56 / 119.35 → 115.63 (A bitwise; w, u errors vs fp64 unchanged).
# Packed hi/lo splits + unmasked whole chunks (session 17, H200, bench/results/2026-11-28-s17), inverse-only / fused
# µs, one sequence: T=4096 H=8 9.2 → 8.3 / 17.0 → 14.5, T=8192 H=8 11.4 → 10.0 / 31.0 → 28.7, T=8192 H=32 45.4 →
# 41.1 / 114.5 → 104.4 (whole chunks alone: 8.6 / 14.9, 10.2 / 29.1, 42.5 / 106.7; A, w, u errors vs fp64 unchanged).
DEFAULT_TUNING = Tuning(diag_masks=True, gate_factors=True, split_packed=True, full_chunks=True)
# heads fastest (session 15, H200): T=8192 H=32 131.1 → 119.3 µs, T=32768 H=32 534.4 → 454.1, small shapes ±1 %
# Clamped row loads where chunks are not all whole (session 18, H200, bench/results/2026-11-28-s18), fused µs, 8
# sequences: T=8192 H=8 31.6 → 30.2, T=4096 H=8 18.6 → 17.5, T=8192 H=32 111.3 → 106.7, T=4096 H=32 68.1 → 66.7
# (bitwise). The inverse-only kernel keeps its masks there (clamped: 11.1 → 10.9, 9.3 → 9.6, 44.4 → 43.8, 25.2 → 25.4).
# The late Ai store (session 19, H200, bench/results/2026-11-28-s19), fused µs with A, early → late: T=8192 H=8 28.7 →
# 27.8 (one sequence), 29.7 → 28.6 (8 sequences), T=4096 H=8 17.7 → 17.4 (8), T=8192 H=32 104.7 → 101.4 (one),
# T=4096 H=32 65.9 → 64.0 (8), T=32768 H=8 103.3 → 100.4 (one); bitwise ("mid": within ±0.6 of early).
DEFAULT_TUNING_FUSED = Tuning(BV=32, num_stages=3, heads_fastest=True, diag_masks=True, gate_factors=True,
                              split_packed=True, full_chunks=True, clamp_rows=True, a_store="late")


def kernel_twin(method: str, precision: str | None = None):
    """The reference function with the kernel's exact tree for ``method`` (for tests): ``A -> X``."""
    from ..reference import inverse as ref

    diag_p, merge_p = split_precision(method, precision, fused=False)
    if method == "column_sweep":  # the kernel sweeps 16×16 tiles, then merges
        return lambda A: ref.hybrid(A, block=SUB_CHUNK, inner="column_sweep", precision=merge_p,
                                    inner_precision=diag_p)
    if method == "hybrid":
        return lambda A: ref.hybrid(A, block=SUB_CHUNK, inner="neumann", precision=merge_p,
                                    inner_precision=diag_p)
    if method == "blockdoubling":
        return lambda A: ref.hybrid(A, block=SUB_CHUNK, inner="blockdoubling", precision=merge_p,
                                    inner_precision=diag_p)
    return lambda A: get_method(method).invert(A, merge_p)


@functools.lru_cache(maxsize=256)  # on the launch path (eager serving calls it per GDN layer)
def split_precision(method: str, precision: str | None, fused: bool = True) -> tuple[str, str]:
    """(diag, merge) precision names; ``precision=None`` picks the measured default for the kernel kind. ``merge``
    may be per doubling level, "M16+M32": the 16 → 32 merges in M16, the 32 → 64 ones in M32 (blockdoubling,
    column_sweep and forward_substitution trees; see :func:`merge_levels`)."""
    return parse_precision(precision or (DEFAULT_PRECISION if fused else INVERSE_ONLY_PRECISION)[method])


@functools.lru_cache(maxsize=256)  # on the launch path: keep the host overhead small
def _method_codes(method: str, precision: str | None, fused: bool):
    get_method(method)  # clear error for unknown names
    if method not in KERNEL_METHODS:
        raise ValueError(f"method {method!r} has no Triton kernel; kernels exist for {', '.join(KERNEL_METHODS)}")
    diag, whole = KERNEL_METHODS[method]
    diag_p, merge_p = split_precision(method, precision, fused)
    m16, m32 = merge_levels(merge_p)
    # MERGE16_PREC: -1 = as MERGE_PREC (one merge precision: the kernels' code is unchanged)
    mp16 = -1 if m16 == m32 else _PRECISION_CODES[m16]
    if mp16 >= 0 and whole != _k.MERGE:
        raise ValueError(f"method {method!r} has no merge levels: per-level merge precision {merge_p!r} does not "
                         "apply")
    return diag, whole, _PRECISION_CODES[diag_p], _PRECISION_CODES[product_pair(m32)[0]], mp16


@functools.lru_cache(maxsize=256)
def _merge_out_code(method: str, precision: str | None, fused: bool) -> int:
    """The 32 → 64 merges' outer-product precision code when it differs from the inner one ("M16+Pin*Pout"), else
    -1 (the kernels' MERGE_OUT_PREC)."""
    _, merge_p = split_precision(method, precision, fused)
    inner, outer = product_pair(merge_levels(merge_p)[1])
    return -1 if inner == outer else _PRECISION_CODES[outer]


def prepare_chunk_indices(cu_seqlens: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[NT, 2]`` (sequence index, chunk index within the sequence), the layout SGLang/FLA use."""
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    idx = [(n, c) for n, length in enumerate(lens) for c in range(cdiv(int(length), chunk_size))]
    return torch.tensor(idx, dtype=cu_seqlens.dtype, device=cu_seqlens.device).reshape(-1, 2)


def supports(k: torch.Tensor, v: torch.Tensor | None, g: torch.Tensor | None, beta: torch.Tensor,
             chunk_size: int = CHUNK_SIZE) -> str | None:
    """None if our kernels handle these inputs, else the reason (callers fall back to stock and log it)."""
    if chunk_size != CHUNK_SIZE:
        return f"chunk_size={chunk_size} (kernels are built for {CHUNK_SIZE})"
    if k.dim() != 4 or beta.dim() != 3:
        return f"unexpected ranks k{tuple(k.shape)} beta{tuple(beta.shape)}"
    H, Hg = beta.shape[-1], k.shape[-2]
    if H % Hg:
        return f"value heads H={H} not a multiple of key heads Hg={Hg}"
    if k.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        return f"dtype {k.dtype}"
    if g is not None and g.shape != beta.shape:
        return f"per-channel gate g{tuple(g.shape)} (GDN expects [B, T, H]; KDA has its own path)"
    if v is not None and (v.shape[-2] != H or v.dim() != 4):
        return f"v{tuple(v.shape)} does not match H={H}"
    return None


def grid_order(tuning: Tuning, n_chunks: int) -> Tuning:
    """The tuning a launch of ``n_chunks`` chunks runs with: heads fastest puts the chunks on the grid's second
    dimension, which holds at most 65535 programs (4.2 M tokens at BT = 64); beyond that, chunks fastest."""
    if tuning.heads_fastest and n_chunks > 65535:
        return dataclasses.replace(tuning, heads_fastest=False)
    return tuning


def _launch(k, v, g, beta, A_in, Ai, w, u, cu_seqlens, chunk_indices, T, B, H, Hg, K, V, BT, method, precision,
            fuse_wu, store_A, from_A, tuning: Tuning | None, g_out=None):
    tuning = tuning or (DEFAULT_TUNING_FUSED if fuse_wu else DEFAULT_TUNING)
    if cu_seqlens is not None and chunk_indices is None:
        chunk_indices = prepare_chunk_indices(cu_seqlens, BT)
    NT = cdiv(T, BT) if cu_seqlens is None else len(chunk_indices)
    tuning = grid_order(tuning, NT)
    # the fused launch's fallbacks (the inverse-only kernel has no A store to move and no v to prefetch)
    if fuse_wu and store_A and tuning.a_store != "early" and Ai.dtype != k.dtype:  # mid/late store k-dtype copies
        if ("a_store", Ai.dtype) not in _LOGGED:
            _LOGGED.add(("a_store", Ai.dtype))
            log.info("sglang-trinv: Tuning.a_store=%r needs Ai in k's dtype (%s, Ai %s): Ai stored early",
                     tuning.a_store, k.dtype, Ai.dtype)
        tuning = dataclasses.replace(tuning, a_store="early")
    if fuse_wu and store_A and tuning.a_store != "early" and (tuning.fold_beta or tuning.fold_scale):
        if "a_store_fold" not in _LOGGED:  # the folded copies are not Ai: it leaves before the w/u loops
            _LOGGED.add("a_store_fold")
            log.info("sglang-trinv: Tuning.a_store=%r with β folded into Ai's columns: Ai stored early",
                     tuning.a_store)
        tuning = dataclasses.replace(tuning, a_store="early")
    if fuse_wu and tuning.prefetch_bulk and tuning.prefetch_v != "off" and (v.data_ptr() % 16 or (
            v.is_cuda and torch.cuda.get_device_capability(v.device) < (9, 0))):
        # cp.async.bulk needs sm_90 and 16-byte aligned lines
        if "prefetch_bulk" not in _LOGGED:
            _LOGGED.add("prefetch_bulk")
            log.info("sglang-trinv: Tuning.prefetch_bulk needs v 16-byte aligned on sm_90+: the plain L2 prefetch "
                     "instead")
        tuning = dataclasses.replace(tuning, prefetch_bulk=False)
    if fuse_wu and tuning.prefetch_touch and tuning.prefetch_v != "off" and (
            v.data_ptr() % 4 or _heads_per_program(tuning, H, Hg) > 1):
        # 4-byte loads at each row's start, one head's rows per program
        if "prefetch_touch" not in _LOGGED:
            _LOGGED.add("prefetch_touch")
            log.info("sglang-trinv: Tuning.prefetch_touch needs v 4-byte aligned and one head per program: the "
                     "plain L2 prefetch instead")
        tuning = dataclasses.replace(tuning, prefetch_touch=0)
    if tuning.v_early_stages and not _v_early_fits(tuning, fuse_wu, store_A, from_A):
        if fuse_wu and "v_early" not in _LOGGED:  # (the inverse-only kernel has no u loop: nothing to say)
            _LOGGED.add("v_early")
            log.info("sglang-trinv: Tuning.v_early_stages needs u then w in two plain loops and Ai stored late / mid or "
                     "not at all: off for this launch")
        tuning = dataclasses.replace(tuning, v_early_stages=0)
    rows = _row_bounds(tuning, cu_seqlens is None and T % BT == 0, BT, from_A)
    n_bg = B * H // _heads_per_program(tuning, H, Hg)
    warm = _warm_rows(tuning, fuse_wu, from_A, NT, n_bg, v)
    kind = (H, Hg, K, V, BT, method, precision, fuse_wu, store_A, from_A, tuning, g is not None,
            cu_seqlens is not None, g_out is not None, rows, warm)
    const, options = _template_constexprs(*kind)
    grid = (NT + warm, n_bg)
    if const["HEADS_FASTEST"]:
        grid = grid[::-1]
    if const["TABLE"]:  # the table in chunk_indices' place (cached across the layers of a forward)
        chunk_indices = _gluon.chunk_table(cu_seqlens, chunk_indices, BT)
    args = (k, v, g, beta, A_in, Ai, w, u, cu_seqlens, chunk_indices, g_out, T)
    if _direct_launch.enabled() and DIRECT(kind, grid, args, const, options):
        return
    _k.gdn_intra_kernel[grid](*args, **const, **options)




def tuned_inversion(tuning: Tuning, diag: int, *precisions: int) -> tuple[int, ...]:
    """A Tuning's options for the shared inversion (gdn_intra._invert64; the GDN and KDA kernels) on the template's
    codes: ``diag_masks`` — the doubling diagonal tiles with the level masks on the products (bitwise);
    ``split_packed`` — bf16x3 hi/lo splits by packed conversions, inline PTX, so on a GPU only: the interpreter runs
    the plain branch (the same roundings but where the compiler contracts the plain split into FMAs:
    gdn_intra._hi_lo_packed). Returns ``(diag, *precisions)``. (The codes compared as ints: the template's are
    tl.constexpr, whose == costs µs on the host, and this runs per KDA layer.)"""
    if tuning.diag_masks and int(diag) == _DOUBLING:
        diag = _k.DOUBLING_MASKED
    if tuning.split_packed and compiled():
        precisions = tuple(_k.P_BF16X3P if int(p) == _P_BF16X3 else p for p in precisions)
    return (diag, *precisions)


_DOUBLING, _P_BF16X3 = int(_k.DOUBLING), int(_k.P_BF16X3)


def _row_bounds(tuning: Tuning, whole: bool, BT: int, from_A: bool) -> int:
    """The template's ROWS constexpr (gdn_intra.ROWS_*): no row masks where every chunk is ``whole`` and the tuning
    allows it, clamped loads where it asks for them, else masked."""
    if from_A or BT != 4 * SUB_CHUNK:
        return _k.ROWS_MASKED.value
    if tuning.full_chunks and whole:
        return _k.ROWS_WHOLE.value
    return (_k.ROWS_CLAMPED if tuning.clamp_rows else _k.ROWS_MASKED).value


DIRECT = _direct_launch.DirectLauncher("the Triton intra template", lambda: _k.gdn_intra_kernel)


def _heads_per_program(tuning: Tuning, H: int, Hg: int) -> int:
    """The template's GROUP: Tuning.group value heads per program where it divides the heads per key head, else 1."""
    return tuning.group if (H // Hg) % tuning.group == 0 else 1


# resident one-warp programs per SM of the fused template (≥ 225 registers per thread: 65536 / (32 · 256)); under a
# register cap (Tuning.maxnreg) 65536 / (32 · cap rounded up to 8). Some builds need fewer without a cap (sm_90,
# Triton 3.6, H=8: the pipeline kernel, no A, cumsum fused, 224 registers one sequence, 190 varlen): the rule then
# errs on the side of fewer warm-up programs
PROGRAMS_PER_SM = 8
# Tuning.l2_warm only where the chunk programs fill at least this share of the one wave: a conservative line between
# the measured shapes (H200 s25: 0.97 gained 3.1 µs; 0.48 and 0.52 lost 1.7 and 0.2)
L2_WARM_MIN_FILL = 0.9


def _programs_per_sm(tuning: Tuning) -> int:
    if tuning.maxnreg and tuning.num_warps == 1:
        return max(PROGRAMS_PER_SM, 65536 // (32 * -(-tuning.maxnreg // 8) * 8))
    return PROGRAMS_PER_SM


def _warm_rows(tuning: Tuning, fuse_wu: bool, from_A: bool, NT: int, n_bg: int, v) -> int:
    """Chunk rows of warm-up programs ahead of a fused launch's NT × n_bg chunk programs (Tuning.l2_warm; the
    template's L2_WARM): about ``tuning.l2_warm`` programs where all of them fit in one wave of resident programs on
    this GPU and the chunk programs alone fill most of it (L2_WARM_MIN_FILL), else 0 (past one wave the chunk
    programs would wait for slots the warm-up takes; in a part-filled wave the warm-up measured slower). The
    interpreter has no waves: the rows are added as asked (the CPU tests check the remapped grid)."""
    if not (tuning.l2_warm > 0 and fuse_wu and not from_A and v is not None and v.is_contiguous()
            and v.data_ptr() % 4 == 0):
        return 0
    rows = cdiv(tuning.l2_warm, n_bg)
    index = v.device.index if v.device.index is not None else torch.cuda.current_device() if v.is_cuda else None
    if v.is_cuda:
        slots = _gluon._sm_count(index) * _programs_per_sm(tuning)
        if (NT + rows) * n_bg > slots or NT * n_bg < L2_WARM_MIN_FILL * slots:
            return 0
    return rows


def _v_early_fits(tuning: Tuning, fuse_wu: bool, store_A: bool, from_A: bool) -> bool:
    """Tuning.v_early_stages applies: a fused launch from K Kᵀ with u then w in two plain loops and Ai, if written,
    stored from their k-dtype copies (after a loop) — not with the folds, the merged loop, the w loop first, the early
    Ai store or Ai's tiles stored from inside the inversion."""
    return (fuse_wu and not from_A and not (tuning.fold_scale or tuning.fold_beta or tuning.wu_merged or tuning.w_first)
            and not (store_A and tuning.a_store == "early") and tuning.a_first in ("none", "zeros"))


@functools.lru_cache(maxsize=256)  # on the launch path (eager serving launches per GDN layer)
def _template_constexprs(H, Hg, K, V, BT, method, precision, fuse_wu, store_A, from_A, tuning: Tuning, use_g,
                         varlen, g_cumsum, rows=0, warm=0) -> tuple[dict, dict]:
    """(constexprs, launch options) of one launch kind of the Triton template (``rows``: the row bounds, 0 / 1 / 2 =
    masked / every chunk whole / loads clamped, see _row_bounds). Cached: callers must not modify them."""
    diag, whole, dp, mp, mp16 = _method_codes(method, precision, fuse_wu)
    mpo = _merge_out_code(method, precision, fuse_wu)
    diag, dp, mp, mp16, mpo = tuned_inversion(tuning, diag, dp, mp, mp16, mpo)
    group = _heads_per_program(tuning, H, Hg)
    gpu = compiled()  # (inline PTX, launch attributes)
    # the L2 prefetch of v (inline PTX): fused launches on a GPU only
    pv = _PREFETCH_V[tuning.prefetch_v] if fuse_wu and gpu else 0
    const = dict(H=H, Hg=Hg, K=K, V=V, BT=BT, BC=SUB_CHUNK, BK=min(tuning.BK, next_pow2(K)),
                 BV=min(tuning.BV, next_pow2(max(K, V))), GROUP=group,
                 DIAG=diag, WHOLE=whole, DIAG_PREC=dp, MERGE_PREC=mp,
                 USE_G=use_g, IS_VARLEN=varlen, STORE_A=store_A, FUSE_WU=fuse_wu,
                 FROM_A=from_A, FOLD_SCALE=tuning.fold_scale and fuse_wu, G_CUMSUM=g_cumsum,
                 WU_MERGED=tuning.wu_merged and fuse_wu and not (tuning.fold_scale or tuning.fold_beta),
                 MERGE16_PREC=mp16,
                 TABLE=varlen and tuning.chunk_table, MERGE_OUT_PREC=mpo,
                 HEADS_FASTEST=tuning.heads_fastest, GATE_FACTORS=tuning.gate_factors, ROWS=rows,
                 A_STORE=(_A_STORES[tuning.a_store] if fuse_wu and store_A
                          and not (tuning.fold_scale or tuning.fold_beta)
                          and not (tuning.wu_merged and tuning.a_store == "mid") else 0),
                 PREFETCH_V=pv, PREFETCH_BULK=tuning.prefetch_bulk and pv > 0,
                 PREFETCH_TOUCH=tuning.prefetch_touch if pv > 0 and group == 1 else 0,
                 # the diagonal / 16 → 32 tiles exist apart only in the merge trees: elsewhere the zeros alone
                 A_FIRST=(0 if not store_A else _A_FIRST[tuning.a_first] if whole == _k.MERGE
                          else min(_A_FIRST[tuning.a_first], _A_FIRST["zeros"])),
                 W_FIRST=tuning.w_first and fuse_wu,
                 FOLD_BETA=tuning.fold_beta and fuse_wu and not tuning.fold_scale,
                 V_EARLY=tuning.v_early_stages if _v_early_fits(tuning, fuse_wu, store_A, from_A) else 0,
                 L2_WARM=warm, WARM_ASM=warm > 0 and gpu, PDL=tuning.pdl and gpu)
    options = dict(num_warps=tuning.num_warps, num_stages=tuning.num_stages,
                   **({"maxnreg": tuning.maxnreg} if tuning.maxnreg else {}),
                   **({"launch_pdl": True} if const["PDL"] else {}))
    return const, options


# ------------------------------------------------------------------ backend of the fused intra kernel (GDN)
# On Hopper (sm_90) the warp-specialized Gluon kernel (ops/gluon_intra.py) can serve blockdoubling: it overlaps
# the inversion with the w/u stream, which one Triton program cannot. "auto" uses it where it can run
# (gluon_reason) and was measured faster (gluon_auto_reason); every other call, method or precision runs the
# Triton template. SGLANG_TRINV_GLUON: "auto" (default), "0" (Triton only), "1" (Gluon required: an unsupported
# call raises instead of falling back); a call's backend="triton"|"gluon" overrides it.
ENV_GLUON = "SGLANG_TRINV_GLUON"
BACKENDS = ("auto", "triton", "gluon")
_LOGGED: set = set()


@functools.lru_cache(maxsize=16)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def gluon_reason(k, v, g, beta, method="blockdoubling", precision=None, cu_seqlens=None) -> str | None:
    """None if the Gluon kernel can serve this fused intra call, else why not (one line)."""
    if not _gluon.AVAILABLE:
        return f"triton.experimental.gluon not importable ({_gluon.IMPORT_ERROR})"
    if not k.is_cuda:
        return "inputs not on a CUDA device"
    reason = _gluon_static_reason(k.device.index, method, precision, k.dtype, v.dtype, k.shape[-1], v.shape[-1])
    if reason:
        return reason
    if g is None:
        return "no gate g"
    if not all(x.is_contiguous() and x.data_ptr() % 16 == 0 for x in (k, v, g, beta)):
        return "non-contiguous or unaligned inputs (TMA needs contiguous 16-byte-aligned rows)"
    if cu_seqlens is not None and cu_seqlens.dtype not in (torch.int32, torch.int64):
        return f"cu_seqlens dtype {cu_seqlens.dtype}"
    return None


@functools.lru_cache(maxsize=64)  # per call kind, not per call: this runs on every eager GDN layer's launch
def _gluon_static_reason(index, method, precision, k_dtype, v_dtype, K, V) -> str | None:
    cap = _capability(index if index is not None else torch.cuda.current_device())
    if cap != (9, 0):
        return f"GPU is sm_{cap[0]}{cap[1]}; the kernel uses Hopper wgmma/TMA/setmaxnreg (sm_90 only)"
    if method != "blockdoubling":
        return f"method {method!r} (the Gluon kernel implements blockdoubling)"
    diag, merge = split_precision(method, precision, fused=True)
    m16, m32 = merge_levels(merge)
    if any(p not in _gluon.PRECISIONS for p in (diag, m16, *product_pair(m32))):
        return f"precision {diag}/{merge} (Gluon: {', '.join(_gluon.PRECISIONS)})"
    if k_dtype != torch.bfloat16 or v_dtype != torch.bfloat16:
        return f"dtypes k {k_dtype}, v {v_dtype} (Gluon: bfloat16)"
    if K != 128 or V != 128:
        return f"K={K}, V={V} (Gluon: 128)"
    return None


# The Gluon launch costs the host more than a Triton one (H200 machine, enqueue µs per call without a sync): with
# host-built TMA descriptors gdn_fwd_intra 209–349 vs 55–82 (bench/results/2026-11-27-h200-s8/host-gluon); with the
# descriptors built in the kernel (eager default since) 156.9 vs 71.6, the pipeline launch 141.8 vs 62.0
# (bench/results/2026-11-27-h200-s9, profile_host). SGLang runs
# GDN prefill eagerly (0.5.23's breakable prefill CUDA graphs break at each GDN layer: its GDN backend keeps
# supports_prefill_graph_extend False), so below this many (chunk, head) tiles the host, not the GPU, sets the
# pace: at T=8192 H=32 (4096 tiles) the intra-only plugin forward took 672.8 µs on Gluon vs 556.2 on Triton
# (do_bench), and the Gluon pipeline's forward enqueued in 648 µs for 527 µs of GPU work. At T=32768 H=32 (16384
# tiles) the GPU saving outweighs it: whole forward 2031.7 (intra only) / 2077.6 (pipeline) vs 2173.5 / 2107.1 on
# Triton. With device-built descriptors the eager forward still ties at 4096 tiles (T=8192 H=32: 529.1 vs 528.9 µs;
# T=32768 H=8: 1103.8 vs 1107.3) and Gluon wins at T=32768 H=32 (2009.5 vs 2087.9; -s9, two runs).
GLUON_MIN_TILES = 16384
ENV_GLUON_MIN_TILES = "SGLANG_TRINV_GLUON_MIN_TILES"  # overrides it (a faster host CPU, a CUDA-graph caller)


def gluon_min_tiles() -> int:
    """The tile count from which `auto` takes the Gluon kernel: SGLANG_TRINV_GLUON_MIN_TILES, else
    :data:`GLUON_MIN_TILES`."""
    raw = os.environ.get(ENV_GLUON_MIN_TILES, "").strip()
    if not raw:
        return GLUON_MIN_TILES
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"{ENV_GLUON_MIN_TILES}={raw!r}: a tile count ≥ 0 (default {GLUON_MIN_TILES})")
    return n


def gluon_auto_reason(k, beta, cu_seqlens, g_cumsum: bool) -> str | None:
    """Where the Gluon kernel can run, is it the faster one — in eager execution, host time included? (H200,
    bench/results/2026-11-27-h200-gluon-s7 and -h200-s8.) None = use it, else why Triton is kept. The same rule
    serves the intra call and the plugin's pipeline launch (``g_cumsum``: cumsum in, no A); CUDA-graph GPU times
    alone favour Gluon at more shapes (one sequence of ≥ 2 tile batches per SM, e.g. T=8192 H=32 107.5 vs 129.3
    µs): ``backend="gluon"`` / SGLANG_TRINV_GLUON=1 takes it there."""
    B, T, H = beta.shape
    # No varlen rule any more: since partial chunks' w/u leave through the staging buffer (session 12, H200, graph
    # µs, bench/results/2026-11-27-s12) Gluon leads at 8 sequences where the tile count lets it run (T=8192 H=32
    # 112.0 vs Triton 129.3; T=32768 H=32 408.5 vs 515.9, H=8 111.3 vs 127.3); below the tile threshold Triton
    # serves anyway (T=8192 H=8: 35.8 vs 33.5).
    min_tiles = gluon_min_tiles()
    if B * cdiv(T, CHUNK_SIZE) * H < min_tiles:
        return (f"fewer than {min_tiles} (chunk, head) tiles: the Gluon launch's host cost outweighs its GPU "
                f"saving ({ENV_GLUON_MIN_TILES} sets the threshold)")
    return None


def _use_gluon(k, v, g, beta, method, precision, cu_seqlens, tuning, backend, g_cumsum=False) -> bool:
    """Which kernel serves a fused intra call; logs the choice (and the reason for Triton) once per reason.
    "auto" takes the Gluon kernel where it runs (gluon_reason) and was measured faster (gluon_auto_reason)."""
    env = os.environ.get(ENV_GLUON, "auto").strip().lower()
    env_want = {"0": "triton", "off": "triton", "triton": "triton", "1": "gluon", "gluon": "gluon"}.get(env, "auto")
    want = env_want if backend in (None, "auto") else backend
    if want not in BACKENDS:
        raise ValueError(f"backend={want!r}: choose from {', '.join(BACKENDS)}")
    if want == "triton":
        return False
    reason = "an explicit Triton Tuning was passed" if tuning is not None else gluon_reason(
        k, v, g, beta, method, precision, cu_seqlens)
    if reason and want == "gluon":
        raise ValueError(f"Gluon intra kernel requested but unsupported here: {reason}")
    if not reason and want == "auto":
        reason = gluon_auto_reason(k, beta, cu_seqlens, g_cumsum)
    key = reason or "gluon"
    if key not in _LOGGED:
        _LOGGED.add(key)
        if reason:
            log.info("sglang-trinv: GDN intra on the Triton kernel (%s)", reason)
        else:
            log.info("sglang-trinv: GDN intra on the warp-specialized Gluon kernel (sm_90)")
    return reason is None


def _intra_outputs(k, v, g, store_A, g_cumsum):
    """(g_out, w, u, A) buffers of a fused intra call, for either kernel."""
    B, T, _, K = k.shape
    g_out = torch.empty(g.shape, device=g.device, dtype=torch.float) if g_cumsum else None
    Ai = torch.empty(B, T, v.shape[-2], CHUNK_SIZE, device=k.device, dtype=k.dtype) if store_A else None
    return g_out, k.new_empty(B, T, v.shape[-2], K), torch.empty_like(v), Ai


def _gluon_intra(k, v, g, beta, out, cu_seqlens, chunk_indices, method, precision):
    """Fill ``out`` = (g_out, w, u, A) from the Gluon kernel; B > 1 runs as one flat sequence (T % 64 == 0) or
    as varlen."""
    B, T = k.shape[:2]
    diag, merge = split_precision(method, precision, fused=True)
    if cu_seqlens is None and B > 1 and T % CHUNK_SIZE:  # batch rows as sequences of one flat tensor
        cu_seqlens = torch.arange(0, (B + 1) * T, T, device=k.device, dtype=torch.int32)
        nc = cdiv(T, CHUNK_SIZE)
        ar = torch.arange(B * nc, device=k.device, dtype=torch.int32)
        chunk_indices = torch.stack([ar // nc, ar % nc], 1)
    elif cu_seqlens is not None and chunk_indices is None:
        chunk_indices = prepare_chunk_indices(cu_seqlens, CHUNK_SIZE)
    g_out, w, u, Ai = out
    if B > 1:  # one flat sequence (or varlen) of B·T rows
        flat = lambda x: None if x is None else x.reshape(1, B * T, *x.shape[2:])  # noqa: E731
        k, v, g, beta, w, u, Ai, g_out = (flat(x) for x in (k, v, g, beta, w, u, Ai, g_out))
    _gluon.launch_intra(k, v, g, beta, w, u, Ai, g_out, cu_seqlens, chunk_indices, diag_precision=diag,
                        merge_precision=merge)


def _check_varlen(k, cu_seqlens):
    if cu_seqlens is not None and k.shape[0] != 1:
        raise ValueError(f"varlen inputs (cu_seqlens) need batch size 1, got B={k.shape[0]}")


def _one_sequence(cu_seqlens, chunk_indices):
    """SGLang passes ``cu_seqlens = [0, T]`` for a prefill of one sequence: run it as one sequence (no cu_seqlens),
    the launch `bench kernels` times as "one sequence" — whole chunks without row masks where T % 64 == 0
    (Tuning.full_chunks), no chunk-table loads. Two entries are host metadata: no device sync. cu_seqlens starts
    at 0 (FLA's convention), so the chunks are the same; rows past cu_seqlens[-1] (none in SGLang's prefill) get
    outputs too, and no later row changes an earlier one (lower-triangular solve, per-chunk cumsum)."""
    if cu_seqlens is not None and cu_seqlens.numel() == 2:
        return None, None
    return cu_seqlens, chunk_indices


def gdn_kkt_inverse(k, g, beta, cu_seqlens=None, chunk_indices=None, method="blockdoubling", precision=None,
                    output_dtype=None, tuning: Tuning | None = None) -> torch.Tensor:
    """Fused ``A = tril(diag(β)(K Kᵀ ⊙ e^{gᵢ−gⱼ}), −1)`` and ``(I + A)^{-1}`` per 64-token chunk: ``[B, T, H, 64]``."""
    _check_varlen(k, cu_seqlens)
    cu_seqlens, chunk_indices = _one_sequence(cu_seqlens, chunk_indices)
    B, T, Hg, K = k.shape
    H = beta.shape[-1]
    reason = supports(k, None, g, beta)
    if reason:
        raise ValueError(f"gdn_kkt_inverse does not support these inputs: {reason}")
    Ai = torch.empty(B, T, H, CHUNK_SIZE, device=k.device, dtype=output_dtype or k.dtype)
    _launch(k, None, g, beta, None, Ai, None, None, cu_seqlens, chunk_indices, T, B, H, Hg, K, 0, CHUNK_SIZE,
            method, precision, fuse_wu=False, store_A=True, from_A=False, tuning=tuning)
    return Ai


def gdn_fwd_intra(k, v, g, beta, cu_seqlens=None, chunk_indices=None, method="blockdoubling", precision=None,
                  chunk_size=CHUNK_SIZE, tuning: Tuning | None = None, store_A: bool = True,
                  backend: str | None = None):
    """Drop-in for SGLang's ``chunk_gated_delta_rule_fwd_intra``: returns ``(w, u, A)`` with
    ``u = A·(β⊙v)``, ``w = A·(β e^{g} ⊙ k)``, ``A = (I + tril(β KKᵀ ⊙ e^{Δg}, −1))^{-1}`` in k's dtype, all in one
    kernel (A is not re-read from HBM). ``store_A=False`` skips writing A (returns None for it).
    ``backend``: "auto" (default: the Gluon kernel where :func:`gluon_reason` allows it and
    :func:`gluon_auto_reason` has it measured faster, else Triton; env SGLANG_TRINV_GLUON), "triton" or "gluon"
    (raises where unsupported)."""
    _check_varlen(k, cu_seqlens)
    cu_seqlens, chunk_indices = _one_sequence(cu_seqlens, chunk_indices)
    reason = supports(k, v, g, beta, chunk_size)
    if reason:
        raise ValueError(f"gdn_fwd_intra does not support these inputs: {reason}")
    out = _intra_outputs(k, v, g, store_A, g_cumsum=False)
    if _use_gluon(k, v, g, beta, method, precision, cu_seqlens, tuning, backend):
        _gluon_intra(k, v, g, beta, out, cu_seqlens, chunk_indices, method, precision)
        return out[1:]
    _, w, u, Ai = out
    B, T, Hg, K = k.shape
    H, V = v.shape[-2], v.shape[-1]
    _launch(k, v, g, beta, None, Ai, w, u, cu_seqlens, chunk_indices, T, B, H, Hg, K, V, CHUNK_SIZE,
            method, precision, fuse_wu=True, store_A=store_A, from_A=False, tuning=tuning)
    return w, u, Ai


def gdn_cumsum_fwd_intra(k, v, g, beta, cu_seqlens=None, chunk_indices=None, method="blockdoubling",
                         precision=None, tuning: Tuning | None = None, store_A: bool = False,
                         backend: str | None = None):
    """The first two stages of SGLang's ``chunk_gated_delta_rule_fwd`` in one kernel: the chunk-local cumsum of
    the raw log-gate ``g`` ([B, T, H], any float dtype; fp32 out, as ``chunk_local_cumsum``) and
    :func:`gdn_fwd_intra` on it. Returns ``(g_cumsum, w, u, A)``; ``A`` is None unless ``store_A`` (the
    prefill pipeline never reads it). ``backend`` as in :func:`gdn_fwd_intra`."""
    _check_varlen(k, cu_seqlens)
    cu_seqlens, chunk_indices = _one_sequence(cu_seqlens, chunk_indices)
    reason = supports(k, v, g, beta)
    if reason or g is None:
        raise ValueError(f"gdn_cumsum_fwd_intra does not support these inputs: {reason or 'g is None'}")
    out = _intra_outputs(k, v, g, store_A, g_cumsum=True)
    if _use_gluon(k, v, g, beta, method, precision, cu_seqlens, tuning, backend, g_cumsum=True):
        _gluon_intra(k, v, g, beta, out, cu_seqlens, chunk_indices, method, precision)
        return out
    g_out, w, u, Ai = out
    B, T, Hg, K = k.shape
    H, V = v.shape[-2], v.shape[-1]
    _launch(k, v, g, beta, None, Ai, w, u, cu_seqlens, chunk_indices, T, B, H, Hg, K, V, CHUNK_SIZE,
            method, precision, fuse_wu=True, store_A=store_A, from_A=False, tuning=tuning, g_out=g_out)
    return g_out, w, u, Ai


def solve_tril(A, cu_seqlens=None, chunk_indices=None, method="blockdoubling", precision=None,
               output_dtype=torch.float, tuning: Tuning | None = None) -> torch.Tensor:
    """FLA-compatible stand-alone ``(I + A)^{-1}`` of strictly-lower chunk blocks ``A [B, T, H, BT]``,
    BT ∈ {16, 32, 64}; ``precision=None``: :data:`SOLVE_TRIL_PRECISION` (fp32-accurate, as FLA's)."""
    _check_varlen(A, cu_seqlens)
    B, T, H, BT = A.shape
    if BT not in (16, 32, 64):
        raise ValueError(f"solve_tril supports BT in (16, 32, 64), got {BT}")
    Ai = torch.empty(B, T, H, BT, device=A.device, dtype=output_dtype or A.dtype)
    precision = precision or SOLVE_TRIL_PRECISION.get(method)  # unknown methods: _launch raises a clear error
    _launch(None, None, None, None, A, Ai, None, None, cu_seqlens, chunk_indices, T, B, H, H, 16, 0, BT,
            method, precision, fuse_wu=False, store_A=True, from_A=True, tuning=tuning)
    return Ai


__all__ = ["merge_levels", "gluon_reason", "gluon_auto_reason", "ENV_GLUON", "GLUON_MIN_TILES", "ENV_GLUON_MIN_TILES", "gdn_kkt_inverse", "gdn_fwd_intra", "gdn_cumsum_fwd_intra", "solve_tril", "supports", "kernel_twin", "Tuning",
           "KERNEL_METHODS", "DEFAULT_PRECISION", "INVERSE_ONLY_PRECISION", "SOLVE_TRIL_PRECISION",
           "KDA_DEFAULT_PRECISION",
           "prepare_chunk_indices"]


# ------------------------------------------------------------------------------------------ KDA (Kimi-Linear)
# SGLang's KDA Gram products round their operands like this (bf16 off-diagonal tiles for any input dtype;
# diagonal 16×16 tiles tf32 in its fused/safe_gate kernels, exact fp32 in its token-parallel one);
# ``gram_precision="DIAG/OFF"`` overrides it (e.g. "ieee" for exact tests, "ieee/bf16" for token-parallel's)
KDA_GRAM_PRECISION = "tf32/bf16"
# Launch sweeps on an H200 (2026-11-27, bench/results/2026-11-27-h200-kda/: T=8192, H=32, blockdoubling, the
# default diag_gram="sglang" split, Akk not stored as chunk_kda_fwd runs it; stock 564.4–564.7 µs in the same
# runs): 2 warps, BK=BV=32, 3 stages 525.2 µs; 2 stages 558.6–559.8; BV=64 544.9; BK=BV=64 678.0; the previous
# default (1 warp, BK=BV=16, 1 stage: the one-kernel mode's H100 best) 798.4; every 1-stage configuration
# ≥ 767 µs (the loads need the software pipeline).
# The grid heads fastest (Tuning.heads_fastest; H200, bench/results/2026-11-28-s20 §3 and -s21): the KDA intra kernel
# at T=8192 H=32 516.0–518.0 → 490.0–493.7 µs (five pairs, three calls), at H=8 with warm clocks 140.1–140.6 → 136.8–
# 137.2 (s21). Its GPU bit test "failed" in s20 and s21 before any KDA kernel ran (the test's inputs went through
# SGLang's Triton cumsum on the CPU); fixed, it decides this default (bench/results/2026-11-28-s21).
# The shared inversion's doubling with level masks + packed hi/lo splits (Tuning.diag_masks / split_packed, as the GDN
# default; H200, bench/results/2026-11-28-s22 §2): T=8192 H=32 tune pairs (same process, alternating) 493.5 → 484.0
# and 500.9 → 491.6 µs; masks alone 487.0, splits alone 487.2 (Triton 3.6 sm_90: 5920 → 5216 SASS instructions). The
# masks give the same bits; the packed splits may move Akk by a bf16 rounding (GPU test: every output within two ulps
# of its largest entry, errors vs fp64 not above the plain build's).
KDA_DEFAULT_TUNING = Tuning(num_warps=2, BK=32, BV=32, num_stages=3, heads_fastest=True, diag_masks=True,
                            split_packed=True)


@functools.lru_cache(maxsize=64)
def _gram_codes(gram_precision: str | None) -> tuple[int, int]:
    p = gram_precision or KDA_GRAM_PRECISION
    diag, _, off = p.partition("/")
    off = off or diag
    codes = []
    for name in (diag, off):
        if name not in _PRECISION_CODES:
            raise ValueError(f"unknown gram precision {name!r} in {p!r}; choose from {', '.join(_PRECISION_CODES)} "
                             "or 'DIAG/OFF'")
        codes.append(_PRECISION_CODES[name])
    return codes[0], codes[1]


def kda_supports(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gk: torch.Tensor | None,
                 beta: torch.Tensor | None, chunk_size: int = CHUNK_SIZE) -> str | None:
    """None if :func:`kda_fwd_intra` handles these inputs, else the reason (callers fall back to stock)."""
    if chunk_size != CHUNK_SIZE:
        return f"chunk_size={chunk_size} (kernels are built for {CHUNK_SIZE})"
    if gk is None or beta is None:
        return "no gate gk / beta (SGLang's chunk_kda_fwd always passes both)"
    if k.dim() != 4 or q.shape != k.shape or gk.shape != k.shape:
        return f"expected q, k, gk of one shape [B, T, H, K], got q{tuple(q.shape)} k{tuple(k.shape)} " \
               f"gk{tuple(gk.shape)}"
    B, T, H, _ = k.shape
    if v.dim() != 4 or tuple(v.shape[:3]) != (B, T, H) or tuple(beta.shape) != (B, T, H):
        return f"v{tuple(v.shape)} / beta{tuple(beta.shape)} do not match k{tuple(k.shape)}"
    if k.dtype not in (torch.bfloat16, torch.float16, torch.float32) or q.dtype != k.dtype or v.dtype != k.dtype:
        return f"dtypes q {q.dtype}, k {k.dtype}, v {v.dtype}"
    if not all(x.is_contiguous() for x in (q, k, v, gk, beta)):
        return "non-contiguous inputs"
    return None


KDA_DIAG_GRAM = "sglang"  # who computes the diagonal 16×16 Gram tiles (see kda_fwd_intra's diag_gram)
_SGL_CHUNK_INTRA = "sglang.kernels.ops.attention.fla.chunk_intra"


def _sglang_kda_diagonal(q, k, gk, beta, Aqk, Akkd, scale, cu_seqlens):
    """SGLang's own step 1 of chunk_kda_fwd_intra for the exact gate: its token-parallel kernel writes the
    diagonal 16×16 tiles of Akk (β-scaled, strictly lower, fp32, into Akkd [B, T, H, 16]) and the lower
    triangles of Aqk's diagonal tiles. (Its safe_gate sub-chunk kernel stores those tiles already inverted by
    substitution, so it is not used: under safe_gate our kernel's one-anchor diagonal is as cheap.)"""
    import importlib

    ci = importlib.import_module(_SGL_CHUNK_INTRA)
    ci.chunk_kda_fwd_intra_token_parallel(q=q, k=k, gk=gk, beta=beta, Aqk=Aqk, Akk=Akkd, scale=scale,
                                          cu_seqlens=cu_seqlens, chunk_size=CHUNK_SIZE, sub_chunk_size=SUB_CHUNK)


def kda_fwd_intra(q, k, v, gk=None, beta=None, scale=None, cu_seqlens=None, chunk_size=CHUNK_SIZE,
                  chunk_indices=None, safe_gate=False, fuse_recompute=False, fuse_diagonal=False, *,
                  method="blockdoubling", precision=None, gram_precision=None, tuning: Tuning | None = None,
                  diag_gram: str | None = None):
    """Drop-in for SGLang's ``chunk_kda_fwd_intra`` (``sglang.kernels.ops.attention.fla.chunk_intra``, 0.5.x),
    with the ``(I + A)^{-1}`` by ``method`` / ``precision`` (the registry names and the inversion template of the
    GDN kernel). One kernel per call, none of SGLang's kernels is called.

    Inputs as stock: q, k ``[B, T, H, K]`` and v ``[B, T, H, V]`` (one dtype), ``gk`` the chunk-local cumulative
    per-channel **log2** gate ``[B, T, H, K]`` (fp32, as ``chunk_kda_fwd`` passes it), beta ``[B, T, H]``,
    ``scale`` (default ``K**-0.5``), varlen via ``cu_seqlens`` (B = 1) and optional ``chunk_indices``.

    Returns ``(w, u, None, kg, Aqk, Akk)`` like stock:

    - ``w = X·(β ⊙ k ⊙ 2^{gk})``, ``u = X·(β ⊙ v)``, ``kg = k ⊙ 2^{gk_last − gk}`` (k's/v's dtype), with
      ``X = (I + tril(diag(β)·Σ_c k_c k_cᵀ ⊙ 2^{Δg_c}, −1))^{-1}`` per 64-token chunk, rounded to k's dtype;
    - ``Aqk = scale·tril(Σ_c q_c k_cᵀ ⊙ 2^{Δg_c})`` ``[B, T, H, 64]`` in k's dtype, computed here the way SGLang
      does (same anchors, same operand roundings by default; it is not about the inversion). Entries above the
      diagonal are 0 (stock leaves them uninitialised unless ``fuse_diagonal``; its consumer ignores them);
    - ``Akk = X`` ``[B, T, H, 64]`` in k's dtype, or ``None`` when ``fuse_recompute`` (as stock).

    ``safe_gate`` keeps its stock meaning: the caller bounds the per-token gate (``lower_bound``), so the
    diagonal 16×16 tiles use one mid-tile anchor (SGLang's sub-chunk kernel); without it they use nested
    anchors that keep every exponent ≤ 0 (exact for any gate, like stock's token-parallel kernel).
    ``fuse_recompute`` / ``fuse_diagonal`` only select the stock kernel schedule; here w/u/kg are always fused
    into the one kernel, and the flags change only which outputs exist (and Aqk's upper part, see above).
    ``gram_precision="DIAG/OFF"`` overrides the Gram products' operand rounding (default
    :data:`KDA_GRAM_PRECISION`, SGLang's).

    ``diag_gram`` (default :data:`KDA_DIAG_GRAM`; exact gate only, ``safe_gate`` always uses our one-anchor
    diagonal): ``"sglang"`` lets SGLang's token-parallel kernel compute the diagonal 16×16 tiles of Akk and Aqk
    and our kernel does the rest (off-diagonal tiles, inverse, w/u/kg); ``"fused"`` computes them in our kernel
    too (one kernel, nested anchors: measured 2.8× slower than stock on an H100,
    bench/results/2026-11-27-h100-kda-partial). The ``"sglang"`` split (token-parallel kernel + ours) measured on
    an H200 alone at T=8192: 526.0 vs stock 567.5 µs (H=32), 139.9 vs 152.6 µs (H=8),
    bench/results/2026-11-27-h200-kda-all.
    """
    _check_varlen(k, cu_seqlens)
    reason = kda_supports(q, k, v, gk, beta, chunk_size)
    if reason:
        raise ValueError(f"kda_fwd_intra does not support these inputs: {reason}")
    from . import kda_intra as _kda

    tuning = tuning or KDA_DEFAULT_TUNING
    B, T, H, K = k.shape
    V = v.shape[-1]
    BT = CHUNK_SIZE
    if scale is None:
        scale = K ** -0.5
    diag, whole, dp, mp, mp16 = _method_codes(method, precision or KDA_DEFAULT_PRECISION.get(method), True)
    if mp16 >= 0:
        raise ValueError(f"precision {precision!r}: per-level merge precision ('M16+M32') is for the GDN kernels")
    diag, dp, mp = tuned_inversion(tuning, diag, dp, mp)
    gd, go = _gram_codes(gram_precision)
    if cu_seqlens is not None and chunk_indices is None:
        chunk_indices = prepare_chunk_indices(cu_seqlens, BT)
    NT = cdiv(T, BT) if cu_seqlens is None else len(chunk_indices)
    Aqk = torch.empty(B, T, H, BT, device=k.device, dtype=k.dtype)
    Akk = None if fuse_recompute else torch.empty(B, T, H, BT, device=k.device, dtype=k.dtype)
    w = torch.empty_like(k)
    u = torch.empty_like(v)
    kg = torch.empty_like(k)
    mode = diag_gram or KDA_DIAG_GRAM
    if mode not in ("sglang", "fused"):
        raise ValueError(f"diag_gram={mode!r}: choose 'sglang' or 'fused'")
    Akkd = None
    if mode == "sglang" and not safe_gate:
        Akkd = torch.empty(B, T, H, SUB_CHUNK, device=k.device, dtype=torch.float32)
        _sglang_kda_diagonal(q, k, gk, beta, Aqk, Akkd, float(scale), cu_seqlens)
    tuning = grid_order(tuning, NT)
    grid = (B * H, NT) if tuning.heads_fastest else (NT, B * H)
    args = (q, k, v, gk, beta, float(scale), Aqk, Akk, w, u, kg, cu_seqlens, chunk_indices, Akkd, T)
    const = dict(H=H, K=K, V=V, BT=BT, BC=SUB_CHUNK, BK=min(tuning.BK, next_pow2(K)),
                 BV=min(tuning.BV, next_pow2(V)),
                 DIAG=diag, WHOLE=whole, DIAG_PREC=dp, MERGE_PREC=mp, GRAM_DIAG=gd, GRAM_OFF=go,
                 SAFE_GATE=bool(safe_gate), IS_VARLEN=cu_seqlens is not None, STORE_AQK=True,
                 STORE_AKK=Akk is not None, FUSE_WU=True, DIAG_IN=Akkd is not None,
                 HEADS_FASTEST=tuning.heads_fastest)
    options = dict(num_warps=tuning.num_warps, num_stages=tuning.num_stages)
    # SGLANG_TRINV_DIRECT_LAUNCH=1: the compiled kernel's launcher called directly after the first JIT launch of a
    # kind (s29, H200, T=2048 H=8: this launch cost ~64 µs of host time against 12 for an empty kernel's)
    if not (_direct_launch.enabled()
            and KDA_DIRECT((tuple(const.values()), tuning.num_warps, tuning.num_stages), grid, args, const, options)):
        _kda.kda_intra_kernel[grid](*args, **const, **options)
    return w, u, None, kg, Aqk, Akk


def _kda_kernel():
    from . import kda_intra  # (imported at the first KDA call, as kda_fwd_intra does)

    return kda_intra.kda_intra_kernel


KDA_DIRECT = _direct_launch.DirectLauncher("the KDA intra kernel", _kda_kernel)


__all__ += ["kda_fwd_intra", "kda_supports", "KDA_GRAM_PRECISION", "KDA_DIAG_GRAM"]
