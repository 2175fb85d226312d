"""The SGLang plugin, against the installed SGLang: entry point, server flags, GDN prefill patch, spawn.

Kernel runs use SGLang's own ``chunk_gated_delta_rule_fwd`` (chunk.py) in fp32, under the Triton
interpreter on CPU (tests/conftest.py), with small shapes: the interpreter is slow.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import sys
import types

import pytest
import torch

import sglang_trinv
import sglang_trinv.plugin as plugin
from sglang_trinv import ops
from sglang_trinv.plugin import ENV_METHOD, ENV_PRECISION, STOCK, _imports, args as plugin_args, backends
from sglang_trinv.plugin._state import ENV_FUSE_PIPELINE, STATE
from sglang_trinv.registry import METHOD_NAMES

FLA = "sglang.kernels.ops.attention.fla"
SPAWN_TIMEOUT = 300
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # as tests/conftest.py (not importable everywhere)
# the interpreter multiplies in true fp32; on a GPU SGLang's stock kernel runs its fp32 dots in TF32
TOL = 1e-2 if DEVICE == "cuda" else 1e-4


@pytest.fixture(autouse=True)
def clean_selection(monkeypatch):
    """Every test starts and ends stock, with the env vars restored to what they were."""
    for name in (ENV_METHOD, ENV_PRECISION, "SGLANG_PLUGINS"):
        monkeypatch.setenv(name, "")  # records the original value; teardown restores it
    plugin.unpatch()
    yield
    plugin.unpatch()


@pytest.fixture(scope="module")
def loaded():
    """SGLang's own plugin loading, as the CLI, engine and every scheduler do."""
    from sglang.srt.plugins import load_plugins

    saved = os.environ.pop("SGLANG_PLUGINS", None)  # a user's filter must not hide the plugin under test
    try:
        load_plugins()
    finally:
        if saved is not None:
            os.environ["SGLANG_PLUGINS"] = saved
    from sglang.srt.server_args import ServerArgs

    return ServerArgs


def _parser(ServerArgs):
    parser = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(parser)
    return parser


