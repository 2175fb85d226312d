"""Host (CPU) cost of a launch vs GPU time, stock vs ours, where the GDN forward is small enough for the host to
matter (short prefills, H=8 heads per GPU at TP 4, varlen batches).

Per path and shape, in one process on one GPU:
  enqueue µs   wall time of N back-to-back calls without synchronising, / N: what the Python wrapper plus its
               kernel launches cost the CPU (the GPU queue never fills at N = 50)
  do_bench µs  triton.testing.do_bench median: the GPU cannot start before the host has launched, so this is
               ≈ max(host, GPU) for a small call — the number benchmarks usually quote
  graph µs     the same call captured in a CUDA graph and replayed: GPU time alone (None if not capturable)
Paths: stock intra (SGLang's fused KKᵀ+solve, then recompute_w_u), ours (gdn_fwd_intra), our pipeline kernel
(gdn_cumsum_fwd_intra), and the whole chunk_gated_delta_rule_fwd: stock, through the plugin with the fused
pipeline, and with the intra kernel swapped only. ``--kda``: the whole chunk_kda_fwd instead (Kimi-Linear; Hg of
--shape unused, KDA has H key heads): stock, through the plugin (its tuned state launch), and through the plugin
with SGLang's state launch.

The enqueue time is taken in ``--rounds`` rounds, the paths' order rotating each round; the table gives the median
and the range. s28 (H200 machine): one path's enqueue time varied from 395 to 718 µs with its place in the process
(bench/profile_kda_host.py), so one pass in a fixed order cannot rank paths whose host costs are close.

    sglang-trinv bench host --out DIR            # GPU: DIR/host.json + host.md
    sglang-trinv bench host --out DIR --smoke    # CPU, Triton interpreter (checks the script; times mean nothing)
    sglang-trinv bench host --out DIR --head-dim 64 --shape 1024,4,2,1 --shape 8192,4,2,8   # a small model's layer
    sglang-trinv bench host --out DIR --kda --shape 8192,8,8,1 --shape 2048,8,8,4           # KDA's whole forward
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from importlib import import_module

import torch

import sglang_trinv

from .. import ops
from ..plugin._state import ENV_FUSE_PIPELINE
from . import common
from . import kernels as bk

SHAPES = [(512, 8, 4, 1), (4096, 8, 4, 1), (4096, 8, 4, 8), (8192, 8, 4, 8), (4096, 32, 16, 8), (8192, 32, 16, 1)]
SMOKE_SHAPES = [(100, 2, 1, 1), (100, 2, 1, 3)]
KDA_SHAPES = [(2048, 8, 8, 1), (8192, 8, 8, 1), (8192, 8, 8, 8), (8192, 32, 32, 1)]
# --gluon: every plugin path on the Gluon kernel (SGLANG_TRINV_GLUON=1) and again on Triton (=0), at shapes where
# the Gluon kernel is faster in GPU time; the host cost decides where `auto` takes it (ops.GLUON_MIN_TILES)
GLUON_SHAPES = [(8192, 32, 16, 1), (32768, 8, 4, 8), (32768, 8, 4, 1), (32768, 32, 16, 1)]


def _sync():
    if bk.DEV == "cuda":
        torch.cuda.synchronize()


def enqueue_us(fn, n: int):
    fn()
    _sync()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    dt = time.perf_counter() - t
    _sync()
    return dt / n * 1e6


def graph_us(fn):
    return common.graph_us(fn, bk.DEV)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default="bench/results/latest-host")
    ap.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, tiny shapes (checks the script)")
    ap.add_argument("--gluon", action="store_true",
                    help="shapes where the Gluon kernel is faster in GPU time: each of our paths forced to Gluon, "
                         "then to Triton")
    ap.add_argument("--shape", action="append", type=common.shape_arg, default=[], metavar="T,H,Hg,SEQS",
                    help="only this shape (repeatable; overrides the default list), e.g. 1024,4,2,8")
    ap.add_argument("--kda", action="store_true", help="the whole chunk_kda_fwd (stock, plugin, plugin with "
                                                          "SGLang's state launch) instead of the GDN paths")
    ap.add_argument("--rounds", type=int, default=3, help="enqueue rounds, the paths' order rotating (default 3)")
    ap.add_argument("--head-dim", type=int, default=None, metavar="D",
                    help="K = V = D (default 128, --smoke 16; the shipped tiny Qwen3-Next has 64)")


def _gdn_paths(chunk, inp, H, D, gluon: bool):
    """(name, method, SGLANG_TRINV_FUSE_PIPELINE, extra env, fn) of the GDN paths."""
    k, v, beta, g_raw, g, cu = (inp[n] for n in ("k", "v", "beta", "g_raw", "g", "cu_seqlens"))
    ci = chunk.prepare_chunk_indices(cu, 64) if cu is not None else None
    n = 1 if cu is None else len(cu) - 1
    q = k.clone()
    h0 = torch.zeros(n, H, D, D, device=k.device)
    idx = torch.arange(n, device=k.device)

    def whole():
        return chunk.chunk_gated_delta_rule_fwd(q=q, k=k, v=v, g=g_raw, beta=beta, scale=D ** -0.5,
                                                initial_state=h0, initial_state_indices=idx, cu_seqlens=cu,
                                                chunk_indices=ci, inplace_update=True)

    paths = [
        ("intra: stock", None, None, {}, lambda: bk.stock_intra(k, v, g, beta, cu, ci)),
        ("intra: ours (gdn_fwd_intra)", None, None, {},
         lambda: ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, chunk_indices=ci)),
        ("cumsum+intra: ours (gdn_cumsum_fwd_intra)", None, None, {},
         lambda: ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu, chunk_indices=ci)),
        ("whole: stock", "stock", "1", {}, whole),
        ("whole: plugin, fused pipeline", "blockdoubling", "1", {}, whole),
        ("whole: plugin, intra only", "blockdoubling", "0", {}, whole),
    ]
    if gluon:  # the same paths on the Triton kernel (SGLANG_TRINV_GLUON=0)
        paths += [(n + " [triton]", m, fz, e, fn) for n, m, fz, e, fn in paths[1:] if m != "stock"]
    return paths


def _kda_paths(T, H, nseq, D):
    """The whole chunk_kda_fwd: stock, through the plugin, and through the plugin with SGLang's state launch."""
    from ..plugin._state import ENV_KDA
    from ..plugin.gdn import ENV_STATE_LAUNCH
    from . import kda as bkda

    bkda.DEV = bk.DEV
    kda = import_module(f"{bk.FLA}.kda")
    inp = bkda.make_inputs(T, H, D, D, nseq, 0)
    q, k, v, beta, cu, g_raw = (inp[n] for n in ("q", "k", "v", "beta", "cu_seqlens", "g_raw"))
    n = 1 if cu is None else len(cu) - 1
    ci = ops.prepare_chunk_indices(cu, 64) if cu is not None else None
    state = torch.zeros(n, H, D, D, device=k.device)
    idx = torch.arange(n, device=k.device)
    v_buf = v.clone()  # (chunk_kda_fwd writes o into v)

    def whole():
        return kda.chunk_kda_fwd(q, k, v_buf, g_raw, beta, D ** -0.5, state, idx, cu_seqlens=cu, chunk_indices=ci)

    return [("kda whole: stock", "stock", None, {}, whole),
            ("kda whole: plugin", "blockdoubling", None, {ENV_KDA: "1"}, whole),
            ("kda whole: plugin, SGLang's state launch", "blockdoubling", None,
             {ENV_KDA: "1", ENV_STATE_LAUNCH: "sglang"}, whole)]


