"""KDA (Kimi-Linear) intra-chunk kernel vs the fp64 twin and SGLang's stock ``chunk_kda_fwd_intra``, and the
plugin's KDA hook through SGLang's own ``chunk_kda_fwd``.

On a CPU these run under the Triton interpreter in fp32 (tests/conftest.py; SGLang's bf16 Gram products run
widened to fp32 from the same bf16 operands, see sglang_trinv.testing). Shapes are tiny: the interpreter is slow.
"""

import dataclasses
import logging
import math
import os
from importlib import import_module

import pytest
import torch
import torch.nn.functional as F

import sglang_trinv.plugin as plugin
from sglang_trinv import ops
from sglang_trinv.plugin import ENV_METHOD, ENV_PRECISION
from sglang_trinv.plugin._state import ENV_KDA
from sglang_trinv.reference import kda as ref
from sglang_trinv.reference.inverse import exact_inverse

from .conftest import DEVICE, HAS_CUDA

FLA = "sglang.kernels.ops.attention.fla"
METHODS = list(ops.KERNEL_METHODS)
# fp32 everywhere; on a GPU the tf32/bf16 products cost ~1e-3 relative
TOL = 2e-3 if HAS_CUDA else 2e-5
RCP_LN2 = 1 / math.log(2.0)

# B = 2 and 2 heads, one partial chunk each; varlen with a 1-token sequence, a full and two partial chunks
CASES = {
    "fixed": dict(B=2, T=40, H=2, K=16, V=16, cu=None),
    "varlen": dict(B=1, T=100, H=1, K=16, V=16, cu=[0, 1, 70, 100]),
}