@pytest.fixture
def restore_logging():
    """prepare_server_args() calls logging.basicConfig(force=True); give pytest its root logger back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# --------------------------------------------------------------------------- plugin discovery


def test_entry_point_is_discovered_and_sglang_plugins_filters_it(monkeypatch):
    from sglang.srt.plugins import GENERAL_PLUGINS_GROUP, load_plugins_by_group

    monkeypatch.setenv("SGLANG_PLUGINS", "")
    found = load_plugins_by_group(GENERAL_PLUGINS_GROUP)
    assert found["sglang_trinv"] == (plugin.register, "sglang-trinv")

    monkeypatch.setenv("SGLANG_PLUGINS", "sglang_trinv")
    assert set(load_plugins_by_group(GENERAL_PLUGINS_GROUP)) == {"sglang_trinv"}

    monkeypatch.setenv("SGLANG_PLUGINS", "some_other_plugin")
    assert "sglang_trinv" not in load_plugins_by_group(GENERAL_PLUGINS_GROUP)


def test_load_plugins_runs_register_and_hooks_server_args(loaded):
    from sglang.srt.plugins.hook_registry import HookRegistry

    ServerArgs = loaded
    assert plugin.active().counts.get("register", 0) >= 1
    for method in ("add_cli_args", "from_cli_args", "resolve_once"):
        assert f"sglang.srt.server_args.ServerArgs.{method}" in HookRegistry._patched
        assert hasattr(getattr(ServerArgs, method), "__wrapped__"), method
    # stock: registering touched no kernel
    assert plugin.active().patched == ()


# --------------------------------------------------------------------------- server flags


def test_server_parser_accepts_method_and_exports_the_choice(loaded, restore_logging):
    from sglang.srt.server_args import prepare_server_args

    parsed = _parser(loaded).parse_args(["--model-path", "dummy", "--linear-attn-inv", "blockdoubling"])
    assert parsed.linear_attn_inv == "blockdoubling" and parsed.linear_attn_inv_precision is None
    parsed = _parser(loaded).parse_args(["--model-path", "dummy", "--linear-attn-inv-precision", "bf16x3/tf32"])
    assert parsed.linear_attn_inv_precision == "bf16x3/tf32"  # DIAG/MERGE

    # the launcher's own path: prepare_server_args -> add_cli_args -> parse -> from_cli_args
    kernel_modules = (f"{FLA}.chunk", f"{FLA}.kda")
    loaded_before = {m for m in kernel_modules if m in sys.modules}
    server_args = prepare_server_args(
        ["--model-path", "dummy", "--linear-attn-inv", "hybrid", "--linear-attn-inv-precision", "tf32x3"]
    )
    assert type(server_args).__name__ == "ServerArgs"
    assert os.environ[ENV_METHOD] == "hybrid" and os.environ[ENV_PRECISION] == "tf32x3"
    assert plugin.active()[:2] == ("hybrid", "tf32x3")
    # lazy: the CLI process never imports the kernels itself (earlier tests in this pytest process may have
    # loaded them: a kernel module already loaded is patched at once, as in a scheduler)
    assert {m for m in kernel_modules if m in sys.modules} == loaded_before
    if not loaded_before:
        assert plugin.active().patched == ()

    prepare_server_args(["--model-path", "dummy", "--linear-attn-inv", "stock"])  # clears the selection
    assert ENV_METHOD not in os.environ and plugin.active().method == STOCK


def test_server_parser_rejects_unknown_method_listing_choices(loaded, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser(loaded).parse_args(["--model-path", "dummy", "--linear-attn-inv", "gauss_jordan"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--linear-attn-inv: invalid choice: 'gauss_jordan'" in err
    for name in (STOCK, *METHOD_NAMES):
        assert repr(name) in err
    with pytest.raises(SystemExit):
        _parser(loaded).parse_args(["--model-path", "dummy", "--linear-attn-inv-precision", "bf16x3/fp8"])
    assert "--linear-attn-inv-precision: unknown precision 'bf16x3/fp8'" in capsys.readouterr().err


def test_env_var_sets_the_flag_default(loaded, monkeypatch):
    monkeypatch.setenv(ENV_METHOD, "column_sweep")
    parsed = _parser(loaded).parse_args(["--model-path", "dummy"])
    assert parsed.linear_attn_inv == "column_sweep"
    loaded.from_cli_args(parsed)
    assert plugin.active().method == "column_sweep"


def test_invalid_env_var_is_refused(monkeypatch):
    monkeypatch.setenv(ENV_METHOD, "gauss_jordan")
    with pytest.raises(ValueError, match=r"SGLANG_LINEAR_ATTN_INV='gauss_jordan'.*choose from: stock, "):
        plugin.register()
    # load_plugins() only logs that; resolve_once (launcher and Engine) re-raises it
    with pytest.raises(ValueError, match="gauss_jordan"):
        plugin_args.resolve_once_hook(types.SimpleNamespace())
    plugin.unpatch()
    assert STATE.error is None and plugin.active().method == STOCK


def test_invalid_env_var_makes_the_kernel_import_fail(monkeypatch):
    """In a scheduler nothing re-raises load_plugins()' logged error: importing SGLang's GDN kernels must fail."""
    import importlib

    from sglang_trinv.plugin import gdn

    chunk = importlib.import_module(gdn.CHUNK)
    # as in a fresh scheduler: chunk.py not imported yet (monkeypatch puts the module back afterwards)
    monkeypatch.delitem(sys.modules, gdn.CHUNK)
    monkeypatch.setattr(sys.modules[FLA], "chunk", chunk)
    monkeypatch.setenv(ENV_METHOD, "gauss_jordan")
    with pytest.raises(ValueError, match="gauss_jordan"):
        plugin.register()
    with pytest.raises(ValueError, match="gauss_jordan"):
        importlib.import_module(gdn.CHUNK)
    assert gdn.CHUNK not in sys.modules
    plugin.unpatch()  # clears the error and the import hook
    assert gdn.CHUNK not in _imports.pending()


def test_explicit_non_triton_prefill_backend_is_refused(loaded):
    parsed = _parser(loaded).parse_args(
        ["--model-path", "dummy", "--linear-attn-inv", "blockdoubling", "--linear-attn-prefill-backend", "flashinfer"]
    )
    server_args = loaded.from_cli_args(parsed)
    with pytest.raises(ValueError, match=r"--linear-attn-prefill-backend=flashinfer selects another prefill"):
        server_args.resolve_once()  # our BEFORE hook runs ahead of SGLang's resolution pipeline
    # decode may use another backend; with stock nothing is checked
    plugin_args.resolve_once_hook(types.SimpleNamespace(linear_attn_prefill_backend="triton",
                                                        linear_attn_backend="flashinfer"))
    plugin.unpatch()
    plugin_args.resolve_once_hook(types.SimpleNamespace(linear_attn_prefill_backend="cutedsl"))


def test_without_resolve_once_the_checks_run_in_from_cli_args(loaded, monkeypatch):
    """SGLang 0.5.17–0.5.18 have no ServerArgs.resolve_once: the same refusal happens in from_cli_args."""
    parsed = _parser(loaded).parse_args(
        ["--model-path", "dummy", "--linear-attn-inv", "blockdoubling", "--linear-attn-prefill-backend", "flashinfer"]
    )
    monkeypatch.setattr(plugin_args, "_has_resolve_once", lambda: False)
    with pytest.raises(ValueError, match=r"--linear-attn-prefill-backend=flashinfer selects another prefill"):
        loaded.from_cli_args(parsed)
    plugin.unpatch()


def test_automatic_flashinfer_gdn_prefill_is_declined(monkeypatch, caplog):
    gdn_backend = pytest.importorskip("sglang.srt.layers.attention.linear.gdn_backend")
    real = gdn_backend.flashinfer_gdn_prefill_default
    plugin.patch("blockdoubling")
    assert getattr(gdn_backend.flashinfer_gdn_prefill_default, "__sglang_trinv__", False)
    plugin.unpatch()
    assert gdn_backend.flashinfer_gdn_prefill_default is real

    # SGLang's auto default only says "flashinfer" on SM90/SM100; a stand-in module plays that GPU
    fake = types.ModuleType("fake_gdn_backend")
    fake.flashinfer_gdn_prefill_default = lambda runner: "flashinfer"
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    plugin.patch("blockdoubling")
    backends.apply(fake)
    with caplog.at_level(logging.WARNING, logger="sglang_trinv.plugin"):
        assert fake.flashinfer_gdn_prefill_default(None) is None
    assert "keeping Triton so that --linear-attn-inv=blockdoubling is used" in caplog.text
    plugin.unpatch()
    assert fake.flashinfer_gdn_prefill_default(None) == "flashinfer"


# --------------------------------------------------------------------------- GDN prefill (interpreter on CPU)


def _inputs(varlen: bool):
    gen = torch.Generator().manual_seed(7)
    B, T, H, Hg, K, V = 1, 100, 4, 2, 32, 32
    q = torch.randn(B, T, Hg, K, generator=gen)
    k = torch.nn.functional.normalize(torch.randn(B, T, Hg, K, generator=gen), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, generator=gen))
    beta = torch.rand(B, T, H, generator=gen)
    cu_seqlens = torch.tensor([0, 37, 100]) if varlen else None
    N = 2 if varlen else B
    h0 = torch.randn(N, H, V, K, generator=gen)
    tensors = [x.to(DEVICE) for x in (q, k, v, g, beta, h0)]
    return tensors, None if cu_seqlens is None else cu_seqlens.to(DEVICE)


def _run_gdn(varlen: bool):
    """SGLang's chunk_gated_delta_rule_fwd -> (o, A, final state)."""
    from sglang.kernels.ops.attention.fla import chunk

    (q, k, v, g, beta, h0), cu_seqlens = _inputs(varlen)
    state = h0.clone()
    indices = torch.arange(state.shape[0], device=DEVICE)
    _, o, A, _, _, _ = chunk.chunk_gated_delta_rule_fwd(
        q, k, v, g, beta, k.shape[-1] ** -0.5, state, indices, cu_seqlens=cu_seqlens, inplace_update=True
    )
    return o, A, state


