"""Fused intra kernel (KKᵀ + inverse + w/u) and the inverse-only kernel under several launch/tiling variants,
side by side with SGLang's stock kernels in one process, then the whole SGLang ``chunk_gated_delta_rule_fwd``
with the plugin at the default tiling and at the best variant. Errors are max-rel vs the fp64 reference.

    python3 bench/bench_intra_variants.py DIR        # writes DIR/intra_variants.json, prints a table
    python3 bench/bench_intra_variants.py DIR --smoke  # CPU, Triton interpreter, tiny shapes (checks the script)

INTRA_VARIANT_SHAPES="T,H,Hg[,nseq];…" sets the kernel shapes (one sequence unless nseq > 1: a varlen batch as
`bench kernels` makes it, partial chunks and a 1-token sequence; default 8192,32,16;32768,32,16);
INTRA_VARIANT_WHOLE=0 leaves out the whole forward and the stage breakdown (INTRA_VARIANT_WHOLE_SHAPES="T,H,Hg,nseq;…"
sets its shapes; it runs at the default and at the first kernel shape's fastest A-writing variant, or at the row
INTRA_VARIANT_WHOLE_ROW names); INTRA_VARIANT_ROWS="a,b_c" keeps only
those variant rows (and the default; underscores stand for spaces). maxdiff: a variant's largest
difference to the default (A for the inverse rows, w/u for the fused ones; 0 = bitwise).
"""
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SMOKE = "--smoke" in sys.argv
if SMOKE:  # the interpreter must be on before Triton (and any kernel) is imported
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()
import torch  # noqa: E402

from sglang_trinv import ops  # noqa: E402
from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.benchmarks import kernels as bk  # noqa: E402
from sglang_trinv.reference import gdn as ref  # noqa: E402

out = sys.argv[1]
if SMOKE:
    bk.DEV = "cpu"
SHAPES = ((150, 4, 2), (150, 4, 2, 3)) if SMOKE else ((8192, 32, 16), (32768, 32, 16))
if os.environ.get("INTRA_VARIANT_SHAPES") and not SMOKE:
    SHAPES = tuple(tuple(int(x) for x in sh.split(",")) for sh in os.environ["INTRA_VARIANT_SHAPES"].split(";"))
SHAPES = tuple(sh if len(sh) == 4 else (*sh, 1) for sh in SHAPES)
WHOLE = ((150, 4, 2, 1), (150, 4, 2, 3)) if SMOKE else ((8192, 32, 16, 1), (32768, 32, 16, 1), (32768, 8, 4, 8))
if os.environ.get("INTRA_VARIANT_WHOLE_SHAPES") and not SMOKE:  # "T,H,Hg,nseq;…": the whole-forward shapes
    WHOLE = tuple(tuple(int(x) for x in sh.split(",")) for sh in os.environ["INTRA_VARIANT_WHOLE_SHAPES"].split(";"))
