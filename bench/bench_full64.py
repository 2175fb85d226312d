"""One [64, 64] doubling tile per 4-warp program (``Tuning(full64=True)``) vs the one-warp 10-tile Triton kernel,
the Gluon kernel and SGLang's stock kernels, every issue shape (issue 3: intra ≥ 1.8× at the small shapes).

Why: at 8 heads and T ≤ 8192 the one-warp grid is about one wave (T=4096 H=8: 512 programs for 1056 slots), so a
chunk's latency, not an SM's throughput, sets the time, and a one-warp program's 16×16 products cannot spread over
more warps (2 / 4 warps measured 1.06–2.12× slower). The whole-matrix formulation does each doubling level as one
[64, 64] product (4 warps: wgmma), at the price of multiplying the zero blocks too.

Rows per shape: fused KKᵀ + inverse (stock kkt_solve, ours default, full64 variants), intra with A written (stock,
ours default, Gluon, full64 variants), the plugin's pipeline launch (cumsum in, no A: Triton default, Gluon CS=1,
full64). CUDA-graph µs (no host time) and max-rel error vs fp64 for every row; at T=8192 H=32 also the two
adversarial families.

    python bench/bench_full64.py OUT_DIR            # GPU
    python bench/bench_full64.py OUT_DIR --smoke    # CPU interpreter, one tiny shape, each call once (no timing)
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SMOKE = "--smoke" in sys.argv
if SMOKE:
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()
import torch  # noqa: E402

from sglang_trinv import ops  # noqa: E402
from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.benchmarks import kernels as bk  # noqa: E402
from sglang_trinv.reference import gdn as ref  # noqa: E402

T_ = ops.Tuning
FULL = {  # name -> tuning (sm_90 compile with Triton 3.6: 182–194 registers at 4 warps, no spills, 2 programs/SM)
    "f64 nw4 BK64 BV64 st2": T_(num_warps=4, BK=64, BV=64, num_stages=2, full64=True),
    "f64 nw4 BK64 BV32 st3": T_(num_warps=4, BK=64, BV=32, num_stages=3, full64=True),
    "f64 nw4 BK128 BV128 st1": T_(num_warps=4, BK=128, BV=128, num_stages=1, full64=True),
    "f64 nw8 BK64 BV64 st2": T_(num_warps=8, BK=64, BV=64, num_stages=2, full64=True),
    "f64 nw4 G2 BK64 BV64 st2": T_(num_warps=4, group=2, BK=64, BV=64, num_stages=2, full64=True),
}
FULL_INV = {"f64 nw4 BK64 st2": T_(num_warps=4, BK=64, num_stages=2, full64=True),
            "f64 nw4 BK128 st1": T_(num_warps=4, BK=128, num_stages=1, full64=True)}
FULL_PIPE = {n: FULL[n] for n in ("f64 nw4 BK64 BV64 st2", "f64 nw4 BK64 BV32 st3")}
if SMOKE:
    SHAPES = [(150, 4, 2, 1), (150, 4, 2, 3)]
    FAMILIES = [(150, 4, 2, 1)]
    bk.DEV = "cpu"
else:
    SHAPES = [(T, H, Hg, n) for T in (4096, 8192, 32768) for H, Hg in ((8, 4), (32, 16)) for n in (1, 8)]
    FAMILIES = [(8192, 32, 16, 1)]


def timed(f):
    if SMOKE:
        return float("nan")
    from bench_overlap import events_us

    return events_us(f)


def run_shape(T, H, Hg, nseq, family, rows):
    a = bk.make_inputs(T, H, Hg, 128 if not SMOKE else 32, 128 if not SMOKE else 16, nseq, 0, family=family)
    k, v, g, beta, g_raw, cu = a["k"], a["v"], a["g"], a["beta"], a["g_raw"], a["cu_seqlens"]
    cu_p = cu if cu is not None else torch.tensor([0, T], device=k.device, dtype=torch.int64)
    ci = ops.prepare_chunk_indices(cu, 64) if cu is not None else None
    ci_p = ops.prepare_chunk_indices(cu_p, 64)
    w64, u64, A64 = ref.fwd_intra(k, v, g, beta, cu)
    gluon = not SMOKE and ops.gluon_reason(k, v, g, beta) is None
    calls = {  # kind, name -> call returning (w, u, A) with None where the call has no such output
        ("inverse", "stock"): lambda: (None, None, bk.stock_kkt_solve(k, g, beta, cu, ci)),
        ("inverse", "ours default"): lambda: (None, None, ops.gdn_kkt_inverse(k, g, beta, cu, ci)),
        **{("inverse", n): (lambda tu=tu: (None, None, ops.gdn_kkt_inverse(k, g, beta, cu, ci, tuning=tu)))
           for n, tu in FULL_INV.items()},
        ("intra", "stock"): lambda: bk.stock_intra(k, v, g, beta, cu, ci),
        ("intra", "triton default"): lambda: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, backend="triton"),
        **({("intra", "gluon"): lambda: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, backend="gluon")} if gluon else {}),
        **{("intra", n): (lambda tu=tu: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, tuning=tu, backend="triton"))
           for n, tu in FULL.items()},
        ("pipeline", "triton default"): lambda: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_p, ci_p,
                                                                         backend="triton")[1:],
        **({("pipeline", "gluon"): lambda: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_p, ci_p,
                                                                    backend="gluon")[1:]} if gluon else {}),
        **{("pipeline", n): (lambda tu=tu: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_p, ci_p, tuning=tu,
                                                                    backend="triton")[1:])
           for n, tu in FULL_PIPE.items()},
    }
    if family != "random":  # the adversarial families: errors of the intra rows only
        calls = {key: f for key, f in calls.items() if key[0] == "intra"}
    for (kind, name), f in calls.items():
        w, u, A = f()
        if not SMOKE:
            torch.cuda.synchronize()
        e = {f"err_{n}": (bk.rel_err(x, x64)["max_rel"] if x is not None else None)
             for n, x, x64 in (("w", w, w64), ("u", u, u64), ("A", A, A64))}
        finite = all(bool(torch.isfinite(x.float()).all()) for x in (w, u, A) if x is not None)
        us = timed(f) if family == "random" else None
        rows.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, family=family, kind=kind, call=name, us=us, **e, finite=finite))
        print(rows[-1], flush=True)


def markdown(meta, rows) -> list[str]:
    lines = common.md_header("Whole-matrix (full64) doubling vs the 10-tile kernel, CUDA-graph µs", meta,
                             "ratio = stock µs / row µs of the same kind and shape; errors max-rel vs fp64")
    lines += ["| T | H | seqs | kind | call | µs | vs stock | err w | err u | err A |", "|---|---|---|---|---|---|---|---|---|---|"]
    stock = {(r["T"], r["H"], r["nseq"], r["kind"]): r["us"] for r in rows if r["call"] == "stock"}
    fmt = lambda x: "–" if x is None else f"{x:.2e}"  # noqa: E731
    for r in rows:
        if r["family"] != "random":
            continue
        s = stock.get((r["T"], r["H"], r["nseq"], "intra" if r["kind"] == "pipeline" else r["kind"]))
        ratio = f"{s / r['us']:.2f}×" if s and r["us"] else "–"
        lines.append(f"| {r['T']} | {r['H']} | {r['nseq']} | {r['kind']} | {r['call']} | {r['us']:.1f} | {ratio} | "
                     f"{fmt(r['err_w'])} | {fmt(r['err_u'])} | {fmt(r['err_A'])} |")
    lines += ["", "Adversarial families (T=8192 H=32, intra rows): errors", "",
              "| family | call | err w | err u | err A | finite |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["family"] != "random":
            lines.append(f"| {r['family']} | {r['call']} | {fmt(r['err_w'])} | {fmt(r['err_u'])} | "
                         f"{fmt(r['err_A'])} | {r['finite']} |")
    return lines


def main(out: str) -> int:
    os.makedirs(out, exist_ok=True)
    meta = common.run_meta(bk.DEV if SMOKE else "cuda", dtype="float32" if SMOKE else "bfloat16")
    rows = []
    for T, H, Hg, nseq in SHAPES:
        run_shape(T, H, Hg, nseq, "random", rows)
        if not SMOKE:
            torch.cuda.empty_cache()
        with open(os.path.join(out, "full64.json"), "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
    for T, H, Hg, nseq in FAMILIES:
        for fam in ("identical_keys", "beta_1_2"):
            run_shape(T, H, Hg, nseq, fam, rows)
    with open(os.path.join(out, "full64.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    md = markdown(meta, rows)
    with open(os.path.join(out, "full64.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    bad = [r for r in rows if not r["finite"] and r["call"] != "stock"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