@contextlib.contextmanager
def _path_env(name, method, fuse, env, gluon: bool, smoke: bool):
    """The environment and plugin state of one path (unpatched afterwards)."""
    gl_env = ("0" if name.endswith("[triton]") else "1" if gluon and not smoke
              else os.environ.get(ops.ENV_GLUON, "auto"))
    with contextlib.ExitStack() as st:
        if fuse:
            st.enter_context(common.env_var(ENV_FUSE_PIPELINE, fuse))
        st.enter_context(common.env_var(ops.ENV_GLUON, gl_env))
        for k, v in env.items():
            st.enter_context(common.env_var(k, v))
        if method == "blockdoubling":
            sglang_trinv.patch(method=method)
        try:
            yield
        finally:
            sglang_trinv.unpatch()


def run(args) -> int:
    if args.smoke:
        bk.DEV = "cpu"
    if args.rounds < 1:
        raise SystemExit("--rounds must be ≥ 1")
    default_shapes = (SMOKE_SHAPES if args.smoke else KDA_SHAPES if args.kda else GLUON_SHAPES if args.gluon
                      else SHAPES)
    shapes, D, N = args.shape or default_shapes, args.head_dim or (16 if args.smoke else 128), 1 if args.smoke else 50
    out = args.out
    chunk = import_module(f"{bk.FLA}.chunk")
    os.makedirs(out, exist_ok=True)
    rows = []
    for T, H, Hg, nseq in shapes:
        inp = None
        if args.kda:
            paths = _kda_paths(T, H, nseq, D)
        else:
            inp = bk.make_inputs(T, H, Hg, D, D, nseq, 0)
            paths = _gdn_paths(chunk, inp, H, D, args.gluon)
        enq = {p[0]: [] for p in paths}
        for rnd in range(args.rounds):  # the order rotates: each path runs first once in len(paths) rounds
            for name, method, fuse, env, fn in paths[rnd % len(paths):] + paths[:rnd % len(paths)]:
                with _path_env(name, method, fuse, env, args.gluon, args.smoke):
                    enq[name].append(enqueue_us(fn, N))
        for name, method, fuse, env, fn in paths:
            with _path_env(name, method, fuse, env, args.gluon, args.smoke):
                r = dict(T=T, H=H, Hg=H if args.kda else Hg, nseq=nseq, path=name,
                         enqueue=statistics.median(enq[name]), enqueue_rounds=enq[name],
                         do_bench=bk.bench(fn) if bk.DEV == "cuda" else None, graph=graph_us(fn))
            rows.append(r)
            print(r, flush=True)
        del inp, paths
        if bk.DEV == "cuda":
            torch.cuda.empty_cache()
    meta = common.run_meta(bk.DEV, N=N, rounds=args.rounds)
    f = lambda x: "–" if x is None else f"{x:.1f}"  # noqa: E731
    md = common.md_header("Host cost vs GPU time", meta,
                          f"K=V={D}. enqueue = CPU µs per call ({N} calls, no sync), median of {args.rounds} rounds "
                          "(the paths' order rotating; range after it); do_bench = median µs (≈ max(host, GPU)); "
                          "graph = CUDA-graph replay (GPU only).")
    md += ["| T | H/Hg | seqs | path | enqueue µs | range | do_bench µs | graph µs |",
           "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['T']} | {r['H']}/{r['Hg']} | {r['nseq']} | {r['path']} | {f(r['enqueue'])} | "
           f"{min(r['enqueue_rounds']):.1f}–{max(r['enqueue_rounds']):.1f} | {f(r['do_bench'])} | "
           f"{f(r['graph'])} |" for r in rows]
    return common.write_report(out, "host", meta, rows, md)


def main(argv=None) -> int:
    return common.cli_main(__doc__, add_arguments, run, argv, prog="sglang-trinv bench host")
