"""Host time of SGLang's whole chunk_kda_fwd (GPU machine): stock, through the plugin with the tuned state launch,
and through the plugin with SGLang's own state launch (SGLANG_TRINV_STATE_LAUNCH=sglang), one shape, one process.

s28 (H200, `bench kda`, T=8192 H=8 one sequence): GPU time (CUDA graphs) stock 472.3, tuned 375.4, SGLang's launch
457.9 µs, but do_bench (eager) 485.2 / 755.0 / 537.4: the plugin's eager call is host-bound there. Per path: the
enqueue time (N back-to-back calls without synchronising, / N: the CPU's cost), do_bench, the graph time, and the
functions that take the host time (cProfile over N calls, by own time).

    python bench/profile_kda_host.py OUT_DIR [T H N [PATHS]]   # GPU: OUT_DIR/profile_kda_host.txt
                                      # PATHS: comma-separated of sglang, tuned, stock (default: the five runs below)
    python bench/profile_kda_host.py OUT_DIR 64 1 2 --smoke   # CPU, Triton interpreter (checks the script)
"""

import cProfile
import io
import os
import pstats
import sys
import time
from importlib import import_module

SMOKE = "--smoke" in sys.argv  # CPU: a run of the script under the Triton interpreter (times mean nothing)
if SMOKE:
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()
    sys.argv.remove("--smoke")

import torch  # noqa: E402
import triton  # noqa: E402

import sglang_trinv  # noqa: E402
from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.benchmarks import kda as bkda  # noqa: E402
from sglang_trinv.plugin._state import ENV_KDA  # noqa: E402
from sglang_trinv.plugin.gdn import ENV_STATE_LAUNCH  # noqa: E402


DEV = "cpu" if SMOKE else "cuda"


def _sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def main(out: str, T: int = 8192, H: int = 8, n: int = 50, paths: str | None = None) -> int:
    bkda.DEV = DEV
    kda = import_module(f"{bkda.FLA}.kda")
    D = 128 if DEV == "cuda" else 16
    inp = bkda.make_inputs(T, H, D, D, 1, 0)
    q, k, v, beta, cu, g_raw = (inp[x] for x in ("q", "k", "v", "beta", "cu_seqlens", "g_raw"))
    N = 1 if cu is None else len(cu) - 1
    h0 = torch.zeros(N, H, D, D, device=DEV)
    idx = torch.arange(N, device=DEV)
    ci = bkda.ops.prepare_chunk_indices(cu, 64) if cu is not None else None
    v_buf = v.clone()
    state = h0.clone()

    def run():
        return kda.chunk_kda_fwd(q, k, v_buf, g_raw, beta, D ** -0.5, state, idx, cu_seqlens=cu,
                                 chunk_indices=ci)

    os.makedirs(out, exist_ok=True)
    gpu = torch.cuda.get_device_name() if DEV == "cuda" else "CPU (interpreter: times mean nothing)"
    report = [f"# chunk_kda_fwd host time — {gpu} — T={T} H={H}, one sequence, "
              f"torch {torch.__version__}, triton {triton.__version__}", ""]
    # s28's first profile ran stock, tuned, SGLang's launch in that order: the tuned path's Python was uniformly
    # slower (every function). Here SGLang's launch first and the tuned path twice, to tell the path from the order
    runs = [("plugin, SGLang's state launch", "sglang"), ("plugin, tuned state launch", None), ("stock", None),
            ("plugin, tuned state launch (again)", None), ("plugin, SGLang's state launch (again)", "sglang")]
    if paths:
        named = {"sglang": runs[0], "tuned": runs[1], "stock": runs[2]}
        runs = [named[p.strip()] for p in paths.split(",")]
    for name, launch in runs:
        with common.env_var(ENV_KDA, "1"), common.env_var(ENV_STATE_LAUNCH, launch):
            sglang_trinv.unpatch() if name == "stock" else sglang_trinv.patch(method="blockdoubling")
            try:
                for _ in range(3):
                    run()
                _sync()
                t = time.perf_counter()
                for _ in range(n):
                    run()
                enq = (time.perf_counter() - t) / n * 1e6
                _sync()
                bench = common.time_us(run, DEV)
                graph = common.graph_us(run, DEV)
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(n):
                    run()
                prof.disable()
                _sync()
            finally:
                sglang_trinv.unpatch()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(22)
        line = f"## {name}: enqueue {enq:.1f} µs per call ({n} calls, no sync), do_bench {bench:.1f}, graph {graph}"
        print(line, flush=True)
        report += [line, "", s.getvalue(), ""]
    with open(os.path.join(out, "profile_kda_host.txt"), "w") as fh:
        fh.write("\n".join(report))
    return 0


if __name__ == "__main__":
    a = sys.argv[1:]
    sys.exit(main(a[0], *(int(x) for x in a[1:4]), *a[4:5]))
