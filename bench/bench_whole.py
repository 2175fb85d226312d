"""Whole SGLang GDN layer forward, stock vs the plugin, every benchmark shape (see
sglang_trinv/benchmarks/layer.py) — from a checkout, e.g. on the device machine.

    python3 bench/bench_whole.py DIR [--smoke]      (= sglang-trinv bench layer --out DIR [--smoke])
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if "--smoke" in sys.argv:  # before Triton is imported
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()
from sglang_trinv.benchmarks.layer import main  # noqa: E402

args = sys.argv[1:]
sys.exit(main(["--out", args[0], *args[1:]] if args and not args[0].startswith("-") else args))
