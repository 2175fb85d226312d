"""Where the host time of a launch goes (GPU machine): cProfile over N back-to-back calls of the Gluon and the Triton
intra kernels (and the plugin's pipeline launch), T=8192 H=32, varlen cu_seqlens [0, T] as SGLang passes them.
H200 machine (bench/results/2026-11-27-h200-s9): the bare launch 158.0 µs with host-built TMA descriptors, 82.7
with device-built ones (DD, the eager default since), gdn_fwd_intra on Gluon 156.9 vs 71.6 on Triton.

    python bench/profile_host.py OUT_DIR [N]       # GPU: OUT_DIR/profile_host.txt

Checks first that the DD launch and the direct launch (SGLANG_TRINV_DIRECT_LAUNCH=1: the compiled kernel's
launcher without the JIT's binder) give the JIT launch's outputs. Then times each call, and the pieces of the
ops-level wrapper apart (support checks, output allocations, backend choice) to show where the host time goes
beyond the bare launch.
"""

import cProfile
import io
import os
import pstats
import sys
import time

import torch

from sglang_trinv import ops
from sglang_trinv.benchmarks import common
from sglang_trinv.benchmarks import kernels as bk


def _with_env(name, value, f):
    with common.env_var(name, value):
        return f()


def main(out: str, n: int = 200) -> int:
    a = bk.make_inputs(8192, 32, 16, 128, 128, 1, 0)
    k, v, g, beta, g_raw = a["k"], a["v"], a["g"], a["beta"], a["g_raw"]
    T = k.shape[1]
    cu = torch.tensor([0, T], device=k.device, dtype=torch.int64)
    ci = ops.prepare_chunk_indices(cu, 64)
    from sglang_trinv.ops import direct_launch as dl
    from sglang_trinv.ops import gluon_intra as gi

    w, u, A = k.new_empty(1, T, 32, 128), torch.empty_like(v), k.new_empty(1, T, 32, 64)
    g_out = torch.empty_like(g_raw, dtype=torch.float)
    calls = {
        # the bare launches (outputs preallocated): host-built TMA descriptors vs built in the kernel (DD, what an
        # eager launch does by default)
        "gluon launch_intra host descriptors": lambda: gi.launch_intra(k, v, g, beta, w, u, A, None, cu, ci,
                                                                       launch=gi.GluonLaunch(DD=False)),
        "gluon launch_intra DD": lambda: gi.launch_intra(k, v, g, beta, w, u, A, None, cu, ci,
                                                         launch=gi.GluonLaunch(DD=True)),
        "gluon gdn_fwd_intra": lambda: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, backend="gluon"),
        "triton gdn_fwd_intra": lambda: ops.gdn_fwd_intra(k, v, g, beta, cu, ci, backend="triton"),
        "gluon gdn_cumsum_fwd_intra": lambda: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu, ci, backend="gluon"),
        "gluon gdn_cumsum_fwd_intra direct": lambda: _with_env(
            dl.ENV, "1", lambda: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu, ci, backend="gluon")),
        "triton gdn_cumsum_fwd_intra": lambda: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu, ci,
                                                                        backend="triton"),
        "triton gdn_cumsum_fwd_intra direct": lambda: _with_env(
            dl.ENV, "1", lambda: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu, ci, backend="triton")),
        # one sequence without cu_seqlens (no chunk table), as a caller without varlen metadata launches
        "triton gdn_cumsum_fwd_intra, no cu_seqlens": lambda: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta,
                                                                                      backend="triton"),
        # the pieces of the ops wrapper around the launch
        "piece: ops.supports": lambda: ops.supports(k, v, g_raw, beta),
        "piece: ops._intra_outputs (g_out, w, u)": lambda: ops._intra_outputs(k, v, g_raw, False, True),
        "piece: ops._use_gluon": lambda: ops._use_gluon(k, v, g_raw, beta, "blockdoubling", None, cu, None,
                                                        "gluon", True),
        "piece: gluon launch_intra DD, g_out, direct": lambda: _with_env(
            dl.ENV, "1", lambda: gi.launch_intra(k, v, g_raw, beta, w, u, None, g_out, cu, ci,
                                                 merge_precision="bf16x3+tf32")),
        "piece: torch.empty 64 MiB": lambda: torch.empty(8192, 32, 128, device=k.device, dtype=k.dtype),
        "piece: os.environ.get": lambda: os.environ.get(dl.ENV, "0"),
    }
    os.makedirs(out, exist_ok=True)
    report = []
    calls["gluon launch_intra host descriptors"]()
    ref = [x.clone() for x in (w, u, A)]
    for x in (w, u, A):
        x.zero_()
    calls["gluon launch_intra DD"]()
    torch.cuda.synchronize()
    same = all(torch.equal(x, y) for x, y in zip((w, u, A), ref))
    report.append(f"DD launch outputs identical to the host-descriptor launch: {same}")
    print(report[-1], flush=True)
    jit = [x.clone() for x in calls["gluon gdn_cumsum_fwd_intra"]() if x is not None]
    for _ in range(2):  # the first call caches the kernel, the second launches directly
        direct = [x.clone() for x in calls["gluon gdn_cumsum_fwd_intra direct"]() if x is not None]
    torch.cuda.synchronize()
    same = all(torch.equal(x, y) for x, y in zip(direct, jit)) and len(direct) == len(jit)
    report.append(f"direct Gluon launch outputs identical to the JIT launch: {same}")
    print(report[-1], flush=True)
    jit = [x.clone() for x in calls["triton gdn_cumsum_fwd_intra"]() if x is not None]
    for _ in range(2):
        direct = [x.clone() for x in calls["triton gdn_cumsum_fwd_intra direct"]() if x is not None]
    torch.cuda.synchronize()
    same = all(torch.equal(x, y) for x, y in zip(direct, jit)) and len(direct) == len(jit)
    report.append(f"direct Triton launch outputs identical to the JIT launch: {same}")
    print(report[-1], flush=True)
    for name, f in calls.items():
        for _ in range(3):
            f()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            f()
        enq = (time.perf_counter() - t) / n * 1e6
        torch.cuda.synchronize()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            f()
        prof.disable()
        torch.cuda.synchronize()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        report += [f"## {name}: enqueue {enq:.1f} µs per call ({n} calls, no sync; without the profiler)", "",
                   s.getvalue(), ""]
        print(report[-4], flush=True)
    with open(os.path.join(out, "profile_host.txt"), "w") as fh:
        fh.write("\n".join(report))
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200))