def _inputs(B, T, H, K, V, cu=None, seed=0, gate="random"):
    """q, k (L2-normalised), v, gk (chunk-local cumsum of per-channel log-gates, in log2 as chunk_kda_fwd
    passes it), beta, cu_seqlens."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen)
    beta = torch.rand(B, T, H, generator=gen)
    if gate == "random":  # ~0.1 … 3 nats per token
        g_raw = -F.softplus(torch.randn(B, T, H, K, generator=gen) - 1.0)
    elif gate == "strong":  # 10 … 40 nats per token: 2^{Δg} over a 16-token tile leaves fp32's range
        g_raw = -(10 + 30 * torch.rand(B, T, H, K, generator=gen))
    else:  # "identical_keys": one key, β∈(1,2], no decay — the worst case for products of powers
        k = k[:, :1].expand(B, T, H, K).contiguous()
        beta = 1 + beta
        g_raw = torch.zeros(B, T, H, K)
    to = lambda x: x.to(DEVICE)  # noqa: E731
    cu_t = None if cu is None else to(torch.tensor(cu, dtype=torch.int64))
    cumsum = import_module(f"{FLA}.cumsum").chunk_local_cumsum
    # SGLang's Triton cumsum on the test device (on a GPU it cannot read CPU tensors: the s20/s21 "failures" of the
    # heads-fastest bit test were this, raised before any kernel under test ran)
    g = cumsum(to(g_raw), chunk_size=64, scale=RCP_LN2, cu_seqlens=cu_t)
    return to(q), to(k), to(v), g, to(beta), cu_t


def _lower(A, cu=None):
    """Zero the entries of a ``[B, T, H, 64]`` chunk tensor above the diagonal (column > row within its chunk)."""
    T = A.shape[1]
    starts = [0] if cu is None else cu.tolist()[:-1]
    pos = torch.zeros(T, dtype=torch.long)
    for s, e in zip(starts, (starts[1:] + [T]) if cu is not None else [T]):
        pos[s:e] = torch.arange(e - s) % 64
    keep = torch.arange(A.shape[-1])[None, :] <= pos[:, None]  # [T, 64]
    return torch.where(keep[None, :, None, :].to(A.device), A, torch.zeros_like(A))


def _rel(x, y):
    return float((x.double() - y.double()).abs().max() / y.double().abs().max())


def _check(outs, refs, tol, names=("w", "u", "kg", "Aqk", "Akk")):
    for name, x, r in zip(names, outs, refs):
        if x is None and r is None:
            continue
        assert torch.isfinite(x).all(), name
        assert _rel(x, r) < tol, f"{name}: {_rel(x, r):.3g}"


def _ours(inputs, method, **kw):
    q, k, v, g, beta, cu = inputs
    w, u, none, kg, Aqk, Akk = ops.kda_fwd_intra(q, k, v, g, beta, cu_seqlens=cu, method=method, **kw)
    assert none is None
    return w, u, kg, Aqk, Akk


@pytest.mark.parametrize("case", list(CASES))
def test_heads_fastest_gives_the_same_bits(case):
    """Tuning.heads_fastest (grid (B·H, chunks): the programs running at once cover whole rows; the default since
    s21) computes every chunk exactly as the grid chunks fastest: the same bits in every output, fixed length (B = 2,
    2 heads) and varlen."""
    inputs = _inputs(**CASES[case])
    assert ops.KDA_DEFAULT_TUNING.heads_fastest
    cf = dataclasses.replace(ops.KDA_DEFAULT_TUNING, heads_fastest=False)
    for x, y in zip(_ours(inputs, "blockdoubling", tuning=cf), _ours(inputs, "blockdoubling"), strict=True):
        assert (y is None) if x is None else torch.equal(x, y)


def test_diag_masks_give_the_same_bits():
    """Tuning.diag_masks in the KDA launch (the shared inversion's doubling with the level masks on the products, as
    the GDN default has it; the KDA default since s22): the same bits in every output as without. split_packed is
    inline PTX: the sm_90 compile test below builds it, the interpreter runs the plain split."""
    inputs = _inputs(**CASES["varlen"])
    assert ops.KDA_DEFAULT_TUNING.diag_masks and ops.KDA_DEFAULT_TUNING.split_packed
    plain = dataclasses.replace(ops.KDA_DEFAULT_TUNING, diag_masks=False)
    for x, y in zip(_ours(inputs, "blockdoubling", tuning=plain), _ours(inputs, "blockdoubling"), strict=True):
        assert (y is None) if x is None else torch.equal(x, y)


def test_tune_config_flags():
    """`bench kda --tune-configs` strings: WARPS/BK/BV/STAGES, then flags (hf, dm, sp) in any order, each once."""
    from sglang_trinv.benchmarks.kda import _tune_config

    t = _tune_config("2/32/32/3/dm/hf")
    assert (t.num_warps, t.BK, t.BV, t.num_stages) == (2, 32, 32, 3)
    assert t.heads_fastest and t.diag_masks and not t.split_packed
    assert not _tune_config("2/32/32/3").heads_fastest
    for bad in ("2/32/32", "2/32/32/3/xx", "2/32/32/3/hf/hf"):
        with pytest.raises(ValueError):
            _tune_config(bad)


@pytest.mark.gpu
def test_heads_fastest_gives_the_same_bits_on_gpu():
    """The same, compiled (bf16, K = V = 128, 4 heads, varlen with a 1-token sequence and partial chunks); the
    chunks-fastest grid run twice first, as a control. (Its s20 and s21 failures were this test's own inputs: SGLang's
    Triton cumsum was called on CPU tensors; a difference now names the output, count and first place.)"""
    q, k, v, g, beta, cu = _inputs(1, 700, 4, 128, 128, cu=[0, 1, 64, 300, 700])
    q, k, v, beta = (x.to(torch.bfloat16) for x in (q, k, v, beta))
    hf = dataclasses.replace(ops.KDA_DEFAULT_TUNING, heads_fastest=True)
    cf = dataclasses.replace(ops.KDA_DEFAULT_TUNING, heads_fastest=False)
    inputs = (q, k, v, g, beta, cu)
    default = _ours(inputs, "blockdoubling", tuning=cf)  # first: SGLang's autotuned diagonal kernel settles here
    # control: the chunks-fastest grid twice gives the same bits (else a difference below is not the grid order's)
    for name, x, y in zip(("w", "u", "kg", "Aqk", "Akk"), _ours(inputs, "blockdoubling", tuning=cf), default,
                          strict=True):
        assert (x is None and y is None) or torch.equal(x, y), f"{name}: the chunks-fastest grid differs from itself"
    for name, x, y in zip(("w", "u", "kg", "Aqk", "Akk"), _ours(inputs, "blockdoubling", tuning=hf), default,
                          strict=True):
        if x is None:
            assert y is None, name
            continue
        bad = ~torch.isfinite(x.float()) | (x != y)
        # which output, how many entries and where the first one is (rows, heads, columns), for the next reader
        assert not bad.any(), (f"{name}: {int(bad.sum())} entries differ or are not finite, first at "
                               f"{tuple(bad.nonzero()[0].tolist())}: {x[bad][:4].tolist()} vs {y[bad][:4].tolist()}")


def test_kda_launch_gives_every_constexpr(monkeypatch):
    """The KDA launch passes every constexpr of kda_intra_kernel by name (defaults included), so with
    SGLANG_TRINV_DIRECT_LAUNCH=1 its compiled kernel is cached after the first JIT launch of a kind and the next calls
    skip the JIT (a stand-in for the JIT kernel and Triton's driver; SGLang's diagonal kernel not launched)."""
    from sglang_trinv.ops import direct_launch as dl
    from sglang_trinv.ops import kda_intra

    from .test_kernels import _fake_driver, _FakeJIT

    jit_calls, runs = [], []
    fake = _FakeJIT(kda_intra.kda_intra_kernel.arg_names, jit_calls, runs)
    monkeypatch.setattr(kda_intra, "kda_intra_kernel", fake)
    monkeypatch.setattr(ops, "KDA_DIRECT", dl.DirectLauncher("fake KDA", lambda: fake))
    monkeypatch.setattr(ops, "_sglang_kda_diagonal", lambda *a, **k: None)
    monkeypatch.setenv(dl.ENV, "1")
    _fake_driver(monkeypatch)
    q, k, v, g, beta, _ = _inputs(1, 130, 2, 16, 16)
    for _ in range(3):
        ops.kda_fwd_intra(q, k, v, g, beta)
    assert len(jit_calls) == 1 and len(runs) == 2
    grid, args, kw = jit_calls[0]
    assert grid == (2, 3) and runs[-1][:3] == (2, 3, 1)  # heads fastest: 2 heads × 3 chunks
    assert set(kw) - {"num_warps", "num_stages"} == set(kda_intra.kda_intra_kernel.arg_names[len(args):])
    assert len(runs[-1]) == 9 + len(kda_intra.kda_intra_kernel.arg_names)
    assert runs[-1][9 + len(args) - 1] == 130 and runs[-1][9 + 5] == 16 ** -0.5  # T; scale, a float


@pytest.mark.gpu
def test_kda_direct_launch_matches_the_jit_launch(monkeypatch):
    """SGLANG_TRINV_DIRECT_LAUNCH=1 on the KDA kernel: the first launch of a kind through the JIT (cached), the next
    through the compiled kernel's launcher; every output bitwise the JIT launch's, for new inputs of the same kind,
    one sequence and varlen (bf16, K = V = 128, 4 heads)."""
    from sglang_trinv.ops import direct_launch as dl

    for cu in (None, [0, 1, 64, 300, 700]):
        for seed in (0, 1):
            q, k, v, g, beta, cu_t = _inputs(1, 700, 4, 128, 128, cu=cu, seed=seed)
            inputs = (*(x.to(torch.bfloat16) for x in (q, k, v)), g, beta.to(torch.bfloat16), cu_t)
            monkeypatch.setenv(dl.ENV, "0")
            want = _ours(inputs, "blockdoubling")
            monkeypatch.setenv(dl.ENV, "1")
            for _ in range(2):  # JIT launch (cached) or direct, then direct
                for name, x, y in zip(("w", "u", "kg", "Aqk", "Akk"), _ours(inputs, "blockdoubling"), want,
                                      strict=True):
                    assert (x is None and y is None) or torch.equal(x, y), (name, cu, seed)
    assert len(ops.KDA_DIRECT.cache) >= 2 and not ops.KDA_DIRECT.off


@pytest.mark.gpu
def test_masks_and_packed_splits_on_gpu():
    """Tuning.diag_masks + split_packed (the KDA default since s22) against the plain build, compiled (bf16, K = V =
    128, 4 heads, varlen with a 1-token sequence and partial chunks): the masks alone give the plain build's bits.
    The packed hi/lo splits (inline PTX) are not bitwise: where the compiler contracted the plain split into an FMA
    an entry of Akk = (I + A)^{-1} may round one bf16 ulp apart, and w / u (sums over a row of Akk, with
    cancellation) move by more than their own entries' ulps — so the check is at each output's scale (at most two
    ulps of its largest entry) and against fp64 (max-rel error not above 1.1× the plain build's)."""
    q, k, v, g, beta, cu = _inputs(1, 700, 4, 128, 128, cu=[0, 1, 64, 300, 700])
    q, k, v, beta = (x.to(torch.bfloat16) for x in (q, k, v, beta))
    inputs = (q, k, v, g, beta, cu)
    assert ops.KDA_DEFAULT_TUNING.diag_masks and ops.KDA_DEFAULT_TUNING.split_packed
    plain = dataclasses.replace(ops.KDA_DEFAULT_TUNING, diag_masks=False, split_packed=False)
    base = _ours(inputs, "blockdoubling", tuning=plain)
    dm = dataclasses.replace(plain, diag_masks=True)
    for name, x, y in zip(("w", "u", "kg", "Aqk", "Akk"), _ours(inputs, "blockdoubling", tuning=dm), base,
                          strict=True):
        assert (x is None and y is None) or torch.equal(x, y), f"{name}: diag_masks changed the bits"
    refs = ref.fwd_intra(*(t.cpu() for t in (q, k, v, g, beta)), cu_seqlens=cu.cpu())
    for name, x, y, r in zip(("w", "u", "kg", "Aqk", "Akk"), _ours(inputs, "blockdoubling"), base, refs, strict=True):
        if x is None:
            assert y is None, name
            continue
        assert torch.isfinite(x.float()).all(), name
        diff, scale = float((x.float() - y.float()).abs().max()), float(y.float().abs().max())
        assert diff <= scale * 2.0 ** -6, f"{name}: packed splits moved an entry by {diff:.3g} (largest entry {scale:.3g})"
        e_x, e_y = _rel(x.cpu(), r), _rel(y.cpu(), r)
        assert e_x <= 1.1 * e_y + 1e-6, f"{name}: error vs fp64 {e_x:.3g} above the plain build's {e_y:.3g}"


# --------------------------------------------------------------------------- kernel vs fp64


@pytest.mark.parametrize("method,diag_gram", [(m, "sglang") for m in METHODS] + [("blockdoubling", "fused")])
def test_every_method_matches_fp64_varlen(method, diag_gram):
    """Varlen with a 1-token sequence and partial chunks; the Gram products exact (ieee; SGLang's token-parallel
    diagonal is exact fp32), the inversion at the method's default precision."""
    inputs = _inputs(**CASES["varlen"])
    outs = _ours(inputs, method, gram_precision="ieee", diag_gram=diag_gram)
    _check(outs, ref.fwd_intra(*inputs[:5], cu_seqlens=inputs[5]), TOL)


@pytest.mark.parametrize("diag_gram", ["sglang", "fused"])
@pytest.mark.parametrize("safe_gate", [False, True], ids=["nested_anchors", "safe_gate"])
def test_fixed_length_gram_matches_twin(safe_gate, diag_gram):
    """B = 2, H = 2, partial chunks. The kernel's Gram matrix equals the twin (families.kda_A): A is
    recovered from the returned (I + A)^{-1} in fp64."""
    c = CASES["fixed"]
    inputs = _inputs(**c, seed=1)
    q, k, v, g, beta, cu = inputs
    outs = _ours(inputs, "blockdoubling", precision="ieee", gram_precision="ieee", safe_gate=safe_gate,
                 diag_gram=diag_gram)
    _check(outs, ref.fwd_intra(q, k, v, g, beta), TOL)
    Akk = outs[4].double()
    A_twin = ref.chunk_A(k, g, beta)
    for c0 in range(0, c["T"], 64):
        n = min(64, c["T"] - c0)
        X = Akk[:, c0:c0 + n, :, :n].permute(0, 2, 1, 3)  # [B, H, n, n]
        A_rec = torch.linalg.inv(X) - torch.eye(n, dtype=X.dtype)
        A_ref = A_twin[:, c0:c0 + n, :, :n].permute(0, 2, 1, 3)
        assert _rel(A_rec, A_ref) < TOL


def test_strong_gates_stay_exact():
    """10–40 nats of decay per token: across one 16-token tile 2^{g_i − g_j} spans far more than fp32's
    range. The nested anchors keep every exponent ≤ 0, so A, Aqk, w, u, kg stay exact; SGLang's fused-diagonal
    path (single anchor, exponents clamped to ±126) does not."""
    inputs = _inputs(B=1, T=40, H=1, K=16, V=16, seed=2, gate="strong")
    q, k, v, g, beta, _ = inputs
    expected = ref.fwd_intra(q, k, v, g, beta)
    for mode in ("sglang", "fused"):  # SGLang's token-parallel diagonal is exact too
        _check(_ours(inputs, "blockdoubling", precision="ieee", gram_precision="ieee", diag_gram=mode), expected,
               TOL)
    stock = import_module(f"{FLA}.chunk_intra").chunk_kda_fwd_intra
    s = stock(q, k, v, gk=g, beta=beta, scale=k.shape[-1] ** -0.5, fuse_recompute=True, fuse_diagonal=True)
    assert not (torch.isfinite(s[4]).all() and _rel(s[4], expected[3]) < 1e-2)


def test_near_zero_gates_whose_cumsum_rounds_upward():
    """A cumulative log-gate is non-increasing, but with near-zero gates its rounding can put a later token an ulp
    above an earlier one. The gate factor there is 1 to working precision: the kernel (every Gram path) and the
    fp64 twin keep it, as SGLang's kernel does; until 2026-11-28 both zeroed it (Akk max-rel 0.16 against the
    exact inverse on a safe-gate benchmark input)."""
    inputs = _inputs(B=1, T=40, H=1, K=16, V=16, seed=4)
    q, k, v, g, beta, _ = inputs
    g = torch.full_like(g, -1e-24)
    g[:, 20:] = -1e-25  # later tokens an "ulp" above earlier ones: d = g_i − g_j > 0 below the diagonal
    inputs = (q, k, v, g, beta, None)
    gate = torch.ones(40, 40, dtype=torch.float64).tril()  # exp(d) = 1 to fp64 precision
    kk = k[0, :, 0].double()
    A = torch.tril((kk @ kk.T) * gate * beta[0, :, 0].double()[:, None], -1)
    Akk_exact = exact_inverse(A)
    expected = ref.fwd_intra(q, k, v, g, beta)
    assert _rel(expected[4][0, :, 0, :40], Akk_exact) < 1e-12  # the twin keeps the factor
    for mode in ("sglang", "fused"):
        for safe_gate in (False, True):
            _check(_ours(inputs, "blockdoubling", precision="ieee", gram_precision="ieee", diag_gram=mode,
                         safe_gate=safe_gate), expected, TOL)


@pytest.mark.parametrize("method", ["blockdoubling", "forward_substitution"])
def test_stable_methods_on_identical_keys(method):
    inputs = _inputs(B=1, T=64, H=1, K=16, V=16, seed=3, gate="identical_keys")
    outs = _ours(inputs, method, gram_precision="ieee")  # default inversion precision (bf16x3 for doubling)
    _check(outs, ref.fwd_intra(*inputs[:5]), 2e-3)


# --------------------------------------------------------------------------- kernel vs SGLang's stock kernel

# (safe_gate, fuse_recompute, fuse_diagonal): chunk_kda_fwd passes safe_gate = lower_bound is not None and
# fuse_recompute = fuse_diagonal = small grid; each stock schedule is met by a different method so every
# method with a kernel is compared to stock once
STOCK_RUNS = [
    ((False, False, False), "forward_substitution"),  # token-parallel diagonal + inter/solve + recompute_w_u
    ((False, True, True), "blockdoubling"),  # everything in the fused inter/solve kernel
    ((True, False, False), "column_sweep"),  # safe_gate sub-chunk diagonal (pre-inverted) + recompute_w_u
    ((True, True, True), "hybrid"),
    ((False, True, True), "neumann"),
    ((True, False, False), "newton_schulz"),
]
_stock_cache = {}


def _stock(flags):
    if flags not in _stock_cache:
        q, k, v, g, beta, cu = _inputs(**CASES["varlen"], seed=4)
        stock = import_module(f"{FLA}.chunk_intra").chunk_kda_fwd_intra
        sg, fr, fd = flags
        w, u, none, kg, Aqk, Akk = stock(q, k, v, gk=g, beta=beta, scale=k.shape[-1] ** -0.5, cu_seqlens=cu,
                                         safe_gate=sg, fuse_recompute=fr, fuse_diagonal=fd)
        # stock leaves Aqk above the diagonal blocks uninitialised unless fuse_diagonal: compare the lower part
        _stock_cache[flags] = (w, u, kg, _lower(Aqk, cu), Akk), none
    return _stock_cache[flags]


@pytest.mark.parametrize("flags,method", STOCK_RUNS,
                         ids=[f"sg{int(f[0])}-fr{int(f[1])}-fd{int(f[2])}-{m}" for f, m in STOCK_RUNS])
def test_drop_in_matches_stock(flags, method):
    """Same arguments, same returns (incl. which are None), same values on SGLang's own Gram roundings."""
    (expected, none) = _stock(flags)
    q, k, v, g, beta, cu = _inputs(**CASES["varlen"], seed=4)
    sg, fr, fd = flags
    w, u, mine_none, kg, Aqk, Akk = ops.kda_fwd_intra(q, k, v, g, beta, k.shape[-1] ** -0.5, cu, 64, None, sg, fr,
                                                      fd, method=method)
    assert mine_none is None and none is None
    assert (Akk is None) == (expected[4] is None) == fr
    assert Aqk.shape == expected[3].shape and Aqk.dtype == k.dtype
    _check((w, u, kg, Aqk, Akk), expected, TOL)


def test_bad_inputs_are_refused_clearly():
    q, k, v, g, beta, _ = _inputs(B=1, T=8, H=1, K=16, V=16)
    with pytest.raises(ValueError, match="unknown inversion method"):
        ops.kda_fwd_intra(q, k, v, g, beta, method="cholesky")
    with pytest.raises(ValueError, match="unknown precision"):
        ops.kda_fwd_intra(q, k, v, g, beta, precision="fp8")
    with pytest.raises(ValueError, match="unknown gram precision"):
        ops.kda_fwd_intra(q, k, v, g, beta, gram_precision="fp8")
    with pytest.raises(ValueError, match="chunk_size"):
        ops.kda_fwd_intra(q, k, v, g, beta, chunk_size=32)
    assert ops.kda_supports(q, k, v, g, beta) is None
    assert "gate" in ops.kda_supports(q, k, v, None, beta)
    assert "shape" in ops.kda_supports(q, k, v, g[..., :8], beta)
    assert "dtype" in ops.kda_supports(q.double(), k.double(), v.double(), g, beta)
    assert "contiguous" in ops.kda_supports(q, torch.cat([k, k], -1)[..., :16], v, g, beta)


# --------------------------------------------------------------------------- the plugin through chunk_kda_fwd


@pytest.fixture
def clean_selection(monkeypatch):
    for name in (ENV_METHOD, ENV_PRECISION, "SGLANG_PLUGINS"):
        monkeypatch.setenv(name, "")
    plugin.unpatch()
    yield
    plugin.unpatch()


@pytest.mark.parametrize("setting,level,message", [
    ("0", logging.INFO, "KDA chunk prefill stays stock (SGLANG_TRINV_KDA=0)"),
    ("maybe", logging.WARNING, "'maybe' is not auto, 1 or 0: KDA chunk prefill stays stock"),
], ids=["disabled", "bad_setting"])
def test_kda_stays_stock_when_disabled(clean_selection, caplog, monkeypatch, setting, level, message):
    """SGLANG_TRINV_KDA=0 (or a value it does not know): a method applies to GDN only, KDA stays SGLang's, and
    the log says so."""
    monkeypatch.setenv(ENV_KDA, setting)
    kda = import_module(f"{FLA}.kda")
    stock_fn = kda.chunk_kda_fwd_intra
    with caplog.at_level(level, logger="sglang_trinv.plugin"):
        plugin.patch("blockdoubling")
    assert kda.chunk_kda_fwd_intra is stock_fn
    assert "kda" not in plugin.active().patched and "kda_stock" in plugin.active().patched
    assert any(message in r.getMessage() for r in caplog.records)


def _kda_fwd_inputs(lower_bound, T=80, H=2, K=16, cu=(0, 1, 80)):
    """Varlen inputs of SGLang's chunk_kda_fwd with initial states (tiny by default): (q, k, v, g, beta, cu, h0)."""
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, T, H, K, generator=gen)
    k = F.normalize(torch.randn(1, T, H, K, generator=gen), dim=-1)
    v = torch.randn(1, T, H, K, generator=gen)
    g = -F.softplus(torch.randn(1, T, H, K, generator=gen) - 1.0)  # activated log-gate (nats per token)
    if lower_bound is not None:
        g = g.clamp_min(lower_bound)
    beta = torch.rand(1, T, H, generator=gen)
    cu = torch.tensor(cu)
    h0 = torch.randn(len(cu) - 1, H, K, K, generator=gen)
    return tuple(x.to(DEVICE) for x in (q, k, v, g, beta, cu, h0))