@pytest.fixture(scope="module")
def stock_outputs():
    plugin.unpatch()
    return {varlen: _run_gdn(varlen) for varlen in (False, True)}


def _fwd_intra_bindings():
    from sglang.kernels.ops.attention.fla import chunk, chunk_fwd

    return chunk.chunk_gated_delta_rule_fwd_intra, chunk_fwd.chunk_gated_delta_rule_fwd_intra


@pytest.mark.interpreter
@pytest.mark.parametrize("fused", [True, False], ids=["fused-pipeline", "intra-only"])
@pytest.mark.parametrize("varlen", [False, True], ids=["dense", "varlen"])
def test_gdn_prefill_runs_our_kernel_and_matches_stock(stock_outputs, varlen, fused, monkeypatch):
    from sglang.kernels.ops.attention.fla import chunk

    stock_fn = _fwd_intra_bindings()[0]
    stock_fwd = chunk.chunk_gated_delta_rule_fwd
    assert not getattr(stock_fn, "__sglang_trinv__", False)
    monkeypatch.setenv(ENV_FUSE_PIPELINE, "1" if fused else "0")
    sglang_trinv.patch("blockdoubling", precision="ieee")
    assert os.environ[ENV_METHOD] == "blockdoubling"  # so schedulers an Engine spawns next follow
    in_chunk, in_chunk_fwd = _fwd_intra_bindings()
    assert in_chunk.__sglang_trinv__ and in_chunk is in_chunk_fwd and in_chunk.__wrapped__ is stock_fn
    # fused: SGLang's pipeline function is ours too (cumsum in our kernel), else it stays SGLang's
    assert getattr(chunk.chunk_gated_delta_rule_fwd, "__sglang_trinv__", False) is fused
    assert ("gdn_pipeline" in plugin.active().patched) is fused
    before = plugin.active().counts
    from sglang_trinv.ops import gdn_state

    fwd_o_calls = []  # the fused pipeline's output stage, without the memset of o: gdn_state's copies (default)
    for mod, name in ((ops, "gdn_fwd_o"), (gdn_state, "gdn_fwd_h_o")):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _r=real, _n=name, **kw: fwd_o_calls.append(_n) or _r(*a, **kw))
    ours = _run_gdn(varlen)
    after = plugin.active().counts
    assert after.get("gdn", 0) == before.get("gdn", 0) + 1 and after.get("gdn_fallback", 0) == 0
    assert len(fwd_o_calls) == int(fused)  # the fused pipeline's output stage: no memset of o
    assert fwd_o_calls == (["gdn_fwd_h_o"] if fused else [])  # (by default through gdn_state's copies)
    assert after.get("gdn_pipeline", 0) == before.get("gdn_pipeline", 0) + int(fused)
    for name, x, ref in zip(("o", "A", "final state"), ours, stock_outputs[varlen]):
        if name == "A" and fused:
            assert x is None  # SGLang's ChunkGatedDeltaRuleFunction drops A: the fused pipeline never writes it
            continue
        torch.testing.assert_close(x, ref, rtol=TOL, atol=TOL, msg=lambda m: f"{name}: {m}")
    # both against the fp64 twin of the whole forward (exact inverse): ours no further from it than stock + TOL
    from sglang_trinv.reference import gdn

    (q, k, v, g, beta, h0), cu_seqlens = _inputs(varlen)
    o64, s64 = gdn.chunk_fwd(q, k, v, g, beta, k.shape[-1] ** -0.5, h0, cu_seqlens)
    for name, i, r64 in (("o", 0, o64), ("final state", 2, s64)):
        e_ours = float((ours[i].double() - r64).abs().max() / r64.abs().max())
        e_stock = float((stock_outputs[varlen][i].double() - r64).abs().max() / r64.abs().max())
        assert e_ours <= e_stock + TOL and e_ours < TOL, (name, e_ours, e_stock)
    plugin.unpatch()
    assert chunk.chunk_gated_delta_rule_fwd is stock_fwd