os.makedirs(out, exist_ok=True)
rows = []
FT, IT = ops.DEFAULT_TUNING_FUSED, ops.DEFAULT_TUNING
_r = dataclasses.replace
# name -> (tuning, store_A). Earlier runs (results/2026-11-27-h200-variants, -h200-maxnreg): BK=32, β-fold, BV 16/64,
# 2 warps, register caps 200/168/128 (spills) and the merged u/w loop (s8) lost; see bench/NOTES.md. Session 16 made
# the diagonal tiles' level masks on the products and the rank-1 gate factors the default (results/2026-11-28-s16);
# the rows without them keep the comparison. Session 17 made the packed hi/lo splits and the unmasked whole chunks
# the default (results/2026-11-28-s17).
FUSED = {
    "default": (FT, True),
    "default noA": (FT, False),
    "chunks fastest": (_r(FT, heads_fastest=False), True),
    "no diag masks": (_r(FT, diag_masks=False), True),
    "no gate factors": (_r(FT, gate_factors=False), True),
    "neither (session 15)": (_r(FT, diag_masks=False, gate_factors=False), True),
    "plain split": (_r(FT, split_packed=False), True),  # hi/lo by x.to(bf16) instead of inline PTX
    "masked rows": (_r(FT, full_chunks=False), True),  # one sequence: row masks on whole chunks too
    "session 16": (_r(FT, split_packed=False, full_chunks=False), True),
    "masked varlen rows": (_r(FT, clamp_rows=False), True),  # before s18: varlen / partial chunks with row masks
    "early A": (_r(FT, a_store="early"), True),  # before s19: Ai stored right after the inversion
    "mid A": (_r(FT, a_store="mid"), True),  # s18: Ai stored between the u and the w loop (s19: ±0.6 µs of early)
    "prefetch v": (_r(FT, prefetch_v="start"), True),  # s18: v's rows prefetched into L2 at the start (s19: lost)
    "prefetch v noA": (_r(FT, prefetch_v="start"), False),  # the plugin's pipeline form (A not written)
    "prefetch v kkt": (_r(FT, prefetch_v="kkt"), True),  # s19: the prefetch after K Kᵀ (keys in, inversion next)
    "prefetch v kkt noA": (_r(FT, prefetch_v="kkt"), False),
    # s19, untimed: the same lines by cp.async.bulk.prefetch.L2 (the TMA unit); ncu found the hint without effect
    "prefetch v kkt bulk": (_r(FT, prefetch_v="kkt", prefetch_bulk=True), True),
    "prefetch v kkt bulk noA": (_r(FT, prefetch_v="kkt", prefetch_bulk=True), False),
    "prefetch v bulk": (_r(FT, prefetch_v="start", prefetch_bulk=True), True),  # s20: the bulk form lost everywhere
    # s23, untimed: the prefetch by real loads (volatile, L2::256B hint), words unused / kept to the end
    "touch kkt": (_r(FT, prefetch_v="kkt", prefetch_touch=1), True),
    "touch kkt noA": (_r(FT, prefetch_v="kkt", prefetch_touch=1), False),
    "touch kkt kept": (_r(FT, prefetch_v="kkt", prefetch_touch=2), True),
    "touch kkt kept noA": (_r(FT, prefetch_v="kkt", prefetch_touch=2), False),
    "touch start kept": (_r(FT, prefetch_v="start", prefetch_touch=2), True),
    # s24: warm-up programs loading v into L2 beside the chunk programs (Tuning.l2_warm; one-wave launches only)
    "l2 warm 32": (_r(FT, l2_warm=32), True),
    "l2 warm 32 noA": (_r(FT, l2_warm=32), False),
    "l2 warm 128": (_r(FT, l2_warm=128), True),
    "l2 warm 128 noA": (_r(FT, l2_warm=128), False),
    # s24, untimed: a 224-register cap — 9 programs per SM, so T=8192 H=8 with 8 sequences (~1080 tiles) fits one
    # wave (1188 slots) instead of two; sm_90 (Triton 3.6, H=8, varlen): no stack with A or without, 24 B with the
    # warm-up (one sequence with A: 40 B)
    "cap 224": (_r(FT, maxnreg=224), True),
    "cap 224 noA": (_r(FT, maxnreg=224), False),
    "cap 224 l2 warm 32": (_r(FT, maxnreg=224, l2_warm=32), True),
    # s20: Ai tiles stored before the rest (Tuning.a_first): the zero tiles at the start, the diagonal ones once
    # inverted, X10 / X32 after the 16 → 32 merges; the rest late as by default. Lost at every shape (s20)
    "A zeros first": (_r(FT, a_first="zeros"), True),
    "A diag first": (_r(FT, a_first="diag"), True),
    "A merge16 first": (_r(FT, a_first="merge16"), True),
    "A merge16 first early": (_r(FT, a_first="merge16", a_store="early"), True),
    # deeper w/u pipelines (more bytes in flight per warp: the one-wave shapes are latency-bound at 8 warps per SM).
    # 2026-11-27 (T=8192 H=32, the pipeline kernel, before s16–s19's changes): BV=32 4 stages −1.5 %, the merged loop
    # with 4 stages −3.5 % without A but slower with A; not rerun since. sm_90 (Triton 3.6, H=8): no spills
    "BV32 st4": (_r(FT, num_stages=4), True),
    "BV32 st4 noA": (_r(FT, num_stages=4), False),
    "BV16 st4": (_r(FT, BV=16, num_stages=4), True),
    "merged st4": (_r(FT, wu_merged=True, num_stages=4), True),
    "merged st4 noA": (_r(FT, wu_merged=True, num_stages=4), False),
    # s20, untimed: the w loop before the u loop (k's tiles, read for K Kᵀ just before, are likely still in L2)
    "w first": (_r(FT, w_first=True), True),
    "w first noA": (_r(FT, w_first=True), False),
    # s21: one folded copy Ai·diag(β) for both loops (v's tiles straight into the dots; Ai stored early, so "early A"
    # is its baseline where A is written). sm_90 (Triton 3.6, H=8): no spills one sequence, 8–16 B varlen
    "early A": (_r(FT, a_store="early"), True),
    "fold beta": (_r(FT, fold_beta=True), True),
    "fold beta noA": (_r(FT, fold_beta=True), False),
    "fold beta w first noA": (_r(FT, fold_beta=True, w_first=True), False),
    # s22: the inversion inside u's pipelined column loop, so its prologue requests v (2 / 4 column tiles) before the
    # inversion (Tuning.v_early_stages; the stream's v reads cost ~4.5 µs at T=8192 H=8, diag_stream_reads.py)
    "v early 3": (_r(FT, v_early_stages=3), True),
    "v early 3 noA": (_r(FT, v_early_stages=3), False),
    "v early 5": (_r(FT, v_early_stages=5), True),
    "v early 5 noA": (_r(FT, v_early_stages=5), False),
    # BV = 16 (both loops): the least spilling form (sm_90: 72 B of stack with A, 16 B in the pipeline; BV = 32: 128–
    # 192 B), though BV = 16 lost with the default's loops (s21: 34.0 vs 27.4 µs at T=8192 H=8)
    "v early 5 BV16": (_r(FT, BV=16, v_early_stages=5), True),
    "v early 5 BV16 noA": (_r(FT, BV=16, v_early_stages=5), False),
}
INVERSE = {"default": IT, "heads fastest": _r(IT, heads_fastest=True), "no diag masks": _r(IT, diag_masks=False),
           "no gate factors": _r(IT, gate_factors=False),
           "neither (session 15)": _r(IT, diag_masks=False, gate_factors=False),
           "plain split": _r(IT, split_packed=False), "masked rows": _r(IT, full_chunks=False),
           "session 16": _r(IT, split_packed=False, full_chunks=False), "clamped rows": _r(IT, clamp_rows=True),
           "clamped+heads fastest": _r(IT, clamp_rows=True, heads_fastest=True),
           "A zeros first": _r(IT, a_first="zeros"), "A diag first": _r(IT, a_first="diag"),
           "A merge16 first": _r(IT, a_first="merge16")}
