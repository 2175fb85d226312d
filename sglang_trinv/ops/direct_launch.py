"""Direct launch of a compiled Triton/Gluon kernel, skipping the JIT's per-call work (opt-in).

SGLang runs GDN prefill eagerly, so every GDN layer pays the host cost of our launch; in do_bench the GPU waits
for it after each cache flush. Triton's ``JITFunction.run`` binds and specialises every argument (~45 for the
Gluon kernel, 31 for the Triton template) and hashes a cache key on each call (~40 % of a Gluon launch's host
time in cProfile on an H200 machine, bench/results/2026-11-27-h200-s9). After a launch kind's first JIT launch,
:class:`DirectLauncher` calls that compiled kernel's launcher itself — what the JIT's last step does, launch
metadata and Triton's launch hooks included — for later calls of the same kind (the caller's key: constexprs and
launch options) whose runtime arguments have the same :func:`arg_class` (what the binder specialises on).

On with ``SGLANG_TRINV_DIRECT_LAUNCH=1``. Falls back to the JIT launch (logged once, then off for the launcher)
if the compiled kernel's launcher takes other arguments (another Triton). Not covered by the key: Triton's debug
and instrumentation knobs changed after the first launch (the JIT would compile another kernel).
"""

from __future__ import annotations

import logging
import os

ENV = "SGLANG_TRINV_DIRECT_LAUNCH"
log = logging.getLogger("sglang_trinv")


def enabled() -> bool:
    return os.environ.get(ENV, "0").strip() == "1"


def arg_class(x):
    """What Triton's binder specialises a runtime argument on, or finer: None; an int's width, == 1 and
    divisibility by 16; a float (nothing); a tensor's dtype and 16-byte alignment. Equal classes → the binder picks
    the same compiled kernel (tests/test_kernels.py checks this against triton's native_specialize_impl)."""
    if x is None:
        return None
    if isinstance(x, bool):
        return ("b", x)
    if isinstance(x, int):
        return ("i", x == 1, x % 16 == 0, -2 ** 31 <= x < 2 ** 31, 0 <= x < 2 ** 63)
    if isinstance(x, float):  # (fp32 whatever its value: the KDA kernel's scale)
        return ("f",)
    return (x.dtype, x.data_ptr() % 16 == 0)


class DirectLauncher:
    """Per kernel: (device, launch key, argument classes) → (CompiledKernel, constexpr values in parameter order).
    ``get_fn`` returns the JIT function (looked up per call, so a module attribute can be replaced in tests)."""

    def __init__(self, name: str, get_fn):
        self.name, self.get_fn = name, get_fn
        self.cache: dict = {}
        self.off: list = []  # non-empty once a direct launch failed (another Triton's launcher API)

    def __call__(self, key, grid: tuple, args: tuple, const: dict, options: dict) -> bool:
        """Launch ``fn[grid](*args, **const, **options)``: through a cached compiled kernel's launcher (True), or
        by the JIT once, caching its kernel for the next call of this key (True), or not at all (False: this
        Triton's launcher API differs — logged once and direct launches of this kernel switched off; the caller
        launches by the JIT)."""
        if self.off:
            return False
        from triton import knobs
        from triton.runtime import driver

        dev = driver.active.get_current_device()
        full = (dev, key, tuple(arg_class(x) for x in args))
        entry = self.cache.get(full)
        if entry is None:
            fn = self.get_fn()
            kern = fn[grid](*args, **const, **options)
            names = fn.arg_names[len(args):]
            if set(names) == set(const) and not hasattr(kern, "result"):  # every constexpr given; compiled
                self.cache[full] = (kern, tuple(const[n] for n in names))
            return True
        kern, tail = entry
        g = (tuple(grid) + (1, 1))[:3]
        try:  # what JITFunction.run does once it has the kernel
            stream = driver.active.get_current_stream(dev)
            kern.run(g[0], g[1], g[2], stream, kern.function, kern.packed_metadata,
                     kern.launch_metadata(g, stream, *args, *tail), knobs.runtime.launch_enter_hook,
                     knobs.runtime.launch_exit_hook, *args, *tail)
        except (TypeError, AttributeError) as e:  # another Triton's launcher signature: back to the JIT launch
            self.off.append(e)
            import triton

            log.warning("sglang-trinv: direct launch of %s unavailable on Triton %s (%s: %s); using the JIT "
                        "launch", self.name, triton.__version__, type(e).__name__, e)
            return False
        return True
