"""The shared start of the newer bench/ scripts, imported before torch or any kernel module: the checkout on
sys.path, and for ``--smoke`` the Triton interpreter switched on (it must be before Triton is imported)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SMOKE = "--smoke" in sys.argv
if SMOKE:
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()


def out_dir() -> str:
    """The script's output folder (its first argument), created."""
    os.makedirs(sys.argv[1], exist_ok=True)
    return sys.argv[1]


def kernels_bench():
    """``sglang_trinv.benchmarks.kernels`` (inputs, timers, stock launches), on the CPU for ``--smoke``."""
    from sglang_trinv.benchmarks import kernels as bk

    if SMOKE:
        bk.DEV = "cpu"
    return bk