# INTRA_VARIANT_ROWS="default,clamped_rows,…": only these rows (underscores stand for spaces; the default row is
# always kept: maxdiff is measured against it)
if os.environ.get("INTRA_VARIANT_ROWS"):
    _keep = {"default"} | {x.replace("_", " ") for x in os.environ["INTRA_VARIANT_ROWS"].split(",")}
    FUSED = {n: x for n, x in FUSED.items() if n in _keep}
    INVERSE = {n: x for n, x in INVERSE.items() if n in _keep}


def err(x, x64):
    return bk.rel_err(x, x64)["max_rel"] if x is not None else float("nan")


for T, H, Hg, nseq in SHAPES:
    inp = bk.make_inputs(T, H, Hg, 128, 128, nseq, 0)
    k, v, g, beta, cu = inp["k"], inp["v"], inp["g"], inp["beta"], inp["cu_seqlens"]
    ci = None if cu is None else ops.prepare_chunk_indices(cu, 64)  # precomputed for stock and ours alike
    w64, u64, A64 = ref.fwd_intra(k, v, g, beta, cu)
    sq = dict(T=T, H=H, nseq=nseq)
    # ---- inverse only
    t = bk.bench(lambda: bk.stock_kkt_solve(k, g, beta, cu, ci))
    rows.append(dict(**sq, kernel="inverse", variant="stock", us=t, A=err(bk.stock_kkt_solve(k, g, beta, cu, ci), A64)))
    print(rows[-1], flush=True)
    first = None  # maxdiff: largest difference to the default's output (0 = bitwise)
    for name, tu in INVERSE.items():
        f = lambda: ops.gdn_kkt_inverse(k, g, beta, cu, ci, method="blockdoubling", tuning=tu)  # noqa: E731
        try:
            Ai = f()
            first = Ai if first is None else first
            rows.append(dict(**sq, kernel="inverse", variant=name, us=bk.bench(f), A=err(Ai, A64),
                             maxdiff=float((Ai.float() - first.float()).abs().max())))
        except Exception as e:  # noqa: BLE001 (a variant that does not compile is a result too)
            rows.append(dict(**sq, kernel="inverse", variant=name, error=f"{type(e).__name__}: {e}"[:300]))
        print(rows[-1], flush=True)
    # ---- fused intra
    t = bk.bench(lambda: bk.stock_intra(k, v, g, beta, cu, ci))
    w, u, A = bk.stock_intra(k, v, g, beta, cu, ci)
    rows.append(dict(**sq, kernel="intra", variant="stock", us=t, A=err(A, A64), w=err(w, w64), u=err(u, u64)))
    print(rows[-1], flush=True)
    first = None
    for name, (tu, store_A) in FUSED.items():
        f = lambda: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, method="blockdoubling", tuning=tu,  # noqa: E731
                                      store_A=store_A)
        try:
            w, u, A = f()
            first = (w, u) if first is None else first
            rows.append(dict(**sq, kernel="intra", variant=name, us=bk.bench(f), A=err(A, A64), w=err(w, w64),
                             u=err(u, u64), maxdiff=max(float((x.float() - y.float()).abs().max())
                                                        for x, y in zip((w, u), first))))
        except Exception as e:  # noqa: BLE001 (a variant that does not compile is a result too)
            rows.append(dict(**sq, kernel="intra", variant=name, error=f"{type(e).__name__}: {e}"[:300]))
        print(rows[-1], flush=True)
    del inp, k, v, g, beta, cu, ci, w64, u64, A64
    if not SMOKE:
        torch.cuda.empty_cache()
    # the rows so far, in case the step's time limit ends the run (s20 lost a whole call's JSON that way)
    json.dump(dict(meta=common.run_meta("cpu" if SMOKE else "cuda", partial=True), rows=rows),
              open(os.path.join(out, "intra_variants.json"), "w"), indent=1)

