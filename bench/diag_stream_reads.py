"""Where does the one-wave fused intra kernel's stream phase spend its time? (GPU diagnostic, not a product path.)

At T=8192 H=8 (1024 (chunk, head) tiles: one wave of one-warp programs) every program inverts first (~10 µs,
memory idle) and then streams u = Ai·(β v), w = Ai·(β e^g k). If the stream is bound by its DRAM reads, a kernel
that holds v in shared memory from the start (loaded during the inversion) would take those reads off the stream;
if not, that design cannot pay. This script answers it by timing patched copies of the Triton template in which
the stream's loads or stores stay on one row per tile (row stride 0: the bytes come from / go to L1/L2, the
arithmetic and instruction stream are unchanged; outputs are garbage and not checked):

- ``v one row``: u's loads of v;  ``v+k one row``: also w's loads of k (the keys, read for K Kᵀ just before);
- ``stores one row``: the w/u stores;  ``all one row``: both (the compiler may merge a tile's identical loads);
- ``v hot …`` / ``stores hot …``: the same code with v's rows / the w, u stores on the sequence's first chunks
  (L2-resident: the DRAM traffic of that stream gone, the instructions unchanged);
- real forms: the stores with an L2 evict-first policy, v prefetched into L2 after K Kᵀ (TMA bulk or the plain
  hint) with an evict-last policy and a demotion after use (``Tuning.prefetch_v`` / ``prefetch_bulk`` with the PTX
  patched); ``v loaded early`` (v into registers before the inversion: it spills); ``v early 3`` / ``v early 5``
  (``Tuning.v_early_stages``: the inversion inside u's pipelined loop, v requested into shared memory before it).

H200, s22 (bench/results/2026-11-28-s22 §1): v L2-resident 27.5 → 23.0 µs at T=8192 H=8 and 102 → 90 at T=8192
H=32 — the stream waits on v's DRAM reads; none of the L2 policies gets it.

    python3 bench/diag_stream_reads.py OUT_DIR [T,H,Hg ...]    # default 8192,8,4 8192,32,16 (one sequence)

STREAMDIAG_VARIANTS="a,b_c" keeps only those rows (and the default; underscores for spaces).

Per shape and variant: CUDA-graph µs per launch with A written (late store, the default) and without, alternating
rounds; each timed call runs STREAMDIAG_ROTATE (4) launches on as many input sets (no launch finds its inputs in L2
from the one before) and 1 GiB is written and read before each (the previous variant's evict-last lines out).
"""

import dataclasses
import importlib.util
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402

from sglang_trinv import ops  # noqa: E402
from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.ops import gdn_intra  # noqa: E402

U_ARGS = "y33, t0, T, H * V, H * V, V, BC,\n"  # u's _wu_rows call in the two-loop branch: src stride, out stride
W_ARGS = "t0, T, Hg * K, H * K, K, BC, BV,\n"
U_CALL = "_wu_rows(u + (bos * H + i_h) * V, v + (bos * H + i_h) * V, b0, b1, b2, b3,\n                                         y00"
W_CALL = "_wu_rows(w + (bos * H + i_h) * K, k_base, e0, e1, e2, e3,\n                                     y00"


def _hot(call: str, which: str, rows: int) -> tuple[str, str]:
    """The edit that shifts ``which`` ("src" or "out") of that call so that a chunk's rows t0… map to rows
    t0 % rows…: every program reads / writes the same few chunks' rows (L2-resident), addresses and code unchanged."""
    ptr = {"src": "v + (bos * H + i_h) * V", "out": "u + (bos * H + i_h) * V"} if call is U_CALL else \
        {"src": "k_base", "out": "w + (bos * H + i_h) * K"}
    stride = {"src": "H * V", "out": "H * V"} if call is U_CALL else {"src": "Hg * K", "out": "H * K"}
    return call, call.replace(ptr[which], f"{ptr[which]} + (t0 % {rows} - t0) * ({stride[which]})", 1)


STORE = ("x.to(base.dtype.element_ty),\n             mask=_tile_mask(o_r, o_c, T, NCOL, ROWS))")
STORE_EF = (STORE, STORE[:-1] + ', eviction_policy="evict_first")')  # every _store_rows: L2 evict-first hint
BULK = 'tl.constexpr("cp.async.bulk.prefetch.L2.global [$1], 128; mov.u32 $0, 0;")'
BULK_EL = (BULK, 'tl.constexpr("{ .reg .b64 %pol; createpolicy.fractional.L2::evict_last.b64 %pol, 1.0; '
           'cp.async.bulk.prefetch.L2.global.L2::cache_hint [$1], 128, %pol; } mov.u32 $0, 0;")')
