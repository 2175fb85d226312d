"""Runs in a process spawned like SGLang's schedulers (``multiprocessing`` spawn, inherited environment).

Mirrors ``sglang.srt.managers.scheduler.run_scheduler_process``: ``load_plugins()`` first, then the model
code imports SGLang's GDN kernels. Reports what the plugin did (not collected by pytest: no ``test_`` prefix).
"""


def report(queue) -> None:
    try:
        import torch

        from sglang_trinv.testing import enable_interpreter

        if not torch.cuda.is_available():
            enable_interpreter()  # as tests/conftest.py does; before SGLang's kernels are imported
        from sglang.srt.plugins import load_plugins

        load_plugins()
        from sglang.kernels.ops.attention.fla import chunk, chunk_fwd

        import sglang_trinv.plugin as plugin

        fn = chunk.chunk_gated_delta_rule_fwd_intra
        patched = bool(getattr(fn, "__sglang_trinv__", False))
        if patched:  # one small call through SGLang's own module global
            device = "cuda" if torch.cuda.is_available() else "cpu"
            gen = torch.Generator().manual_seed(0)
            k = torch.nn.functional.normalize(torch.randn(1, 64, 1, 16, generator=gen), dim=-1).to(device)
            v = torch.randn(1, 64, 2, 16, generator=gen).to(device)
            g = torch.nn.functional.logsigmoid(torch.randn(1, 64, 2, generator=gen)).cumsum(1).to(device)
            beta = torch.rand(1, 64, 2, generator=gen).to(device)
            fn(k, v, g, beta)
        state = plugin.active()
        queue.put({
            "method": state.method,
            "precision": state.precision,
            "patched": patched,
            "chunk_fwd_patched": bool(getattr(chunk_fwd.chunk_gated_delta_rule_fwd_intra, "__sglang_trinv__", False)),
            "counts": state.counts,
        })
    except BaseException as e:  # report instead of dying silently
        import traceback

        queue.put({"error": f"{e!r}\n{traceback.format_exc()}"})
