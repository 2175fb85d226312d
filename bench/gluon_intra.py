"""Benchmark harness of the warp-specialized Gluon intra kernel (sglang_trinv/ops/gluon_intra.py): sm_90 compile
reports on any machine, and on an H100/H200 errors vs fp64 and CUDA-graph times beside stock and our Triton kernel,
per shape and per launch variant (MODE 1 / 2 time each partition alone).

    PYTHONPATH=<triton 3.6 dir> python bench/gluon_intra.py               # CPU: registers / spills (sm_90)
    python bench/gluon_intra.py --gpu OUT_DIR                             # GPU: errors vs fp64, times
    python bench/gluon_intra.py --varlen OUT_DIR                          # GPU: where varlen time goes
    python bench/gluon_intra.py --varlen-diag OUT_DIR                     # GPU: varlen penalty per shape
    python bench/gluon_intra.py --shapes OUT_DIR                          # GPU: launch variants at every shape
    python bench/gluon_intra.py --ncu                                     # GPU, under ncu: one launch of each
"""

import json
import os
import sys
from dataclasses import asdict

os.environ.pop("TRITON_INTERPRET", None)
from sglang_trinv.ops import gluon_intra as gi  # noqa: E402

# launch variants timed beside the default at T=8192 H=32 (each a GluonLaunch field set, or a call option)
# (timed in CUDA graphs: the default launch there builds its TMA descriptors on the host; DD=True on the device,
# as eager launches do, DD=False again on the host — a second sample of the default)
VARIANTS = [dict(MODE=1), dict(MODE=2), dict(DD=True), dict(DD=False), dict(G=1), dict(G=1, KD=True),
            dict(G=1, KD=True, MODE=1), dict(store_A=False), dict(merge="bf16x3"), dict(merge="bf16x3+tf32")]
# the issue's benchmark shapes (T, H, Hg, sequences)
SHAPES = [(T, H, Hg, n) for T in (8192, 32768, 4096) for H, Hg in ((32, 16), (8, 4)) for n in (1, 8)]
# each "BACKEND PRECISION" call of ops.gdn_fwd_intra (blockdoubling); bf16x3/bf16x3+tf32: bf16x3 for the 16 → 32
# merges, tf32 for the 32 → 64 ones
PRECISIONS = ["bf16x3", "bf16x3/bf16x3+tf32", "bf16x3/tf32"]
CALLS = ["stock"] + [f"{b} {p}" for b in ("triton", "gluon") for p in PRECISIONS]


def run_variant(k, v, g, beta, bufs, cu=None, ci=None, store_A=True, cumsum=False, merge="tf32", diag="bf16x3",
                **launch):
    w, u, A, g_out = bufs
    gi.launch_intra(k, v, g, beta, w, u, A if store_A else None, g_out if cumsum else None, cu, ci,
                    diag_precision=diag, merge_precision=merge, launch=gi.GluonLaunch(**launch))
    return w, u, A


def _report(out, meta, rows, sweep):
    from sglang_trinv.benchmarks import common

    md = common.md_header("Gluon intra (ops.gdn_fwd_intra backend=gluon) vs Triton vs stock", meta,
                          "bf16, K=V=128; µs per call over CUDA-graph replays; errors max|X − X64| / max|X64| of "
                          "w / u / A; auto = the backend ops.gdn_fwd_intra picks by default.")
    md += ["| T | H/Hg | seqs | " + " | ".join(f"{n} µs" for n in CALLS) + " | "
           + " | ".join(f"stock / gluon {p}" for p in PRECISIONS) + " | auto |",
           "|" + "---|" * (len(CALLS) + len(PRECISIONS) + 4)]
    for r in rows:
        md.append(f"| {r['T']} | {r['H']}/{r['Hg']} | {r['nseq']} | "
                  + " | ".join(f"{r['us ' + n]:.1f}" for n in CALLS) + " | "
                  + " | ".join(f"{r['us stock'] / r['us gluon ' + p]:.2f}×" for p in PRECISIONS) + f" | {r['auto']} |")
    md += ["", "| T | H/Hg | seqs | " + " | ".join(f"err {n}" for n in CALLS) + " |", "|" + "---|" * (len(CALLS) + 3)]
    for r in rows:
        md.append(f"| {r['T']} | {r['H']}/{r['Hg']} | {r['nseq']} | " + " | ".join(r["err " + n] for n in CALLS)
                  + " |")
    if sweep:
        md += ["", f"Launch variants, T=8192 H=32 Hg=16, one sequence (default: {asdict(gi.DEFAULT_LAUNCH)}, "
               "bf16x3 diagonal / tf32 merges, A written, G=None → 2; MODE 1 = inverters alone, 2 = streamers "
               "alone; maxdiff: largest |w, u(, A)| difference to the default):", "",
               "| variant | µs | maxdiff | err w/u(/A) vs fp64 |", "|---|---|---|---|"]
        for r in sweep:
            md.append(f"| {r['variant']} | {r['us']:.1f} | {r['maxdiff']:.1e} | {r['err']} |")
    return common.write_report(out, "gluon_intra", meta, [dict(r, kind="shape") for r in rows]
                               + [dict(r, kind="launch variant", T=8192, H=32, Hg=16) for r in sweep], md)