HINT = 'tl.constexpr("prefetch.global.L2 [$1]; mov.u32 $0, 0;")'
HINT_EL = (HINT, 'tl.constexpr("prefetch.global.L2::evict_last [$1]; mov.u32 $0, 0;")')
# the w/u loops' loads (v for u, k for w: their last use) through a copy of _load_rows with the evict-first policy,
# so lines a prefetch marked evict-last are demoted once read (else they would hold L2 for every later kernel)
LOAD_EF_DEF = ("\n\n@triton.jit\ndef _store_rows(", '''

@triton.jit
def _load_rows_ef(base, t0, T, stride, col0, NCOL: tl.constexpr, BC: tl.constexpr, BX: tl.constexpr,
                  ROWS: tl.constexpr = 0):
    o_r = t0 + tl.arange(0, BC)
    o_c = col0 + tl.arange(0, BX)
    if ROWS == ROWS_CLAMPED:
        o_r = tl.minimum(o_r, T - 1)
        return tl.load(base + o_r[:, None] * stride + o_c[None, :],
                       mask=_tile_mask(o_r, o_c, T, NCOL, ROWS_WHOLE), other=0.0, eviction_policy="evict_first")
    return tl.load(base + o_r[:, None] * stride + o_c[None, :], mask=_tile_mask(o_r, o_c, T, NCOL, ROWS), other=0.0,
                   eviction_policy="evict_first")


@triton.jit
def _store_rows(''')
STREAM_LOADS = ("_load_rows(src, ", "_load_rows_ef(src, ", 12)  # _wu_rows, _u_rows_with_inversion
LOADS_EF = (LOAD_EF_DEF, STREAM_LOADS)
ROTATE = int(os.environ.get("STREAMDIAG_ROTATE", "4"))  # input sets per timed call (see main)
# after u's loop: v's lines back to the normal L2 priority (applypriority; the pipelined loads' cp.async carry no
# cache hint, so they cannot demote what an evict-last prefetch marked)
DEMOTE_DEF = ("\n\n@triton.jit\ndef _mm(", '''

@triton.jit
def _demote_rows_l2(base, t0, T, stride, NCOL: tl.constexpr, BT: tl.constexpr):
    LINE: tl.constexpr = 1024 // base.dtype.element_ty.primitive_bitwidth
    NL: tl.constexpr = (NCOL + LINE - 1) // LINE
    r = tl.minimum(t0 + tl.arange(0, BT), T - 1)
    p = base + r[:, None] * stride + (tl.arange(0, NL) * LINE)[None, :]
    tl.inline_asm_elementwise("applypriority.global.L2::evict_normal [$1], 128; mov.u32 $0, 0;", "=r,l", [p],
                              dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _mm(''')
DEMOTE_CALL = ("FOLD_BETA, ROWS)\n                        else:",
               "FOLD_BETA, ROWS)\n                            _demote_rows_l2(v + (bos * H + i_h) * V, t0, T, H * V, V, BT)"
               "\n                        else:")
DEMOTE = (DEMOTE_DEF, DEMOTE_CALL)
# v's chunk loaded (β-scaled, in k's dtype) right after the gates — before the inversion — as four [16, V] tiles, and
# u's products taken from them after it (no u loop): does the compiler keep them in shared memory (conversion to the
# dot operand at the load) or in registers? sm_90 (Triton 3.6, H=8): registers — 255 and 904 B of stack.
GATES = ("            b0, b1, b2, b3, g0, g1, g2, g3 = _load_gates(g, g_out, beta, bos, i_h, t0, T, H, BC, USE_G, G_CUMSUM,\n"
         "                                                         ROWS)\n")
V_EARLY_LOAD = (GATES, GATES + '''            ve = v + (bos * H + i_h) * V
            pv0 = (_load_rows(ve, t0, T, H * V, 0, V, BC, V, ROWS) * b0[:, None]).to(k.dtype.element_ty)
            pv1 = (_load_rows(ve, t0 + BC, T, H * V, 0, V, BC, V, ROWS) * b1[:, None]).to(k.dtype.element_ty)
            pv2 = (_load_rows(ve, t0 + 2 * BC, T, H * V, 0, V, BC, V, ROWS) * b2[:, None]).to(k.dtype.element_ty)
            pv3 = (_load_rows(ve, t0 + 3 * BC, T, H * V, 0, V, BC, V, ROWS) * b3[:, None]).to(k.dtype.element_ty)
''')
U_FROM_EARLY = (U_CALL + ", y10, y11, y20, y21, y22, y30, y31, y32, y33, t0, T, H * V, H * V, V, BC,\n"
                "                                         BV, FOLD_BETA, ROWS)",
                "_x_times_tiles(u + (bos * H + i_h) * V, y00, y10, y11, y20, y21, y22, y30, y31, y32, y33, pv0, pv1,"
                " pv2, pv3, t0, T, H * V, 0, V, BC, V, ROWS)")
