"""Follow-up on one GPU: the default blockdoubling precision candidates side by side with stock, at the main
shape (T=8192, H=32, Hg=16) and on the two adversarial families. Writes DIR/precision.json."""
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
cands = ["bf16x3/tf32", "bf16x3", "tf32", "bf16x3/bf16x3"]
inp = bk.make_inputs(8192, 32, 16, 128, 128, 1, 0)
k, v, g, beta = inp["k"], inp["v"], inp["g"], inp["beta"]
A64 = ref.chunk_inverse(k, g, beta)
rows.append(dict(kind="kkt_inv", method="stock", us=bk.bench(lambda: bk.stock_kkt_solve(k, g, beta, None, None)),
                 **bk.rel_err(bk.stock_kkt_solve(k, g, beta, None, None), A64)))
rows.append(dict(kind="intra", method="stock", us=bk.bench(lambda: bk.stock_intra(k, v, g, beta, None, None))))
for p in dict.fromkeys(cands):
    f = lambda: ops.gdn_kkt_inverse(k, g, beta, method="blockdoubling", precision=p)  # noqa: E731
    rows.append(dict(kind="kkt_inv", method="blockdoubling", precision=p, us=bk.bench(f), **bk.rel_err(f(), A64)))
    f2 = lambda: ops.gdn_fwd_intra(k, v, g, beta, method="blockdoubling", precision=p)  # noqa: E731
    rows.append(dict(kind="intra", method="blockdoubling", precision=p, us=bk.bench(f2)))
for fam in ["identical_keys", "beta_1_2", "random"]:
    inp = bk.make_inputs(4096, 8, 4, 128, 128, 1, 3, family=fam)
    k, g, beta = inp["k"], inp["g"], inp["beta"]
    A64 = ref.chunk_inverse(k, g, beta)
    rows.append(dict(kind="family", family=fam, method="stock", **bk.rel_err(bk.stock_kkt_solve(k, g, beta, None, None), A64)))
    for p in cands:
        rows.append(dict(kind="family", family=fam, method="blockdoubling", precision=p,
                         **bk.rel_err(ops.gdn_kkt_inverse(k, g, beta, method="blockdoubling", precision=p), A64)))
meta = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__)
json.dump(dict(meta=meta, rows=rows), open(os.path.join(out, "precision.json"), "w"), indent=1)
for r in rows:
    print(r.get("kind"), r.get("family", ""), r["method"], r.get("precision", ""),
          f"{r['us']:.1f}us" if "us" in r else "", f"max_rel={r['max_rel']:.3e}" if "max_rel" in r else "")