def gpu_check(out: str) -> int:
    """Errors vs fp64 and CUDA-graph times beside our Triton kernel and stock, every benchmark shape; then launch
    variants. The report is rewritten after every shape (a time limit keeps what was measured)."""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_overlap import events_us

    from sglang_trinv import ops
    from sglang_trinv.benchmarks import common
    from sglang_trinv.benchmarks import kernels as bk
    from sglang_trinv.reference import gdn as ref

    def errs(res, ref64):
        return "/".join(f"{bk.rel_err(x, x64)['max_rel']:.1e}" for x, x64 in zip(res, ref64) if x is not None)

    meta = common.run_meta("cuda", dtype="bfloat16")
    rows, sweep = [], []
    for T, H, Hg, nseq in SHAPES:
        a = bk.make_inputs(T, H, Hg, 128, 128, nseq, 0)
        k, v, g, beta, cu = a["k"], a["v"], a["g"], a["beta"], a["cu_seqlens"]
        ci = ops.prepare_chunk_indices(cu, 64) if cu is not None else None
        ref64 = ref.fwd_intra(k, v, g, beta, cu)
        auto = ops.gluon_reason(k, v, g, beta, cu_seqlens=cu) or ops.gluon_auto_reason(k, beta, cu, False)
        r = dict(T=T, H=H, Hg=Hg, nseq=nseq, auto="gluon" if auto is None else f"triton ({auto})")
        calls = {"stock": lambda: bk.stock_intra(k, v, g, beta, cu, ci)}
        for name in CALLS[1:]:
            be, p = name.split()
            calls[name] = lambda be=be, p=p: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, precision=p, backend=be)
        for name, f in calls.items():
            res = f()
            torch.cuda.synchronize()
            r[f"err {name}"] = errs(res, ref64)
            r[f"finite {name}"] = all(bool(torch.isfinite(x.float()).all()) for x in res)
            r[f"us {name}"] = events_us(f)
        rows.append(r)
        print(r, flush=True)
        _report(out, meta, rows, sweep)
        del ref64
        torch.cuda.empty_cache()
    # launch variants at T=8192 H=32 (outputs preallocated; MODE 1 / 2: outputs not compared)
    a = bk.make_inputs(8192, 32, 16, 128, 128, 1, 0)
    k, v, g, beta = a["k"], a["v"], a["g"], a["beta"]
    T, H = k.shape[1], v.shape[2]
    w64, u64, A64 = ref.fwd_intra(k, v, g, beta, None)
    bufs = (k.new_empty(1, T, H, 128), torch.empty_like(v), k.new_empty(1, T, H, 64),
            torch.empty(beta.shape, device=k.device))
    base = [x.clone() for x in run_variant(k, v, g, beta, bufs)]
    sweep.append(dict(variant="default", us=events_us(lambda: run_variant(k, v, g, beta, bufs)), maxdiff=0.0,
                      err=errs(base, (w64, u64, A64))))
    print(sweep[-1], flush=True)
    for kw in VARIANTS:
        f = lambda: run_variant(k, v, g, beta, bufs, **kw)  # noqa: E731
        for x in bufs:
            x.zero_()
        res = f()
        n_cmp = 0 if kw.get("MODE", 0) else (3 if kw.get("store_A", True) else 2)
        diff = max([float((x.float() - y.float()).abs().max()) for x, y in zip(res[:n_cmp], base[:n_cmp])],
                   default=float("nan"))
        e = errs(res[:n_cmp], (w64, u64, A64)) if n_cmp else "–"
        sweep.append(dict(variant=" ".join(f"{n}={x}" for n, x in kw.items()), us=events_us(f), maxdiff=diff,
                          err=e))
        print(sweep[-1], flush=True)
        _report(out, meta, rows, sweep)
    return 0


