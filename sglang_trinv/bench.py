"""``sglang-trinv bench``: A/B benchmarks of our kernels against SGLang's stock ones.

    sglang-trinv bench kernels [--out DIR] [--quick] [--smoke] …   kernel level (GPU; --smoke: CPU dry run)
    sglang-trinv bench layer [--out DIR] [--smoke]                  the whole GDN layer forward
    sglang-trinv bench stages|host [--out DIR] [--smoke]            where its time goes; host cost vs GPU time
    sglang-trinv bench kda|kda-graph [--out DIR] [--smoke]           Kimi-Linear KDA: kernels; the captured extend
    sglang-trinv bench roofline [--out DIR] [--smoke]               the memory roofline: how far any kernel could go
    sglang-trinv bench prefill …                                    real SGLang servers, tokens/s and TTFT

Each benchmark lives in :mod:`sglang_trinv.benchmarks`; this module only dispatches.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "kernels": ("sglang_trinv.benchmarks.kernels",
                "fused KKᵀ+inverse, intra (w/u), solve_tril vs FLA, whole GDN forward; errors vs fp64"),
    "layer": ("sglang_trinv.benchmarks.layer",
              "whole SGLang GDN layer forward (cumsum, intra, state, output), stock vs plugin, every shape"),
    "kda": ("sglang_trinv.benchmarks.kda", "Kimi-Linear KDA intra kernel and chunk_kda_fwd, stock vs every method"),
    "kda-graph": ("sglang_trinv.benchmarks.kda_graph",
                  "KDA extend captured as SGLang's prefill CUDA graphs run it (padded bucket tables), stock vs plugin"),
    "roofline": ("sglang_trinv.benchmarks.roofline",
                 "intra and KKᵀ+inverse vs a kernel that only moves their bytes: the largest reachable speed-up"),
    "stages": ("sglang_trinv.benchmarks.stages",
               "whole GDN forward by stage (stock), our pipeline kernel beside it, Amdahl bound of the swap"),
    "host": ("sglang_trinv.benchmarks.host",
             "CPU enqueue cost vs do_bench vs CUDA-graph GPU time, stock vs ours (intra and whole forward)"),
    "prefill": ("sglang_trinv.benchmarks.prefill",
                "prefill tokens/s and TTFT of real SGLang servers, one per --linear-attn-inv method, vs stock"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS), help="; ".join(f"{k}: {v[1]}" for k, v in
                                                                         BENCHMARKS.items()))
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options (--help for them)")


def run(args: argparse.Namespace) -> int:
    if "--smoke" in args.rest:  # Triton must not be imported before the interpreter is switched on
        from .testing import enable_interpreter

        enable_interpreter()
    module = importlib.import_module(BENCHMARKS[args.benchmark][0])
    return int(module.main(args.rest) or 0)