def _kernel_launches(monkeypatch) -> list[str]:
    """Record every Triton launch (``kernel[grid](…)``) by the name of its function, without running it."""
    from triton.runtime import autotuner, interpreter, jit

    names: list[str] = []

    def launch(self, grid):
        fn = self
        while not hasattr(fn, "__name__") and hasattr(fn, "fn"):
            fn = fn.fn
        return lambda *a, **kw: names.append(fn.__name__)

    for cls in (jit.KernelInterface, jit.JITFunction, interpreter.InterpretedFunction, autotuner.Autotuner,
                autotuner.Heuristics):
        if "__getitem__" in vars(cls):
            monkeypatch.setattr(cls, "__getitem__", launch)
    return names


@pytest.mark.parametrize("varlen", [False, True], ids=["dense", "varlen"])
def test_fused_pipeline_launches_fewer_kernels_than_stock(varlen, monkeypatch):
    """Eager prefill pays the host per launch (SGLang runs the GDN chunk forward eagerly per layer): the fused
    pipeline launches one kernel for the cumsum and the whole intra stage (stock: three), SGLang's fwd_h and fwd_o
    (ops.gdn_state's copies, the default), and — varlen only — the zeroing of o's rows past the last sequence that
    replaces stock's memset of all of o."""
    monkeypatch.setenv(ENV_FUSE_PIPELINE, "1")
    plugin.unpatch()
    names = _kernel_launches(monkeypatch)
    _run_gdn(varlen)
    stock = list(names)
    names.clear()
    sglang_trinv.patch("blockdoubling")
    try:
        _run_gdn(varlen)
    finally:
        plugin.unpatch()
    ours = list(names)
    assert stock == ["chunk_local_cumsum_scalar_kernel", "chunk_gated_delta_rule_fwd_kkt_solve_kernel",
                     "recompute_w_u_fwd_kernel", "chunk_gated_delta_rule_fwd_kernel_h_blockdim64",
                     "chunk_fwd_kernel_o"], stock
    assert ours == ["gdn_intra_kernel", *(["zero_tail_kernel"] if varlen else []), "fwd_h_kernel",
                    "fwd_o_kernel"], ours