# ---- whole SGLang chunk_gated_delta_rule_fwd: plugin at the default tiling, then at the fastest variant
# (INTRA_VARIANT_WHOLE=0 skips it and the stage breakdown: the kernel rows alone)
WHOLE = WHOLE if os.environ.get("INTRA_VARIANT_WHOLE", "1") != "0" else ()
first_shape = (SHAPES[0][0], SHAPES[0][1], SHAPES[0][3])
intra = [r for r in rows if r["kernel"] == "intra" and (r["T"], r["H"], r["nseq"]) == first_shape and "us" in r
         and r["variant"] != "stock" and not r["variant"].endswith("noA")]
best = min(intra, key=lambda r: r["us"])["variant"]
# INTRA_VARIANT_WHOLE_ROW="fold_beta": the whole forward's second run at that row's tiling instead (the plugin's
# pipeline writes no A: a row that wins only without A is picked by name)
best = os.environ.get("INTRA_VARIANT_WHOLE_ROW", best).replace("_", " ")
for T, H, Hg, nseq in WHOLE:
    inp = bk.make_inputs(T, H, Hg, 128, 128, nseq, 0)
    tag = dict(T=T, H=H, nseq=nseq)
    whole = []
    bk.run_whole(inp, tag, whole, False)
    for r in whole:
        r.update(kernel="gdn_fwd", variant=f"{r['method']} default")
    rows.extend(whole)
    extra = []
    with common.fused_defaults(tuning=FUSED[best][0]):
        bk.run_whole(inp, tag, extra, False)
    for r in extra:
        if r["method"] != "stock":
            r.update(kernel="gdn_fwd", variant=f"{r['method']} {best}")
            rows.append(r)
        else:
            r.update(kernel="gdn_fwd", variant="stock (again)")
            rows.append(r)
    del inp
    if not SMOKE:
        torch.cuda.empty_cache()

