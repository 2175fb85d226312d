"""A fused-kernel Tuning change ("on": the fused default with AB_TUNING's fields, e.g. "l2_warm=32" or "pdl=1";
"off": the fused default) interleaved round by round in one process, next to SGLang's stock kernels (GPU time:
CUDA-graph replays): the fused intra kernel with A, the pipeline launch the plugin runs (cumsum in, no A), and the
whole ``chunk_gated_delta_rule_fwd`` through the plugin, with the fused pipeline (its default) and with the intra
kernel alone swapped in (SGLANG_TRINV_FUSE_PIPELINE=0). The whole forward decides: s25's l2_warm gained 3 µs in the
kernel replayed alone and nothing in the forward. Medians over AB_ROUNDS rounds (default 5); the per-round values
are in the JSON. Each shape's table rows and the JSON so far are written as the shape finishes (s29: a step cut
by its time limit had printed nothing). Errors: w / u / o max-rel vs the fp64 twin. (s25's first run, as
ab_l2_warm.py, also timed single calls after a 256 MB write evicting L2, by CUDA events around eager launches:
the host's launch time entered those, identical builds differed by up to 12 %, so they are gone.)

    python3 bench/ab_tuning.py DIR           # AB_SHAPES="T,H,Hg,nseq;…" (default 8192,8,4,1;8192,8,4,8)
    python3 bench/ab_tuning.py DIR --smoke   # CPU, Triton interpreter, a tiny shape (checks the script)
"""
import contextlib
import dataclasses
import json
import os
import statistics

import _prelude  # first: the checkout on sys.path, the interpreter for --smoke (before Triton is imported)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sglang_trinv import ops  # noqa: E402
from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.reference import gdn as ref  # noqa: E402

SMOKE, out, bk = _prelude.SMOKE, _prelude.out_dir(), _prelude.kernels_bench()
DEV = bk.DEV
ROUNDS = 1 if SMOKE else int(os.environ.get("AB_ROUNDS", "5"))
SHAPES = _prelude.shapes("AB_SHAPES", "8192,8,4,1;8192,8,4,8", smoke=((130, 2, 1, 1),))


CHANGE = common.tuning_fields(os.environ.get("AB_TUNING", "l2_warm=32"), "AB_TUNING")
# AB_ENV="NAME=value,…": environment of the "on" whole forwards too (read when the plugin is patched in), e.g.
# SGLANG_TRINV_OVERLAP_O=1 (with AB_TUNING="" the kernels are the same build both ways)
ENV_ON = dict(x.split("=", 1) for x in filter(None, (y.strip() for y in os.environ.get("AB_ENV", "").split(","))))
ON = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, **CHANGE)
OFF = ops.DEFAULT_TUNING_FUSED


def print_shape(T, H, nseq):
    """The table's rows of one shape (printed as each shape finishes: a run cut by its time limit keeps them)."""
    sel = [r for r in rows if (r["T"], r["H"], r["nseq"]) == (T, H, nseq)]
    for measure in dict.fromkeys(r["measure"] for r in sel):
        m = {r["form"]: r for r in sel if r["measure"] == measure}
        st = m.get("stock", {}).get("us")
        wa, co = m["on"]["us"], m["off"]["us"]
        e = m["on"]
        print(f"| {T} | {H} | {nseq} | {e['warm_rows']} | {measure} | {st and f'{st:.1f}' or '—'} | {wa:.1f} | "
              f"{co:.1f} | {co / wa:.3f}× | {st and f'{st / wa:.2f}×' or '—'} | {st and f'{st / co:.2f}×' or '—'} | "
              f"{e['w']:.2e} / {e['u']:.2e} / {e.get('o', float('nan')):.2e} |", flush=True)


def save():
    """The JSON of every shape finished so far (rewritten after each shape)."""
    from sglang_trinv.plugin._state import STATE  # (how often each plugin path served: the env took effect)

    with open(os.path.join(out, "ab_tuning.json"), "w") as fh:
        json.dump(dict(meta=common.run_meta("cpu" if SMOKE else "cuda"), change=CHANGE, env=ENV_ON, rows=rows,
                       plugin_counts=dict(STATE.counts)), fh, indent=1)


