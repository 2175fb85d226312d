"""Kernel A/B benchmark from a checkout: the same as ``sglang-trinv bench kernels`` (see
sglang_trinv/benchmarks/kernels.py)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if "--smoke" in sys.argv:  # before Triton is imported
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()
from sglang_trinv.benchmarks.kernels import main  # noqa: E402

sys.exit(main())
