"""The inverse-only kernels' precision (issue 3, "error ≤ stock on every family"): `gdn_kkt_inverse` /
`solve_tril` defaulted to `bf16x3/tf32` (bf16x3 diagonal tiles, tf32 merges), whose A on β ∈ (1, 2] was 1.6 % above
stock's in s13. Triton's tf32 dots truncate their operands; `tf32r` rounds them to nearest in the kernel first
(emulated on the CPU: half the A error). Here, on the GPU, in one run: the adversarial families' A error over
several draws (T=4096 H=8, as `bench kernels`), then the 12 benchmark shapes — stock's fused kkt+solve (re-tuned
per shape) against `gdn_kkt_inverse` at each precision; the stand-alone `solve_tril` (fp32 A in and out) at each
of INV_SOLVE_PRECISIONS against FLA 0.6.0's (its reference, where installed) on the same families and shapes.
CUDA-graph µs; errors max|A − A64| / max|A64| vs the fp64 twin.

    python bench/bench_inverse_precision.py OUT_DIR                 # GPU
    INV_PRECISIONS=bf16x3/tf32,bf16x3/tf32r INV_SEEDS=3,4,5 python bench/bench_inverse_precision.py OUT_DIR
"""
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_overlap import events_us  # noqa: E402

from sglang_trinv import ops  # noqa: E402
from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.benchmarks import kernels as bk  # noqa: E402
from sglang_trinv.reference import gdn as ref  # noqa: E402

DEFAULT = "/".join(ops.split_precision("blockdoubling", None, fused=False))
PRECISIONS = os.environ.get("INV_PRECISIONS", f"{DEFAULT},bf16x3/tf32r,bf16x3/bf16x3+tf32,bf16x3").split(",")
SEEDS = [int(x) for x in os.environ.get("INV_SEEDS", "3,4,5,6,7,8,9,10").split(",")]
SHAPES = [(T, H, Hg, n) for T in (4096, 8192, 32768) for H, Hg in ((8, 4), (32, 16)) for n in (1, 8)]
SOLVE_PRECISIONS = os.environ.get("INV_SOLVE_PRECISIONS", "bf16x3/tf32,bf16x3/tf32r,bf16x3,tf32x3,ieee").split(",")
CALLS = ["stock"] + PRECISIONS


def fla_solve():
    """FLA 0.6.0's solve_tril, or None where FLA is not installed."""
    try:
        from fla.ops.utils.solve_tril import solve_tril
    except Exception as e:  # noqa: BLE001 - report, time ours alone
        print(f"no FLA solve_tril: {type(e).__name__}: {e}", flush=True)
        return None
    return solve_tril


def solve_calls(A_in, cu, ci):
    """name -> call of the stand-alone solves (fp32 A in, fp32 out)."""
    calls = {}
    fla = fla_solve()
    if fla is not None:
        calls["solve fla-0.6.0"] = lambda: fla(A_in, cu_seqlens=cu, output_dtype=torch.float)
    for p in SOLVE_PRECISIONS:
        calls[f"solve {p}"] = lambda p=p: ops.solve_tril(A_in, cu, ci, precision=p)
    return calls


def err(A, A64) -> float:
    return bk.rel_err(A, A64)["max_rel"]


