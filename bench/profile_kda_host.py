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

SMOKE = "--smoke" in sys.argv  # CPU: a run of the script under the Triton interpreter (times mean nothing)
if SMOKE:
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()
    sys.argv.remove("--smoke")

import torch  # noqa: E402
import triton  # noqa: E402

from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.benchmarks import host  # noqa: E402
from sglang_trinv.benchmarks import kernels as bk  # noqa: E402


DEV = "cpu" if SMOKE else "cuda"


def _sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def main(out: str, T: int = 8192, H: int = 8, n: int = 50, paths: str | None = None) -> int:
    bk.DEV = DEV
    D = 128 if DEV == "cuda" else 16
    # bench host --kda's paths (inputs, the chunk_kda_fwd call, the environment of each): stock, plugin, plugin
    # with SGLang's state launch
    stock, tuned, sglang = host._kda_paths(T, H, 1, D)
    os.makedirs(out, exist_ok=True)
    gpu = torch.cuda.get_device_name() if DEV == "cuda" else "CPU (interpreter: times mean nothing)"
    report = [f"# chunk_kda_fwd host time — {gpu} — T={T} H={H}, one sequence, "
              f"torch {torch.__version__}, triton {triton.__version__}", ""]
    # s28's first profile ran stock, tuned, SGLang's launch in that order: the tuned path's Python was uniformly
    # slower (every function). Here SGLang's launch first and the tuned path twice, to tell the path from the order
    runs = [("plugin, SGLang's state launch", sglang), ("plugin, tuned state launch", tuned), ("stock", stock),
            ("plugin, tuned state launch (again)", tuned), ("plugin, SGLang's state launch (again)", sglang)]
    if paths:
        named = {"sglang": runs[0], "tuned": runs[1], "stock": runs[2]}
        runs = [named[p.strip()] for p in paths.split(",")]
    for name, (_, method, fuse, env, run) in runs:
        with host._path_env(name, method, fuse, env, False, SMOKE):
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
