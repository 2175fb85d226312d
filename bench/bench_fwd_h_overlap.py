"""Can the rest of the GDN forward hide behind the state recurrence? (GPU machine; a measurement, not a product
path.) SGLang's ``chunk_gated_delta_rule_fwd_h`` walks a sequence's chunks one after another on V/BV × H programs
(BV = 32 in SGLang 0.5.23: 32 CTAs of 4 warps at H = 8, 128 at H = 32, on a 132-SM H200) and is 45–72 % of
the forward (bench/results/2026-11-27-h200-gdn-stages). Measured: bench/results/2026-11-27-h200-s10 §5.
Here one sequence is cut into P time parts (multiples of 64 tokens): a side stream runs our pipeline kernel
(cumsum + KKᵀ + inverse + w/u) part by part, the main stream runs ``fwd_h`` on part p once its w/u are written
(the state carried in place from part to part), and the side stream then runs the output stage of part p
(``ops.gdn_fwd_o`` into o's time slice) while ``fwd_h`` works on part p + 1. The per-part ``h`` are concatenated
at the end, as SGLang's caller may read the whole ``h``.

    python bench/bench_fwd_h_overlap.py OUT_DIR [T,H,Hg ...]     # default: 8192,32,16 32768,32,16 8192,8,4 32768,8,4

Per shape: stock forward, ours sequential (pipeline → fwd_h → fwd_o without memset), ours overlapped for P ∈
{2, 4, 8} (with and without the h concatenation); CUDA-graph and eager µs; the output's and final state's max
difference to ours sequential, and their max-rel error vs the fp64 twin.
"""

import sys
from importlib import import_module

import torch
import torch.nn.functional as F

from sglang_trinv import ops
from sglang_trinv.benchmarks import common
from sglang_trinv.benchmarks import kernels as bk
from sglang_trinv.reference import gdn as gdn_ref

FLA = "sglang.kernels.ops.attention.fla"
PARTS = (2, 4, 8)