def _run_chunk_kda_fwd(lower_bound, **shape):
    """SGLang's chunk_kda_fwd (kda.py) on varlen inputs with initial states -> (o, final states)."""
    kda = import_module(f"{FLA}.kda")
    q, k, v, g, beta, cu, h0 = _kda_fwd_inputs(lower_bound, **shape)
    state = h0.clone()
    o = kda.chunk_kda_fwd(q, k, v.clone(), g, beta, k.shape[-1] ** -0.5, state,
                          torch.arange(len(cu) - 1, device=DEVICE), cu_seqlens=cu, lower_bound=lower_bound)
    return o, state


@pytest.mark.parametrize("lower_bound", [None, -5.0], ids=["exact_gate", "safe_gate"])
def test_chunk_kda_fwd_matches_token_recurrence(clean_selection, lower_bound, monkeypatch):
    """reference.kda.recurrent_fwd (fp64, token by token) is what SGLang's whole chunk_kda_fwd computes: through
    the plugin with exact (fp32) Gram products it agrees to fp32 rounding; stock, whose off-diagonal Gram
    operands are rounded to bf16, to that rounding's level."""
    monkeypatch.setenv(ENV_KDA, "1")
    q, k, v, g, beta, cu, h0 = _kda_fwd_inputs(lower_bound)
    o64, s64 = ref.recurrent_fwd(q, k, v, g, beta, k.shape[-1] ** -0.5, h0, cu)

    def rel(x, x64):
        return float((x.double() - x64).abs().max() / x64.abs().max())

    o, s = _run_chunk_kda_fwd(lower_bound)
    assert rel(o, o64) < 2e-2 and rel(s, s64) < 2e-2  # stock
    monkeypatch.setattr(ops, "KDA_GRAM_PRECISION", "ieee")
    ops._gram_codes.cache_clear()
    try:
        plugin.patch("blockdoubling", precision="ieee")
        o, s = _run_chunk_kda_fwd(lower_bound)
    finally:
        ops._gram_codes.cache_clear()
    tol = 1e-3 if HAS_CUDA else 1e-5  # the GPU's other stages multiply in tf32
    assert rel(o, o64) < tol and rel(s, s64) < tol, (rel(o, o64), rel(s, s64))


