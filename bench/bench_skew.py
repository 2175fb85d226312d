"""Phase-lock test for the fused intra kernel: does the inversion hide behind the w/u stream once the programs
sharing an SM are out of step?

Every SM starts its 8 one-warp programs at the same moment, and as all tiles cost the same they stay in step:
all invert (DRAM idle), then all stream w/u (tensor cores idle). ``Tuning(skew=s)`` (the staggered schedule,
gdn_intra SKEW) lets the first s·#SM programs only invert their tile and park Ai; the tiles that take those
slots start one inversion later than their neighbours, and the parked tiles' w/u run at the end of the grid.
Then the whole GDN forward through the plugin (stock vs ours at s = 0 and the staggered settings), each with
its output error vs the fp64 whole-forward twin.

    python bench/bench_skew.py OUT_DIR      # GPU: OUT_DIR/skew.json + skew.md
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_overlap import events_us  # noqa: E402  (CUDA-graph timing, no host time)

from sglang_trinv import ops  # noqa: E402
from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.benchmarks import kernels as bk  # noqa: E402

SHAPES = [(8192, 32, 16, 1), (32768, 32, 16, 1), (8192, 8, 4, 1), (32768, 8, 4, 1), (8192, 32, 16, 8)]
SKEWS = [0, 2, 3, 4]
WHOLE_SKEWS = [0, 2, 4]


def whole(r, a) -> None:
    """Whole chunk_gated_delta_rule_fwd (do_bench, as every whole-forward number so far): stock, then the
    plugin's fused pipeline at each WHOLE_SKEWS setting; o error vs the fp64 whole forward."""
    from importlib import import_module

    import sglang_trinv
    from sglang_trinv.reference import gdn as gdn_ref

    chunk = import_module(f"{bk.FLA}.chunk")
    k, v, beta, cu, g_raw = a["k"], a["v"], a["beta"], a["cu_seqlens"], a["g_raw"]
    T, K = k.shape[1], k.shape[-1]
    N = 1 if cu is None else len(cu) - 1
    gen = torch.Generator(device="cuda").manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(1, T, k.shape[2], K, device="cuda", generator=gen), dim=-1).to(k.dtype)
    h0 = torch.randn(N, beta.shape[-1], v.shape[-1], K, device="cuda", generator=gen) * 0.1
    idx = torch.arange(N, device="cuda")
    ci = chunk.prepare_chunk_indices(cu, 64) if cu is not None else None

    def run(state):
        return chunk.chunk_gated_delta_rule_fwd(q=q, k=k, v=v, g=g_raw, beta=beta, scale=K ** -0.5,
                                                initial_state=state, initial_state_indices=idx, cu_seqlens=cu,
                                                chunk_indices=ci, inplace_update=True)

    o64, _ = gdn_ref.chunk_fwd(q, k, v, g_raw, beta, K ** -0.5, h0, cu)
    for name, s in [("stock", None)] + [("ours", s) for s in WHOLE_SKEWS]:
        if name == "stock":
            sglang_trinv.unpatch()
            ctx = common.fused_defaults()
        else:
            sglang_trinv.patch(method="blockdoubling")
            ctx = common.fused_defaults(tuning=ops.Tuning(BV=32, num_stages=3, skew=s))
        try:
            with ctx:
                o = run(h0.clone())[1].float()
                scratch = h0.clone()
                t = common.time_us(lambda: run(scratch), "cuda")
        finally:
            sglang_trinv.unpatch()
        key = "whole_stock" if name == "stock" else f"whole_{s}"
        r[key] = t
        r[key + "_err"] = float((o.double() - o64).abs().max() / o64.abs().max())
    del o64
    torch.cuda.empty_cache()


