"""Launch shape per problem size (issue 3, "intra ≥ 1.8× at every shape"): the Triton fused intra kernel was tuned
at T=8192 H=32 only (one warp per (chunk, head) program, 8 programs per SM, 8 waves). At the small shapes the
grid is about one wave (T=4096 H=8: 512 programs for 1056 slots), so per-program latency, not throughput, sets the
time; more warps per program (fewer resident programs) may win there. Times, in one run on one GPU, every issue
shape: stock intra; our Triton kernel at num_warps 1 / 2 (A written, as the drop-in; 4 warps and BV=64 were
measured slower, see TUNINGS);
the plugin's pipeline launch (cumsum in, no A) on Triton (num_warps 1 / 2) and on the Gluon kernel (cumsum by
masked sums CS=0 / by one scan CS=1). CUDA-graph µs; errors vs fp64 for every row.

    python bench/bench_wave_tuning.py OUT_DIR          # GPU
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_overlap import events_us  # noqa: E402

from sglang_trinv import ops  # noqa: E402
from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.benchmarks import kernels as bk  # noqa: E402
from sglang_trinv.ops import gluon_intra as gi  # noqa: E402
from sglang_trinv.reference import gdn as ref  # noqa: E402

SHAPES = [(T, H, Hg, n) for T in (4096, 8192, 32768) for H, Hg in ((8, 4), (32, 16)) for n in (1, 8)]
# Measured 2026-11-27 (H200, bench/results/2026-11-27-h200-s8/wave_tuning.md, T=4096 shapes — the call's time
# limit ended the sweep there): one warp with BV=32, 3 stages was fastest at all four; 2 warps 1.06–1.40× slower,
# 4 warps 1.85–2.12× slower, BV=64 2 stages 5–14% slower. Registers stay at 255 per thread with more warps (Triton
# 3.6 sm_90 compile), so 2 warps only halve the resident programs. The sweep is kept to the two one/two-warp rows.
TUNINGS = {f"nw{nw} BV32 st3": ops.Tuning(num_warps=nw, BV=32, num_stages=3) for nw in (1, 2)}
PIPE_TUNINGS = {f"nw{nw}": ops.Tuning(num_warps=nw, BV=32, num_stages=3) for nw in (1, 2)}
# Two one-warp programs per (chunk, head), both inverting, one writing u and the other w (Tuning.split=2, taken out
# again), were slower at every shape (H200, 2026-11-27 session 9: T=4096 H=8 20.6 vs 18.1 µs, H=32 94.2 vs 66.5;
# T=8192 H=32 188.9 vs 129.3): the second inversion costs more than the halved w/u stream saves.


def main(out: str) -> int:
    meta = common.run_meta("cuda", dtype="bfloat16")
    rows = []
    for T, H, Hg, nseq in SHAPES:
        a = bk.make_inputs(T, H, Hg, 128, 128, nseq, 0)
        k, v, g, beta, g_raw, cu = a["k"], a["v"], a["g"], a["beta"], a["g_raw"], a["cu_seqlens"]
        # the pipeline as SGLang serves it: always varlen (one sequence = cu_seqlens [0, T])
        cu_p = cu if cu is not None else torch.tensor([0, T], device=k.device, dtype=torch.int64)
        ci = ops.prepare_chunk_indices(cu, 64) if cu is not None else None
        ci_p = ops.prepare_chunk_indices(cu_p, 64)
        w64, u64, A64 = ref.fwd_intra(k, v, g, beta, cu)
        g_buf = torch.empty(beta.shape, device=k.device)
        wb, ub = k.new_empty(1, T, H, 128), torch.empty_like(v)

        def gluon_pipe(cs):
            gi.launch_intra(k, v, g_raw, beta, wb, ub, None, g_buf, cu_p, ci_p, launch=gi.GluonLaunch(CS=cs))
            return g_buf, wb, ub, None

        calls = {"stock intra": lambda: bk.stock_intra(k, v, g, beta, cu, ci)}
        for name, tu in TUNINGS.items():
            calls[f"triton intra {name}"] = lambda tu=tu: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, tuning=tu)
        calls["gluon intra"] = lambda: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, backend="gluon")
        for name, tu in PIPE_TUNINGS.items():
            calls[f"triton pipeline {name}"] = lambda tu=tu: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_p, ci_p,
                                                                                      tuning=tu)
        calls["gluon pipeline CS=0"] = lambda: gluon_pipe(0)
        calls["gluon pipeline CS=1"] = lambda: gluon_pipe(1)
        for name, f in calls.items():
            res = f()
            torch.cuda.synchronize()
            w, u = res[-3], res[-2]  # (w, u, A) or (g, w, u, A)
            e = [bk.rel_err(w, w64)["max_rel"], bk.rel_err(u, u64)["max_rel"]]
            finite = bool(torch.isfinite(w.float()).all() and torch.isfinite(u.float()).all())
            rows.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, call=name, us=events_us(f), err_w=e[0], err_u=e[1],
                             finite=finite))
            print(rows[-1], flush=True)
        del w64, u64, A64
        torch.cuda.empty_cache()
        _write(out, meta, rows)
    # the Gluon kernel's varlen batches (+17 µs at 8 sequences, T=8192 H=32, partitions alone unchanged): random
    # lengths (7 partial chunks stored by masked stores, one 1-token sequence) vs 8 equal sequences (none)
    a = bk.make_inputs(8192, 32, 16, 128, 128, 1, 0)
    k, v, g, beta = a["k"], a["v"], a["g"], a["beta"]
    for name, cu in [("1 sequence", [0, 8192]), ("8 equal sequences", list(range(0, 8193, 1024))),
                     ("8 sequences, lengths 1024 ± 32", [0] + [1024 * i + (32 if i % 2 else -32) for i in range(1, 8)]
                      + [8192])]:
        cu = torch.tensor(cu, device=k.device, dtype=torch.int64)
        ci = ops.prepare_chunk_indices(cu, 64)
        # the chunk-local cumsum of these sequences' chunks (make_inputs' g is chunked for one sequence: with
        # other boundaries e^{g_i - g_j} would mix two chunks' sums)
        g = bk.chunk_cumsum(a["g_raw"], cu)
        w64, u64, _ = ref.fwd_intra(k, v, g, beta, cu)
        for call, f in [("gluon intra varlen", lambda: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, backend="gluon")),
                        ("triton intra varlen", lambda: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, backend="triton"))]:
            w, u, _ = f()
            rows.append(dict(T=8192, H=32, Hg=16, nseq=len(cu) - 1, call=f"{call}: {name}", us=events_us(f),
                             err_w=bk.rel_err(w, w64)["max_rel"], err_u=bk.rel_err(u, u64)["max_rel"],
                             finite=bool(torch.isfinite(w.float()).all() and torch.isfinite(u.float()).all())))
            print(rows[-1], flush=True)
    return _write(out, meta, rows)


def _write(out, meta, rows) -> int:
    md = common.md_header("Launch shape per problem size: Triton num_warps, Gluon pipeline cumsum", meta,
                          "bf16, K=V=128; CUDA-graph µs per call; err = max|X − X64| / max|X64| of w / u; "
                          "ratio = stock intra µs / row µs.")
    md += ["| T | H/Hg | seqs | call | µs | stock / call | err w / u | finite |", "|---|---|---|---|---|---|---|---|"]
    stock = {(r["T"], r["H"], r["nseq"]): r["us"] for r in rows if r["call"] == "stock intra"}
    for r in rows:
        s = stock.get((r["T"], r["H"], r["nseq"]))
        ratio = f"{s / r['us']:.2f}×" if s else "–"
        md.append(f"| {r['T']} | {r['H']}/{r['Hg']} | {r['nseq']} | {r['call']} | {r['us']:.1f} | "
                  f"{ratio} | {r['err_w']:.1e} / {r['err_u']:.1e} | {r['finite']} |")
    return common.write_report(out, "wave_tuning", meta, rows, md)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest-wave-tuning"))