@pytest.mark.parametrize("lower_bound,setting", [(None, None), (-5.0, "1")], ids=["exact_gate", "safe_gate"])
def test_plugin_routes_chunk_kda_fwd_through_our_kernel(clean_selection, lower_bound, setting, caplog, monkeypatch):
    """Default (auto): the exact gate goes through our kernel; SGLANG_TRINV_KDA=1 adds safe_gate."""
    if setting is None:
        monkeypatch.delenv(ENV_KDA, raising=False)
    else:
        monkeypatch.setenv(ENV_KDA, setting)
    kda = import_module(f"{FLA}.kda")
    chunk_intra = import_module(f"{FLA}.chunk_intra")
    stock_fn = kda.chunk_kda_fwd_intra
    assert not getattr(stock_fn, "__sglang_trinv__", False)
    stock = _run_chunk_kda_fwd(lower_bound)

    with caplog.at_level(logging.INFO, logger="sglang_trinv.plugin"):
        plugin.patch("blockdoubling")
    assert "kda" in plugin.active().patched
    assert any("KDA chunk prefill (I+A)^-1 -> blockdoubling" in r.getMessage() for r in caplog.records)
    assert any("chunk_kda_fwd: Akk not written" in r.getMessage() for r in caplog.records)
    ours_fn, ours_public = kda.chunk_kda_fwd_intra, chunk_intra.chunk_kda_fwd_intra
    assert ours_fn.__sglang_trinv__ and ours_public.__sglang_trinv__
    assert ours_fn.__wrapped__ is stock_fn and ours_public.__wrapped__ is stock_fn
    # kda.py's binding (its caller drops Akk) skips the Akk store; the public one keeps stock's contract
    q, k, v, g, beta, _ = _inputs(B=1, T=40, H=1, K=16, V=16, seed=7)
    assert ours_fn(q, k, v, gk=g, beta=beta, scale=0.25)[5] is None
    full = ours_public(q, k, v, gk=g, beta=beta, scale=0.25)
    assert full[5] is not None and full[5].shape == (1, 40, 1, 64)
    before = plugin.active().counts
    ours = _run_chunk_kda_fwd(lower_bound)
    after = plugin.active().counts
    assert after.get("kda", 0) == before.get("kda", 0) + 1 and after.get("kda_fallback", 0) == 0
    for name, x, r in zip(("o", "final state"), ours, stock):
        torch.testing.assert_close(x, r, rtol=1e-2 if HAS_CUDA else 1e-4, atol=1e-2 if HAS_CUDA else 1e-4,
                                   msg=lambda m: f"{name}: {m}")

    plugin.unpatch()
    assert kda.chunk_kda_fwd_intra is stock_fn and chunk_intra.chunk_kda_fwd_intra is stock_fn
    assert ENV_METHOD not in os.environ or not os.environ[ENV_METHOD]