V_EARLY = (V_EARLY_LOAD, U_FROM_EARLY)


WARM_IDLE = ("_warm_l2(v, i_t * n_bg + i_bg, L2_WARM * n_bg, T * (n_bg // NG) * H, V, WARM_ASM)", "pass")
# the warm-up's loads 64 per lane in flight instead of 32 (one step of 2048 spans)
WARM_WIDE = ("    WB: tl.constexpr = 1024\n", "    WB: tl.constexpr = 2048\n")
# the warm-up programs sleep ~2 µs first, so the chunk programs' key loads (K Kᵀ) do not queue behind v's
WARM_LATE = (("@triton.jit\ndef _warm_l2(",
              "@triton.jit\ndef _sleep_2us(x):\n"
              "    return tl.inline_asm_elementwise(\"nanosleep.u32 2000; mov.u32 $0, $1;\", \"=r,r\", [x], "
              "dtype=tl.int32, is_pure=False, pack=1)\n\n\n@triton.jit\ndef _warm_l2("),
             ("            _warm_l2(v, i_t * n_bg + i_bg,", "            i_t = _sleep_2us(i_t)\n"
              "            _warm_l2(v, i_t * n_bg + i_bg,"))
PF_BULK = dict(prefetch_v="kkt", prefetch_bulk=True)  # v's rows prefetched into L2 right after K Kᵀ (Tuning)
PF_HINT = dict(prefetch_v="kkt")

# name -> (edits of the template's source, Tuning fields over the fused default)
VARIANTS = {
    "default": ((), {}),
    # row stride 0: every row of a tile is the tile's first row (the compiler may merge the four 16-row loads)
    "v one row": (((U_ARGS, "y33, t0, T, 0, H * V, V, BC,\n"),), {}),
    "v+k one row": (((U_ARGS, "y33, t0, T, 0, H * V, V, BC,\n"), (W_ARGS, "t0, T, 0, H * K, K, BC, BV,\n")), {}),
    "stores one row": (((U_ARGS, "y33, t0, T, H * V, 0, V, BC,\n"), (W_ARGS, "t0, T, Hg * K, 0, K, BC, BV,\n")), {}),
    "all one row": (((U_ARGS, "y33, t0, T, 0, 0, V, BC,\n"), (W_ARGS, "t0, T, 0, 0, K, BC, BV,\n")), {}),
    # the same code with v's rows from the first 4 chunks / the first chunk of the sequence (hot in L2)
    "v hot 4 chunks": ((_hot(U_CALL, "src", 256),), {}),
    "v hot 1 chunk": ((_hot(U_CALL, "src", 64),), {}),
    "stores hot 4 chunks": ((_hot(U_CALL, "out", 256), _hot(W_CALL, "out", 256)), {}),
    # real forms: the stores with an L2 evict-first policy; v prefetched after K Kᵀ (TMA bulk or the plain hint),
    # with an L2 evict-last policy so that the stream's writes do not push it out before the u loop reads it
    "stores evict-first": ((STORE_EF,), {}),
    "pf bulk": ((), PF_BULK),
    "pf hint": ((), PF_HINT),
    "pf bulk evict-last": ((BULK_EL,), PF_BULK),
    "pf bulk evict-last + stores ef": ((BULK_EL, STORE_EF), PF_BULK),
    "pf hint evict-last + stores ef": ((HINT_EL, STORE_EF), PF_HINT),
    # the same, with the stream's loads demoting what they read (evict-first)
    "pf hint evict-last + loads ef": ((HINT_EL, *LOADS_EF), PF_HINT),
    "pf hint evict-last + loads ef + stores ef": ((HINT_EL, *LOADS_EF, STORE_EF), PF_HINT),
    "pf bulk evict-last + loads ef + stores ef": ((BULK_EL, *LOADS_EF, STORE_EF), PF_BULK),
    "pf hint + stores ef": ((STORE_EF,), PF_HINT),
    "v loaded early": (V_EARLY, {}),
    # the product's form of "v on chip before the stream": the inversion inside u's pipelined loop (Tuning)
    "v early 3": ((), dict(v_early_stages=3)),
    "v early 5": ((), dict(v_early_stages=5)),
    # v prefetched into L2 by real loads (Tuning.prefetch_touch, s23): the hint may be dropped, a load is not; its
    # words unused ("touch") or kept in their registers to the end ("touch kept": no wait to reuse one)
    "touch kkt": ((), dict(prefetch_v="kkt", prefetch_touch=1)),
    "touch kkt kept": ((), dict(prefetch_v="kkt", prefetch_touch=2)),
    "touch start kept": ((), dict(prefetch_v="start", prefetch_touch=2)),
    # s24: warm-up programs ahead of the chunk programs load v into L2 (Tuning.l2_warm; one wave only: at T=8192 H=8
    # 32 programs fit beside the 1024 tiles, at T=4096 H=8 up to 544) — the inverting warps issue nothing for it
    "l2 warm 32": ((), dict(l2_warm=32)),
    "l2 warm 128": ((), dict(l2_warm=128)),
    # the control: the same build and grid, the warm-up programs returning at once (what the extra branch and the
    # 254 registers cost the chunk programs, apart from v's loads)
    "l2 warm 32 idle": ((WARM_IDLE,), dict(l2_warm=32)),
    "l2 warm 32 wide": ((WARM_WIDE,), dict(l2_warm=32)),
    "l2 warm 32 late": (WARM_LATE, dict(l2_warm=32)),  # (inline PTX: GPU only)
    "pf hint evict-last + demote": ((HINT_EL, *DEMOTE), PF_HINT),
    "pf hint evict-last + demote + stores ef": ((HINT_EL, *DEMOTE, STORE_EF), PF_HINT),
    "pf bulk evict-last + demote + stores ef": ((BULK_EL, *DEMOTE, STORE_EF), PF_BULK),
}
if os.environ.get("STREAMDIAG_VARIANTS"):  # "a,b_c": only those rows (and the default; underscores for spaces)
    keep = {x.replace("_", " ") for x in os.environ["STREAMDIAG_VARIANTS"].split(",")} | {"default"}
    VARIANTS = {name: spec for name, spec in VARIANTS.items() if name in keep}


