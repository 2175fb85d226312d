"""`sglang-trinv bench stages` from a checkout (see sglang_trinv/benchmarks/stages.py).

    python3 bench/bench_stages.py --out DIR [--smoke]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if "--smoke" in sys.argv:  # before Triton is imported
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()
from sglang_trinv.benchmarks.stages import main  # noqa: E402

sys.exit(main())