# launch variants per shape (--shapes): the launch was tuned at T=8192 H=32 only. At the small shapes each CTA gets
# about one batch: the W tiles invert together, then one streamer warpgroup works through their 4·W items, of
# which the ring (S − 1 items ahead, at most one tile) prefetched some during the inversion. Measured at every
# shape and not kept (bench/results/2026-11-27-s11/): a ring up to two tiles ahead (S = 7, 9; commit 95b7cdf),
# H100: no gain beyond 1.5 % anywhere (T=4096 H=8 19.4 → 20.2 µs); a second streamer warpgroup, u and A by one, w
# by the other (NS = 2; commit 76392f9), H200: T=4096 H=8 19.6 → 18.9 µs (Triton 18.0), T=4096 H=32 8 sequences
# 71.3 → 69.3, slower at every larger shape (T=32768 H=32 8 sequences 419.7 → 433.8).
SHAPE_VARIANTS = [dict(), dict(MODE=1), dict(MODE=2), dict(PAIR=True, REGS=120, S=4, NSTG=2), dict(NSTG=2)]
SHAPE_VARIANTS = SHAPE_VARIANTS[:int(os.environ.get("GLUON_SHAPES_V", len(SHAPE_VARIANTS)))]  # 1: the default only
if os.environ.get("GLUON_SHAPE_VARIANTS"):  # a JSON list of GluonLaunch field sets instead, e.g. '[{}, {"KR": true}]'
    SHAPE_VARIANTS = json.loads(os.environ["GLUON_SHAPE_VARIANTS"])
SHAPES_SHORT = [(4096, 8, 4, 1), (4096, 8, 4, 8), (8192, 8, 4, 1), (8192, 8, 4, 8), (4096, 32, 16, 1),
                (4096, 32, 16, 8), (8192, 32, 16, 1), (8192, 32, 16, 8), (32768, 8, 4, 8), (32768, 32, 16, 8),
                (32768, 32, 16, 1), (32768, 8, 4, 1)][:int(os.environ.get("GLUON_SHAPES_N", "11"))]  # the first N
if os.environ.get("GLUON_SHAPES"):  # "T,H,Hg,seqs;…" instead
    SHAPES_SHORT = [tuple(int(x) for x in sh.split(",")) for sh in os.environ["GLUON_SHAPES"].split(";")]