def _fake_fwd(q, k, v, g, beta, scale, initial_state, initial_state_indices, cu_seqlens=None, chunk_indices=None):
    g = chunk_local_cumsum(g)  # noqa: F821 (only its source is read)
    w, u, A = chunk_gated_delta_rule_fwd_intra(k, v, g, beta)  # noqa: F821
    h, v_new = chunk_gated_delta_rule_fwd_h(k, w, u, g)  # noqa: F821
    return g, chunk_fwd_o(q, k, v_new, h, g), A, None, h, None  # noqa: F821


def _fake_fwd_other_order(q, k, v, g, beta, scale, initial_state, initial_state_indices, cu_seqlens=None,
                          chunk_indices=None):
    w, u, A = chunk_gated_delta_rule_fwd_intra(k, v, g, beta)  # noqa: F821
    g = chunk_local_cumsum(g)  # noqa: F821
    h, v_new = chunk_gated_delta_rule_fwd_h(k, w, u, g)  # noqa: F821
    return g, chunk_fwd_o(q, k, v_new, h, g), A, None, h, None  # noqa: F821


class _CallerDropsA:
    @staticmethod
    def forward(ctx, q, k):
        g, o, A, w, h, v_new = chunk_gated_delta_rule_fwd(q=q, k=k)  # noqa: F821
        return o, h


class _CallerKeepsA:
    @staticmethod
    def forward(ctx, q, k):
        g, o, A, w, h, v_new = chunk_gated_delta_rule_fwd(q=q, k=k)  # noqa: F821
        ctx.save_for_backward(A)
        return o, h


def test_pipeline_fusion_checks_the_stock_source():
    """Fused only where SGLang's pipeline has the shape we mirror; A is skipped only where the caller drops it."""
    from types import SimpleNamespace

    from sglang.kernels.ops.attention.fla import chunk

    from sglang_trinv.plugin import gdn

    assert gdn.pipeline_check(chunk) == (None, False)  # the installed SGLang: fusable, A dropped
    stages = dict(chunk_gated_delta_rule_fwd_h=len, chunk_fwd_o=len)
    ok = SimpleNamespace(chunk_gated_delta_rule_fwd=_fake_fwd, ChunkGatedDeltaRuleFunction=_CallerDropsA, **stages)
    assert gdn.pipeline_check(ok) == (None, False)
    keeps = SimpleNamespace(chunk_gated_delta_rule_fwd=_fake_fwd, ChunkGatedDeltaRuleFunction=_CallerKeepsA, **stages)
    assert gdn.pipeline_check(keeps) == (None, True)
    reordered = SimpleNamespace(chunk_gated_delta_rule_fwd=_fake_fwd_other_order,
                                ChunkGatedDeltaRuleFunction=_CallerDropsA, **stages)
    reason, _ = gdn.pipeline_check(reordered)
    assert reason and "not the stages" in reason
    no_o = SimpleNamespace(chunk_gated_delta_rule_fwd=_fake_fwd, ChunkGatedDeltaRuleFunction=_CallerDropsA,
                           chunk_gated_delta_rule_fwd_h=len)
    assert "chunk_fwd_o" in gdn.pipeline_check(no_o)[0]


