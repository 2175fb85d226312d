"""What every kernel benchmark shares: timing, error against an fp64 reference, METHOD:PRECISION lists and
writing results (JSON + markdown) as they come in, and the command-line entry every benchmark module has."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import torch


def time_us(fn, device: str, reps: int | None = None) -> float:
    """Median µs of ``fn`` (``triton.testing.do_bench`` after a warm-up call); on a CPU (interpreter smoke
    runs) one wall-clock call, which only shows that the path runs."""
    fn()
    if device != "cuda":
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e6
    import triton

    torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=25, rep=reps or 100, return_mode="median") * 1e3


def graph_us(fn, device: str) -> float | None:
    """GPU time alone: ``fn`` captured in a CUDA graph and replayed (median µs); None on a CPU or where ``fn``
    cannot be captured (printed)."""
    if device != "cuda":
        return None
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()
        torch.cuda.current_stream().wait_stream(s)
        import triton

        return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median") * 1e3
    except Exception as e:  # noqa: BLE001 (a path that cannot be captured is reported as such)
        print(f"    (no graph: {type(e).__name__}: {str(e)[:120]})", flush=True)
        torch.cuda.synchronize()
        return None


def shape_arg(text: str) -> tuple[int, int, int, int]:
    """argparse type of a benchmark's ``--shape T,H,Hg,SEQS``: the four ints, checked."""
    try:
        T, H, Hg, n = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected T,H,Hg,SEQS, e.g. 8192,32,16,1") from None
    if min(T, H, Hg, n) < 1 or H % Hg or n > T:
        raise argparse.ArgumentTypeError(f"{text!r}: need T, H, Hg, SEQS ≥ 1, Hg dividing H, SEQS ≤ T")
    return T, H, Hg, n


def gpu_rows(out: str, shapes, per_shape) -> tuple[dict, list]:
    """(meta, rows) of a GPU script: ``per_shape(*shape, rows)`` appends its rows for each shape, the CUDA cache is
    emptied between shapes; ``out`` is created."""
    meta = run_meta("cuda", dtype="bfloat16")
    rows: list = []
    os.makedirs(out, exist_ok=True)
    for sh in shapes:
        per_shape(*sh, rows)
        torch.cuda.empty_cache()
    return meta, rows


def run_meta(device: str, **extra) -> dict:
    """What every result file records: GPU name (or the CPU smoke run), date, and software versions."""
    import datetime
    import platform

    import sglang
    import triton

    return dict(gpu=torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreter smoke run)",
                date=datetime.datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
                triton=triton.__version__, sglang=sglang.__version__, python=platform.python_version(), **extra)


def rel_err(x: torch.Tensor, ref64: torch.Tensor) -> dict:
    """max_abs, max_rel = max|x − ref| / max|ref|, fro_rel, and the count of non-finite entries of x."""
    x = x.double()
    d = (x - ref64).abs()
    return dict(max_abs=float(d.nan_to_num(float("inf")).max()),
                max_rel=float(d.nan_to_num(float("inf")).max() / ref64.abs().max()),
                fro_rel=float(torch.linalg.vector_norm(d.nan_to_num(1e30)) / torch.linalg.vector_norm(ref64)),
                nonfinite=int((~torch.isfinite(x)).sum()))


def parse_methods(spec: str) -> list[tuple[str, str | None]]:
    """``"blockdoubling:bf16x3,hybrid"`` -> ``[("blockdoubling", "bf16x3"), ("hybrid", None)]``."""
    return [tuple(mp.split(":", 1)) if ":" in mp else (mp, None) for mp in spec.split(",")]


def save_results(out: str, stem: str, meta: dict, rows: list[dict], markdown: str | None = None) -> None:
    """``out/stem.json`` (meta + rows) and, when given, ``out/stem.md``."""
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    if markdown is not None:
        with open(os.path.join(out, f"{stem}.md"), "w") as f:
            f.write(markdown)


def md_header(title: str, meta: dict, details: str) -> list[str]:
    """First lines of a result markdown: title with GPU and date, then versions followed by ``details``."""
    return [f"# {title} — {meta['gpu']} — {meta['date']}", "",
            f"torch {meta['torch']}, triton {meta['triton']}, sglang {meta['sglang']}; {details}", ""]