def shape_sweep(out: str) -> int:
    """Stock, the Triton kernel and the Gluon kernel under each of SHAPE_VARIANTS at every shape (A written, default
    precision bf16x3/bf16x3+tf32): CUDA-graph µs, errors vs fp64; MODE 1 / 2 rows time one partition alone."""
    import dataclasses

    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_overlap import events_us

    from sglang_trinv import ops
    from sglang_trinv.benchmarks import common
    from sglang_trinv.benchmarks import kernels as bk
    from sglang_trinv.reference import gdn as ref

    diag, merge = ops.split_precision("blockdoubling", None)
    meta = common.run_meta("cuda", dtype="bfloat16", precision=f"{diag}/{merge}")
    rows = []
    md = common.md_header("Gluon intra launch variants per shape (A written)", meta,
                          "CUDA-graph µs; ratio = stock / row; errors max-rel vs fp64 of w/u/A; MODE 1 / 2: one "
                          "partition alone (outputs not checked); stock's autotuner reset before each shape "
                          "(benchmarks.kernels.retune_stock; from session 12 call 4)")
    md += ["| T | H | seqs | call | µs | stock / call | err w/u/A |", "|---|---|---|---|---|---|---|"]
    for T, H, Hg, nseq in SHAPES_SHORT:
        a = bk.make_inputs(T, H, Hg, 128, 128, nseq, 0)
        k, v, g, beta, cu = a["k"], a["v"], a["g"], a["beta"], a["cu_seqlens"]
        ci = ops.prepare_chunk_indices(cu, 64) if cu is not None else None
        ref64 = ref.fwd_intra(k, v, g, beta, cu)
        bufs = (k.new_empty(1, T, H, 128), torch.empty_like(v), k.new_empty(1, T, H, 64), None)
        bk.retune_stock()  # stock tunes per head count, not per T: let it pick its best at this shape
        calls = {"stock": lambda: bk.stock_intra(k, v, g, beta, cu, ci),
                 "triton": lambda: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, backend="triton")}
        if cu is not None:  # varlen: the Triton template without the chunk table (chunk_indices → cu_seqlens)
            calls["triton, no chunk table"] = lambda: ops.gdn_fwd_intra(
                k, v, g, beta, cu, ci, backend="triton",
                tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, chunk_table=False))
        calls["triton, chunks fastest"] = lambda: ops.gdn_fwd_intra(  # grid (chunks, heads): before session 15
            k, v, g, beta, cu, ci, backend="triton",
            tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, heads_fastest=False))
        for kw in SHAPE_VARIANTS:  # a "precision" key ("DIAG/MERGE") times that variant at that precision
            name = "gluon " + (" ".join(f"{n}={x}" for n, x in kw.items()) or "default")
            kw = dict(kw)
            d, m = ops.split_precision("blockdoubling", kw.pop("precision", None))
            calls[name] = lambda kw=kw, d=d, m=m: run_variant(k, v, g, beta, bufs, cu, ci, diag=d, merge=m, **kw)
        stock_us, first = None, {}
        for name, f in calls.items():
            for x in bufs[:3]:
                x.zero_()
            try:
                res = f()
                torch.cuda.synchronize()
            except Exception as ex:  # noqa: BLE001 - a variant this launch cannot take: say so, go on
                md.append(f"| {T} | {H} | {nseq} | {name} | failed: {type(ex).__name__}: {str(ex)[:120]} | | |")
                print(md[-1], flush=True)
                continue
            checked = "MODE" not in name
            e = "/".join(f"{bk.rel_err(x, x64)['max_rel']:.1e}" for x, x64 in zip(res, ref64)) if checked else "–"
            finite = all(bool(torch.isfinite(x.float()).all()) for x in res) if checked else None
            # bitwise against the first row of its backend and precision (Triton / Gluon default): variants must
            # not change outputs
            fam = name.split()[0].rstrip(",") + "".join(x for x in name.split()
                                                        if x.startswith(("precision=", "store_A=")))
            diff = None
            if checked and fam in first:
                diff = max(float((x.float() - y.float()).abs().max()) for x, y in zip(res, first[fam]))
            elif checked:
                first[fam] = [x.clone() for x in res]
            us = events_us(f)
            stock_us = us if name == "stock" else stock_us
            rows.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, call=name, us=us, err=e, finite=finite, maxdiff=diff))
            md.append(f"| {T} | {H} | {nseq} | {name} | {us:.1f} | {stock_us / us:.2f}× | {e} |"
                      + (f" maxdiff {diff:.1e} |" if diff is not None else ""))
            print(rows[-1], flush=True)
        with open(os.path.join(out, "gluon_shapes.json"), "w") as fh:
            json.dump(dict(meta=meta, rows=rows), fh, indent=1)
        with open(os.path.join(out, "gluon_shapes.md"), "w") as fh:
            fh.write("\n".join(md) + "\n")
        del ref64
        torch.cuda.empty_cache()
    print("\n".join(md))
    return 0 if all(r["finite"] is not False for r in rows) else 1


