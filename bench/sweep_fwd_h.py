"""SGLang's state recurrence (``fwd_h``, most of the whole forward at few heads: 216 of ~264 µs at T=8192 H=8) under
other launch constants than its defaults (SGLANG_GDN_CHUNK_H_BV=32, _NUM_WARPS=4, _NUM_STAGES=2, read at import):
time (CUDA-graph replays, median µs) and whether h, v_new and the final state are bit for bit the defaults', per
shape. Launched through ops.gdn_state's copy of the kernel (no flags, no output stage), which reads the constants
at call time; the SGLang kernel itself is timed at its defaults in the same process.

    python3 bench/sweep_fwd_h.py DIR           # FWDH_SHAPES="T,H,Hg,nseq;…"
    python3 bench/sweep_fwd_h.py DIR --smoke   # CPU, Triton interpreter, a tiny shape (checks the script)
"""
import itertools
import json
import os
from importlib import import_module

import _prelude  # first: the checkout on sys.path, the interpreter for --smoke (before Triton is imported)
import torch  # noqa: E402

from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.ops import gdn_state  # noqa: E402

SMOKE, out, bk = _prelude.SMOKE, _prelude.out_dir(), _prelude.kernels_bench()
DEV = bk.DEV
D = 16 if SMOKE else 128
SHAPES = _prelude.shapes("FWDH_SHAPES", "8192,8,4,1;32768,8,4,1;8192,8,4,8;8192,32,16,1")
chunk_h = import_module(f"{bk.FLA}.chunk_delta_h")
chunk = import_module(f"{bk.FLA}.chunk")
NAMES = ("GDN_CHUNK_H_BV", "GDN_CHUNK_H_NUM_WARPS", "GDN_CHUNK_H_NUM_STAGES")
DEFAULT = tuple(getattr(chunk_h, n) for n in NAMES)
CONFIGS = [DEFAULT] + [c for c in itertools.product((16, 32, 64), (2, 4, 8), (1, 2, 3)) if c != DEFAULT]
if SMOKE:
    CONFIGS = [DEFAULT, (16, 4, 2)]

rows = []
for T, H, Hg, nseq in SHAPES:
    x = _prelude.state_inputs(bk, T, H, Hg, nseq, D)
    k, w, u, g, h0, idx, cu, ci = (x[n] for n in ("k", "w", "u", "g", "h0", "idx", "cu", "ci"))
    state = h0.clone()

    def stock():
        return chunk.chunk_gated_delta_rule_fwd_h(k=k, w=w, u=u, g=g, initial_state=state,
                                                  initial_state_indices=idx, cu_seqlens=cu, chunk_indices=ci)

    state.copy_(h0)
    h_ref, v_ref = stock()
    s_ref = state.clone()
    end = T if cu is None else int(cu[-1])
    rows.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, config="SGLang's kernel " + "/".join(map(str, DEFAULT)),
                     us=bk.bench(stock), bitwise=None))
    print(rows[-1], flush=True)

    def ours():
        return gdn_state.gdn_fwd_h_o(None, k, w, u, g, None, state, idx, cu_seqlens=cu, chunk_indices=ci,
                                     overlap=False, output=False)

    for cfg in CONFIGS:
        for name, value in zip(NAMES, cfg):
            setattr(chunk_h, name, value)
        label = f"BV{cfg[0]} w{cfg[1]} s{cfg[2]}"
        try:
            state.copy_(h0)
            h, v_new, _ = ours()
            same = torch.equal(h, h_ref) and torch.equal(v_new[:, :end], v_ref[:, :end]) and torch.equal(state, s_ref)
            diff = float((h.float() - h_ref.float()).abs().max() / h_ref.float().abs().max())
            rows.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, config=label, us=bk.bench(ours), bitwise=same,
                             h_max_rel_diff=diff))
        except Exception as e:  # noqa: BLE001 (a form that does not build or run is a row)
            rows.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, config=label, us=None, error=f"{type(e).__name__}: "
                             f"{str(e)[:200]}"))
            if "illegal" in str(e).lower():
                raise
        print(rows[-1], flush=True)
    for name, value in zip(NAMES, DEFAULT):
        setattr(chunk_h, name, value)
    del x, k, w, u, g, h_ref, v_ref
    if DEV == "cuda":
        torch.cuda.empty_cache()

meta = common.run_meta(DEV, script="bench/sweep_fwd_h.py")


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
    f.write("µs (CUDA-graph replays); ✓: h, v_new, final state bit for bit SGLang's defaults; ✗: h's max "
            "difference relative to its largest entry\n\n" + "\n".join(lines))
