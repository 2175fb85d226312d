"""One launch each of the fused intra kernel's launch forms at one shape, for ncu: why T=8192 H=8 (one wave of
one-warp Triton programs) stays short of 1.8×. Launches: SGLang's stock kkt+solve and w/u kernels, our fused kernel
at the default (Ai stored late), with Ai stored early, with v prefetched into L2 after K Kᵀ, without A (the plugin's
pipeline form) with and without that prefetch, with the prefetch by the TMA unit (cp.async.bulk) and by volatile
loads (Tuning.prefetch_touch), with warm-up programs loading v into L2 (Tuning.l2_warm, A written and not), and the
inverse-only kernel. Warm-up launches compile first; only the second round is profiled (NCU_SHAPE="T,H,Hg,nseq",
default 8192,8,4,1).

    ncu --profile-from-start off --section SpeedOfLight --section MemoryWorkloadAnalysis \
        --section WarpStateStats -o intra_variants python3 bench/profile_intra_variants.py
"""
import dataclasses
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402

from sglang_trinv import ops  # noqa: E402
from sglang_trinv.benchmarks import kernels as bk  # noqa: E402

T, H, Hg, nseq = (int(x) for x in os.environ.get("NCU_SHAPE", "8192,8,4,1").split(","))
inp = bk.make_inputs(T, H, Hg, 128, 128, nseq, 0)
k, v, g, beta, cu = inp["k"], inp["v"], inp["g"], inp["beta"], inp.get("cu_seqlens")
FT = ops.DEFAULT_TUNING_FUSED
FORMS = [("default (late A)", FT, True), ("early A", dataclasses.replace(FT, a_store="early"), True),
         ("prefetch v kkt", dataclasses.replace(FT, prefetch_v="kkt"), True), ("no A", FT, False),
         ("no A, prefetch v kkt", dataclasses.replace(FT, prefetch_v="kkt"), False),
         ("prefetch v kkt bulk", dataclasses.replace(FT, prefetch_v="kkt", prefetch_bulk=True), True),
         # s23: the prefetch by volatile loads (L2::256B hint), words unused / kept: do v's reads then hit L2?
         ("touch kkt", dataclasses.replace(FT, prefetch_v="kkt", prefetch_touch=1), True),
         ("touch kkt kept", dataclasses.replace(FT, prefetch_v="kkt", prefetch_touch=2), True),
         # s24: warm-up programs ahead of the chunk programs (Tuning.l2_warm; one-wave shapes only): with A it took
         # 2.1 µs off at T=8192 H=8, without A 0.3 — u's v loads' L2 hits with and without A tell why
         ("l2 warm 32", dataclasses.replace(FT, l2_warm=32), True),
         ("no A, l2 warm 32", dataclasses.replace(FT, l2_warm=32), False)]


def launches():
    bk.stock_intra(k, v, g, beta, cu, None)  # 2 kernels: kkt_solve, recompute_w_u
    for _, tu, store_a in FORMS:
        ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=tu, store_A=store_a, backend="triton")
    ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu)


launches()  # compile + autotune, not profiled
torch.cuda.synchronize()
print("profiled launch order: stock kkt_solve, stock recompute_w_u,", ", ".join(n for n, _, _ in FORMS),
      ", inverse only", flush=True)
torch.cuda.cudart().cudaProfilerStart()
launches()
torch.cuda.synchronize()
torch.cuda.cudart().cudaProfilerStop()
print("done")