def main(out: str) -> int:
    from importlib import import_module

    cumsum = import_module(f"{bk.FLA}.cumsum").chunk_local_cumsum
    rows = []
    for T, H, Hg, nseq in SHAPES:
        a = bk.make_inputs(T, H, Hg, 128, 128, nseq, 0)
        k, v, g, beta, g_raw, cu = a["k"], a["v"], a["g"], a["beta"], a["g_raw"], a["cu_seqlens"]
        ci = ops.prepare_chunk_indices(cu, 64) if cu is not None else None
        r = dict(T=T, H=H, Hg=Hg, nseq=nseq,
                 stock_intra=events_us(lambda: bk.stock_intra(k, v, g, beta, cu, ci)),
                 stock_cumsum_intra=events_us(lambda: bk.stock_intra(
                     k, v, cumsum(g_raw, chunk_size=64, cu_seqlens=cu, chunk_indices=ci), beta, cu, ci)))
        base = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, chunk_indices=ci)
        for s in SKEWS:
            tu = ops.Tuning(BV=32, num_stages=3, skew=s)
            got = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, chunk_indices=ci, tuning=tu)
            r[f"maxdiff_{s}"] = max(float((x.float() - y.float()).abs().max()) for x, y in zip(got, base))
            r[f"intra_{s}"] = events_us(lambda: ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, chunk_indices=ci,
                                                                  tuning=tu))
            r[f"pipe_{s}"] = events_us(lambda: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu,
                                                                        chunk_indices=ci, tuning=tu))
        whole(r, a)
        rows.append(r)
        print(r, flush=True)
        torch.cuda.empty_cache()
    meta = common.run_meta("cuda", dtype="bfloat16")
    os.makedirs(out, exist_ok=True)
    md = [f"# Fused intra, phase-lock test (Tuning.skew) — {meta['gpu']} — {meta['date']}", "",
          f"torch {meta['torch']}, triton {meta['triton']}, sglang {meta['sglang']}; bf16, K=V=128. µs per call, "
          "median over CUDA-graph replays (20 calls per graph, no host time). intra = gdn_fwd_intra (A written), "
          "pipe = gdn_cumsum_fwd_intra (cumsum in, no A: the plugin's kernel) vs stock cumsum + intra. "
          "skew s = s delay programs per SM first; maxdiff = largest |w, u, A difference| to skew 0 over "
          "all s (the same arithmetic: 0 expected).", "",
          "| T | H/Hg | seqs | stock intra | " + " | ".join(f"intra s={s}" for s in SKEWS)
          + " | stock cumsum+intra | " + " | ".join(f"pipe s={s}" for s in SKEWS) + " | maxdiff |",
          "|" + "---|" * (6 + 2 * len(SKEWS))]
    for r in rows:
        md.append(f"| {r['T']} | {r['H']}/{r['Hg']} | {r['nseq']} | {r['stock_intra']:.1f} | "
                  + " | ".join(f"{r[f'intra_{s}']:.1f}" for s in SKEWS) + f" | {r['stock_cumsum_intra']:.1f} | "
                  + " | ".join(f"{r[f'pipe_{s}']:.1f}" for s in SKEWS) + " | "
                  + f"{max(r[f'maxdiff_{s}'] for s in SKEWS):.0e} |")
    md += ["", "Whole chunk_gated_delta_rule_fwd (do_bench µs; o error vs the fp64 whole forward):", "",
           "| T | H/Hg | seqs | stock | " + " | ".join(f"ours s={s}" for s in WHOLE_SKEWS) + " | o err stock | "
           + " | ".join(f"o err s={s}" for s in WHOLE_SKEWS) + " |", "|" + "---|" * (5 + 2 * len(WHOLE_SKEWS))]
    for r in rows:
        md.append(f"| {r['T']} | {r['H']}/{r['Hg']} | {r['nseq']} | {r['whole_stock']:.1f} | "
                  + " | ".join(f"{r[f'whole_{s}']:.1f} ({r['whole_stock'] / r[f'whole_{s}']:.3f}×)"
                               for s in WHOLE_SKEWS)
                  + f" | {r['whole_stock_err']:.1e} | " + " | ".join(f"{r[f'whole_{s}_err']:.1e}" for s in WHOLE_SKEWS)
                  + " |")
    text = "\n".join(md) + "\n"
    common.save_results(out, "skew", meta, rows, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest-skew"))
