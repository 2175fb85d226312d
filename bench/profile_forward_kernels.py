"""Each kernel's GPU time inside SGLang's GDN chunk prefill as its Triton backend calls it (``chunk_gated_delta_rule``
with ``use_qk_l2norm_in_kernel=True``: q/k l2norm, cumsum, intra, state, output), stock and through the plugin,
beside the intra kernels replayed alone (GPU machine).

Why (s30): s25's ``Tuning.l2_warm`` made the intra kernel 1.11× faster replayed alone at T=8192 H=8 while the whole
forward did not move. Profiled, the intra kernel inside the forward already ran at 22.8 µs against 25.3 alone, warm-up
or not: what a kernel costs replayed alone is not what it costs where it runs (likely its inputs' L2 residency: in
the real chain the l2norm kernel has just written the keys; hit rates not measured). Stock's intra stage runs in the
same place, so the intra stage's ratio in place is the one users get; this script measures it at every shape, with
the kernels alone beside it.

A CUDA graph of each form is replayed under ``torch.profiler`` (CUPTI records the kernels of graph replays); each
kernel's time is summed per replay; forms interleaved round by round; medians over the rounds. Stages by kernel name:
the intra stage is stock's ``kkt_solve`` + ``recompute_w_u`` (+ its cumsum kernel) against the plugin's one kernel,
which has the cumsum fused in. Errors: o of each chain and w / u of the kernels alone, max-rel vs the fp64 twins.

    python3 bench/profile_forward_kernels.py DIR   # PFK_SHAPES="T,H,Hg,nseq;…" (default: the 12 benchmark shapes)
    AB_TUNING="l2_warm=32" adds the plugin's chain and kernels with that fused-kernel Tuning change ("on" forms)
    python3 bench/profile_forward_kernels.py DIR --smoke   # CPU: checks the script (eager, no profile)
"""
import collections
import contextlib
import dataclasses
import json
import os
import re
import statistics

import _prelude  # first: the checkout on sys.path, the interpreter for --smoke (before Triton is imported)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sglang_trinv import ops  # noqa: E402
from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.reference import gdn as ref  # noqa: E402

SMOKE, out, bk = _prelude.SMOKE, _prelude.out_dir(), _prelude.kernels_bench()
DEV = bk.DEV
ROUNDS = 1 if SMOKE else int(os.environ.get("PFK_ROUNDS", "5"))
REPLAYS = 20
SHAPES = _prelude.shapes("PFK_SHAPES", ";".join(f"{T},{H},{Hg},{n}" for T in (4096, 8192, 32768)
                                                for H, Hg in ((32, 16), (8, 4)) for n in (1, 8)),
                         smoke=((130, 2, 1, 1), (130, 2, 1, 3)))
CHANGE = common.tuning_fields(os.environ.get("AB_TUNING", ""), "AB_TUNING")
TUNINGS = {"plugin": None} | ({"plugin on": dataclasses.replace(ops.DEFAULT_TUNING_FUSED, **CHANGE)} if CHANGE else {})
# SGLang's modules of the chain whose autotuners are reset per shape (s30 call 4 without it: stock's kkt_solve at
# T=8192 H=8 ran 36.7 µs at the configuration tuned at T=4096 against 23.7 tuned at its own shape, call 3)
STOCK_MODULES = ("chunk_fwd", "wy_fast", "chunk_delta_h", "chunk_o", "cumsum", "l2norm")
# stage of a kernel, by name (the first pattern that matches)
STAGES = (("cumsum", r"cumsum"), ("intra", r"kkt|solve|recompute_w_u|gdn_intra|gluon|intra"), ("l2norm", r"l2norm"),
          ("state", r"fwd_h|kernel_h"), ("output", r"fwd_o|kernel_o"))


def stage(name: str) -> str:
    return next((s for s, pat in STAGES if re.search(pat, name)), "other")