def varlen_check(out: str) -> int:
    """Where varlen time goes (T=8192 H=32, 1 and 8 sequences): the kernel, each partition alone, the plugin's
    pipeline launch (cumsum in, no A), beside Triton and stock."""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_overlap import events_us

    from sglang_trinv import ops
    from sglang_trinv.benchmarks import common
    from sglang_trinv.benchmarks import kernels as bk

    rows = []
    for nseq in (1, 8):
        a = bk.make_inputs(8192, 32, 16, 128, 128, nseq, 0)
        k, v, g, beta, g_raw = a["k"], a["v"], a["g"], a["beta"], a["g_raw"]
        T, H = k.shape[1], v.shape[2]
        cu = a["cu_seqlens"] if nseq > 1 else torch.tensor([0, T], device=k.device, dtype=torch.int64)
        ci = ops.prepare_chunk_indices(cu, 64)
        bufs = (k.new_empty(1, T, H, 128), torch.empty_like(v), k.new_empty(1, T, H, 64),
                torch.empty(beta.shape, device=k.device))
        calls = [("gluon varlen", lambda: run_variant(k, v, g, beta, bufs, cu, ci)),
                 ("gluon varlen, no A (double-buffered panels)",
                  lambda: run_variant(k, v, g, beta, bufs, cu, ci, store_A=False)),
                 ("gluon varlen, no A, single-buffered",
                  lambda: run_variant(k, v, g, beta, bufs, cu, ci, store_A=False, DB=False)),
                 ("gluon varlen MODE=1", lambda: run_variant(k, v, g, beta, bufs, cu, ci, MODE=1)),
                 ("gluon varlen MODE=2", lambda: run_variant(k, v, g, beta, bufs, cu, ci, MODE=2)),
                 ("gluon varlen pipeline (cumsum, no A)",
                  lambda: run_variant(k, v, g_raw, beta, bufs, cu, ci, store_A=False, cumsum=True)),
                 ("gluon varlen pipeline MODE=1", lambda: run_variant(k, v, g_raw, beta, bufs, cu, ci, store_A=False,
                                                                      cumsum=True, MODE=1)),
                 ("gluon varlen pipeline, cumsum by one scan (CS=1)",
                  lambda: run_variant(k, v, g_raw, beta, bufs, cu, ci, store_A=False, cumsum=True, CS=1)),
                 ("gluon varlen pipeline CS=1 MODE=1", lambda: run_variant(k, v, g_raw, beta, bufs, cu, ci,
                                                                           store_A=False, cumsum=True, CS=1, MODE=1)),
                 ("gluon varlen pipeline MODE=2", lambda: run_variant(k, v, g_raw, beta, bufs, cu, ci, store_A=False,
                                                                      cumsum=True, MODE=2)),
                 ("triton intra", lambda: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, backend="triton")),
                 ("triton pipeline (cumsum, no A)",
                  lambda: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu, ci, backend="triton")),
                 ("stock intra", lambda: bk.stock_intra(k, v, g, beta, cu, ci))]
        if nseq == 1:
            calls.insert(0, ("gluon one sequence (not varlen)", lambda: run_variant(k, v, g, beta, bufs)))
            calls.insert(1, ("gluon one sequence, no A", lambda: run_variant(k, v, g, beta, bufs, store_A=False)))
            # session 8: without cu_seqlens the pipeline measured 120.5 µs (bench host, graphs) vs 109.0 with them
            calls.insert(2, ("gluon pipeline, one sequence not varlen",
                             lambda: run_variant(k, v, g_raw, beta, bufs, store_A=False, cumsum=True)))
            calls.insert(3, ("triton pipeline, one sequence not varlen",
                             lambda: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, backend="triton")))
        for name, f in calls:
            rows.append(dict(nseq=nseq, call=name, us=events_us(f)))
            print(rows[-1], flush=True)
    meta = common.run_meta("cuda", dtype="bfloat16")
    md = common.md_header("Gluon intra, varlen time", meta, "T=8192 H=32 Hg=16 bf16; CUDA-graph µs per call.")
    md += ["| seqs | call | µs |", "|---|---|---|"] + [f"| {r['nseq']} | {r['call']} | {r['us']:.1f} |" for r in rows]
    return common.write_report(out, "gluon_varlen", meta, rows, md)