def write_report(out: str, stem: str, meta: dict, rows: list[dict], md_lines: list[str]) -> int:
    """The end of a benchmark run: ``out/stem.json`` + ``out/stem.md`` (the markdown lines joined), the markdown
    printed; returns the exit status 0."""
    text = "\n".join(md_lines) + "\n"
    os.makedirs(out, exist_ok=True)
    save_results(out, stem, meta, rows, text)
    print(text)
    return 0


def cli_main(doc: str, add_arguments, run, argv=None, prog: str | None = None) -> int:
    """A benchmark module's ``main(argv)``: its own parser (first docstring line as description), then ``run``."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def try_plot(plot_fn, *args) -> bool:
    """Draw a PNG; a plotting failure (e.g. no matplotlib) is reported, never fatal: the JSON/markdown hold the
    measurements."""
    try:
        plot_fn(*args)
        return True
    except Exception as e:  # noqa: BLE001
        print(f"no plot: {type(e).__name__}: {e}", flush=True)
        return False


@contextlib.contextmanager
def env_var(name: str, value: str | None):
    """``os.environ[name] = value`` (None: unset) for the block, the previous value (or its absence) restored
    after."""
    saved = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


@contextlib.contextmanager
def fused_defaults(tuning=None, precision: str | None = None, method: str = "blockdoubling"):
    """The fused kernels' module defaults (what the plugin uses: ``ops.DEFAULT_TUNING_FUSED`` and
    ``ops.DEFAULT_PRECISION[method]``) replaced for the block, restored after (benchmark sweeps)."""
    from .. import ops

    # every cache keyed on precision=None (the default) must forget it, on entry and on exit
    caches = (ops.split_precision, ops._method_codes, ops._merge_out_code, ops._template_constexprs)
    saved = ops.DEFAULT_TUNING_FUSED, ops.DEFAULT_PRECISION[method]
    ops.DEFAULT_TUNING_FUSED = tuning or saved[0]
    ops.DEFAULT_PRECISION[method] = precision or saved[1]
    for c in caches:
        c.cache_clear()
    try:
        yield
    finally:
        ops.DEFAULT_TUNING_FUSED, ops.DEFAULT_PRECISION[method] = saved
        for c in caches:
            c.cache_clear()


def tuning_fields(text: str, what: str = "tuning") -> dict:
    """Fused-kernel Tuning fields from ``what``'s text (an environment variable's), e.g. 'l2_warm=32,pdl=1' ->
    {"l2_warm": 32, "pdl": True}: each value cast to the field's type."""
    from .. import ops

    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, _, raw = item.partition("=")
        if not hasattr(ops.DEFAULT_TUNING_FUSED, name):
            raise SystemExit(f"{what}: Tuning has no field {name!r}")
        kind = type(getattr(ops.DEFAULT_TUNING_FUSED, name))
        out[name] = raw.strip().lower() in ("1", "true", "yes") if kind is bool else kind(raw)
    return out


def graph_kernel_us(graph, replays: int = 20) -> tuple[dict, list]:
    """({kernel name: µs per replay} over ``replays`` replays of the CUDA graph ``graph`` under ``torch.profiler``
    (CUPTI records the kernels of graph replays), the last replay's timeline: [(kernel, start µs after the replay's
    first kernel started, duration µs)])."""
    from torch.profiler import ProfilerActivity, profile

    graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize()
    per: dict = {}
    spans = []
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA and e.device_time > 0:
            per[e.name[:60]] = per.get(e.name[:60], 0.0) + e.device_time / replays
            spans.append((e.time_range.start, e.name[:40], e.device_time))
    spans.sort()
    n = len(spans) // replays
    last = spans[-n:] if n else []
    return per, [(name, start - last[0][0], dur) for start, name, dur in last]


def capture_graph(fn, warmups: int = 2):
    """``fn`` captured in a CUDA graph, after ``warmups`` calls on a side stream (compiles, autotuning: neither
    may run inside the capture)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmups):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def replay_us(graph, replays: int = 10, rounds: int = 1) -> float:
    """µs per replay of a CUDA graph: CUDA events around ``replays`` back-to-back replays (what a CUDA-graph timer
    sees), median over ``rounds``."""
    import statistics

    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(replays):
            graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / replays)
    return statistics.median(times)
