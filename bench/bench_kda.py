"""KDA (Kimi-Linear) A/B benchmark from a checkout: SGLang's stock chunk_kda_fwd_intra vs ours, every method
(see sglang_trinv/benchmarks/kda.py).

    python bench/bench_kda.py --out bench/results/DATE-GPU-kda [--quick] [--tune]   # on a GPU
    python bench/bench_kda.py --smoke --out /tmp/kda-smoke                           # CPU interpreter check
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if "--smoke" in sys.argv:  # before Triton is imported
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()
from sglang_trinv.benchmarks.kda import main  # noqa: E402

sys.exit(main())
