"""Fused intra kernel (KKᵀ + inverse + w/u) under several w/u tilings, side by side with SGLang's stock
intra in one process. Writes DIR/intra_tiles.json; prints one line per row.

    python3 bench/bench_intra_tiles.py DIR
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402

from sglang_trinv.benchmarks import kernels as bk  # noqa: E402
from sglang_trinv import ops  # noqa: E402
from sglang_trinv.reference import gdn as ref  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rows = []
tilings = [ops.Tuning(num_warps=1, BK=bk, BV=bv, num_stages=st)
           for bk, bv, st in ((64, 32, 3), (32, 32, 3), (32, 16, 3), (32, 32, 4))]  # next: BK=32 (no spills)
for T, H, Hg in ((8192, 32, 16), (32768, 32, 16)):
    inp = bk.make_inputs(T, H, Hg, 128, 128, 1, 0)
    k, v, g, beta = inp["k"], inp["v"], inp["g"], inp["beta"]
    w64, u64, A64 = ref.fwd_intra(k, v, g, beta)
    t = bk.bench(lambda: bk.stock_intra(k, v, g, beta, None, None))
    w, u, A = bk.stock_intra(k, v, g, beta, None, None)
    rows.append(dict(T=T, H=H, variant="stock", us=t, A=bk.rel_err(A, A64)["max_rel"], w=bk.rel_err(w, w64)["max_rel"],
                     u=bk.rel_err(u, u64)["max_rel"]))
    for tu in tilings:
        for p in ("bf16x3", "bf16x3/tf32"):
            f = lambda: ops.gdn_fwd_intra(k, v, g, beta, method="blockdoubling", precision=p, tuning=tu)  # noqa: E731
            w, u, A = f()
            rows.append(dict(T=T, H=H, variant=f"BV={tu.BV} stages={tu.num_stages} {p}", us=bk.bench(f),
                             A=bk.rel_err(A, A64)["max_rel"], w=bk.rel_err(w, w64)["max_rel"],
                             u=bk.rel_err(u, u64)["max_rel"]))
            print(rows[-1], flush=True)
    base = rows[-1 - 2 * len(tilings)]["us"]
    print(f"T={T} stock {base:.1f} us", flush=True)
meta = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__)
json.dump(dict(meta=meta, rows=rows), open(os.path.join(out, "intra_tiles.json"), "w"), indent=1)
for r in rows:
    print(f"T={r['T']:6d} {r['variant']:32s} {r['us']:8.1f} us  A {r['A']:.2e} w {r['w']:.2e} u {r['u']:.2e}")