def patched_module(name: str, edits, tmp: str):
    """A copy of gdn_intra with ``edits`` (old, new[, count]) applied (each old text must occur count times, default
    once), imported from ``tmp``."""
    src = open(gdn_intra.__file__).read()
    for old, new, *count in edits:
        n, want = src.count(old), (count[0] if count else 1)
        if n != want:
            raise RuntimeError(f"{name}: {old!r} occurs {n} times in gdn_intra.py (expected {want})")
        src = src.replace(old, new)
    mod_name = "diag_gdn_intra_" + "".join(c if c.isalnum() else "_" for c in name)
    path = os.path.join(tmp, mod_name + ".py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(mod_name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    out = sys.argv[1]
    shapes = [tuple(int(x) for x in s.split(",")) for s in sys.argv[2:]] or [(8192, 8, 4), (8192, 32, 16)]
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="diag_stream_")
    mods = {name: (gdn_intra if not edits else patched_module(name, edits, tmp))
            for name, (edits, _) in VARIANTS.items()}
    rows = []
    torch.manual_seed(0)
    flush = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    for T, H, Hg in shapes:
        K = V = 128

        def inputs():
            k = torch.nn.functional.normalize(torch.randn(1, T, Hg, K, device="cuda"), dim=-1).to(torch.bfloat16)
            v = torch.randn(1, T, H, V, device="cuda", dtype=torch.bfloat16)
            g = torch.nn.functional.logsigmoid(torch.randn(1, T, H, device="cuda")).reshape(1, T // 64, 64, H)
            g = g.cumsum(2).reshape(1, T, H).float()
            beta = torch.rand(1, T, H, device="cuda").sigmoid().to(torch.bfloat16)
            return k, v, g, beta

        # ROTATE input sets per timed call (one launch each; their bytes several times the L2): no launch finds its
        # v in L2 from the launch before, as a real layer would not — an evict-last prefetch left without demotion
        # would otherwise keep one v resident across the replays and look like a gain
        sets = [inputs() for _ in range(ROTATE)]
        times = {(name, a): [] for name in VARIANTS for a in (True, False)}
        for _ in range(3):  # alternating rounds
            for name, mod in mods.items():
                for store_A in (True, False):
                    saved = ops._k
                    ops._k = mod
                    try:
                        tuning = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, **VARIANTS[name][1])

                        def fn():
                            for k, v, g, beta in sets:
                                ops.gdn_fwd_intra(k, v, g, beta, store_A=store_A, tuning=tuning)

                        flush.fill_(1)  # another variant's evict-last lines out of L2 (a 1 GiB write, then read)
                        flush.max()
                        times[(name, store_A)].append(common.graph_us(fn, "cuda") / ROTATE)
                    finally:
                        ops._k = saved
        for name in VARIANTS:
            row = dict(T=T, H=H, Hg=Hg, variant=name, rotate=ROTATE, us_A=times[(name, True)],
                       us_noA=times[(name, False)])
            rows.append(row)
            print(f"T={T} H={H} {name:16s} A {', '.join(f'{t:.1f}' for t in row['us_A'])} µs   "
                  f"no A {', '.join(f'{t:.1f}' for t in row['us_noA'])} µs", flush=True)
    meta = common.run_meta("cuda")
    with open(os.path.join(out, "diag_stream_reads.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