def varlen_diag(out: str) -> int:
    """Where the varlen penalty sits (session 9: T=8192 H=32, one sequence given as cu_seqlens, 113.4 µs vs 102.5
    without): the default launch with and without cu_seqlens, each partition alone, the Triton kernel, at the
    shapes where varlen is short of 1.8×. Default precision, CUDA-graph µs. (Session 12 call 1 also timed a
    diagnostic launch with the masked-store branches compiled out — GluonLaunch.VX, commit 49da107, removed once
    the masked w/u stores were fixed.)"""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_overlap import events_us

    from sglang_trinv import ops
    from sglang_trinv.benchmarks import common
    from sglang_trinv.benchmarks import kernels as bk

    diag, merge = ops.split_precision("blockdoubling", None)
    rows = []
    for T, H, Hg, nseq in ((8192, 32, 16, 1), (8192, 32, 16, 8), (32768, 32, 16, 8), (32768, 8, 4, 8)):
        a = bk.make_inputs(T, H, Hg, 128, 128, nseq, 0)
        k, v, g, beta = a["k"], a["v"], a["g"], a["beta"]
        cu = a["cu_seqlens"] if nseq > 1 else torch.tensor([0, T], device=k.device, dtype=torch.int64)
        ci = ops.prepare_chunk_indices(cu, 64)
        bufs = (k.new_empty(1, T, H, 128), torch.empty_like(v), k.new_empty(1, T, H, 64), None)
        run = lambda **kw: run_variant(k, v, g, beta, bufs, cu, ci, diag=diag, merge=merge, **kw)  # noqa: E731
        calls = [("stock intra", lambda: bk.stock_intra(k, v, g, beta, a["cu_seqlens"], ci if nseq > 1 else None)),
                 ("gluon varlen", lambda: run())]
        if nseq == 1:
            calls.append(("gluon not varlen", lambda: run_variant(k, v, g, beta, bufs, diag=diag, merge=merge)))
        calls += [("gluon varlen, no A", lambda: run(store_A=False)),
                  ("gluon varlen MODE=1", lambda: run(MODE=1)), ("gluon varlen MODE=2", lambda: run(MODE=2)),
                  ("triton", lambda: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, backend="triton"))]
        for name, f in calls:
            rows.append(dict(T=T, H=H, nseq=nseq, call=name, us=events_us(f)))
            print(rows[-1], flush=True)
        del bufs
        torch.cuda.empty_cache()
    meta = common.run_meta("cuda", dtype="bfloat16", precision=f"{diag}/{merge}")
    md = common.md_header("Gluon intra, varlen penalty", meta,
                          "bf16, K=V=128, A written unless noted; CUDA-graph µs per call.")
    md += ["| T | H | seqs | call | µs |", "|---|---|---|---|---|"]
    md += [f"| {r['T']} | {r['H']} | {r['nseq']} | {r['call']} | {r['us']:.1f} |" for r in rows]
    return common.write_report(out, "gluon_varlen_diag", meta, rows, md)


def ncu_launches() -> int:
    """One profiled launch each (for ncu, `--profile-from-start off`): inverters alone (MODE 1), the whole
    kernel, and the Triton inverse-only kernel at T=8192 H=32 (GLUON_NCU_SHAPE="T,H,Hg" another shape; any but the
    default, or GLUON_NCU_STREAMERS=1, adds the streamers alone, MODE 2, between them and the Triton fused intra kernel
    at the end)."""
    import torch

    from sglang_trinv import ops
    from sglang_trinv.benchmarks import kernels as bk

    T, H, Hg = (int(x) for x in os.environ.get("GLUON_NCU_SHAPE", "8192,32,16").split(","))
    other = (T, H, Hg) != (8192, 32, 16) or os.environ.get("GLUON_NCU_STREAMERS") == "1"
    diag, merge = ops.split_precision("blockdoubling", None)  # the default precision
    a = bk.make_inputs(T, H, Hg, 128, 128, 1, 0)
    k, v, g, beta = a["k"], a["v"], a["g"], a["beta"]
    T, H = k.shape[1], v.shape[2]
    bufs = (k.new_empty(1, T, H, 128), torch.empty_like(v), k.new_empty(1, T, H, 64), None)
    for prof in (False, True):
        if prof:
            torch.cuda.synchronize()
            torch.cuda.cudart().cudaProfilerStart()
        run_variant(k, v, g, beta, bufs, diag=diag, merge=merge, MODE=1)
        if other:
            run_variant(k, v, g, beta, bufs, diag=diag, merge=merge, MODE=2)
        run_variant(k, v, g, beta, bufs, diag=diag, merge=merge)
        ops.gdn_kkt_inverse(k, g, beta)
        if other:
            ops.gdn_fwd_intra(k, v, g, beta, backend="triton")
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--gpu":
        sys.exit(gpu_check(sys.argv[2]))
    if len(sys.argv) > 2 and sys.argv[1] == "--varlen":
        sys.exit(varlen_check(sys.argv[2]))
    if len(sys.argv) > 2 and sys.argv[1] == "--varlen-diag":
        sys.exit(varlen_diag(sys.argv[2]))
    if len(sys.argv) > 2 and sys.argv[1] == "--shapes":
        os.makedirs(sys.argv[2], exist_ok=True)
        sys.exit(shape_sweep(sys.argv[2]))
    if len(sys.argv) > 1 and sys.argv[1] == "--ncu":
        sys.exit(ncu_launches())
    import triton

    print(f"Triton {triton.__version__}, sm_90")
    for kw in [dict(), dict(varlen=True), dict(varlen=True, g_cumsum=True, store_A=False),
               dict(merge_precision="bf16x3"), dict(launch=gi.GluonLaunch(G=1))]:
        print(kw, gi.compile_report(**kw), flush=True)