def main(out: str) -> int:
    os.makedirs(out, exist_ok=True)
    meta = common.run_meta(bk.DEV, dtype="bfloat16", precisions=PRECISIONS, default=DEFAULT)
    rows = []
    for fam, seed in [(f, s) for f in ("identical_keys", "beta_1_2") for s in SEEDS]:
        inp = bk.make_inputs(4096, 8, 4, 128, 128, 1, seed, family=fam)
        k, g, beta = inp["k"], inp["g"], inp["beta"]
        A64 = ref.chunk_inverse(k, g, beta)
        for name in CALLS:
            A = bk.stock_kkt_solve(k, g, beta, None, None) if name == "stock" else ops.gdn_kkt_inverse(
                k, g, beta, precision=name)
            rows.append(dict(kind="family", family=fam, seed=seed, call=name, err=err(A, A64),
                             finite=bool(torch.isfinite(A.float()).all())))
        for name, f in solve_calls(bk.fla_kkt_A(k, g, beta, None), None, None).items():
            A = f()
            rows.append(dict(kind="family", family=fam, seed=seed, call=name, err=err(A, A64),
                             finite=bool(torch.isfinite(A.float()).all())))
        print(fam, seed, {r["call"]: f"{r['err']:.2e}" for r in rows if r["seed"] == seed and r.get("family") == fam},
              flush=True)
    for T, H, Hg, n in SHAPES:
        inp = bk.make_inputs(T, H, Hg, 128, 128, n, 0)
        k, g, beta, cu = inp["k"], inp["g"], inp["beta"], inp["cu_seqlens"]
        ci = ops.prepare_chunk_indices(cu, 64) if cu is not None else None
        A64 = ref.chunk_inverse(k, g, beta, cu)
        if bk.DEV == "cuda":
            bk.retune_stock()
        calls = {"stock": lambda: bk.stock_kkt_solve(k, g, beta, cu, ci)}
        for p in PRECISIONS:
            calls[p] = lambda p=p: ops.gdn_kkt_inverse(k, g, beta, cu, ci, precision=p)
        calls.update(solve_calls(bk.fla_kkt_A(k, g, beta, cu), cu, ci))
        stock_us = None
        for name, f in calls.items():
            A = f()
            if bk.DEV == "cuda":
                torch.cuda.synchronize()
            us = events_us(f)
            stock_us = us if name in ("stock", "solve fla-0.6.0") else stock_us
            rows.append(dict(kind="shape", T=T, H=H, Hg=Hg, nseq=n, call=name, us=us, ratio=stock_us / us,
                             err=err(A, A64), finite=bool(torch.isfinite(A.float()).all())))
            print(f"T={T} H={H} seqs={n} {name:24s} {us:7.1f} µs  {stock_us / us:.2f}×  A err {rows[-1]['err']:.2e}",
                  flush=True)
        del A64, inp
        if bk.DEV == "cuda":
            torch.cuda.empty_cache()
        common.save_results(out, "inverse_precision", meta, rows)
    md = common.md_header("Inverse-only kernels (gdn_kkt_inverse, solve_tril): precisions side by side", meta,
                          f"bf16, K=128; default {DEFAULT}; CUDA-graph µs; stock (fused kkt+solve) re-tuned per "
                          "shape; errors max-rel of A vs fp64")
    md += ["## Adversarial families (T=4096, H=8/4), over the draws", "",
           "| family | call | A err median / max | ≤ stock (draws) | finite |", "|---|---|---|---|---|"]
    fam = [r for r in rows if r["kind"] == "family"]
    for f in ("identical_keys", "beta_1_2"):
        stock = {r["seed"]: r["err"] for r in fam if r["family"] == f and r["call"] == "stock"}
        for c in dict.fromkeys(r["call"] for r in fam):
            sel = [r for r in fam if r["family"] == f and r["call"] == c]
            xs = [r["err"] for r in sel]
            wins = sum(r["err"] <= stock[r["seed"]] for r in sel)
            md.append(f"| {f} | {c} | {statistics.median(xs):.2e} / {max(xs):.2e} | {wins}/{len(sel)} | "
                      f"{all(r['finite'] for r in sel)} |")
    md += ["", "(solve rows: fp32 A in and out, ≤ stock = ≤ SGLang's fused kernel's bf16 A of the same draw)", "",
           "## Shapes (solve rows: the ratio is against FLA's solve_tril where it ran)", "",
           "| T | H | seqs | call | µs | stock / call | A err |", "|---|---|---|---|---|---|---|"]
    md += [f"| {r['T']} | {r['H']} | {r['nseq']} | {r['call']} | {r['us']:.1f} | {r['ratio']:.2f}× | {r['err']:.2e} |"
           for r in rows if r["kind"] == "shape"]
    return common.write_report(out, "inverse_precision", meta, rows, md)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