@pytest.mark.parametrize("setting", ["default", "tuned", "sglang_vars"])
def test_kda_state_launch(clean_selection, caplog, monkeypatch, setting):
    """The plugin's default runs chunk_kda_fwd's state recurrence (SGLang's kernel, per-key gate) at
    gdn_state.tuned_launch(gk=True)'s constants: BV=16, 4 warps, 3 stages here (2 sequences x 2 heads x 1 block
    fit in a wave). Same o and final state as SGLang's own launch; SGLang's autotuner gets its one config back after
    each call; kda.py's binding only; a safe_gate call, whose intra stays stock (auto), keeps SGLang's launch. SGLang's
    launch variables set: they stand (the wrapper passes the call on). SGLANG_TRINV_STATE_LAUNCH=sglang: no wrapper,
    said in the log."""
    from sglang_trinv.ops import gdn_state

    monkeypatch.delenv(ENV_KDA, raising=False)
    for name in gdn_state.SGLANG_LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    kda = import_module(f"{FLA}.kda")
    chunk_h = import_module(f"{FLA}.chunk_delta_h")
    kernel = getattr(chunk_h, gdn_state.STOCK_KERNEL)
    stock_fwd_h, sglang_configs = kda.chunk_gated_delta_rule_fwd_h, list(kernel.configs)
    monkeypatch.setenv("SGLANG_TRINV_STATE_LAUNCH", "sglang")
    with caplog.at_level(logging.INFO, logger="sglang_trinv.plugin"):
        plugin.patch("blockdoubling")
    assert kda.chunk_gated_delta_rule_fwd_h is stock_fwd_h
    assert any("KDA state recurrence: SGLang's own kernel and launch (SGLANG_TRINV_STATE_LAUNCH=sglang)"
               in r.getMessage() for r in caplog.records)
    reference = _run_chunk_kda_fwd(None)  # our intra kernel, SGLang's state launch
    assert kernel.best_config is sglang_configs[0]
    plugin.unpatch()

    if setting == "default":
        monkeypatch.delenv("SGLANG_TRINV_STATE_LAUNCH")
    else:
        monkeypatch.setenv("SGLANG_TRINV_STATE_LAUNCH", "tuned")
    if setting == "sglang_vars":
        monkeypatch.setenv("SGLANG_GDN_CHUNK_H_BV", "32")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sglang_trinv.plugin"):
        plugin.patch("blockdoubling")
    wrapper = kda.chunk_gated_delta_rule_fwd_h
    assert wrapper.__sglang_trinv__ and wrapper.__wrapped__ is stock_fwd_h
    assert chunk_h.chunk_gated_delta_rule_fwd_h is stock_fwd_h  # (GDN's stays as it is)
    assert any("KDA state recurrence: SGLang's own kernel at launch constants" in r.getMessage()
               for r in caplog.records)
    before = plugin.active().counts.get("kda_state_tuned", 0)
    with caplog.at_level(logging.INFO, logger="sglang_trinv.plugin"):
        o, state = _run_chunk_kda_fwd(None)
    assert kernel.configs == sglang_configs
    used = kernel.best_config
    if setting != "sglang_vars":
        assert plugin.active().counts["kda_state_tuned"] == before + 1
        assert (used.kwargs["BV"], used.num_warps, used.num_stages) == (16, 4, 3), used
        assert before or any("first KDA state recurrence at BV=16, 4 warps, 3 stages" in r.getMessage()
                             for r in caplog.records)  # (once a process)
    else:
        assert plugin.active().counts.get("kda_state_tuned", 0) == before and used is sglang_configs[0]
    for name, x, r in zip(("o", "final state"), (o, state), reference):
        if HAS_CUDA:  # each value column's recurrence: the same arithmetic whatever the block
            assert torch.equal(x, r), name
        else:  # (the interpreter's numpy products over other blocks: the last bits)
            torch.testing.assert_close(x, r, rtol=1e-6, atol=1e-6, msg=name)
    plugin.unpatch()
    assert kda.chunk_gated_delta_rule_fwd_h is stock_fwd_h


