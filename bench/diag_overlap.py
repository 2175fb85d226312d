"""Where the state / output overlap (ops.gdn_state, SGLANG_TRINV_OVERLAP_O=1) spends its time. s26's first A/B: the
whole forward with it took 548.6 µs against 261.3 without (T=8192 H=8), ~2.4 µs more per chunk step at every shape;
this script's first run found the state kernel alone as slow with its flags (the CTA barrier, see gdn_state.SIGNAL).
Times (CUDA-graph replays, median µs) of SGLang's state kernel and output stage, our copies one after the other,
the state kernel alone with its flags released (no waiter: the signal's own cost), and the two side by side under
each signal form (gdn_state.SIGNAL's fields); o, h and the final state checked bit for bit against SGLang's stages.

    python3 bench/diag_overlap.py DIR           # DIAG_SHAPES="T,H,Hg,nseq;…"
    python3 bench/diag_overlap.py DIR --smoke   # CPU, Triton interpreter, a tiny shape (checks the script)
"""
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
SHAPES = _prelude.shapes("DIAG_SHAPES", "8192,8,4,1;32768,8,4,1;8192,32,16,1;8192,8,4,8")
SIGNALS = {  # s25's form (one release per CTA after a barrier), then per-thread releases, one change at a time
    "CTA barrier + one release": dict(release="cta", lag=0, sleep_ns=200, stride=1),
    "per-thread releases": dict(release="thread", lag=0, sleep_ns=200, stride=1),
    "per-thread, a step later": dict(release="thread", lag=1, sleep_ns=200, stride=1),
    "per-thread, flags 128 B apart": dict(release="thread", lag=0, sleep_ns=200, stride=32),
    "per-thread, 1 µs sleep": dict(release="thread", lag=0, sleep_ns=1000, stride=1),
    "per-thread, a step later, 128 B apart": dict(release="thread", lag=1, sleep_ns=200, stride=32),
}
chunk = import_module(f"{bk.FLA}.chunk")

rows = []
for T, H, Hg, nseq in SHAPES:
    x = _prelude.state_inputs(bk, T, H, Hg, nseq, D)
    k, w, u, g, q, h0, idx, cu, ci = (x[n] for n in ("k", "w", "u", "g", "q", "h0", "idx", "cu", "ci"))
    state = h0.clone()
    scale = D ** -0.5

    def stock_h():
        return chunk.chunk_gated_delta_rule_fwd_h(k=k, w=w, u=u, g=g, initial_state=state,
                                                  initial_state_indices=idx, cu_seqlens=cu, chunk_indices=ci)

    def stock():
        h, v_new = stock_h()
        return h, v_new, chunk.chunk_fwd_o(q=q, k=k, v=v_new, h=h, g=g, scale=scale, cu_seqlens=cu)

    state.copy_(h0)
    h_ref, _, o_ref = stock()
    state_ref = state.clone()

    def ours(**kw):
        return lambda: gdn_state.gdn_fwd_h_o(q, k, w, u, g, scale, state, idx, cu_seqlens=cu, chunk_indices=ci, **kw)

    def same(fn):
        """fn's h, o and final state bit for bit SGLang's (from h0); the flags all 0 afterwards."""
        state.copy_(h0)
        h, _, o = fn()
        ok = torch.equal(h, h_ref) and torch.equal(o, o_ref) and torch.equal(state, state_ref)
        return ok and not any(bool(b.any()) for b in gdn_state._FLAGS.values())

    forms = [("SGLang: state then output", stock, None), ("SGLang: state kernel alone", stock_h, None),
             ("ours: state then output (no flags)", ours(overlap=False), True)]
    for name, sig in SIGNALS.items():
        if sig["sleep_ns"] == 200:  # (the sleep is the waiter's)
            forms.append((f"state kernel alone, flags released ({name})", ours(signal=sig, output=False), None))
    for name, sig in SIGNALS.items():
        forms.append((f"side by side ({name})", ours(signal=sig), True))
    for name, fn, check in forms:
        bitwise = same(fn) if check else None
        us = bk.bench(fn)
        if "flags released" in name:  # (no waiter reset them)
            gdn_state.clear_flags()
        if check:  # again after the timed replays (a lost flag would show here)
            bitwise = bitwise and same(fn)
        rows.append(dict(T=T, H=H, Hg=Hg, nseq=nseq, form=name, us=us, bitwise=bitwise))
        print(rows[-1], flush=True)
    del x, k, w, u, g, q, h_ref, o_ref
    if DEV == "cuda":
        torch.cuda.empty_cache()

meta = common.run_meta(DEV, script="bench/diag_overlap.py")
lines = _prelude.shape_table(rows, SHAPES, "form", "form", lambda r: f"{r['us']:.1f}" + (
    "" if r["bitwise"] is None else (" ✓" if r["bitwise"] else " ✗ NOT BITWISE")))
print("\n".join(lines))
with open(os.path.join(out, "diag_overlap.json"), "w") as f:
    json.dump(dict(meta=meta, rows=rows), f, indent=1)
with open(os.path.join(out, "diag_overlap.md"), "w") as f:
    f.write("µs (CUDA-graph replays); ✓: h, o, final state bit for bit SGLang's, flags 0 after\n\n"
            + "\n".join(lines))
