"""Run a callback right after a module is imported (or now, if it already is).

The plugin is loaded in every SGLang process (CLI, tokenizer, detokenizer, DP controller, schedulers), but
only the processes that run the model import the FLA kernels. Importing them eagerly from ``register()``
would pull Triton kernels, and ``fla.utils``' CUDA device queries, into processes that never run a kernel.
So the kernel patches are applied when SGLang itself imports the target module.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from collections.abc import Callable
from types import ModuleType

Callback = Callable[[ModuleType], None]


class _Loader(importlib.abc.Loader):
    """Delegates to the real loader, then runs the module's callbacks."""

    def __init__(self, loader, finder: "_PostImportFinder"):
        self._loader = loader
        self._finder = finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # put the real loader back first: inspect/linecache (Triton's @jit reads source) and reload() use it
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._finder.fire(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callback]] = {}
        self._lock = threading.RLock()

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.callbacks:
            return None
        for finder in sys.meta_path:  # let the other finders locate it; we only wrap the loader
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader, self)
                return spec
        return None

    def fire(self, module: ModuleType) -> None:
        with self._lock:
            callbacks = list(self.callbacks.get(module.__name__, ()))
        for callback in callbacks:
            callback(module)


_finder = _PostImportFinder()


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` now if ``name`` is imported, else right after its import (once per import).

    An exception from the callback propagates out of the ``import`` statement: that is how an incompatible
    SGLang is refused at model load instead of silently running stock kernels.
    """
    with _finder._lock:
        callbacks = _finder.callbacks.setdefault(name, [])
        if callback not in callbacks:
            callbacks.append(callback)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
    module = sys.modules.get(name)
    if module is not None:
        callback(module)


def cancel(name: str, callback: Callback) -> None:
    with _finder._lock:
        callbacks = _finder.callbacks.get(name, [])
        if callback in callbacks:
            callbacks.remove(callback)
        if not callbacks:
            _finder.callbacks.pop(name, None)
        if not _finder.callbacks and _finder in sys.meta_path:
            sys.meta_path.remove(_finder)


def pending() -> dict[str, int]:
    """Module name -> number of callbacks waiting (for tests and diagnostics)."""
    with _finder._lock:
        return {name: len(cbs) for name, cbs in _finder.callbacks.items()}