@pytest.mark.gpu
@pytest.mark.parametrize("H,cu,bv", [(8, (0, 4096), 16), (32, (0, 4096), 32), (32, (0, 1, 700, 2048, 4096), 64)],
                         ids=["H8-BV16", "H32-BV32", "H32-varlen-BV64"])
def test_kda_state_launch_on_gpu(clean_selection, monkeypatch, H, cu, bv):
    """K=V=128 on the GPU: chunk_kda_fwd through the plugin at the tuned state launch gives o and the final
    states bit for bit as with SGLang's launch (SGLANG_TRINV_STATE_LAUNCH=sglang), at each of the rule's three forms."""
    from sglang_trinv.ops import gdn_state

    if not HAS_CUDA:
        pytest.skip("needs a GPU")
    monkeypatch.delenv(ENV_KDA, raising=False)
    for name in gdn_state.SGLANG_LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    shape = dict(T=cu[-1], H=H, K=128, cu=cu)
    expect = gdn_state.tuned_launch(len(cu) - 1, H, 128, torch.device(DEVICE), gk=True, tokens=cu[-1])
    assert expect[0] == bv
    runs = {}
    for launch in ("sglang", "tuned"):
        monkeypatch.setenv("SGLANG_TRINV_STATE_LAUNCH", launch)
        plugin.patch("blockdoubling")
        before = plugin.active().counts.get("kda_state_tuned", 0)
        runs[launch] = _run_chunk_kda_fwd(None, **shape)
        assert plugin.active().counts.get("kda_state_tuned", 0) == before + (launch == "tuned")
        plugin.unpatch()
    for name, x, r in zip(("o", "final state"), runs["tuned"], runs["sglang"]):
        assert torch.equal(x, r), name