def run_shape(T, H, Hg, nseq, rows, summary):
    from importlib import import_module

    import sglang_trinv

    D = 16 if SMOKE else 128
    if not SMOKE:  # SGLang's autotuners key on head counts, not T: tune every stock kernel of the chain at this shape
        bk.retune_stock(STOCK_MODULES)
    inp = bk.make_inputs(T, H, Hg, D, D, nseq, 0)
    k, v, g, beta, cu, g_raw = inp["k"], inp["v"], inp["g"], inp["beta"], inp["cu_seqlens"], inp["g_raw"]
    ci = None if cu is None else ops.prepare_chunk_indices(cu, 64)
    chunk = import_module(f"{bk.FLA}.chunk")
    N = 1 if cu is None else len(cu) - 1
    gen = torch.Generator(device=DEV).manual_seed(1)
    q = torch.randn(1, T, Hg, D, device=DEV, generator=gen).to(k.dtype)  # (normalised by the chain's l2norm)
    k_raw = (k.float() * (1 + torch.rand(1, T, Hg, 1, device=DEV, generator=gen))).to(k.dtype)
    h0 = torch.randn(N, H, D, D, device=DEV, generator=gen) * 0.1
    state = h0.clone()
    idx = torch.arange(N, device=DEV)
    scale = D ** -0.5

    def chain():  # as SGLang's Triton GDN backend calls it
        if SMOKE:  # (chunk_gated_delta_rule refuses fp32, the interpreter's dtype: its body, l2norm then the forward)
            l2 = import_module(f"{bk.FLA}.l2norm").l2norm_fwd
            return chunk.chunk_gated_delta_rule_fwd(q=l2(q), k=l2(k_raw), v=v, g=g_raw, beta=beta, scale=scale,
                                                    initial_state=state, initial_state_indices=idx, cu_seqlens=cu,
                                                    chunk_indices=ci)[1:]
        return chunk.chunk_gated_delta_rule(q=q, k=k_raw, v=v, g=g_raw, beta=beta, scale=scale, initial_state=state,
                                            initial_state_indices=idx, cu_seqlens=cu, head_first=False,
                                            use_qk_l2norm_in_kernel=True)

    qn, kn = F.normalize(q.double(), dim=-1), F.normalize(k_raw.double(), dim=-1)
    o64, _ = ref.chunk_fwd(qn, kn, v, g_raw, beta, scale, h0, cu)
    w64, u64, _ = ref.fwd_intra(k, v, g, beta, cu)
    err = lambda x, r: bk.rel_err(x, r)["max_rel"]  # noqa: E731
    forms, errors = {}, {}

    def chain_form(name, tuning):
        with common.fused_defaults(tuning=tuning) if tuning is not None else contextlib.nullcontext():
            if name != "stock":
                sglang_trinv.patch(method="blockdoubling")
            try:
                state.copy_(h0)
                errors[f"{name}: chain"] = dict(o=err(chain()[0], o64))
                if not SMOKE:
                    forms[f"{name}: chain"] = common.capture_graph(chain)
            finally:
                sglang_trinv.unpatch()

    sglang_trinv.unpatch()
    chain_form("stock", None)
    for name, tu in TUNINGS.items():
        chain_form(name, tu)
    alone = {"stock: intra alone": lambda: bk.stock_intra(k, v, g, beta, cu, ci)}
    for name, tu in TUNINGS.items():
        alone[f"{name}: intra with A alone"] = lambda tu=tu: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, tuning=tu)
        alone[f"{name}: pipeline alone (cumsum in, no A)"] = \
            lambda tu=tu: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu, ci, tuning=tu)
    for name, fn in alone.items():
        res = fn()
        w, u = (res[1], res[2]) if "pipeline" in name else (res[0], res[1])
        errors[name] = dict(w=err(w, w64), u=err(u, u64))
        if not SMOKE:
            forms[name] = common.capture_graph(fn)
    if SMOKE:  # (no profile on a CPU: the errors only)
        summary.extend(dict(T=T, H=H, Hg=Hg, nseq=nseq, form=name, **e) for name, e in errors.items())
        print(f"smoke T={T} H={H} seqs={nseq}: errors {errors}")
        return
    per = collections.defaultdict(lambda: collections.defaultdict(list))
    walls, timelines = collections.defaultdict(list), {}
    for _ in range(ROUNDS):
        for name, graph in forms.items():
            kus, timelines[name] = common.graph_kernel_us(graph, REPLAYS)
            for kern, us in kus.items():
                per[name][kern].append(us)
            walls[name].append(common.replay_us(graph, REPLAYS))
    print(f"\n## T={T} H={H} Hg={Hg} seqs={nseq} (µs per replay, median of {ROUNDS} rounds of {REPLAYS} replays)")
    for name, kern in per.items():
        st = collections.defaultdict(float)
        for kname, ts in kern.items():
            us = statistics.median(ts)
            st[stage(kname)] += us
            rows.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, form=name, kernel=kname, stage=stage(kname), us=us,
                             rounds=ts, **errors[name]))
        wall = statistics.median(walls[name])
        summary.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, form=name, stages=dict(st), total=sum(st.values()),
                            wall=wall, timeline=timelines[name], **errors[name]))
        print(f"### {name}: kernels {sum(st.values()):.1f} µs, replay (events) {wall:.1f} µs; "
              + ", ".join(f"{s} {u:.1f}" for s, u in st.items())
              + "; errors " + ", ".join(f"{e} {x:.2e}" for e, x in errors[name].items()), flush=True)
        print("  last replay: " + "; ".join(f"{k} @{t0:.1f} +{d:.1f}" for k, t0, d in timelines[name]))
        for kname, ts in sorted(kern.items(), key=lambda x: -statistics.median(x[1])):
            print(f"  {statistics.median(ts):8.1f}  {kname}")
    del forms
    torch.cuda.empty_cache()


