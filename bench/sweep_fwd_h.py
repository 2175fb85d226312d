"""SGLang's state recurrence (``fwd_h``, most of the whole forward at few heads: 216 of ~264 µs at T=8192 H=8) under
other launch constants than its defaults (SGLANG_GDN_CHUNK_H_BV=32, _NUM_WARPS=4, _NUM_STAGES=2, read at import):
time (CUDA-graph replays, median µs) and whether h, v_new and the final state are bit for bit the defaults', per
shape; SGLang's kernel itself is timed at its defaults in the same process.
- FWDH_GATE=g (default; GDN's scalar gate): through ops.gdn_state's copy of the kernel (no flags, no output stage),
  which reads the constants at call time. s26's sweep; the plugin's tuned launch comes from it.
- FWDH_GATE=gk (KDA's per-key gate, inputs from SGLang's own KDA intra stage, as chunk_kda_fwd calls it): SGLang's
  own kernel, its one autotune config swapped per form (s27: the plugin's KDA rule, gdn_state.TUNED_LAUNCH_GK).

    python3 bench/sweep_fwd_h.py DIR           # FWDH_SHAPES="T,H,Hg,nseq;…" (Hg unused for gk: KDA has H key heads),
                                               # FWDH_FORMS="BV,warps,stages;…" (default: all 27)
    python3 bench/sweep_fwd_h.py DIR --smoke   # CPU, Triton interpreter, a tiny shape (checks the script)
"""
import itertools
import json
import os
from importlib import import_module

import _prelude  # first: the checkout on sys.path, the interpreter for --smoke (before Triton is imported)
import torch  # noqa: E402

from sglang_trinv import ops  # noqa: E402
from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.ops import gdn_state  # noqa: E402

SMOKE, out, bk = _prelude.SMOKE, _prelude.out_dir(), _prelude.kernels_bench()
DEV = bk.DEV
D = 16 if SMOKE else 128
GATE = os.environ.get("FWDH_GATE", "g")
SHAPES = _prelude.shapes("FWDH_SHAPES", "8192,8,4,1;32768,8,4,1;8192,8,4,8;8192,32,16,1" if GATE == "g" else
                         "8192,32,32,1;8192,8,8,1;32768,8,8,1;8192,32,32,8")
chunk_h = import_module(f"{bk.FLA}.chunk_delta_h")
chunk = import_module(f"{bk.FLA}.chunk")
NAMES = ("GDN_CHUNK_H_BV", "GDN_CHUNK_H_NUM_WARPS", "GDN_CHUNK_H_NUM_STAGES")
DEFAULT = tuple(getattr(chunk_h, n) for n in NAMES)
CONFIGS = [DEFAULT] + [c for c in itertools.product((16, 32, 64), (2, 4, 8), (1, 2, 3)) if c != DEFAULT]
if os.environ.get("FWDH_FORMS"):  # "BV,warps,stages;…": only these forms (SGLang's defaults stay first)
    CONFIGS = [DEFAULT] + [f for f in (tuple(int(x) for x in t.split(",")) for t in os.environ["FWDH_FORMS"].split(";"))
                           if f != DEFAULT]
if SMOKE:
    CONFIGS = [DEFAULT, (16, 4, 2)]


def gk_inputs(T, H, nseq):
    """KDA: w, u, kg from SGLang's chunk_kda_fwd_intra and the log2 per-key gate, as chunk_kda_fwd passes them."""
    from sglang_trinv.benchmarks import kda as bkda

    bkda.DEV = DEV
    inp = bkda.make_inputs(T, H, D, D, nseq, 0)
    cu = inp["cu_seqlens"]
    ci = None if cu is None else ops.prepare_chunk_indices(cu, 64)
    w, u, _, kg, _, _ = bkda.stock_intra()(q=inp["q"], k=inp["k"], v=inp["v"], gk=inp["g"], beta=inp["beta"],
                                           scale=D ** -0.5, cu_seqlens=cu, chunk_size=64, chunk_indices=ci)
    gen = torch.Generator(device=DEV).manual_seed(1)
    N = 1 if cu is None else len(cu) - 1
    h0 = torch.randn(N, H, D, D, device=DEV, generator=gen) * 0.1
    return dict(k=kg, w=w, u=u, gk=inp["g"], h0=h0, idx=torch.arange(N, device=DEV), cu=cu, ci=ci)


