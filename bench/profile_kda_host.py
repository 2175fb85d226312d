"""Host time of SGLang's whole chunk_kda_fwd (GPU machine): stock, through the plugin with the tuned state launch,
and through the plugin with SGLang's own state launch (SGLANG_TRINV_STATE_LAUNCH=sglang), one shape, one process.

s28 (H200, `bench kda`, T=8192 H=8 one sequence): GPU time (CUDA graphs) stock 472.3, tuned 375.4, SGLang's launch
457.9 µs, but do_bench (eager) 485.2 / 755.0 / 537.4: the plugin's eager call is host-bound there. Per path: the
enqueue time (N back-to-back calls without synchronising, / N: the CPU's cost), do_bench, the graph time, and the
functions that take the host time (cProfile over N calls, by own time).

    python bench/profile_kda_host.py OUT_DIR [T H N [PATHS]]   # GPU: OUT_DIR/profile_kda_host.txt
                                      # PATHS: comma-separated of sglang, tuned, stock (default: the five runs below)
    python bench/profile_kda_host.py OUT_DIR 64 1 2 --smoke   # CPU, Triton interpreter (checks the script)
    python bench/profile_kda_host.py OUT_DIR T H N --parts [--rounds R]   # GPU: OUT_DIR/kda_host_parts.{md,json}

--parts (s29): where the plugin's extra host time goes. s29 (H200, `bench host --kda --rounds 5`, T=2048 H=8): the
enqueue per whole chunk_kda_fwd was stock 269.0, plugin 422.1, plugin with SGLang's state launch 379.3 µs while its
GPU time was 124.8 / 104.6 / 112.5. One chunk_kda_fwd's stage calls (gate cumsum, intra, state recurrence, output)
are recorded with their arguments, as stock and as the plugin binds them, then each is replayed alone: enqueue µs
per call, N calls, R rounds in rotating order, the median. The plugin's intra call is split further: its Python
alone (both launches stubbed), SGLang's token-parallel diagonal launch alone, an empty Triton kernel's launch (what
one launch costs this host), and ops.kda_fwd_intra / the whole forward with SGLANG_TRINV_DIRECT_LAUNCH=1 (the
compiled kernel's launcher called directly after the first JIT launch).
"""

import contextlib
import cProfile
import importlib
import io
import json
import os
import pstats
import statistics
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


STAGES = ("chunk_local_cumsum", "chunk_kda_fwd_intra", "chunk_gated_delta_rule_fwd_h", "chunk_gla_fwd_o_gk")


def record_stages(kda, run) -> dict:
    """{stage: (function, args, kwargs)}: the calls one ``run()`` (a chunk_kda_fwd) makes through kda.py's bindings
    (as bound now: stock's, or the plugin's wrappers)."""
    calls, saved = {}, {n: getattr(kda, n) for n in STAGES if hasattr(kda, n)}

    def recorder(name, fn):
        def rec(*a, **kw):
            calls[name] = (fn, a, kw)
            return fn(*a, **kw)
        return rec

    try:
        for name, fn in saved.items():
            setattr(kda, name, recorder(name, fn))
        run()
    finally:
        for name, fn in saved.items():
            setattr(kda, name, fn)
    return calls


@triton.jit
def _empty_kernel(x_ptr):
    pass


