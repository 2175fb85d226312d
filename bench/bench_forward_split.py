"""Where the whole GDN forward's GPU time goes, stage prefix by stage prefix (GPU machine): CUDA-graph µs of
stock's and the plugin's pipelines cut after each stage, so a kernel that is faster alone but slows the next
stage shows up. Also the output allocation of SGLang's ``chunk_fwd_o`` (``torch.zeros_like(v)``, a memset of o
although its kernel writes every row of every chunk) against ``torch.empty_like`` with only the rows past the
last sequence zeroed (``ops.gdn_fwd_o``).

    python bench/bench_forward_split.py OUT_DIR [T,H,Hg,SEQS ...]     # default: 8192,32,16,1 32768,8,4,1

Rows: prefix name, µs (graph), and for the full forwards the output's max-rel difference to stock's.
"""

import sys
from importlib import import_module

import torch
import torch.nn.functional as F

from sglang_trinv import ops
from sglang_trinv.benchmarks import common
from sglang_trinv.benchmarks import kernels as bk

FLA = "sglang.kernels.ops.attention.fla"


def split(T, H, Hg, nseq, rows):
    chunk = import_module(f"{FLA}.chunk")
    a = bk.make_inputs(T, H, Hg, 128, 128, nseq, 0)
    k, v, beta, cu, g_raw = a["k"], a["v"], a["beta"], a["cu_seqlens"], a["g_raw"]
    N = 1 if cu is None else len(cu) - 1
    gen = torch.Generator(device="cuda").manual_seed(1)
    q = F.normalize(torch.randn(1, T, Hg, 128, device="cuda", generator=gen), dim=-1).to(k.dtype)
    h0 = torch.randn(N, H, 128, 128, device="cuda", generator=gen) * 0.1
    idx = torch.arange(N, device="cuda")
    ci = chunk.prepare_chunk_indices(cu, 64) if cu is not None else None
    state = h0.clone()
    scale = 128 ** -0.5

    def stock_intra():
        g = chunk.chunk_local_cumsum(g_raw, chunk_size=64, cu_seqlens=cu, chunk_indices=ci)
        w, u, _ = chunk.chunk_gated_delta_rule_fwd_intra(k=k, v=v, g=g, beta=beta, cu_seqlens=cu, chunk_indices=ci)
        return g, w, u

    def ours_intra(backend):
        def f():
            g, w, u, _ = ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu, chunk_indices=ci,
                                                  backend=backend)
            return g, w, u
        return f

    def with_h(intra):
        def f():
            g, w, u = intra()
            h, v_new = chunk.chunk_gated_delta_rule_fwd_h(k=k, w=w, u=u, g=g, initial_state=state,
                                                           initial_state_indices=idx, cu_seqlens=cu,
                                                           chunk_indices=ci, inplace_update=True)
            return g, h, v_new
        return f

    def with_o(intra_h, fwd_o):
        def f():
            g, h, v_new = intra_h()
            return fwd_o(q, k, v_new, h, g, scale, cu)
        return f

    def stock_o(q, k, v_new, h, g, scale, cu):
        return chunk.chunk_fwd_o(q=q, k=k, v=v_new, h=h, g=g, scale=scale, cu_seqlens=cu)

    def ours_o(q, k, v_new, h, g, scale, cu):
        return ops.gdn_fwd_o(q, k, v_new, h, g, scale, cu_seqlens=cu, chunk_indices=ci)

    can_gluon = ops.gluon_reason(k, v, a["g"], beta, cu_seqlens=cu) is None
    intras = {"stock": stock_intra, "triton": ours_intra("triton")}
    if can_gluon:
        intras["gluon"] = ours_intra("gluon")
    tag = dict(T=T, H=H, Hg=Hg, nseq=nseq)
    ref_o = None
    for name, intra in intras.items():
        prefixes = [("cumsum+intra", intra), ("+ fwd_h", with_h(intra)),
                    ("+ fwd_o (whole forward)", with_o(with_h(intra), stock_o)),
                    ("+ fwd_o, o not memset", with_o(with_h(intra), ours_o))]
        for pname, f in prefixes:
            state.copy_(h0)
            out = f()
            torch.cuda.synchronize()
            diff = None
            if pname.startswith("+ fwd_o"):
                if ref_o is None:
                    ref_o = out.float().clone()
                diff = float((out.float() - ref_o).abs().max() / ref_o.abs().max())
            us = common.graph_us(f, "cuda")
            rows.append(dict(tag, path=name, prefix=pname, us=us, o_diff_vs_stock=diff))
            print(rows[-1], flush=True)
    # the stages alone on stock's w/u (what each costs without its predecessor in the graph)
    g, w, u = stock_intra()
    h, v_new = chunk.chunk_gated_delta_rule_fwd_h(k=k, w=w, u=u, g=g, initial_state=state,
                                                   initial_state_indices=idx, cu_seqlens=cu, chunk_indices=ci)
    alone = {"fwd_h alone": lambda: chunk.chunk_gated_delta_rule_fwd_h(
        k=k, w=w, u=u, g=g, initial_state=state, initial_state_indices=idx, cu_seqlens=cu, chunk_indices=ci),
        "fwd_o alone (stock, zeros_like)": lambda: stock_o(q, k, v_new, h, g, scale, cu),
        "fwd_o alone (o not memset)": lambda: ours_o(q, k, v_new, h, g, scale, cu),
        "memset of o alone": lambda: torch.zeros_like(v)}
    for pname, f in alone.items():
        rows.append(dict(tag, path="stage", prefix=pname, us=common.graph_us(f, "cuda"), o_diff_vs_stock=None))
        print(rows[-1], flush=True)


def main(out, shapes):
    meta, rows = common.gpu_rows(out, shapes, split)
    md = common.md_header("Whole GDN forward cut after each stage", meta,
                          "bf16, K=V=128; CUDA-graph µs (GPU only); o diff = max-rel difference of the output to "
                          "stock's whole forward.")
    md += ["| T | H/Hg | seqs | path | prefix | µs | o diff vs stock |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        d = "" if r["o_diff_vs_stock"] is None else f"{r['o_diff_vs_stock']:.1e}"
        us = "–" if r["us"] is None else f"{r['us']:.1f}"
        md.append(f"| {r['T']} | {r['H']}/{r['Hg']} | {r['nseq']} | {r['path']} | {r['prefix']} | {us} | {d} |")
    common.write_report(out, "forward_split", meta, rows, md)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    shapes = [tuple(int(x) for x in s.split(",")) for s in sys.argv[2:]] or [(8192, 32, 16, 1), (32768, 8, 4, 1)]
    sys.exit(main(sys.argv[1], shapes))