rows = []
for T, H, Hg, nseq in SHAPES:
    if GATE == "g":
        x = _prelude.state_inputs(bk, T, H, Hg, nseq, D)
    else:
        x = gk_inputs(T, H, nseq)
    k, w, u, h0, idx, cu, ci = (x[n] for n in ("k", "w", "u", "h0", "idx", "cu", "ci"))
    g, gk = x.get("g"), x.get("gk")
    state = h0.clone()

    def stock():
        return chunk.chunk_gated_delta_rule_fwd_h(k=k, w=w, u=u, g=g, gk=gk, initial_state=state,
                                                  initial_state_indices=idx, cu_seqlens=cu, chunk_indices=ci,
                                                  use_exp2=gk is not None)

    state.copy_(h0)
    h_ref, v_ref = stock()
    s_ref = state.clone()
    end = T if cu is None else int(cu[-1])
    rows.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, config="SGLang's kernel " + "/".join(map(str, DEFAULT)),
                     us=bk.bench(stock), bitwise=None))
    print(rows[-1], flush=True)

    def ours(cfg):
        if GATE == "gk":  # SGLang's own launcher and kernel at this form, as the plugin's KDA path launches it
            return (*gdn_state.sglang_fwd_h(chunk.chunk_gated_delta_rule_fwd_h, cfg, k=k, w=w, u=u, gk=gk,
                                            initial_state=state, initial_state_indices=idx, cu_seqlens=cu,
                                            chunk_indices=ci, use_exp2=True), None)
        return gdn_state.gdn_fwd_h_o(None, k, w, u, g, None, state, idx, cu_seqlens=cu, chunk_indices=ci,
                                     overlap=False, output=False)

    for cfg in CONFIGS:
        for name, value in zip(NAMES, cfg):  # (read at call time by the copy's launch="sglang")
            setattr(chunk_h, name, value)
        label = f"BV{cfg[0]} w{cfg[1]} s{cfg[2]}"
        try:
            state.copy_(h0)
            h, v_new, _ = ours(cfg)
            same = torch.equal(h, h_ref) and torch.equal(v_new[:, :end], v_ref[:, :end]) and torch.equal(state, s_ref)
            diff = float((h.float() - h_ref.float()).abs().max() / h_ref.float().abs().max())
            rows.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, config=label, us=bk.bench(lambda: ours(cfg)), bitwise=same,
                             h_max_rel_diff=diff))
        except Exception as e:  # noqa: BLE001 (a form that does not build or run is a row)
            rows.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, config=label, us=None, error=f"{type(e).__name__}: "
                             f"{str(e)[:200]}"))
            if "illegal" in str(e).lower():
                raise
        print(rows[-1], flush=True)
    for name, value in zip(NAMES, DEFAULT):
        setattr(chunk_h, name, value)
    del x, k, w, u, g, gk, h_ref, v_ref
    if DEV == "cuda":
        torch.cuda.empty_cache()

meta = common.run_meta(DEV, script="bench/sweep_fwd_h.py", gate=GATE)


def cell(r):
    if r.get("us") is None:
        return "error"
    mark = "" if r["bitwise"] is None else (" ✓" if r["bitwise"] else f" ✗ {r['h_max_rel_diff']:.0e}")
    return f"{r['us']:.1f}{mark}"


lines = _prelude.shape_table(rows, SHAPES, "launch", "config", cell)
print("\n".join(lines))
with open(os.path.join(out, "sweep_fwd_h.json"), "w") as f:
    json.dump(dict(meta=meta, rows=rows), f, indent=1)
with open(os.path.join(out, "sweep_fwd_h.md"), "w") as f:
    f.write(f"FWDH_GATE={GATE}. µs (CUDA-graph replays); ✓: h, v_new, final state bit for bit SGLang's defaults; "
            "✗: h's max difference relative to its largest entry\n\n" + "\n".join(lines))