def test_kda_state_launch_rule():
    """KDA's launch (s27 H200 sweep): BV=16 with 4 warps, 3 stages in one wave of 132 SMs; BV=64, 4 warps, 2 stages
    beyond 3 programs per SM at BV=32 with short sequences; else BV=32, 4 warps, 3 stages; GDN's rule (2 warps at
    BV=16) unchanged."""
    from sglang_trinv.ops import gdn_state

    cpu = torch.device("cpu")
    assert gdn_state.tuned_launch(1, 8, 128, cpu, gk=True) == (16, 4, 3)  # 64 programs
    assert gdn_state.tuned_launch(1, 32, 128, cpu, gk=True) == (32, 4, 3)  # 256 at BV=16
    assert gdn_state.tuned_launch(8, 32, 128, cpu, gk=True, tokens=8192) == (64, 4, 2)  # 1024 programs at BV=32
    assert gdn_state.tuned_launch(8, 32, 128, cpu, gk=True, tokens=32768) == (32, 4, 3)
    assert gdn_state.tuned_launch(1, 8, 128, cpu) == (16, 2, 3)


def test_auto_keeps_safe_gate_stock_logged_once(clean_selection, caplog, monkeypatch):
    monkeypatch.delenv(ENV_KDA, raising=False)
    stock = _run_chunk_kda_fwd(-5.0)
    plugin.patch("blockdoubling")
    assert "kda" in plugin.active().patched
    before = plugin.active().counts
    with caplog.at_level(logging.INFO, logger="sglang_trinv.plugin"):
        ours = _run_chunk_kda_fwd(-5.0)
        _run_chunk_kda_fwd(-5.0)
    after = plugin.active().counts
    assert after.get("kda", 0) == before.get("kda", 0)
    assert after["kda_safe_gate_stock"] - before.get("kda_safe_gate_stock", 0) == 2
    # its state recurrence keeps SGLang's launch too (the tuned one follows our intra kernel only)
    assert after.get("kda_state_tuned", 0) == before.get("kda_state_tuned", 0)
    assert sum("KDA safe_gate prefill stays stock" in r.getMessage() for r in caplog.records) == 1
    for x, r in zip(ours, stock):
        assert torch.equal(x, r)  # the stock kernel itself


