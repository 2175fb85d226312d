"""Can the inversion hide behind the w/u memory stream? A feasibility test for a two-kernel intra.

Our KKᵀ + inverse kernel (1-warp programs, latency-bound, little DRAM traffic) and SGLang's w/u kernel
(4-warp programs, bandwidth-bound) are launched on two CUDA streams over *independent* inputs, so the only
coupling is the SMs they share. If the pair takes ≈ max(I, W) instead of I + W, an intra split into an
inversion kernel and a w/u kernel that trails it chunk by chunk (flags) could reach the ≥ 1.8× target;
if it takes ≈ I + W, the hardware does not interleave them. Measured on an H200: ≈ I + W
(bench/results/2026-11-27-h200-overlap/, which also has the flag-trailing and staggered variants tried after).

    python bench/bench_overlap.py OUT_DIR            # GPU: OUT_DIR/overlap.json + overlap.md
"""

from __future__ import annotations

import statistics
import sys
from importlib import import_module

import torch

from sglang_trinv import ops
from sglang_trinv.benchmarks import common
from sglang_trinv.benchmarks import kernels as bk

SHAPES = [(8192, 32, 16), (32768, 32, 16), (32768, 8, 4)]


def events_us(launch, reps=20, replays=15) -> float:
    """Median µs per ``launch`` (which may fork to side streams and join back): ``reps`` launches captured in
    one CUDA graph, so no host time is in the measurement, replayed ``replays`` times between events."""
    main = torch.cuda.current_stream()
    side = torch.cuda.Stream()
    side.wait_stream(main)
    with torch.cuda.stream(side):  # warm-up (compiles) outside the capture
        for _ in range(3):
            launch()
    main.wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            launch()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(main)
        graph.replay()
        e1.record(main)
        e1.synchronize()
        times.append(e0.elapsed_time(e1) * 1e3 / reps)
    return statistics.median(times)


def main(out: str) -> int:
    wu = import_module(f"{bk.FLA}.wy_fast").recompute_w_u_fwd
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    rows = []
    for T, H, Hg in SHAPES:
        a = bk.make_inputs(T, H, Hg, 128, 128, 1, 0)
        b = bk.make_inputs(T, H, Hg, 128, 128, 1, 1)  # the w/u kernel's own inputs (independent of a)
        Ab = ops.gdn_kkt_inverse(b["k"], b["g"], b["beta"])

        def inv():
            return ops.gdn_kkt_inverse(a["k"], a["g"], a["beta"])

        def wuk():
            return wu(k=b["k"], v=b["v"], beta=b["beta"], A=Ab, g_cumsum=b["g"], cu_seqlens=None)

        def pair(first, second):
            def launch():  # fork to two streams and join (also inside a CUDA-graph capture)
                cur = torch.cuda.current_stream()
                s1.wait_stream(cur)
                s2.wait_stream(cur)
                with torch.cuda.stream(s1):
                    first()
                with torch.cuda.stream(s2):
                    second()
                cur.wait_stream(s1)
                cur.wait_stream(s2)
            return launch

        def serial():
            inv()
            wuk()

        r = dict(T=T, H=H, Hg=Hg, stock_intra=events_us(lambda: bk.stock_intra(a["k"], a["v"], a["g"], a["beta"], None, None)),
                 fused=events_us(lambda: ops.gdn_fwd_intra(a["k"], a["v"], a["g"], a["beta"])),
                 inv=events_us(inv), wu=events_us(wuk), serial=events_us(serial),
                 inv_first=events_us(pair(inv, wuk)), wu_first=events_us(pair(wuk, inv)))
        r["best_pair"] = min(r["inv_first"], r["wu_first"])
        r["overlap"] = (r["inv"] + r["wu"] - r["best_pair"]) / min(r["inv"], r["wu"])  # 1 = fully hidden
        rows.append(r)
        print(r, flush=True)
        torch.cuda.empty_cache()
    meta = common.run_meta("cuda", dtype="bfloat16")
    md = common.md_header("Inversion ‖ w/u on two streams", meta,
                          "bf16, K=V=128, one sequence. "
                          "µs per call = median over CUDA-graph replays (20 calls per graph, no host time); inv = ops.gdn_kkt_inverse, wu = SGLang recompute_w_u_fwd on independent "
                          "inputs; overlap = (inv + wu − pair) / min(inv, wu) (1: the shorter one fully hidden).")
    md += ["| T | H/Hg | stock intra | ours fused | inv | wu | serial | pair, inv first | pair, wu first | overlap |",
           "|" + "---|" * 10]
    for r in rows:
        md.append(f"| {r['T']} | {r['H']}/{r['Hg']} | {r['stock_intra']:.1f} | {r['fused']:.1f} | {r['inv']:.1f} | {r['wu']:.1f} | {r['serial']:.1f} | "
                  f"{r['inv_first']:.1f} | {r['wu_first']:.1f} | {r['overlap']:.2f} |")
    return common.write_report(out, "overlap", meta, rows, md)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest-overlap"))