def parts(out: str, T: int = 2048, H: int = 8, n: int = 50, rounds: int = 5) -> int:
    """The --parts table (module doc)."""
    from sglang_trinv import ops
    from sglang_trinv.ops import direct_launch, kda_intra
    from sglang_trinv.plugin import kda as plugin_kda

    bk.DEV = DEV
    D = 128 if DEV == "cuda" else 16
    kda = importlib.import_module(f"{bk.FLA}.kda")
    stock, tuned, _ = host._kda_paths(T, H, 1, D)
    timed = {}  # label -> callable
    with host._path_env("stock", *stock[1:4], False, SMOKE):
        stock_calls = record_stages(kda, stock[4])
    for name, (fn, a, kw) in stock_calls.items():
        timed[f"stock: {name}"] = (lambda fn=fn, a=a, kw=kw: fn(*a, **kw))

    def stock_whole():  # timed while the plugin is patched: kda.py's stage bindings set to stock's for the call
        bound = {name: getattr(kda, name) for name in stock_calls}
        for name, (fn, _, _) in stock_calls.items():
            setattr(kda, name, fn)
        try:
            return stock[4]()
        finally:
            for name, fn in bound.items():
                setattr(kda, name, fn)
    timed["stock: whole chunk_kda_fwd (stage bindings swapped in per call)"] = stock_whole
    x = torch.zeros(16, device=DEV)
    timed["an empty Triton kernel's launch"] = lambda: _empty_kernel[(1,)](x)
    # the plugin's paths stay patched while they are timed: one ExitStack around the rounds
    with contextlib.ExitStack() as st:
        st.enter_context(host._path_env("plugin", *tuned[1:4], False, SMOKE))
        calls = record_stages(kda, tuned[4])
        for name, (fn, a, kw) in calls.items():
            if name == "chunk_gated_delta_rule_fwd_h":  # the wrapper takes the tuned launch after our intra only
                def f(fn=fn, a=a, kw=kw):
                    plugin_kda._SERVED.ours = True
                    return fn(*a, **kw)
            else:
                def f(fn=fn, a=a, kw=kw):
                    return fn(*a, **kw)
            timed[f"plugin: {name}"] = f
        timed["plugin: whole chunk_kda_fwd"] = tuned[4]
        _, _, kw = calls["chunk_kda_fwd_intra"]
        ikw = dict(kw, fuse_recompute=True)  # as kda.py's binding calls ops (Akk not written)
        timed["plugin intra: ops.kda_fwd_intra"] = lambda: ops.kda_fwd_intra(**ikw)
        q, k, gk, beta = ikw["q"], ikw["k"], ikw["gk"], ikw["beta"]
        B_, T_, H_, _ = k.shape
        Aqk = torch.empty(B_, T_, H_, 64, device=k.device, dtype=k.dtype)
        Akkd = torch.empty(B_, T_, H_, ops.SUB_CHUNK, device=k.device, dtype=torch.float32)
        timed["plugin intra: SGLang's token-parallel diagonal launch"] = lambda: ops._sglang_kda_diagonal(
            q, k, gk, beta, Aqk, Akkd, float(D ** -0.5), ikw.get("cu_seqlens"))

        class _NoLaunch:
            def __getitem__(self, grid):
                return lambda *a, **k: None

        def python_only():
            kernel, diag = kda_intra.kda_intra_kernel, ops._sglang_kda_diagonal
            kda_intra.kda_intra_kernel, ops._sglang_kda_diagonal = _NoLaunch(), (lambda *a, **k: None)
            try:
                return ops.kda_fwd_intra(**ikw)
            finally:
                kda_intra.kda_intra_kernel, ops._sglang_kda_diagonal = kernel, diag
        timed["plugin intra: its Python alone (both launches stubbed)"] = python_only

        def direct(fn):  # SGLANG_TRINV_DIRECT_LAUNCH=1 for the call (setting and unsetting it: ~1 µs)
            def f():
                os.environ[direct_launch.ENV] = "1"
                try:
                    return fn()
                finally:
                    os.environ.pop(direct_launch.ENV, None)
            return f
        if not SMOKE:  # (a compiled kernel's launcher: none under the interpreter)
            timed["plugin intra: ops.kda_fwd_intra, direct launch"] = direct(timed["plugin intra: ops.kda_fwd_intra"])
            timed["plugin: whole chunk_kda_fwd, direct launch"] = direct(tuned[4])
        labels = list(timed)
        for f in timed.values():  # warm-up: compiled, autotuned
            f()
        _sync()
        per = {name: [] for name in labels}
        for r in range(rounds):
            order = labels[r % len(labels):] + labels[:r % len(labels)]
            for name in order:
                f = timed[name]
                _sync()
                t = time.perf_counter()
                for _ in range(n):
                    f()
                per[name].append((time.perf_counter() - t) / n * 1e6)
                _sync()
            print(f"round {r + 1}/{rounds}", flush=True)
    gpu = torch.cuda.get_device_name() if DEV == "cuda" else "CPU (interpreter: times mean nothing)"
    lines = [f"# chunk_kda_fwd host time by stage — {gpu} — T={T} H={H}, one sequence, torch {torch.__version__}, "
             f"triton {triton.__version__}", "",
             f"Enqueue µs per call ({n} calls without synchronising), median of {rounds} rounds (rotating order).", "",
             "| call | enqueue µs | range |", "|---|---|---|"]
    rows = []
    for name in labels:
        v = per[name]
        rows.append(dict(call=name, enqueue_us=statistics.median(v), rounds=v))
        lines.append(f"| {name} | {statistics.median(v):.1f} | {min(v):.1f}–{max(v):.1f} |")
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "kda_host_parts.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out, "kda_host_parts.json"), "w") as fh:
        json.dump(dict(meta=common.run_meta(DEV), T=T, H=H, n=n, rows=rows), fh, indent=1)
    return 0


if __name__ == "__main__":
    a = sys.argv[1:]
    if "--parts" in a:
        a.remove("--parts")
        R = 5
        if "--rounds" in a:
            i = a.index("--rounds")
            R = int(a[i + 1])
            del a[i:i + 2]
        sys.exit(parts(a[0], *(int(x) for x in a[1:4]), rounds=R))
    sys.exit(main(a[0], *(int(x) for x in a[1:4]), *a[4:5]))