@pytest.mark.interpreter
def test_stock_selection_and_unpatch_are_byte_identical(stock_outputs):
    stock_fns = _fwd_intra_bindings()
    plugin.patch(STOCK)
    assert _fwd_intra_bindings() == stock_fns and ENV_METHOD not in os.environ
    for x, ref in zip(_run_gdn(False), stock_outputs[False]):
        assert torch.equal(x, ref)

    plugin.patch("hybrid")
    assert _fwd_intra_bindings() != stock_fns
    plugin.unpatch()
    restored = _fwd_intra_bindings()
    assert restored[0] is stock_fns[0] and restored[1] is stock_fns[1]
    assert plugin.active().patched == () and ENV_METHOD not in os.environ
    for x, ref in zip(_run_gdn(True), stock_outputs[True]):
        assert torch.equal(x, ref)


@pytest.mark.interpreter
def test_unsupported_input_falls_back_to_stock_logged_once(caplog):
    from sglang.kernels.ops.attention.fla import chunk

    from sglang_trinv.plugin import gdn

    gdn._warned_fallbacks.clear()
    gen = torch.Generator().manual_seed(3)
    # fp64 is a real input our kernels decline (ops.supports); SGLang's kernel takes it under the interpreter
    k = torch.nn.functional.normalize(torch.randn(1, 64, 1, 16, generator=gen, dtype=torch.float64), dim=-1)
    v = torch.randn(1, 64, 2, 16, generator=gen, dtype=torch.float64)
    g = torch.nn.functional.logsigmoid(torch.randn(1, 64, 2, generator=gen, dtype=torch.float64)).cumsum(1)
    beta = torch.rand(1, 64, 2, generator=gen, dtype=torch.float64)
    k, v, g, beta = (x.to(DEVICE) for x in (k, v, g, beta))
    assert ops.supports(k, v, g, beta, 64) is not None
    stock = chunk.chunk_gated_delta_rule_fwd_intra(k, v, g, beta)

    plugin.patch("blockdoubling")
    before = plugin.active().counts
    with caplog.at_level(logging.WARNING, logger="sglang_trinv.plugin"):
        first = chunk.chunk_gated_delta_rule_fwd_intra(k, v, g, beta)
        chunk.chunk_gated_delta_rule_fwd_intra(k, v, g, beta)
    counts = plugin.active().counts
    assert counts.get("gdn_fallback", 0) - before.get("gdn_fallback", 0) == 2
    assert counts.get("gdn", 0) == before.get("gdn", 0)
    fallbacks = [r.getMessage() for r in caplog.records if "falls back to SGLang's stock kernel" in r.getMessage()]
    assert len(fallbacks) == 1 and "dtype torch.float64" in fallbacks[0]  # once per shape, with the reason
    for x, ref in zip(first, stock):
        assert torch.equal(x, ref)


def test_missing_hook_target_is_refused(monkeypatch):
    from sglang.kernels.ops.attention.fla import chunk

    from sglang_trinv.plugin import IncompatibleSGLangError, gdn

    monkeypatch.delattr(chunk, "chunk_gated_delta_rule_fwd_intra")
    with pytest.raises(IncompatibleSGLangError, match=r"SGLang .* has no chunk_gated_delta_rule_fwd_intra"):
        plugin.patch("blockdoubling")
    assert plugin.active().method == STOCK and not os.environ.get(ENV_METHOD)

    monkeypatch.setattr(gdn, "CHUNK_FWD", "sglang.kernels.ops.attention.fla.no_such_module")
    with pytest.raises(IncompatibleSGLangError, match="no such module"):
        gdn.static_check()


# --------------------------------------------------------------------------- spawned processes


def _spawn_report(env: dict[str, str]) -> dict:
    """Start a process the way SGLang starts schedulers (spawn, environment inherited) and get its report."""
    import importlib

    package = __name__.rpartition(".")[0]  # "tests" when tests/ is a package, "" when it is a rootdir
    plugin_child = importlib.import_module(f"{package}.plugin_child" if package else "plugin_child")

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=plugin_child.report, args=(queue,))
        proc.start()
        result = queue.get(timeout=SPAWN_TIMEOUT)
        proc.join(timeout=60)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert "error" not in result, result["error"]
    return result


