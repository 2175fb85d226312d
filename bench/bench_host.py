"""`sglang-trinv bench host` from a checkout (see sglang_trinv/benchmarks/host.py).

    python3 bench/bench_host.py --out DIR [--smoke]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if "--smoke" in sys.argv:  # before Triton is imported
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()
from sglang_trinv.benchmarks.host import main  # noqa: E402

sys.exit(main())