# ---- where the whole forward's time goes (stock stages, T=8192 H=32): cumsum, intra, h recurrence, output
try:
    if not WHOLE:
        raise RuntimeError("skipped (INTRA_VARIANT_WHOLE=0)")
    from importlib import import_module

    chunk = import_module(f"{bk.FLA}.chunk")
    T, H, Hg = SHAPES[0][:3]
    inp = bk.make_inputs(T, H, Hg, 128, 128, 1, 0)
    k, v, beta, g_raw = inp["k"], inp["v"], inp["beta"], inp["g_raw"]
    q = k.clone()
    g = chunk.chunk_local_cumsum(g_raw, chunk_size=64)
    w, u, A = bk.stock_intra(k, v, g, beta, None, None)
    h0 = torch.zeros(1, H, 128, 128, device=k.device)
    idx = torch.arange(1, device=k.device)
    stages = {
        "cumsum": lambda: chunk.chunk_local_cumsum(g_raw, chunk_size=64),
        "intra (stock)": lambda: bk.stock_intra(k, v, g, beta, None, None),
        "fwd_h": lambda: chunk.chunk_gated_delta_rule_fwd_h(k=k, w=w, u=u, g=g, initial_state=h0,
                                                            initial_state_indices=idx, cu_seqlens=None,
                                                            chunk_indices=None, inplace_update=True),
    }
    h, v_new = stages["fwd_h"]()
    stages["fwd_o"] = lambda: chunk.chunk_fwd_o(q=q, k=k, v=v_new, h=h, g=g, scale=0.1, cu_seqlens=None)
    for name, f in stages.items():
        rows.append(dict(T=T, H=H, kernel="stage", variant=name, us=bk.bench(f)))
        print(rows[-1], flush=True)
except Exception as e:  # noqa: BLE001
    print(f"stage breakdown failed: {type(e).__name__}: {e}", flush=True)

meta = common.run_meta("cpu" if SMOKE else "cuda", best_intra=best)
json.dump(dict(meta=meta, rows=rows), open(os.path.join(out, "intra_variants.json"), "w"), indent=1)
print(meta)
for r in rows:
    if "us" in r:
        errs = " ".join(f"{key} {r[key]:.2e}" for key in ("A", "w", "u", "o_rel_vs_fp64", "o_rel_vs_stock", "maxdiff")
                        if key in r)
        print(f"{r['kernel']:8s} T={r['T']:6d} H={r['H']:3d} seqs={r.get('nseq', 1):2d} {r['variant']:24s} "
              f"{r['us']:8.1f} us  {errs}")