def test_plugin_falls_back_to_stock_logged_once(clean_selection, caplog, monkeypatch):
    from sglang_trinv.plugin import kda as kda_hook

    monkeypatch.setenv(ENV_KDA, "1")

    kda = import_module(f"{FLA}.kda")
    kda_hook._warned_fallbacks.clear()
    q, k, v, g, beta, _ = _inputs(B=1, T=16, H=1, K=16, V=16, seed=6)
    k_nc = torch.cat([k, k], -1)[..., :16]  # a real input our kernel declines (strided key rows)
    assert ops.kda_supports(q, k_nc, v, g, beta) is not None
    plugin.patch("hybrid")
    before = plugin.active().counts
    with caplog.at_level(logging.WARNING, logger="sglang_trinv.plugin"):
        for _ in range(2):
            out = kda.chunk_kda_fwd_intra(q, k_nc, v, gk=g, beta=beta, scale=0.25, fuse_recompute=True,
                                          fuse_diagonal=True)
    counts = plugin.active().counts
    assert counts.get("kda_fallback", 0) - before.get("kda_fallback", 0) == 2
    assert counts.get("kda", 0) == before.get("kda", 0)
    warnings = [r.getMessage() for r in caplog.records if "KDA prefill falls back" in r.getMessage()]
    assert len(warnings) == 1 and "non-contiguous" in warnings[0]
    stock = kda.chunk_kda_fwd_intra.__wrapped__(q, k_nc, v, gk=g, beta=beta, scale=0.25, fuse_recompute=True,
                                                fuse_diagonal=True)
    for x, r in zip(out, stock):
        assert (x is None and r is None) or torch.equal(x, r)


# --------------------------------------------------------------------------- the real (non-interpreted) compile

_COMPILE_SM90 = r"""
import dataclasses
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from sglang_trinv import ops
from sglang_trinv.ops import kda_intra

fn = kda_intra.kda_intra_kernel
DIAG_IN = sys.argv[1].startswith("sglang")
HEADS_FASTEST = sys.argv[1].endswith("heads-fastest")  # Tuning.heads_fastest: the grid's order only
tu = ops.KDA_DEFAULT_TUNING
if sys.argv[1].endswith("plain"):  # without Tuning.diag_masks + split_packed (the default's packed splits: inline PTX)
    tu = dataclasses.replace(tu, diag_masks=False, split_packed=False)
diag, whole, dp, mp, _ = ops._method_codes("blockdoubling", None, True)
diag, dp, mp = ops.tuned_inversion(tu, diag, dp, mp)
gd, go = ops._gram_codes(None)
ptr = {n: "*bf16" for n in ("q", "k", "v", "beta", "Aqk", "w", "u", "kg")}
sig = {**ptr, "g": "*fp32", "scale": "fp32", "cu_seqlens": "*i64", "chunk_indices": "*i64", "T": "i32",
       "Akkd": "*fp32"}
const = dict(Akk=None, H=32, K=128, V=128, BT=64, BC=16, BK=tu.BK, BV=tu.BV, DIAG=diag, WHOLE=whole,
             DIAG_PREC=dp, MERGE_PREC=mp, GRAM_DIAG=gd, GRAM_OFF=go, SAFE_GATE=False, IS_VARLEN=True,
             STORE_AQK=True, STORE_AKK=False, FUSE_WU=True, DIAG_IN=DIAG_IN, HEADS_FASTEST=HEADS_FASTEST)
sig.update({n: "constexpr" for n in const})
src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(n),): v for n, v in const.items()})
c = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                   options={"num_warps": tu.num_warps, "num_stages": tu.num_stages})
assert c.asm["cubin"]
print("ok")
"""


@pytest.mark.skipif(HAS_CUDA, reason="on a GPU the kernels above already ran compiled")
@pytest.mark.parametrize("diag_gram", ["sglang", "fused", "sglang-heads-fastest", "sglang-plain"])
def test_kernel_compiles_for_sm90(diag_gram):
    """The interpreter does not run Triton's compiler: compile the default KDA kernel for an H100 (sm_90, with
    Triton's bundled ptxas) in a clean process, so a GPU-only compile error shows up on a CPU machine."""
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _COMPILE_SM90, diag_gram], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
