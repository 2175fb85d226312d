"""A chunk's two 32-row halves on two warps (``Tuning(halves=True)``) vs the one-warp Triton kernel and stock, at
the shapes where one (chunk, head) per warp fills about one wave (issue 3: intra ≥ 1.8× there; session 11's ncu
put their time on one warp's dependency chain). Intra with A written (the drop-in), and the plugin's pipeline
launch (cumsum in, no A: the whole forward at T=8192 H=8). CUDA-graph µs and max-rel errors vs fp64 per row.

    python bench/bench_halves.py OUT_DIR            # GPU
    python bench/bench_halves.py OUT_DIR --smoke    # CPU interpreter, tiny shape, each call once (no timing)
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
# sm_90 compile (Triton 3.6, H=8): BK64 BV32 st3 222 registers no spills; BK32 BV16 st3 178; BK64 BV64 st2 255 + 24 B
HALVES = {"halves BK64 BV32 st3": T_(num_warps=2, BK=64, BV=32, num_stages=3, halves=True),
          "halves BK32 BV16 st3": T_(num_warps=2, BK=32, BV=16, num_stages=3, halves=True),
          "halves BK64 BV64 st2": T_(num_warps=2, BK=64, BV=64, num_stages=2, halves=True)}
PIPE = {n: HALVES[n] for n in ("halves BK64 BV32 st3", "halves BK32 BV16 st3")}
if SMOKE:
    bk.DEV = "cpu"
    SHAPES, KV = [(150, 4, 2, 1), (150, 4, 2, 3)], (32, 16)
else:
    SHAPES, KV = [(4096, 8, 4, 1), (4096, 8, 4, 8), (8192, 8, 4, 1), (8192, 8, 4, 8), (4096, 32, 16, 1),
                  (4096, 32, 16, 8)], (128, 128)


def timed(f):
    if SMOKE:
        return float("nan")
    from bench_overlap import events_us

    return events_us(f)


def main(out: str) -> int:
    os.makedirs(out, exist_ok=True)
    meta = common.run_meta(bk.DEV if SMOKE else "cuda", dtype="float32" if SMOKE else "bfloat16")
    rows = []
    md = common.md_header("Two warps per chunk (halves) vs one, CUDA-graph µs", meta,
                          "ratio = stock intra / row; errors max-rel vs fp64 (w/u/A)")
    md += ["| T | H | seqs | kind | call | µs | stock / call | err w/u/A |", "|---|---|---|---|---|---|---|---|"]
    for T, H, Hg, nseq in SHAPES:
        a = bk.make_inputs(T, H, Hg, KV[0], KV[1], nseq, 0)
        k, v, g, beta, g_raw, cu = a["k"], a["v"], a["g"], a["beta"], a["g_raw"], a["cu_seqlens"]
        cu_p = cu if cu is not None else torch.tensor([0, T], device=k.device, dtype=torch.int64)
        ci = ops.prepare_chunk_indices(cu, 64) if cu is not None else None
        ci_p = ops.prepare_chunk_indices(cu_p, 64)
        ref64 = ref.fwd_intra(k, v, g, beta, cu)
        calls = {("intra", "stock"): lambda: bk.stock_intra(k, v, g, beta, cu, ci),
                 ("intra", "triton default"): lambda: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, backend="triton")}
        for n, tu in HALVES.items():
            calls[("intra", n)] = lambda tu=tu: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, tuning=tu, backend="triton")
        calls[("pipeline", "triton default")] = lambda: ops.gdn_cumsum_fwd_intra(
            k, v, g_raw, beta, cu_p, ci_p, backend="triton")[1:]
        for n, tu in PIPE.items():
            calls[("pipeline", n)] = lambda tu=tu: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_p, ci_p, tuning=tu,
                                                                            backend="triton")[1:]
        stock_us = None
        for (kind, name), f in calls.items():
            res = f()
            if not SMOKE:
                torch.cuda.synchronize()
            errs = [bk.rel_err(x, x64)["max_rel"] if x is not None else None for x, x64 in zip(res, ref64)]
            finite = all(bool(torch.isfinite(x.float()).all()) for x in res if x is not None)
            us = timed(f)
            stock_us = us if name == "stock" else stock_us
            rows.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, kind=kind, call=name, us=us, err_w=errs[0], err_u=errs[1],
                             err_A=errs[2], finite=finite))
            e = "/".join("–" if x is None else f"{x:.1e}" for x in errs)
            md.append(f"| {T} | {H} | {nseq} | {kind} | {name} | {us:.1f} | {stock_us / us:.2f}× | {e} |")
            print(rows[-1], flush=True)
        with open(os.path.join(out, "halves.json"), "w") as fh:
            json.dump(dict(meta=meta, rows=rows), fh, indent=1)
        with open(os.path.join(out, "halves.md"), "w") as fh:
            fh.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if all(r["finite"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