def test_cli_choice_reaches_a_spawned_scheduler_process(loaded, restore_logging):
    from sglang.srt.server_args import prepare_server_args

    prepare_server_args(["--model-path", "dummy", "--linear-attn-inv", "hybrid", "--linear-attn-inv-precision", "ieee"])
    child = _spawn_report({"SGLANG_PLUGINS": "sglang_trinv"})
    assert child["method"] == "hybrid" and child["precision"] == "ieee"
    assert child["patched"] and child["chunk_fwd_patched"]
    assert child["counts"]["register"] == 1 and child["counts"]["gdn"] == 1


def test_sglang_plugins_filter_keeps_a_spawned_process_stock():
    child = _spawn_report({ENV_METHOD: "blockdoubling", "SGLANG_PLUGINS": "some_other_plugin"})
    assert child["method"] == STOCK and not child["patched"] and "register" not in child["counts"]


def test_per_level_merge_precision_is_rejected_for_kda_at_start_up():
    """'DIAG/M16+M32' is a GDN-kernel precision: the KDA install check refuses it with a clear message (not in the
    first prefill), while the default (KDA_DEFAULT_PRECISION) and one-level precisions pass."""
    from sglang_trinv import ops
    from sglang_trinv.plugin.gdn import check_ops, precision_label

    check_ops("blockdoubling", "bf16x3/bf16x3+tf32")
    check_ops("blockdoubling", None, kda=True)
    check_ops("blockdoubling", "bf16x3/tf32", kda=True)
    with pytest.raises(ValueError, match="KDA kernel takes one merge precision"):
        check_ops("blockdoubling", "bf16x3/bf16x3+tf32", kda=True)
    assert precision_label("blockdoubling", None, kda=True).startswith(ops.KDA_DEFAULT_PRECISION["blockdoubling"])
    assert precision_label("blockdoubling", None).startswith(ops.DEFAULT_PRECISION["blockdoubling"])


def _fwd_o_zero_filled_elsewhere(q, k, v, h, g=None, scale=None, cu_seqlens=None, chunk_size=64):
    o = torch.zeros_like(v)  # noqa: F841 (a source the check reads, never run)
    return o


def test_fwd_o_check_mirrors_the_stock_source(monkeypatch):
    """The output stage runs without the memset (ops.gdn_fwd_o) only where SGLang's chunk_fwd_o is the function it
    mirrors: the installed SGLang passes; a chunk_fwd_o from another module, or one whose source differs, is
    refused with the reason; SGLANG_TRINV_O_MEMSET=1 keeps stock's (logged)."""
    from types import SimpleNamespace

    from sglang.kernels.ops.attention.fla import chunk

    from sglang_trinv.ops import gdn_output
    from sglang_trinv.plugin import gdn

    assert gdn.fwd_o_check(chunk) is None
    assert "comes from" in gdn.fwd_o_check(SimpleNamespace(chunk_fwd_o=_fwd_o_zero_filled_elsewhere))
    monkeypatch.setattr(_fwd_o_zero_filled_elsewhere, "__module__", gdn_output.CHUNK_O)
    reason = gdn.fwd_o_check(SimpleNamespace(chunk_fwd_o=_fwd_o_zero_filled_elsewhere))
    assert reason and "differs from the mirrored source" in reason
    assert "chunk_fwd_o" in gdn.fwd_o_check(SimpleNamespace())