def table(summary) -> str:
    """The intra stage in place (inside each chain) and alone, stock vs the plugin, per shape."""
    lines = ["| T | H | seqs | stock intra in chain (kkt+w/u, +cumsum) | plugin intra in chain (cumsum fused) | ratio "
             "(with stock's cumsum) | stock intra alone | plugin alone, with A / pipeline | ratio alone with A / "
             "pipeline | chain total stock / plugin | o err stock / plugin |", "|" + "---|" * 11]
    by = collections.defaultdict(dict)
    for s in summary:
        by[(s["T"], s["H"], s["nseq"])][s["form"]] = s
    for (T, H, n), f in by.items():
        sc, pc = f["stock: chain"], f["plugin: chain"]
        s_in, s_cs = sc["stages"].get("intra", 0), sc["stages"].get("cumsum", 0)
        p_in = pc["stages"].get("intra", 0) + pc["stages"].get("cumsum", 0)
        sa = f["stock: intra alone"]["total"]
        pa, pp = f["plugin: intra with A alone"]["total"], f["plugin: pipeline alone (cumsum in, no A)"]["total"]
        lines.append(f"| {T} | {H} | {n} | {s_in:.1f} (+{s_cs:.1f}) | {p_in:.1f} | {s_in / p_in:.2f}× "
                     f"({(s_in + s_cs) / p_in:.2f}×) | {sa:.1f} | {pa:.1f} / {pp:.1f} | {sa / pa:.2f}× / "
                     f"{sa / pp:.2f}× | {sc['total']:.1f} / {pc['total']:.1f} | {sc['wall']:.1f} / {pc['wall']:.1f} | "
                     f"{sc['o']:.2e} / {pc['o']:.2e} |")
    return "\n".join(lines)


def main():
    rows, summary = [], []
    meta = common.run_meta("cpu" if SMOKE else "cuda", change=CHANGE, rounds=ROUNDS, replays=REPLAYS)
    for T, H, Hg, nseq in SHAPES:
        run_shape(T, H, Hg, nseq, rows, summary)
        with open(os.path.join(out, "profile_forward_kernels.json"), "w") as fh:
            json.dump(dict(meta=meta, summary=summary, rows=rows), fh, indent=1)
        if not SMOKE:
            print("\n" + table(summary), flush=True)


main()