def shape_rows(T, H, Hg, rows):
    chunk = import_module(f"{FLA}.chunk")
    a = bk.make_inputs(T, H, Hg, 128, 128, 1, 0)
    k, v, beta, g_raw = a["k"], a["v"], a["beta"], a["g_raw"]
    gen = torch.Generator(device="cuda").manual_seed(1)
    q = F.normalize(torch.randn(1, T, Hg, 128, device="cuda", generator=gen), dim=-1).to(k.dtype)
    h0 = torch.randn(1, H, 128, 128, device="cuda", generator=gen) * 0.1
    idx = torch.arange(1, device="cuda")
    scale = 128 ** -0.5
    state = h0.clone()
    o64, s64 = gdn_ref.chunk_fwd(q, k, v, g_raw, beta, scale, h0, None)
    side = torch.cuda.Stream()

    def stock():
        return chunk.chunk_gated_delta_rule_fwd(q=q, k=k, v=v, g=g_raw, beta=beta, scale=scale, initial_state=state,
                                                initial_state_indices=idx, cu_seqlens=None, chunk_indices=None,
                                                inplace_update=True)[1]

    def sequential():
        g, w, u, _ = ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta)
        h, v_new = chunk.chunk_gated_delta_rule_fwd_h(k=k, w=w, u=u, g=g, initial_state=state,
                                                       initial_state_indices=idx, inplace_update=True)
        return ops.gdn_fwd_o(q, k, v_new, h, g, scale)

    def overlapped(P, cat_h=True):
        nc = triton_cdiv(T, 64)
        cuts = [min(T, 64 * ((nc * p) // P)) for p in range(P + 1)]
        parts = [(t0, t1) for t0, t1 in zip(cuts, cuts[1:]) if t1 > t0]

        def f():
            main = torch.cuda.current_stream()
            o = torch.empty_like(v)
            side.wait_stream(main)
            ev_wu, ev_h, wu, hs = [], [], [], []
            with torch.cuda.stream(side):  # the pipeline kernel, part by part
                for t0, t1 in parts:
                    sl = slice(t0, t1)
                    g, w, u, _ = ops.gdn_cumsum_fwd_intra(k[:, sl], v[:, sl], g_raw[:, sl], beta[:, sl])
                    wu.append((g, w, u))
                    ev_wu.append(torch.cuda.Event())
                    ev_wu[-1].record(side)
            for (t0, t1), (g, w, u), ev in zip(parts, wu, ev_wu):  # the recurrence, in order, state in place
                main.wait_event(ev)
                h, v_new = chunk.chunk_gated_delta_rule_fwd_h(k=k[:, t0:t1], w=w, u=u, g=g, initial_state=state,
                                                               initial_state_indices=idx, inplace_update=True)
                hs.append((h, v_new))
                ev_h.append(torch.cuda.Event())
                ev_h[-1].record(main)
            with torch.cuda.stream(side):  # the output of part p while fwd_h runs part p + 1
                for (t0, t1), (g, _, _), (h, v_new), ev in zip(parts, wu, hs, ev_h):
                    side.wait_event(ev)
                    ops.gdn_fwd_o(q[:, t0:t1], k[:, t0:t1], v_new, h, g, scale, out=o[:, t0:t1])
                h_all = torch.cat([h for h, _ in hs], 1) if cat_h else None
            # join: every buffer used across the streams is freed after this, and the next call's side-stream work
            # starts after its fork, so the caching allocator cannot hand one out while the other stream reads it
            main.wait_stream(side)
            return o if h_all is None else (o, h_all)
        return f

    tag = dict(T=T, H=H, Hg=Hg)
    calls = {"stock": stock, "ours sequential": sequential}
    for P in PARTS:
        calls[f"ours overlapped P={P}"] = overlapped(P)
        calls[f"ours overlapped P={P}, no h cat"] = overlapped(P, cat_h=False)
    ref_o = ref_s = None
    for name, fn in calls.items():
        state.copy_(h0)
        out = fn()
        o = out[0] if isinstance(out, tuple) else out
        torch.cuda.synchronize()
        s = state.clone()
        if name == "ours sequential":
            ref_o, ref_s = o.float().clone(), s.clone()
        diff_o = None if ref_o is None else float((o.float() - ref_o).abs().max())
        diff_s = None if ref_s is None else float((s - ref_s).abs().max())
        e_o = float((o.double() - o64).abs().max() / o64.abs().max())
        e_s = float((s.double() - s64).abs().max() / s64.abs().max())
        t_graph = common.graph_us(fn, "cuda")
        t_eager = bk.bench(fn)
        rows.append(dict(tag, call=name, graph_us=t_graph, eager_us=t_eager, o_maxdiff_vs_seq=diff_o,
                         state_maxdiff_vs_seq=diff_s, o_rel_vs_fp64=e_o, state_rel_vs_fp64=e_s))
        print(rows[-1], flush=True)


def triton_cdiv(a, b):
    return -(-a // b)


def main(out, shapes):
    bk.DEV = "cuda"
    meta, rows = common.gpu_rows(out, shapes, shape_rows)
    md = common.md_header("Overlapping the GDN forward's stages with the state recurrence (one sequence)", meta,
                          "bf16, K=V=128; µs: CUDA graph (GPU only) and eager do_bench; diffs: max |x − x_seq| "
                          "against ours sequential; errors: max-rel vs the fp64 twin.")
    md += ["| T | H/Hg | call | graph µs | eager µs | vs stock (graph) | o / state max diff vs sequential | "
           "o / state err vs fp64 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        st = next(x for x in rows if x["call"] == "stock" and x["T"] == r["T"] and x["H"] == r["H"])
        ratio = st["graph_us"] / r["graph_us"] if r["graph_us"] and st["graph_us"] else float("nan")
        d = ("–" if r["o_maxdiff_vs_seq"] is None else
             f"{r['o_maxdiff_vs_seq']:.1e} / {r['state_maxdiff_vs_seq']:.1e}")
        g = "–" if r["graph_us"] is None else f"{r['graph_us']:.1f}"
        md.append(f"| {r['T']} | {r['H']}/{r['Hg']} | {r['call']} | {g} | {r['eager_us']:.1f} | {ratio:.2f}× | {d} "
                  f"| {r['o_rel_vs_fp64']:.2e} / {r['state_rel_vs_fp64']:.2e} |")
    common.write_report(out, "fwd_h_overlap", meta, rows, md)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    shapes = [tuple(int(x) for x in s.split(",")) for s in sys.argv[2:]] or [
        (8192, 32, 16), (32768, 32, 16), (8192, 8, 4), (32768, 8, 4)]
    sys.exit(main(sys.argv[1], shapes))
