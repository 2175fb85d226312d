"""One launch each of the kernels worth profiling (for ncu): SGLang's kkt+solve and w/u kernels, our fused
intra kernel and our inverse-only kernel, each at the default tiling and under a 168-register cap;
T=8192, H=32, Hg=16, K=V=128, bf16. Warm-up launches compile first; only the second round is profiled.

    ncu --clock-control none --profile-from-start off --set full \
        --kernel-name regex:'gdn_intra|recompute_w_u|kkt_solve' -o intra python3 bench/profile_intra.py
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402

from sglang_trinv import ops  # noqa: E402
from sglang_trinv.benchmarks import kernels as bk  # noqa: E402

inp = bk.make_inputs(8192, 32, 16, 128, 128, 1, 0)
k, v, g, beta = inp["k"], inp["v"], inp["g"], inp["beta"]


def launches():
    bk.stock_intra(k, v, g, beta, None, None)  # 2 kernels: kkt_solve, recompute_w_u
    ops.gdn_fwd_intra(k, v, g, beta, method="blockdoubling")  # fused, default tiling
    ops.gdn_fwd_intra(k, v, g, beta, method="blockdoubling", tuning=ops.Tuning(BV=32, num_stages=3, maxnreg=168))
    ops.gdn_kkt_inverse(k, g, beta, method="blockdoubling")  # inverse only, bf16x3/tf32
    ops.gdn_kkt_inverse(k, g, beta, method="blockdoubling", tuning=ops.Tuning(maxnreg=168))


launches()  # compile + autotune, not profiled
torch.cuda.synchronize()
torch.cuda.cudart().cudaProfilerStart()
launches()
torch.cuda.synchronize()
torch.cuda.cudart().cudaProfilerStop()
print("done")
