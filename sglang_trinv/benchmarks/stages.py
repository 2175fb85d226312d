"""Where SGLang's whole GDN chunk forward spends its time, per shape, and what that allows: the four stock
stages (``chunk_local_cumsum``, ``chunk_gated_delta_rule_fwd_intra``, ``chunk_gated_delta_rule_fwd_h``,
``chunk_fwd_o``) timed one by one, beside the kernel the plugin puts in place of the first two
(``ops.gdn_cumsum_fwd_intra``: cumsum + KKᵀ + inverse + w/u, A not written), all in one process on one GPU.

Amdahl, with S = the sum of the stock stages and R = fwd_h + fwd_o (untouched by the plugin):
  bound    = S / R                      whole-forward speed-up if cumsum + intra took no time at all
  expected = S / (R + ours)             with our kernel in their place
  needed   = S / 1.15 − R               the time cumsum + intra may take for a 1.15× whole forward
Every stage's output is checked against the fp64 twin (reference.gdn) so the timed calls are the real ones.

    sglang-trinv bench stages --out DIR            # GPU: DIR/stages.json + stages.md
    sglang-trinv bench stages --out DIR --smoke    # CPU, Triton interpreter, tiny shapes (checks the script)
"""

from __future__ import annotations

import argparse
import os
from importlib import import_module

import torch

from .. import ops
from ..reference import gdn as ref
from . import common
from . import kernels as bk

SHAPES = [(8192, 32, 16, 1), (32768, 32, 16, 1), (8192, 8, 4, 1), (32768, 8, 4, 1), (8192, 32, 16, 8),
          (32768, 8, 4, 8)]
SMOKE_SHAPES = [(150, 4, 2, 1), (150, 4, 2, 3)]


def run_shape(chunk, T, H, Hg, nseq, D) -> dict:
    """One shape: every stage timed alone, the timed calls' outputs checked against fp64."""
    inp = bk.make_inputs(T, H, Hg, D, D, nseq, 0)
    k, v, beta, g_raw, cu = inp["k"], inp["v"], inp["beta"], inp["g_raw"], inp["cu_seqlens"]
    ci = ops.prepare_chunk_indices(cu, 64) if cu is not None else None
    N = 1 if cu is None else len(cu) - 1
    q = k.clone()
    g = chunk.chunk_local_cumsum(g_raw, chunk_size=64, cu_seqlens=cu, chunk_indices=ci)
    w, u, _ = bk.stock_intra(k, v, g, beta, cu, ci)
    h0 = torch.zeros(N, H, D, D, device=k.device)
    idx = torch.arange(N, device=k.device)

    def fwd_h():
        return chunk.chunk_gated_delta_rule_fwd_h(k=k, w=w, u=u, g=g, initial_state=h0.clone(),
                                                  initial_state_indices=idx, cu_seqlens=cu,
                                                  chunk_indices=ci, inplace_update=True)

    h, v_new = fwd_h()
    stages = {
        "cumsum": lambda: chunk.chunk_local_cumsum(g_raw, chunk_size=64, cu_seqlens=cu, chunk_indices=ci),
        "intra": lambda: bk.stock_intra(k, v, g, beta, cu, ci),
        "fwd_h": fwd_h,
        "fwd_o": lambda: chunk.chunk_fwd_o(q=q, k=k, v=v_new, h=h, g=g, scale=D ** -0.5, cu_seqlens=cu),
        "ours": lambda: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu, chunk_indices=ci),
    }
    # the timed calls compute the real thing: w/u of both against fp64, o against the fp64 whole forward
    w64, u64, _ = ref.fwd_intra(k, v, g, beta, cu)
    _, w2, u2, _ = stages["ours"]()
    o64, _ = ref.chunk_fwd(q, k, v, g_raw, beta, D ** -0.5, h0, cu)  # takes the raw gate
    err = dict(w_stock=bk.rel_err(w, w64)["max_rel"], u_stock=bk.rel_err(u, u64)["max_rel"],
               w_ours=bk.rel_err(w2, w64)["max_rel"], u_ours=bk.rel_err(u2, u64)["max_rel"],
               o_stock=bk.rel_err(stages["fwd_o"](), o64)["max_rel"])
    t = {name: bk.bench(f) for name, f in stages.items()}
    S = t["cumsum"] + t["intra"] + t["fwd_h"] + t["fwd_o"]
    R = t["fwd_h"] + t["fwd_o"]
    return dict(T=T, H=H, Hg=Hg, nseq=nseq, dtype=str(k.dtype).replace("torch.", ""), us=t, sum=S, bound=S / R, expected=S / (R + t["ours"]),
                needed=S / 1.15 - R, **err)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default="bench/results/latest-stages")
    ap.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, tiny shapes (checks the script)")


def run(args) -> int:
    if args.smoke:
        bk.DEV = "cpu"
    shapes, D = (SMOKE_SHAPES, 32) if args.smoke else (SHAPES, 128)
    chunk = import_module(f"{bk.FLA}.chunk")
    out = args.out
    os.makedirs(out, exist_ok=True)
    rows = []
    for T, H, Hg, nseq in shapes:
        rows.append(run_shape(chunk, T, H, Hg, nseq, D))
        print(rows[-1], flush=True)
        if not args.smoke:
            torch.cuda.empty_cache()
    meta = common.run_meta(bk.DEV, dtype=rows[0]["dtype"])
    md = common.md_header("GDN chunk forward by stage", meta,
                          f"{meta['dtype']}, K=V={D}; µs = do_bench "
                          "median of each stage alone. ours = ops.gdn_cumsum_fwd_intra (replaces cumsum + intra in the plugin). "
                          "bound = Σ/(fwd_h+fwd_o): the whole-forward speed-up if cumsum + intra were free; needed = the "
                          "cumsum + intra time a 1.15× whole forward allows. Errors max|X−X64|/max|X64|.")
    md += ["| T | H/Hg | seqs | cumsum | intra | fwd_h | fwd_o | Σ stock | ours | expected | bound | needed | "
           "w err stock/ours | u err stock/ours | o err stock |", "|" + "---|" * 15]
    for r in rows:
        t = r["us"]
        md.append(f"| {r['T']} | {r['H']}/{r['Hg']} | {r['nseq']} | {t['cumsum']:.1f} | {t['intra']:.1f} | "
                  f"{t['fwd_h']:.1f} | {t['fwd_o']:.1f} | {r['sum']:.1f} | {t['ours']:.1f} | {r['expected']:.2f}× | "
                  f"{r['bound']:.2f}× | {r['needed']:.1f} | {r['w_stock']:.1e}/{r['w_ours']:.1e} | "
                  f"{r['u_stock']:.1e}/{r['u_ours']:.1e} | {r['o_stock']:.1e} |")
    return common.write_report(out, "stages", meta, rows, md)


def main(argv=None) -> int:
    return common.cli_main(__doc__, add_arguments, run, argv, prog="sglang-trinv bench stages")