on = ", ".join([f"{k}={v}" for k, v in CHANGE.items()] + [f"env {k}={v}" for k, v in ENV_ON.items()])
print(f"on: the fused default with {on}; off: the fused default")
HEADER = ("| T | H | seqs | warm rows | measure | stock µs | on µs | off µs | on vs off | on vs stock "
          "| off vs stock | w / u / o err (on) |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
rows = []
for T, H, Hg, nseq in SHAPES:
    inp = bk.make_inputs(T, H, Hg, 128 if not SMOKE else 16, 128 if not SMOKE else 32, nseq, 0)
    k, v, g, beta, cu, g_raw = inp["k"], inp["v"], inp["g"], inp["beta"], inp["cu_seqlens"], inp["g_raw"]
    ci = None if cu is None else ops.prepare_chunk_indices(cu, 64)
    n_bg = H  # one head per program (the fused default)
    NT = len(ci) if ci is not None else -(-T // 64)
    warm_rows = ops._warm_rows(ON, True, False, NT, n_bg, v)  # Tuning.l2_warm's rows, if any
    w64, u64, _ = ref.fwd_intra(k, v, g, beta, cu)
    err = {}
    for name, tu in (("on", ON), ("off", OFF)):
        w, u, _ = ops.gdn_fwd_intra(k, v, g, beta, cu, ci, tuning=tu)
        err[name] = dict(w=bk.rel_err(w, w64)["max_rel"], u=bk.rel_err(u, u64)["max_rel"])
    w, u, _ = bk.stock_intra(k, v, g, beta, cu, ci)
    err["stock"] = dict(w=bk.rel_err(w, w64)["max_rel"], u=bk.rel_err(u, u64)["max_rel"])
    # the whole forward, as bk.run_whole drives it (plugin patched in; fused pipeline, Triton)
    from importlib import import_module

    import sglang_trinv
    from sglang_trinv.plugin._state import ENV_FUSE_PIPELINE

    chunk = import_module(f"{bk.FLA}.chunk")
    N = 1 if cu is None else len(cu) - 1
    gen = torch.Generator(device=DEV).manual_seed(1)
    q = F.normalize(torch.randn(1, T, Hg, k.shape[-1], device=DEV, generator=gen), dim=-1).to(k.dtype)
    h0 = torch.randn(N, H, v.shape[-1], k.shape[-1], device=DEV, generator=gen) * 0.1
    idx = torch.arange(N, device=DEV)
    o64, _ = ref.chunk_fwd(q, k, v, g_raw, beta, k.shape[-1] ** -0.5, h0, cu)
    scratch = h0.clone()

    def whole():
        return chunk.chunk_gated_delta_rule_fwd(q=q, k=k, v=v, g=g_raw, beta=beta, scale=k.shape[-1] ** -0.5,
                                                initial_state=scratch, initial_state_indices=idx, cu_seqlens=cu,
                                                chunk_indices=ci, inplace_update=True)

    def o_err():
        scratch.copy_(h0)
        o = whole()[1].double()
        return float((o - o64).abs().max() / o64.abs().max())

    per = {}  # (measure, form) -> [µs per round]
    with common.env_var(ops.ENV_GLUON, "0"):
        for r in range(ROUNDS):
            for form, tu in (("stock", None), ("on", ON), ("off", OFF)):
                if tu is None:
                    intra = lambda: bk.stock_intra(k, v, g, beta, cu, ci)  # noqa: E731
                    per.setdefault(("intra with A", form), []).append(bk.bench(intra))
                    sglang_trinv.unpatch()
                    per.setdefault(("whole forward", form), []).append(bk.bench(whole))
                    if r == 0:
                        err[form]["o"] = o_err()
                    continue
                intra = lambda tu=tu: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, tuning=tu)  # noqa: E731
                pipe = lambda tu=tu: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu, ci, tuning=tu)  # noqa: E731
                per.setdefault(("intra with A", form), []).append(bk.bench(intra))
                per.setdefault(("pipeline launch (cumsum in, no A)", form), []).append(bk.bench(pipe))
                for fused, measure in (("1", "whole forward"), ("0", "whole forward, intra kernel only")):
                    env = contextlib.ExitStack()
                    for name, value in (ENV_ON.items() if form == "on" else ()):
                        env.enter_context(common.env_var(name, value))
                    with env, common.fused_defaults(tuning=tu), common.env_var(ENV_FUSE_PIPELINE, fused):
                        sglang_trinv.patch(method="blockdoubling")
                        try:
                            per.setdefault((measure, form), []).append(bk.bench(whole))
                            if r == 0 and fused == "1":
                                err[form]["o"] = o_err()
                        finally:
                            sglang_trinv.unpatch()
            print(f"round {r + 1}/{ROUNDS} T={T} H={H} nseq={nseq}", flush=True)
    for (measure, form), ts in per.items():
        rows.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, warm_rows=warm_rows, measure=measure, form=form,
                         us=statistics.median(ts), rounds=ts, **err[form]))
    print(HEADER)
    print_shape(T, H, nseq)
    save()
    del inp, k, v, g, beta, cu, ci, q, h0
    if DEV == "cuda":
        torch.cuda.empty_cache()