@pytest.mark.interpreter
@pytest.mark.parametrize("varlen", [False, True], ids=["dense", "varlen"])
def test_overlap_env_runs_state_and_output_at_once(varlen, monkeypatch, caplog):
    """SGLANG_TRINV_OVERLAP_O=1 (experimental): the fused pipeline runs SGLang's state recurrence and output stage
    as ops.gdn_state's copies, side by side (said in the log); o and the final state are bit for bit those of the
    same pipeline without it. SGLANG_TRINV_O_MEMSET=1 refuses it, with the reason in the log."""
    from sglang_trinv.ops import gdn_state
    from sglang_trinv.plugin import gdn

    monkeypatch.setenv(ENV_FUSE_PIPELINE, "1")
    sglang_trinv.patch("blockdoubling")
    try:
        plain = _run_gdn(varlen)
    finally:
        plugin.unpatch()
    monkeypatch.setenv(gdn.ENV_OVERLAP_O, "1")
    calls = []
    real = gdn_state.gdn_fwd_h_o
    monkeypatch.setattr(gdn_state, "gdn_fwd_h_o", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sglang_trinv"):
        sglang_trinv.patch("blockdoubling")
    try:
        before = plugin.active().counts.get("gdn_overlap", 0)
        ours = _run_gdn(varlen)
        assert plugin.active().counts.get("gdn_overlap", 0) == before + 1 and len(calls) == 1
        assert "output stage: state recurrence and output stage side by side" in caplog.text
    finally:
        plugin.unpatch()
    for name, x, y in (("o", ours[0], plain[0]), ("final state", ours[2], plain[2])):
        assert torch.equal(x, y), name
    monkeypatch.setenv(gdn.ENV_O_MEMSET, "1")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sglang_trinv"):
        sglang_trinv.patch("blockdoubling")
    plugin.unpatch()
    assert "SGLANG_TRINV_OVERLAP_O=1 ignored: the output stage is stock's chunk_fwd_o" in caplog.text


@pytest.mark.interpreter
@pytest.mark.parametrize("varlen", [False, True], ids=["dense", "varlen"])
def test_state_stage_tuned_by_default(varlen, monkeypatch, caplog):
    """The fused pipeline runs SGLang's state recurrence and output stage as ops.gdn_state's copies, the state
    kernel at launch constants picked per shape (said in the log; counted), o and the final state those of SGLang's
    own stages (SGLANG_TRINV_STATE_LAUNCH=sglang: its own kernel, not counted). Under the interpreter the BV=16
    blocks' products differ from BV=32's in the last bits (numpy); on a GPU they are bit for bit (test_state)."""
    from sglang_trinv.ops import gdn_state
    from sglang_trinv.plugin import gdn

    monkeypatch.setenv(ENV_FUSE_PIPELINE, "1")
    launches = []
    real = gdn_state.gdn_fwd_h_o
    monkeypatch.setattr(gdn_state, "gdn_fwd_h_o", lambda *a, **kw: launches.append(kw) or real(*a, **kw))
    runs = {}
    for value in ("sglang", None):
        if value:
            monkeypatch.setenv(gdn.ENV_STATE_LAUNCH, value)
        else:
            monkeypatch.delenv(gdn.ENV_STATE_LAUNCH, raising=False)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sglang_trinv"):
            sglang_trinv.patch("blockdoubling")
        try:
            before = plugin.active().counts.get("gdn_state_tuned", 0)
            runs[value] = _run_gdn(varlen)
            assert plugin.active().counts.get("gdn_state_tuned", 0) == before + (value is None), value
        finally:
            plugin.unpatch()
        expected = "SGLang's own state kernel" if value else "SGLang's kernels (copies), the state kernel's " \
            "launch constants picked per shape"
        assert f"state recurrence and output stage: {expected}" in caplog.text, value
    assert len(launches) == 1 and launches[0]["launch"] == "tuned" and not launches[0]["overlap"]
    for name, i in (("o", 0), ("final state", 2)):
        torch.testing.assert_close(runs[None][i], runs["sglang"][i], rtol=1e-6, atol=1e-6, msg=name)


def test_o_memset_env_keeps_stocks_output_stage(monkeypatch, caplog):
    """SGLANG_TRINV_O_MEMSET=1: the fused pipeline calls SGLang's own chunk_fwd_o (and says so in its log line)."""
    from sglang_trinv.plugin import gdn

    monkeypatch.setenv(ENV_FUSE_PIPELINE, "1")
    for value, expected in (("1", "by stock chunk_fwd_o (SGLANG_TRINV_O_MEMSET=1)"),
                            ("0", "without the memset of o")):
        monkeypatch.setenv(gdn.ENV_O_MEMSET, value)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sglang_trinv"):
            sglang_trinv.patch("blockdoubling")
        try:
            msg = [r.getMessage() for r in caplog.records if "fused: gate cumsum" in r.getMessage()]
            assert msg and expected in msg[0], (value, msg)
        finally:
            plugin.unpatch()
