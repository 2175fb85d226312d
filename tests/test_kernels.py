"""Our Triton kernels vs their PyTorch twins, the fp64 reference and SGLang's stock kernel.

On a CPU these run under the Triton interpreter in fp32 (see tests/conftest.py); on a GPU in fp32 too, with
tf32-aware tolerances. Shapes are small: the interpreter is slow.
"""

import dataclasses
import os

import pytest
import torch
import torch.nn.functional as F

from sglang_trinv import ops
from sglang_trinv.reference import gdn as ref
from sglang_trinv.reference.inverse import exact_inverse

from .conftest import DEVICE, HAS_CUDA

FLA = "sglang.kernels.ops.attention.fla"
METHODS = list(ops.KERNEL_METHODS)
STABLE = ["forward_substitution", "column_sweep", "blockdoubling"]
# fp32 everywhere; on a GPU the tf32 products of the default precisions cost ~1e-3 relative
TOL = 2e-3 if HAS_CUDA else 2e-5


def _inputs(T, H, Hg, K, V, cu=None, seed=0, family="random"):
    gen = torch.Generator().manual_seed(seed)
    k = F.normalize(torch.randn(1, T, Hg, K, generator=gen), dim=-1)
    v = torch.randn(1, T, H, V, generator=gen)
    beta = torch.rand(1, T, H, generator=gen)
    g_raw = -F.softplus(torch.randn(1, T, H, generator=gen) - 2.0)
    if family == "identical_keys":  # β∈(1,2], no decay: the worst case for products of powers
        k = k[:, :1].expand(1, T, Hg, K).contiguous()
        beta = 1 + torch.rand(1, T, H, generator=gen)
        g_raw = torch.zeros_like(g_raw)
    from importlib import import_module

    cumsum = import_module(f"{FLA}.cumsum").chunk_local_cumsum
    to = lambda x: x.to(DEVICE)  # noqa: E731
    cu_t = None if cu is None else to(torch.tensor(cu, dtype=torch.int64))
    g = cumsum(to(g_raw), chunk_size=64, cu_seqlens=cu_t)  # SGLang's Triton cumsum: on the device
    return to(k), to(v), g, to(beta), cu_t


def _rel(x, y):
    return float((x.double() - y.double()).abs().max() / y.double().abs().max())


CASES = {
    "fixed": dict(T=100, H=4, Hg=2, K=32, V=16, cu=None),  # GQA, one full + one partial chunk
    "varlen": dict(T=150, H=2, Hg=1, K=16, V=16, cu=[0, 1, 70, 150]),  # a 1-token sequence, partial chunks
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", METHODS)
def test_fwd_intra_matches_fp64_and_stock(method, case):
    c = CASES[case]
    k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
    w, u, A = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, method=method)
    w64, u64, A64 = ref.fwd_intra(k, v, g, beta, cu)
    assert torch.isfinite(A).all() and torch.isfinite(w).all() and torch.isfinite(u).all()
    assert _rel(A, A64) < TOL
    assert _rel(w, w64) < TOL
    assert _rel(u, u64) < TOL
    from importlib import import_module

    stock = import_module(f"{FLA}.chunk_fwd").chunk_gated_delta_rule_fwd_intra
    ws, us, As = stock(k=k, v=v, g=g, beta=beta, cu_seqlens=cu)
    assert _rel(A, As) < TOL and _rel(w, ws) < TOL and _rel(u, us) < TOL


@pytest.mark.parametrize("method", METHODS)
def test_kkt_inverse_matches_kernel_twin(method):
    """The kernel computes exactly its twin's tree (fp32, ieee products)."""
    k, v, g, beta, _ = _inputs(64, 2, 1, 16, 16, seed=1)
    Ai = ops.gdn_kkt_inverse(k, g, beta, method=method, precision="ieee", output_dtype=torch.float32)
    A32 = ref.chunk_A(k, g, beta, dtype=torch.float32)
    twin = ref.chunk_apply(A32, ops.kernel_twin(method, "ieee"))
    exact = ref.chunk_inverse(k, g, beta)
    assert _rel(Ai, twin) < (2e-3 if HAS_CUDA else 1e-5)
    assert _rel(Ai, exact) < (2e-3 if HAS_CUDA else 1e-5)


def test_merge_precision_per_level():
    """'DIAG/M16+M32': the 16 → 32 merges in M16, the 32 → 64 ones in M32 — parsed, refused where it has no
    meaning (no merge tree, KDA), emulated level by level in the reference twin, and run by the kernels."""
    assert ops.merge_levels("bf16x3+tf32") == ("bf16x3", "tf32") and ops.merge_levels("tf32") == ("tf32", "tf32")
    assert ops.split_precision("blockdoubling", "bf16x3/bf16x3+tf32") == ("bf16x3", "bf16x3+tf32")
    with pytest.raises(ValueError, match="two merge levels"):
        ops.split_precision("blockdoubling", "bf16x3/tf32+tf32+tf32")
    with pytest.raises(ValueError, match="merge levels"):
        ops._method_codes("neumann", "ieee/ieee+tf32", True)
    # the twin applies the levels: differs from both one-precision trees, still close to exact
    k, v, g, beta, _ = _inputs(64, 2, 1, 16, 16, seed=2, family="identical_keys")
    A = ref.chunk_A(k, g, beta, dtype=torch.float32)
    exact = ref.chunk_inverse(k, g, beta)
    twins = {p: ref.chunk_apply(A, ops.kernel_twin("blockdoubling", f"bf16x3/{p}"))
             for p in ("tf32", "bf16x3", "bf16x3+tf32")}
    assert not torch.equal(twins["bf16x3+tf32"], twins["tf32"])
    assert not torch.equal(twins["bf16x3+tf32"], twins["bf16x3"])
    assert _rel(twins["bf16x3+tf32"], exact) < 2e-2
    # the kernels (interpreter: fp32 products) against fp64, GQA + varlen
    c = CASES["varlen"]
    k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
    w, u, Ai = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, precision="bf16x3/bf16x3+tf32")
    w64, u64, A64 = ref.fwd_intra(k, v, g, beta, cu)
    assert _rel(Ai, A64) < TOL and _rel(w, w64) < TOL and _rel(u, u64) < TOL
    Ai2 = ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu, precision="bf16x3/bf16x3+tf32")
    assert _rel(Ai2, A64) < TOL


def test_split_product_precision_of_the_last_merge():
    """'DIAG/M16+Pin*Pout': the 32 → 64 merges' inner products A·X in Pin, the outer X·(A·X) in Pout. Why: with
    (nearly) equal keys w = Ai·diag(β e^g)·K adds Ai's absolute errors row by row, and tf32 in the cancelling inner
    product puts w's error above stock's (GPU, bench/results/2026-11-27-s12 §6). Parsed and refused where it has no
    meaning, emulated by the twin; on identical keys the twin's w error is below stock's scheme with bf16x3 inner
    products and above it with tf32 ones; the kernels run it (interpreter: fp32 products)."""
    from sglang_trinv.reference import inverse as R
    from sglang_trinv.reference.precision import product_pair

    assert product_pair("bf16x3*tf32") == ("bf16x3", "tf32") and product_pair("tf32") == ("tf32", "tf32")
    assert ops.split_precision("blockdoubling", "bf16x3/bf16x3+bf16x3*tf32") == ("bf16x3", "bf16x3+bf16x3*tf32")
    from sglang_trinv.registry import check_precision  # the CLI flag's validator

    assert check_precision("bf16x3/bf16x3+bf16x3*tf32") == "bf16x3/bf16x3+bf16x3*tf32"
    for bad in ("bf16x3/bf16x3*tf32", "bf16x3/tf32*tf32+tf32", "bf16x3/bf16x3+bf16x3*tf32*tf32"):
        with pytest.raises(ValueError, match="unknown precision"):
            check_precision(bad)
    for bad in ("bf16x3/bf16x3*tf32", "bf16x3/bf16x3*tf32+tf32", "bf16x3*tf32/tf32"):
        with pytest.raises(ValueError, match="32 → 64 merges only"):
            ops.split_precision("blockdoubling", bad)
    with pytest.raises(ValueError, match="unknown precision"):
        ops.split_precision("blockdoubling", "bf16x3/bf16x3+bf16x3*tf99")
    assert ops._merge_out_code("blockdoubling", "bf16x3/bf16x3+bf16x3*tf32", True) == ops._PRECISION_CODES["tf32"]
    assert ops._merge_out_code("blockdoubling", "bf16x3/bf16x3+tf32", True) == -1
    # w error of each scheme's Ai (twin, GPU rounding emulated) on the benchmark's identical-keys family (one key
    # per chunk, β = 0.999, no decay), bf16 inputs as on the GPU
    gen = torch.Generator().manual_seed(3)
    T, H, Hg = 1024, 8, 4
    k = F.normalize(torch.randn(1, T // 64, Hg, 128, generator=gen), dim=-1).repeat_interleave(64, dim=1)
    k = k.bfloat16().float()
    beta = torch.full((1, T, H), 0.999).bfloat16().float()
    g = torch.zeros(1, T, H)
    v = torch.randn(1, T, H, 16, generator=gen)
    A = ref.chunk_A(k, g, beta, dtype=torch.float32)
    w64 = ref.fwd_intra(k, v, g, beta)[0]
    kb = k.repeat_interleave(H // Hg, dim=2) * beta[..., None]

    def w_err(invert):
        Ai = ref.chunk_apply(A, invert).bfloat16().float()
        w = ref.chunk_matmul(Ai, kb.bfloat16().float())
        return float((w.double() - w64).abs().max() / w64.abs().max())

    stock = w_err(lambda X: R.forward_substitution(X, 16, "tf32"))
    split = w_err(ops.kernel_twin("blockdoubling", "bf16x3/bf16x3+bf16x3*tf32"))
    tf32_inner = w_err(ops.kernel_twin("blockdoubling", "bf16x3/bf16x3+tf32"))
    assert split < stock < tf32_inner, (split, stock, tf32_inner)
    # the kernels (interpreter: fp32 products) against fp64, GQA + varlen
    c = CASES["varlen"]
    k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
    w, u, Ai = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, precision="bf16x3/bf16x3+bf16x3*tf32")
    w64, u64, A64 = ref.fwd_intra(k, v, g, beta, cu)
    assert _rel(Ai, A64) < TOL and _rel(w, w64) < TOL and _rel(u, u64) < TOL


def test_rounded_tf32_merges():
    """'tf32r': tf32 products with operands rounded to nearest in the kernel (plain 'tf32' lets the tensor core
    truncate them, as SGLang's merges do). The emulation says rounding halves the inverse's error where keys are
    correlated and β ∈ (1, 2] (the inverse-only default bf16x3/tf32 was 1.6 % above stock there on the GPU, s13);
    the kernels run it (interpreter: fp32 products) and match fp64."""
    from sglang_trinv.reference import inverse as R

    gen = torch.Generator().manual_seed(5)
    T, Hg, K = 512, 2, 128  # the benchmark's β ∈ (1, 2] family: keys at cos ≈ 0.99 to one base key, no decay
    base = F.normalize(torch.randn(1, 1, Hg, K, generator=gen), dim=-1)
    k = F.normalize(base + 0.1 * F.normalize(torch.randn(1, T, Hg, K, generator=gen), dim=-1), dim=-1)
    k = k.bfloat16().float()
    beta = (1 + torch.rand(1, T, 2 * Hg, generator=gen)).bfloat16().float()
    g = torch.zeros(1, T, 2 * Hg)
    A = ref.chunk_A(k, g, beta, dtype=torch.float32)
    exact = ref.chunk_inverse(k, g, beta)
    err = {name: _rel(ref.chunk_apply(A, f), exact) for name, f in (
        ("stock", lambda X: R.forward_substitution(X, 16, "tf32")),
        ("truncated", ops.kernel_twin("blockdoubling", "bf16x3/tf32")),
        ("rounded", ops.kernel_twin("blockdoubling", "bf16x3/tf32r")))}
    assert err["rounded"] < 0.7 * min(err["stock"], err["truncated"]), err
    # the kernels: the rounding is integer arithmetic, so the interpreter does it too (tf32-level error there,
    # where plain tf32 dots are fp32), and the result is tf32-close to fp64
    c = CASES["varlen"]
    k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
    w64, u64, A64 = ref.fwd_intra(k, v, g, beta, cu)
    Ai = ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu, precision="bf16x3/tf32r", output_dtype=torch.float32)
    assert 1e-6 < _rel(Ai, A64) < 2e-3
    w, u, Ai = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, precision="bf16x3/bf16x3+tf32r", backend="triton")
    tol = 1.5e-2 if HAS_CUDA else 2e-3  # bf16 outputs on a GPU
    assert _rel(Ai, A64) < tol and _rel(w, w64) < tol and _rel(u, u64) < tol


def test_default_precision_keeps_the_whole_forward_at_stock_error_on_identical_keys():
    """Why the GDN default is all-bf16x3 (bench/results/2026-11-28-s13 §1): on identical keys the whole forward's
    output o was above stock's on every GPU draw with tf32 in the 32 → 64 merges — also with only their outer
    products in tf32 ('bf16x3/bf16x3+bf16x3*tf32', whose w is fine) — and below it with bf16x3 there. The CPU
    emulation of the pipeline's roundings (reference.gdn.chunk_fwd_rounded, tf32 operands truncated as the tensor
    core reads them) reproduces that: a change of the default that loses it fails here."""
    from sglang_trinv.reference import inverse as R

    T, H, Hg, D = 1024, 4, 2, 128
    errs = {"stock": [], "default": [], "split": []}
    schemes = {"stock": (lambda A: R.forward_substitution(A, 16, "tf32"), "stock"),
               "default": (ops.kernel_twin("blockdoubling", ops.DEFAULT_PRECISION["blockdoubling"]), "ours"),
               "split": (ops.kernel_twin("blockdoubling", "bf16x3/bf16x3+bf16x3*tf32"), "ours")}
    for seed in range(3, 7):  # the benchmark's family: one key per chunk, β = 0.999, no decay
        gen = torch.Generator().manual_seed(seed)
        k = F.normalize(torch.randn(1, T // 64, Hg, D, generator=gen), dim=-1).repeat_interleave(64, dim=1)
        q = F.normalize(torch.randn(1, T, Hg, D, generator=gen), dim=-1)
        k, q = k.bfloat16(), q.bfloat16()
        v = torch.randn(1, T, H, D, generator=gen).bfloat16()
        beta = torch.full((1, T, H), 0.999).bfloat16()
        g = torch.zeros(1, T, H)
        h0 = torch.randn(1, H, D, D, generator=gen) * 0.1
        o64 = ref.chunk_fwd(q, k, v, g, beta, D ** -0.5, h0)[0]
        for name, (invert, wu) in schemes.items():
            o = ref.chunk_fwd_rounded(q, k, v, g, beta, D ** -0.5, h0, lambda A, f=invert: f(A), wu=wu)
            errs[name].append(float((o.double() - o64).abs().max() / o64.abs().max()))
    # (CPU, these draws: stock 2.1–2.7e-2, default 1.9–2.2e-2, split 2.4–3.0e-2)
    assert all(d <= s for d, s in zip(errs["default"], errs["stock"])), errs
    med = {n: sorted(e)[len(e) // 2] for n, e in errs.items()}
    assert med["split"] > med["stock"], errs  # the emulation sees the GPU's effect of tf32 outer products


@pytest.mark.parametrize("precision", ["ieee", None])
@pytest.mark.parametrize("method", STABLE)
def test_stable_methods_on_identical_keys(method, precision):
    """Identical keys, β∈(1,2], no decay, partial chunk: stable methods stay finite and accurate — exactly
    (fp32) with ieee products, to the split/tf32 products' accuracy with the method's default precision."""
    k, v, g, beta, _ = _inputs(100, 2, 1, 16, 16, seed=2, family="identical_keys")
    Ai = ops.gdn_kkt_inverse(k, g, beta, method=method, precision=precision, output_dtype=torch.float32)
    exact = ref.chunk_inverse(k, g, beta)
    assert torch.isfinite(Ai).all()
    tol = 2e-3 if (HAS_CUDA or precision is None) else 1e-5
    assert _rel(Ai, exact) < tol


def test_neumann_inner_blocks_lose_accuracy_on_identical_keys():
    """The paper's MXR (Neumann on 16×16 tiles) is not log-stable for β > 1: with identical keys the powers
    reach β⁸·C(15,7) ≈ 1.6e6 and cancel, even in fp32. Doubling only multiplies bounded inverses."""
    k, v, g, beta, _ = _inputs(100, 2, 1, 16, 16, seed=2, family="identical_keys")
    exact = ref.chunk_inverse(k, g, beta)
    err = {m: _rel(ops.gdn_kkt_inverse(k, g, beta, method=m, precision="ieee", output_dtype=torch.float32), exact)
           for m in ("hybrid", "blockdoubling")}
    assert err["blockdoubling"] < 1e-5
    assert err["hybrid"] > 100 * err["blockdoubling"]


@pytest.mark.parametrize("BT", [16, 32, 64])
def test_solve_tril_block_sizes(BT):
    gen = torch.Generator().manual_seed(BT)
    T, H = 2 * BT + 5, 2
    A = torch.rand(1, T, H, BT, generator=gen) * 0.5
    t = torch.arange(T)[:, None]
    A = (A * (torch.arange(BT)[None, :] < (t % BT)).float()[None, :, None, :]).to(DEVICE)
    X = ops.solve_tril(A, method="blockdoubling", precision="ieee")
    # reference: per chunk of BT rows (last chunk partial)
    R = ref.chunk_apply(A.double(), exact_inverse)
    assert X.dtype == torch.float32
    assert _rel(X, R) < (2e-3 if HAS_CUDA else 1e-5)


def test_solve_tril_varlen_matches_fixed():
    gen = torch.Generator().manual_seed(7)
    A = torch.rand(1, 64, 1, 64, generator=gen) * 0.3
    t = torch.arange(64)[:, None]
    A = (A * (torch.arange(64)[None, :] < t).float()[None, :, None, :]).to(DEVICE)
    cu = torch.tensor([0, 64], device=DEVICE)
    X1 = ops.solve_tril(A, method="hybrid", precision="ieee")
    X2 = ops.solve_tril(A, cu_seqlens=cu, method="hybrid", precision="ieee")
    assert torch.equal(X1, X2)


def test_inverse_only_defaults_are_the_measured_ones():
    """precision=None picks the measured defaults (bench/results/2026-11-28-s14): gdn_kkt_inverse bf16x3 diagonal
    tiles with tf32 merges on rounded operands, solve_tril ieee (FLA's fp32 accuracy) — the same bits as asking for
    them, and solve_tril's default agrees with the fp64 inverse to fp32 rounding."""
    k, _, g, beta, _ = _inputs(80, 2, 1, 16, 16)
    assert ops.INVERSE_ONLY_PRECISION["blockdoubling"] == "bf16x3/tf32r"
    assert torch.equal(ops.gdn_kkt_inverse(k, g, beta), ops.gdn_kkt_inverse(k, g, beta, precision="bf16x3/tf32r"))
    A = ref.chunk_A(k, g, beta, dtype=torch.float64).float()
    assert ops.SOLVE_TRIL_PRECISION["blockdoubling"] == "ieee"
    X = ops.solve_tril(A)
    assert torch.equal(X, ops.solve_tril(A, precision="ieee"))
    assert _rel(X, ref.chunk_apply(A.double(), exact_inverse)) < (1e-5 if HAS_CUDA else 1e-6)


def test_bad_inputs_are_refused_clearly():
    k, v, g, beta, _ = _inputs(64, 2, 1, 16, 16)
    with pytest.raises(ValueError, match="unknown inversion method"):
        ops.gdn_fwd_intra(k, v, g, beta, method="cholesky")
    with pytest.raises(ValueError, match="unknown precision"):
        ops.gdn_fwd_intra(k, v, g, beta, precision="fp8")
    with pytest.raises(ValueError, match="chunk_size"):
        ops.gdn_fwd_intra(k, v, g, beta, chunk_size=32)
    assert ops.supports(k, v, g, beta) is None
    k2 = k.expand(1, 64, 2, 16).contiguous()  # 2 key heads, 3 value heads
    assert "multiple" in ops.supports(k2, None, None, beta[..., :1].expand(1, 64, 3).contiguous())
    with pytest.raises(ValueError, match="BT"):
        ops.solve_tril(torch.zeros(1, 8, 1, 8))


def test_store_A_false_skips_A():
    k, v, g, beta, _ = _inputs(64, 2, 1, 16, 16)
    w, u, A = ops.gdn_fwd_intra(k, v, g, beta, store_A=False)
    w2, u2, A2 = ops.gdn_fwd_intra(k, v, g, beta)
    assert A is None and torch.equal(w, w2) and torch.equal(u, u2)


@pytest.mark.parametrize("tuning", [ops.Tuning(BK=16, BV=16, fold_scale=True),
                                    ops.Tuning(num_warps=2, BK=32, BV=16, num_stages=3, fold_scale=True)])
def test_fold_scale_matches_fp64(tuning):
    """β and β·e^g folded into Ai's columns (u = (Ai·diag β)·v) is the same product, varlen and GQA."""
    for c in CASES.values():
        k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
        w, u, A = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=tuning)
        w64, u64, A64 = ref.fwd_intra(k, v, g, beta, cu)
        assert _rel(A, A64) < TOL and _rel(w, w64) < TOL and _rel(u, u64) < TOL


@pytest.mark.parametrize("tuning", [dataclasses.replace(ops.DEFAULT_TUNING_FUSED, fold_beta=True),
                                    dataclasses.replace(ops.DEFAULT_TUNING_FUSED, fold_beta=True, w_first=True)],
                         ids=["fold-beta", "fold-beta-w-first"])
@pytest.mark.parametrize("gate", [True, False], ids=["gate", "no-gate"])
def test_fold_beta_matches_fp64(tuning, gate):
    """One folded copy Ai·diag(β) for both loops (u = Y·v, w = Y·(e^g ⊙ k)): the same product, varlen and GQA, with
    and without a gate (without one k's tiles also enter the dots unscaled). A is Ai itself, stored before the loops:
    the same bits as the default's."""
    for c in CASES.values():
        k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
        g = g if gate else None
        w, u, A = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=tuning)
        w2, u2, A2 = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu)
        w64, u64, A64 = ref.fwd_intra(k, v, g, beta, cu)
        assert torch.equal(A, A2)
        # without decay the inversion itself is less accurate (the default's A: 2.5e-5 in fp32 here): the fold's
        # products within TOL of fp64 or of the default's own error, whichever is larger
        assert _rel(w, w64) < max(TOL, 1.5 * _rel(w2, w64)) and _rel(u, u64) < max(TOL, 1.5 * _rel(u2, u64))
        assert _rel(w, w2) < TOL and _rel(u, u2) < TOL


def test_l2_warm_programs_leave_the_outputs_bitwise():
    """Tuning.l2_warm: warm-up programs ahead of the chunk programs (they read v, store nothing unless a word holds
    one NaN pattern, and then the same bits) shift the chunk programs' grid rows: w, u, A, the fused cumsum's g and
    v itself equal the default launch's bit for bit — varlen (the chunk table), GQA with batch rows, more warm-up
    programs than chunks. Under the interpreter the warm-up loads are plain loads."""
    cases = [*CASES.values(), dict(T=130, H=2, Hg=1, K=16, V=32, cu=None, B=2)]
    for c in cases:
        for warm in (1, 5, 64):
            k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
            if c.get("B", 1) > 1:  # batch rows: two sequences of T tokens
                k, v, g, beta = (torch.cat([x, x.flip(1)]) for x in (k, v, g, beta))
            NT = -(-c["T"] // 64) if cu is None else len(ops.prepare_chunk_indices(cu, 64))
            tu = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, l2_warm=warm)
            n_bg = v.shape[0] * c["H"]
            assert ops._warm_rows(tu, True, False, NT, n_bg, v) == -(-warm // n_bg) > 0
            v0 = v.clone()
            for x, y in zip(ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=tu),
                            ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu), strict=True):
                assert torch.equal(x, y)
            if v.shape[0] == 1:
                for x, y in zip(ops.gdn_cumsum_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=tu),
                                ops.gdn_cumsum_fwd_intra(k, v, g, beta, cu_seqlens=cu), strict=True):
                    assert (y is None) if x is None else torch.equal(x, y)
            assert torch.equal(v, v0)


def test_l2_warm_only_where_one_wave_holds_every_program(monkeypatch):
    """Tuning.l2_warm adds warm-up rows only to fused launches from K Kᵀ with v contiguous, and on a GPU only where
    chunk and warm-up programs all fit in one wave (SMs × resident programs per SM: 8, or more under a register cap)
    and the chunk programs alone fill at least L2_WARM_MIN_FILL of it; the rows round up per grid row."""
    tu = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, l2_warm=32)
    v = torch.zeros(1, 64, 8, 16)
    assert ops._warm_rows(tu, True, False, 128, 8, v) == 4
    assert ops._warm_rows(tu, True, False, 128, 6, v) == 6  # ceil(32 / 6)
    assert ops._warm_rows(ops.DEFAULT_TUNING_FUSED, True, False, 128, 8, v) == 0  # off by default
    assert ops._warm_rows(tu, False, False, 128, 8, v) == 0 and ops._warm_rows(tu, True, True, 128, 8, v) == 0
    assert ops._warm_rows(tu, True, False, 128, 8, v[..., ::2]) == 0  # not contiguous

    class FakeCuda:  # a v on a 132-SM GPU: 1056 resident programs
        is_cuda = True
        device = torch.device("cuda", 0)

        @staticmethod
        def is_contiguous():
            return True

        @staticmethod
        def data_ptr():
            return 1 << 20

    monkeypatch.setattr(ops._gluon, "_sm_count", lambda index: 132)
    assert ops._warm_rows(tu, True, False, 128, 8, FakeCuda) == 4  # T=8192 H=8: 1024 + 32 programs = one wave
    assert ops._warm_rows(tu, True, False, 129, 8, FakeCuda) == 0  # 1032 + 32 > 1056
    assert ops._warm_rows(tu, True, False, 512, 8, FakeCuda) == 0  # four waves
    assert ops.L2_WARM_MIN_FILL == 0.9  # 950.4 of the 1056 slots
    assert ops._warm_rows(tu, True, False, 119, 8, FakeCuda) == 4  # 952 chunk programs
    assert ops._warm_rows(tu, True, False, 118, 8, FakeCuda) == 0  # 944: the wave part-filled
    assert ops._warm_rows(tu, True, False, 64, 8, FakeCuda) == 0  # T=4096 H=8: half a wave
    capped = dataclasses.replace(tu, maxnreg=224)  # 9 programs per SM: 1188 slots
    assert ops._programs_per_sm(capped) == 9 and ops._programs_per_sm(tu) == ops.PROGRAMS_PER_SM == 8
    assert ops._warm_rows(capped, True, False, 144, 8, FakeCuda) == 4  # 1152 + 32 ≤ 1188
    assert ops._warm_rows(capped, True, False, 145, 8, FakeCuda) == 0


def test_pdl_launch_only_on_a_gpu(monkeypatch):
    """Tuning.pdl asks Triton for a programmatic-dependent launch (launch_pdl) and builds the template's wait
    (PDL) — on a GPU only: under the interpreter the launch is a plain one, and its outputs are the default's."""
    tu = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, pdl=True)
    args = (8, 4, 128, 128, 64, "blockdoubling", None, True, False, False, tu, True, True, True, 2, 0)
    ops._template_constexprs.cache_clear()  # (cached per launch kind; the environment is not part of the key)
    try:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        const, options = ops._template_constexprs(*args)
        assert const["PDL"] and options["launch_pdl"] is True
        const, options = ops._template_constexprs(*args[:10], ops.DEFAULT_TUNING_FUSED, *args[11:])
        assert not const["PDL"] and "launch_pdl" not in options
        ops._template_constexprs.cache_clear()
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        const, options = ops._template_constexprs(*args)
        assert not const["PDL"] and "launch_pdl" not in options
    finally:
        ops._template_constexprs.cache_clear()
        monkeypatch.undo()
    if not HAS_CUDA:
        c = CASES["varlen"]
        k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
        for x, y in zip(ops.gdn_cumsum_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=tu),
                        ops.gdn_cumsum_fwd_intra(k, v, g, beta, cu_seqlens=cu), strict=True):
            assert (y is None) if x is None else torch.equal(x, y)


@pytest.mark.parametrize("tuning", [ops.Tuning(BV=32, num_stages=3, wu_merged=True),
                                    ops.Tuning(BK=16, BV=16, num_stages=2, wu_merged=True)])
def test_wu_merged_loop_matches_fp64(tuning):
    """u then w in one column-tile loop (_wu_rows_merged) is the same product: varlen, GQA, K ≠ V."""
    for c in [*CASES.values(), dict(T=100, H=2, Hg=1, K=16, V=48, cu=None)]:
        k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
        w, u, A = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=tuning)
        w64, u64, A64 = ref.fwd_intra(k, v, g, beta, cu)
        assert _rel(A, A64) < TOL and _rel(w, w64) < TOL and _rel(u, u64) < TOL
        w2, u2, _ = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu)
        assert _rel(w, w2) < TOL and _rel(u, u2) < TOL


def test_heads_fastest_grid_is_bitwise_the_default():
    """Tuning.heads_fastest (the fused default) only reorders the grid (heads, chunks) from (chunks, heads): same
    programs, same outputs, varlen and GQA."""
    assert ops.DEFAULT_TUNING_FUSED.heads_fastest
    for c in CASES.values():
        k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
        tuning = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, heads_fastest=False)
        for x, y in zip(ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=tuning),
                        ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu), strict=True):
            assert torch.equal(x, y)
    # beyond 65535 chunks (the grid's second dimension) a launch goes back to chunks fastest
    assert ops.grid_order(ops.DEFAULT_TUNING_FUSED, 65535).heads_fastest
    assert not ops.grid_order(ops.DEFAULT_TUNING_FUSED, 65536).heads_fastest


def test_diag_masks_on_products_are_bitwise_the_direct_form():
    """Tuning.diag_masks (the Triton twin of GluonLaunch.DM; on by default): the diagonal tiles' doubling as
    X ← X − (X·A·X) ⊙ M_b gives the same bits as X ← X − X·(A ⊙ M_b)·X — fused (varlen, GQA, identical keys) and
    inverse-only."""
    from sglang_trinv.ops import gdn_intra

    assert ops.DEFAULT_TUNING_FUSED.diag_masks and ops.DEFAULT_TUNING.diag_masks
    tuning = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, diag_masks=False)
    for tu, form in ((ops.DEFAULT_TUNING_FUSED, gdn_intra.DOUBLING_MASKED), (tuning, gdn_intra.DOUBLING)):
        const, _ = ops._template_constexprs(4, 2, 32, 16, 64, "blockdoubling", None, True, True, False, tu, True,
                                            False, False)
        assert const["DIAG"] == form  # the two forms compared below
    _assert_bitwise_the_default(tuning, dataclasses.replace(ops.DEFAULT_TUNING, diag_masks=False))


def _assert_bitwise_the_default(fused: ops.Tuning, inverse: ops.Tuning):
    """gdn_fwd_intra under ``fused`` and gdn_kkt_inverse under ``inverse`` give the default tunings' bits (every
    case: fixed, varlen with a 1-token sequence and partial chunks, GQA; random and identical keys)."""
    for c in CASES.values():
        for family in ("random", "identical_keys"):
            k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"], family=family)
            for x, y in zip(ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=fused),
                            ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu), strict=True):
                assert torch.equal(x, y)
            Ai = ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu, tuning=inverse)
            assert torch.equal(Ai, ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu))


def test_full_chunks_drop_the_row_masks_with_the_same_bits():
    """Tuning.full_chunks (default): one sequence of whole 64-token chunks (T % 64 == 0, not varlen) loads and stores
    without row masks — the same bits (fused: w, u, A; inverse-only), GQA; elsewhere (a partial chunk, varlen) the
    launch keeps its masks, checked by the constexpr the launch gets."""
    full_f, full_i = ops.DEFAULT_TUNING_FUSED, ops.DEFAULT_TUNING
    assert full_f.full_chunks and full_i.full_chunks
    masked_f = dataclasses.replace(full_f, full_chunks=False)
    masked_i = dataclasses.replace(full_i, full_chunks=False)
    for family in ("random", "identical_keys"):
        k, v, g, beta, cu = _inputs(128, 4, 2, 32, 16, None, family=family)
        for x, y in zip(ops.gdn_fwd_intra(k, v, g, beta), ops.gdn_fwd_intra(k, v, g, beta, tuning=masked_f),
                        strict=True):
            assert torch.equal(x, y)
        assert torch.equal(ops.gdn_kkt_inverse(k, g, beta), ops.gdn_kkt_inverse(k, g, beta, tuning=masked_i))
    _assert_bitwise_the_default(masked_f, masked_i)  # the CASES: partial chunks and varlen, masks kept
    seen = []
    real = ops._template_constexprs

    def spy(*kind):
        seen.append(kind[14])  # the row bounds (kind[15]: the warm-up rows)
        return real(*kind)

    k, v, g, beta, cu = _inputs(128, 4, 2, 32, 16, None)
    ops._template_constexprs = spy
    try:
        ops.gdn_fwd_intra(k, v, g, beta, tuning=full_f)
        ops.gdn_fwd_intra(k[:, :100], v[:, :100], g[:, :100], beta[:, :100], tuning=full_f)
    finally:
        ops._template_constexprs = real
    from sglang_trinv.ops import gdn_intra as gk

    # whole chunks: no row masks; a partial last chunk: the fused default's clamped loads (masked stores)
    assert seen == [gk.ROWS_WHOLE.value, gk.ROWS_CLAMPED.value]


def test_clamped_rows_give_the_masked_values():
    """Tuning.clamp_rows: where chunks are not all whole (varlen with a 1-token sequence and partial chunks, one
    sequence with a partial last chunk; GQA) the k / v / g loads read row min(r, T − 1) without a row mask, β and
    the stores keep their masks — the same values as the masked build (fused, inverse-only, cumsum fused; random
    and identical keys), checked with the row-bounds code each launch gets."""
    clamp_f = ops.DEFAULT_TUNING_FUSED  # clamped by default since session 18; the inverse-only kernel masked
    assert clamp_f.clamp_rows and not ops.DEFAULT_TUNING.clamp_rows
    masked_f = dataclasses.replace(clamp_f, clamp_rows=False)
    clamp_i = dataclasses.replace(ops.DEFAULT_TUNING, clamp_rows=True)
    _assert_bitwise_the_default(masked_f, clamp_i)  # each against the other form
    c = CASES["varlen"]
    k, v, _, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
    g_raw = F.logsigmoid(torch.randn(beta.shape, generator=torch.Generator().manual_seed(3))).to(DEVICE)
    for x, y in zip(ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu, store_A=True, tuning=clamp_f),
                    ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu, store_A=True, tuning=masked_f),
                    strict=True):
        assert torch.equal(x, y)
    from sglang_trinv.ops import gdn_intra as gk

    assert ops._row_bounds(clamp_f, False, 64, False) == gk.ROWS_CLAMPED.value
    assert ops._row_bounds(clamp_f, True, 64, False) == gk.ROWS_WHOLE.value  # whole chunks: no row mask at all
    assert ops._row_bounds(clamp_f, False, 64, True) == gk.ROWS_MASKED.value  # solve_tril reads A: masked
    assert ops._row_bounds(masked_f, False, 64, False) == gk.ROWS_MASKED.value
    assert ops._row_bounds(ops.DEFAULT_TUNING, False, 64, False) == gk.ROWS_MASKED.value


@pytest.mark.parametrize("where", ["early", "mid"])
def test_A_store_place_gives_the_same_bits(where):
    """Tuning.a_store: the fused default stores Ai after the w loop ("late"), from the copies rounded to k's dtype
    (Ai's dtype here); right after the inversion ("early") or after the u loop ("mid") it is the same bits (every
    case; random and identical keys, cumsum fused); the constexpr is 0 (early) where nothing is fused, A is not
    written, or ("mid") the merged w/u loop has no point between u and w."""
    assert ops.DEFAULT_TUNING_FUSED.a_store == "late"
    other = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, a_store=where)
    _assert_bitwise_the_default(other, ops.DEFAULT_TUNING)
    c = CASES["varlen"]
    k, v, _, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
    g_raw = F.logsigmoid(torch.randn(beta.shape, generator=torch.Generator().manual_seed(3))).to(DEVICE)
    for x, y in zip(ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu, store_A=True, tuning=other),
                    ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu, store_A=True), strict=True):
        assert torch.equal(x, y)
    args = (4, 2, 32, 16, 64, "blockdoubling", None)
    code = {"early": 0, "mid": 1}[where]
    const = lambda tu, fuse_wu=True, store_A=True: ops._template_constexprs(  # noqa: E731
        *args, fuse_wu, store_A, False, tu, True, False, False)[0]["A_STORE"]
    assert const(ops.DEFAULT_TUNING_FUSED) == 2 and const(other) == code
    assert const(other, fuse_wu=False) == 0 and const(other, store_A=False) == 0
    assert const(dataclasses.replace(other, wu_merged=True)) == 0  # no "mid" point in the merged loop
    assert const(dataclasses.replace(ops.DEFAULT_TUNING_FUSED, wu_merged=True)) == 2


def _assert_fused_form_bitwise(tuning: ops.Tuning):
    """A fused launch form that moves work, not values: the default's bits on every case (_assert_bitwise_the_default)
    and on the varlen case with Ai stored between the loops (a_store "mid"). Returns that case's inputs."""
    _assert_bitwise_the_default(tuning, ops.DEFAULT_TUNING)
    c = CASES["varlen"]
    k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
    for x, y in zip(ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=dataclasses.replace(tuning, a_store="mid")),
                    ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu), strict=True):
        assert torch.equal(x, y)
    return k, v, g, beta, cu


def test_w_loop_first_gives_the_same_bits():
    """Tuning.w_first: the fused kernel's w loop before its u loop (k's tiles first) — the default's bits on every
    case (random and identical keys), with Ai stored late or between the loops; the constexpr only where w/u are
    fused."""
    wf = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, w_first=True)
    _assert_fused_form_bitwise(wf)
    args = (4, 2, 32, 16, 64, "blockdoubling", None)
    assert ops._template_constexprs(*args, True, True, False, wf, True, False, False)[0]["W_FIRST"]
    assert not ops._template_constexprs(*args, False, True, False, wf, True, False, False)[0]["W_FIRST"]
    assert not ops._template_constexprs(*args, True, True, False, ops.DEFAULT_TUNING_FUSED, True, False,
                                        False)[0]["W_FIRST"]


@pytest.mark.parametrize("stages", [3, 5])
def test_inversion_inside_u_loop_gives_the_same_bits(stages):
    """Tuning.v_early_stages: the inversion inside the first iteration of u's column loop (so the loop's prologue
    requests v before it) — the default's bits on every case (random and identical keys; A stored late, mid or not
    at all; the cumsum-fused launch), and the constexpr only where the form applies (else off, logged)."""
    ve = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, v_early_stages=stages)
    k, v, g, beta, cu = _assert_fused_form_bitwise(ve)
    for x, y in zip(ops.gdn_cumsum_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=ve),
                    ops.gdn_cumsum_fwd_intra(k, v, g, beta, cu_seqlens=cu), strict=True):
        assert (y is None) if x is None else torch.equal(x, y)
    args = (4, 2, 32, 16, 64, "blockdoubling", None)
    const = lambda tu, fuse_wu=True, store_A=True: ops._template_constexprs(  # noqa: E731
        *args, fuse_wu, store_A, False, tu, True, False, False)[0]["V_EARLY"]
    assert const(ve) == stages and const(ops.DEFAULT_TUNING_FUSED) == 0
    assert const(ve, fuse_wu=False) == 0  # the inverse-only kernel has no u loop
    for other in ({"a_store": "early"}, {"w_first": True}, {"wu_merged": True}, {"fold_beta": True},
                  {"a_first": "diag"}):
        assert const(dataclasses.replace(ve, **other)) == 0, other
    assert const(dataclasses.replace(ve, a_store="early"), store_A=False) == stages  # no A: where it goes is moot


def _launch_into_nan(k, v, g, beta, cu, tuning, fuse_wu, method="blockdoubling"):
    """(w, u, Ai) of one Triton launch into NaN-filled buffers: a tile the kernel does not store stays NaN."""
    B, T, Hg, K = k.shape
    H, V = beta.shape[-1], v.shape[-1]
    nan = lambda *shape: torch.full(shape, float("nan"), dtype=k.dtype, device=k.device)  # noqa: E731
    Ai, w, u = nan(B, T, H, 64), nan(B, T, H, K), nan(B, T, H, V)
    cu, ci = ops._one_sequence(cu, None)
    ops._launch(k, v if fuse_wu else None, g, beta, None, Ai, w if fuse_wu else None, u if fuse_wu else None, cu,
                ci, T, B, H, Hg, K, V if fuse_wu else 0, 64, method, None, fuse_wu=fuse_wu, store_A=True,
                from_A=False, tuning=tuning)
    return (w, u, Ai) if fuse_wu else (Ai,)


@pytest.mark.parametrize("first", ["zeros", "diag", "merge16"])
def test_A_tiles_stored_first_give_the_same_bits(first):
    """Tuning.a_first: Ai's zero tiles at the program's start, the diagonal ones once inverted, X10 / X32 after the
    16 → 32 merges — every tile still stored once, with the default's bits (NaN-filled outputs: a tile left out
    would show), fused with the late and the early store and inverse-only, every case; identical keys too. Methods
    without a merge tree store the zeros first only (the constexpr the launch gets)."""
    fused = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, a_first=first)
    inverse = dataclasses.replace(ops.DEFAULT_TUNING, a_first=first)
    for name, c in CASES.items():
        for family in ("random", "identical_keys") if name == "varlen" else ("random",):
            k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"], family=family)
            for tu_f in (fused, dataclasses.replace(fused, a_store="early")):
                for x, y in zip(_launch_into_nan(k, v, g, beta, cu, tu_f, True),
                                _launch_into_nan(k, v, g, beta, cu, ops.DEFAULT_TUNING_FUSED, True), strict=True):
                    assert not torch.isnan(x).any() and torch.equal(x, y)
            Ai, = _launch_into_nan(k, v, g, beta, cu, inverse, False)
            assert not torch.isnan(Ai).any() and torch.equal(Ai, ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu))
    args = (4, 2, 32, 16, 64)
    const = lambda method, tu, store_A=True: ops._template_constexprs(  # noqa: E731
        *args, method, None, True, store_A, False, tu, True, False, False)[0]["A_FIRST"]
    code = ops._A_FIRST[first]
    assert const("blockdoubling", fused) == code and const("column_sweep", fused) == code
    assert const("blockdoubling", fused, store_A=False) == 0  # nothing to store
    assert const("neumann", fused) == ops._A_FIRST["zeros"] and const("blockdoubling", ops.DEFAULT_TUNING_FUSED) == 0
    with pytest.raises(ValueError, match="a_first"):
        ops.Tuning(a_first="all")


def test_unaligned_v_drops_the_bulk_prefetch_with_a_log_line(caplog):
    """Tuning.prefetch_bulk needs v 16-byte aligned (cp.async.bulk; and sm_90+): a v that is not keeps the plain L2
    prefetch, says so once in the log, and returns the same values as the aligned v."""
    import logging

    k, v, g, beta, _ = _inputs(128, 2, 2, 32, 16, None)
    buf = torch.empty(v.numel() + 1, dtype=v.dtype, device=v.device)
    v_odd = buf[1:].view_as(v)  # 4 (fp32) or 2 (bf16) bytes past an aligned allocation
    v_odd.copy_(v)
    assert v_odd.data_ptr() % 16
    tu = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, prefetch_v="kkt", prefetch_bulk=True)
    ops._LOGGED.discard("prefetch_bulk")
    with caplog.at_level(logging.INFO, logger="sglang_trinv"):
        got = ops.gdn_fwd_intra(k, v_odd, g, beta, tuning=tu)
    assert "prefetch_bulk needs v 16-byte aligned on sm_90+" in caplog.text
    for x, y in zip(got, ops.gdn_fwd_intra(k, v, g, beta), strict=True):
        assert torch.equal(x, y)


def test_prefetch_v_is_gpu_only_and_fused_only():
    """Tuning.prefetch_v (inline PTX prefetches of v's rows into L2, at the start or after K Kᵀ) compiles in only on
    a GPU and only into the fused kernel; elsewhere the launch is the default's (the sm_90 compile test checks the
    prefetches themselves, the GPU test the bits). An unknown place is a clear error."""
    import os

    args = (4, 2, 32, 16, 64, "blockdoubling", None)
    on_gpu = os.environ.get("TRITON_INTERPRET") != "1"
    for where, code in (("start", 1), ("kkt", 2)):
        pf = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, prefetch_v=where)
        assert ops._template_constexprs(*args, True, True, False, pf, True, False, False)[0]["PREFETCH_V"] == (
            code if on_gpu else 0)
        assert ops._template_constexprs(*args, False, True, False, pf, True, False, False)[0]["PREFETCH_V"] == 0
    assert ops._template_constexprs(*args, True, True, False, ops.DEFAULT_TUNING_FUSED, True, False,
                                    False)[0]["PREFETCH_V"] == 0
    # the bulk form (Tuning.prefetch_bulk) only where a prefetch is compiled in
    bulk = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, prefetch_v="kkt", prefetch_bulk=True)
    assert ops._template_constexprs(*args, True, True, False, bulk, True, False, False)[0]["PREFETCH_BULK"] == on_gpu
    assert not ops._template_constexprs(*args, True, True, False, dataclasses.replace(bulk, prefetch_v="off"), True,
                                        False, False)[0]["PREFETCH_BULK"]
    with pytest.raises(ValueError, match="prefetch_v"):
        ops.Tuning(prefetch_v="early")
    with pytest.raises(ValueError, match="a_store"):
        ops.Tuning(a_store="after")


def test_one_sequence_cu_seqlens_runs_the_one_sequence_launch():
    """SGLang passes cu_seqlens = [0, T] for one sequence: gdn_fwd_intra, gdn_cumsum_fwd_intra and gdn_kkt_inverse
    run it as the one-sequence launch (not varlen; whole chunks unmasked where T % 64 == 0) with the same bits as
    without cu_seqlens, for whole and partial last chunks; two or more sequences stay varlen."""
    from importlib import import_module

    from sglang_trinv.ops import gdn_intra as gk

    seen = []
    real = ops._template_constexprs

    def spy(*kind):
        seen.append((kind[12], kind[14]))  # (varlen, row bounds)
        return real(*kind)

    for T in (128, 100):
        k, v, g, beta, _ = _inputs(T, 4, 2, 32, 16, None)
        cu = torch.tensor([0, T], dtype=torch.int64, device=DEVICE)
        g_raw = F.logsigmoid(torch.randn(beta.shape, generator=torch.Generator().manual_seed(3))).to(DEVICE)
        ops._template_constexprs = spy
        try:
            seen.clear()
            outs = (ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu),
                    ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu, store_A=True),
                    ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu))
            # whole chunks: unmasked (all three); a partial last chunk: the fused kernels clamp their loads, the
            # inverse-only kernel masks them
            want = ([gk.ROWS_WHOLE.value] * 3 if T % 64 == 0 else
                    [gk.ROWS_CLAMPED.value, gk.ROWS_CLAMPED.value, gk.ROWS_MASKED.value])
            assert seen == [(False, r) for r in want]
        finally:
            ops._template_constexprs = real
        refs = (ops.gdn_fwd_intra(k, v, g, beta), ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, store_A=True),
                ops.gdn_kkt_inverse(k, g, beta))
        for x, y in zip(outs[0] + outs[1] + (outs[2],), refs[0] + refs[1] + (refs[2],), strict=True):
            assert torch.equal(x, y)
        # and the same numbers as SGLang's own varlen reading of [0, T] (the cumsum per sequence)
        g_ref = import_module(f"{FLA}.cumsum").chunk_local_cumsum(g_raw, chunk_size=64, cu_seqlens=cu)
        torch.testing.assert_close(outs[1][0], g_ref, rtol=1e-5, atol=1e-5)
    c = CASES["varlen"]
    k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
    ops._template_constexprs = spy
    try:
        seen.clear()
        ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu)
    finally:
        ops._template_constexprs = real
    assert seen == [(True, gk.ROWS_CLAMPED.value)]  # varlen: the fused default clamps its loads


def test_split_by_packed_conversions_matches_the_plain_split(monkeypatch):
    """Tuning.split_packed (default): the bf16x3 products' hi/lo splits by inline cvt.rn.bf16x2.f32
    (gdn_intra._hi_lo_packed) round as ``x.to(bfloat16)`` does, except where the compiler contracts the plain
    form's x − hi with a product into one FMA (a few one-ulp differences, H200 s17) — fused (varlen, GQA; random and
    identical keys) and inverse-only outputs within a few fp32 roundings of the plain split's and as close to fp64.
    On a GPU this compares the inline-PTX build; under the interpreter (no PTX) the launch maps to the plain
    branch (same bits) — checked here too, with the codes a compiled launch gets."""
    from sglang_trinv.ops import gdn_intra

    assert ops.DEFAULT_TUNING_FUSED.split_packed and ops.DEFAULT_TUNING.split_packed
    plain_f = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, split_packed=False)
    plain_i = dataclasses.replace(ops.DEFAULT_TUNING, split_packed=False)
    args = (4, 2, 32, 16, 64, "blockdoubling", None, True, True, False, ops.DEFAULT_TUNING_FUSED, True, False, False)
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    ops._template_constexprs.cache_clear()
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    const, _ = ops._template_constexprs(*args)
    assert const["DIAG_PREC"] == gdn_intra.P_BF16X3P and const["MERGE_PREC"] == gdn_intra.P_BF16X3P
    ops._template_constexprs.cache_clear()
    if interpreted:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        const, _ = ops._template_constexprs(*args)
        assert const["DIAG_PREC"] == gdn_intra.P_BF16X3 and const["MERGE_PREC"] == gdn_intra.P_BF16X3
    try:
        if interpreted:
            _assert_bitwise_the_default(plain_f, plain_i)
            return
        for c in CASES.values():
            for family in ("random", "identical_keys"):
                k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"], family=family)
                outs = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu)
                refs = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=plain_f)
                for x, y, x64 in zip(outs, refs, ref.fwd_intra(k, v, g, beta, cu), strict=True):
                    assert torch.isfinite(x).all() and _rel(x, y) < 1e-5
                    assert _rel(x, x64) <= 1.01 * _rel(y, x64) + 1e-7
                Ai = ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu)
                assert _rel(Ai, ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu, tuning=plain_i)) < 1e-5
    finally:
        ops._template_constexprs.cache_clear()


@pytest.mark.parametrize("family", ["random", "identical_keys", "strong_decay"])
def test_gate_factors_match_the_direct_gate(family):
    """Tuning.gate_factors (the Triton twin of GluonLaunch.GF; on by default): the six tiles below the diagonal
    with the gate as rank-1 factors e^{min(g_i − s, 0)}·e^{min(s − g_j, 0)} — fused (varlen with a 1-token sequence and partial
    chunks, GQA) and inverse-only, against the direct gate and fp64: equal to a few fp32 roundings, finite at a
    decay of up to −60 per token (e^{−g} alone would overflow within a 16-row block)."""
    assert ops.DEFAULT_TUNING_FUSED.gate_factors and ops.DEFAULT_TUNING.gate_factors
    direct = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, gate_factors=False)
    for c in CASES.values():
        k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"],
                                    family="identical_keys" if family == "identical_keys" else "random")
        if family == "strong_decay":
            from importlib import import_module

            g_raw = (-60 * torch.rand(g.shape, generator=torch.Generator().manual_seed(5))).to(DEVICE)
            g = import_module(f"{FLA}.cumsum").chunk_local_cumsum(g_raw, chunk_size=64, cu_seqlens=cu)
        outs = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu)
        refs = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=direct)
        # the factored path ran: with a gate it rounds differently (no gate, identical keys: factors exactly 1)
        assert (family == "identical_keys") != any(not torch.equal(x, y) for x, y in zip(outs, refs, strict=True))
        for x, y, x64 in zip(outs, refs, ref.fwd_intra(k, v, g, beta, cu), strict=True):
            # as close to fp64 as the direct gate (identical keys: both at that family's ~1e-3)
            assert torch.isfinite(x).all() and _rel(x, y) < 1e-5 and _rel(x, x64) <= 1.01 * _rel(y, x64) + 1e-7
        Ai = ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu, tuning=dataclasses.replace(ops.DEFAULT_TUNING,
                                                                                      gate_factors=False))
        assert _rel(ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu), Ai) < 1e-5


@pytest.mark.parametrize("case", list(CASES))
def test_cumsum_fused_matches_sglang_cumsum_then_intra(case):
    """gdn_cumsum_fwd_intra(raw g) = SGLang's chunk_local_cumsum, then gdn_fwd_intra (varlen: per sequence)."""
    from importlib import import_module

    c = CASES[case]
    k, v, _, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
    g_raw = F.logsigmoid(torch.randn(beta.shape, generator=torch.Generator().manual_seed(5))).to(DEVICE)
    g_ref = import_module(f"{FLA}.cumsum").chunk_local_cumsum(g_raw, chunk_size=64, cu_seqlens=cu)
    g, w, u, A = ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu)
    assert A is None and g.dtype == torch.float32
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)
    w2, u2, _ = ops.gdn_fwd_intra(k, v, g_ref, beta, cu_seqlens=cu)
    assert _rel(w, w2) < TOL and _rel(u, u2) < TOL
    g3, w3, u3, A3 = ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu, store_A=True)
    w64, u64, A64 = ref.fwd_intra(k, v, g_ref, beta, cu)
    assert _rel(A3, A64) < TOL and _rel(w3, w64) < TOL and _rel(u3, u64) < TOL


def test_register_cap_is_a_launch_option_only():
    """Tuning.maxnreg caps registers (ptxas spills above it); the results do not change."""
    c = CASES["varlen"]
    k, v, g, beta, cu = _inputs(c["T"], c["H"], c["Hg"], c["K"], c["V"], c["cu"])
    capped = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=ops.Tuning(BV=32, num_stages=3, maxnreg=168))
    for x, y in zip(capped, ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu)):
        assert _rel(x, y) < TOL
    Ai = ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu, tuning=ops.Tuning(maxnreg=128))
    assert _rel(Ai, ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu)) < TOL


_COMPILE_SM90 = """
import dataclasses
from sglang_trinv import ops
from sglang_trinv.benchmarks.resources import compile_gdn
fused = compile_gdn()
inverse = compile_gdn(fused=False, method="forward_substitution")
# the inline-PTX hi/lo splits (Tuning.split_packed) only ever compile on a GPU machine: build them here too
# the defaults split by inline PTX (Tuning.split_packed) and drop the row masks (full_chunks): the other forms too
plain = compile_gdn(tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, split_packed=False))
plain_inv = compile_gdn(fused=False, tuning=dataclasses.replace(ops.DEFAULT_TUNING, split_packed=False))
masked = compile_gdn(tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, full_chunks=False))
masked_inv = compile_gdn(fused=False, tuning=dataclasses.replace(ops.DEFAULT_TUNING, full_chunks=False))
# varlen, masked and with the clamped row loads (Tuning.clamp_rows; the fused default since session 18)
varlen = compile_gdn(varlen=True, tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, clamp_rows=False))
clamped = compile_gdn(varlen=True)
clamped_inv = compile_gdn(fused=False, varlen=True, tuning=dataclasses.replace(ops.DEFAULT_TUNING, clamp_rows=True))
# the early Ai store (Tuning.a_store; the fused default stores it late since session 19)
early = compile_gdn(varlen=True, tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, a_store="early"))
# Tuning.prefetch_v (inline PTX, GPU only): the chunk's 64 v rows of 256 bytes, two 128-byte lines each, on 32 lanes;
# "start" ahead of every tensor-core product, "kkt" after K Kᵀ's and before the inversion's: the PTX holds K Kᵀ's
# BK = 64 loop body once (10 tiles × 2 n-halves of m16n8k16 × 4 k-steps = 80 mma)
KKT_MMA = 80
pf = compile_gdn(tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, prefetch_v="start"))
assert pf["l2_prefetches"] == 4 and fused["l2_prefetches"] == 0, (pf["l2_prefetches"], fused["l2_prefetches"])
assert pf["mma_before_prefetch"] == 0, pf["mma_before_prefetch"]
pk = compile_gdn(tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, prefetch_v="kkt"))
assert pk["l2_prefetches"] == 4 and pk["mma_before_prefetch"] == KKT_MMA, pk["mma_before_prefetch"]
# Tuning.prefetch_bulk: the same four lines per thread as cp.async.bulk.prefetch.L2 (sm_90 ptxas accepts them)
pb = compile_gdn(varlen=True, tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, prefetch_v="kkt",
                                                         prefetch_bulk=True))
assert pb["bulk_prefetches"] == 4 and pb["l2_prefetches"] == 0 and pb["mma_before_prefetch"] == KKT_MMA, pb
# Tuning.prefetch_touch: the prefetch by volatile loads with the L2::256B hint, one per 256-byte v row: two per lane
# (64 rows on 32 lanes), after K Kᵀ; their words unused (1) or kept to the program's end (2, one sequence and varlen)
pt = compile_gdn(tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, prefetch_v="kkt", prefetch_touch=1))
assert pt["touch_loads"] == 2 and pt["l2_prefetches"] == 0 and pt["mma_before_prefetch"] == KKT_MMA, pt
ptk = compile_gdn(varlen=True, tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, prefetch_v="kkt",
                                                          prefetch_touch=2))
assert ptk["touch_loads"] == 2 and ptk["mma_before_prefetch"] == KKT_MMA and fused["touch_loads"] == 0, ptk
# Tuning.a_first: Ai tiles stored from inside the inversion chain (fused varlen) and the zeros first (inverse-only)
af = compile_gdn(varlen=True, tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, a_first="merge16"))
af_inv = compile_gdn(fused=False, tuning=dataclasses.replace(ops.DEFAULT_TUNING, a_first="zeros"))
# Tuning.w_first: the w loop before the u loop
wf = compile_gdn(varlen=True, tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, w_first=True))
# Tuning.v_early_stages: the inversion inside u's pipelined loop (one sequence; the plugin's pipeline: no A, cumsum)
ve = compile_gdn(tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, v_early_stages=3))
ve_pipe = compile_gdn(store_A=False, g_cumsum=True, tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED,
                                                                                v_early_stages=5))
# Tuning.l2_warm: four warm-up rows (32 programs at H = 8), each lane's 32 loads of a step with the L2::256B hint; the
# chunk programs' own code issues none (one sequence, and the plugin's pipeline varlen). (Stack: none with the
# device's Triton 3.6, 8 B with 3.8's ptxas: not asserted here)
lw = compile_gdn(H=8, Hg=4, warm=4, tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, l2_warm=32))
lw_pipe = compile_gdn(H=8, Hg=4, warm=4, varlen=True, store_A=False, g_cumsum=True,
                      tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, l2_warm=32))
assert lw["touch_loads"] == 32 and lw_pipe["touch_loads"] == 32, (lw, lw_pipe)
# Tuning.pdl: a programmatic-dependent launch, one griddepcontrol.wait before anything else (the plugin's pipeline
# and the inverse-only kernel); the default builds neither wait nor ask for it
pdl_pipe = compile_gdn(H=8, Hg=4, varlen=True, store_A=False, g_cumsum=True,
                       tuning=dataclasses.replace(ops.DEFAULT_TUNING_FUSED, pdl=True))
pdl_inv = compile_gdn(fused=False, tuning=dataclasses.replace(ops.DEFAULT_TUNING, pdl=True))
assert pdl_pipe["pdl_waits"] == 1 and pdl_pipe["launch_pdl"] and pdl_inv["pdl_waits"] == 1, (pdl_pipe, pdl_inv)
assert fused["pdl_waits"] == 0 and not fused["launch_pdl"] and inverse["pdl_waits"] == 0, (fused, inverse)
print("regs", fused["regs"], inverse["regs"], plain["regs"], plain_inv["regs"], masked["regs"], masked_inv["regs"],
      varlen["regs"], clamped["regs"], clamped_inv["regs"], early["regs"], pf["regs"], pk["regs"], pb["regs"],
      af["regs"], af_inv["regs"], wf["regs"], ve["regs"], ve_pipe["regs"], pt["regs"], ptk["regs"], lw["regs"],
      lw_pipe["regs"], pdl_pipe["regs"], pdl_inv["regs"])
"""


@pytest.mark.skipif(HAS_CUDA, reason="on a GPU the kernels above already ran compiled")
def test_gdn_kernel_compiles_for_sm90():
    """The interpreter never runs Triton's compiler: build the fused and the inverse-only kernel for an H100
    (sm_90, Triton's bundled ptxas) in a clean process, so a GPU-only compile error shows up on a CPU — with the
    default's inline-PTX splits (Tuning.split_packed), which the interpreter cannot run, and whole-chunk launches
    (Tuning.full_chunks), and the plain-split and masked forms, and varlen with the clamped row loads
    (Tuning.clamp_rows) and with the early Ai store (Tuning.a_store), and the L2 prefetch of v (Tuning.prefetch_v:
    four prefetch.global.L2 per thread in the PTX, at the start or after K Kᵀ's products; Tuning.prefetch_bulk: as
    cp.async.bulk.prefetch.L2; Tuning.prefetch_touch: as two volatile loads per thread), and Ai's tiles stored
    first (Tuning.a_first), and the w loop first (Tuning.w_first), and the inversion inside u's loop
    (Tuning.v_early_stages), and warm-up programs loading v into L2 (Tuning.l2_warm: 32 hinted loads per lane), and
    the programmatic-dependent launch (Tuning.pdl: one griddepcontrol.wait)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _COMPILE_SM90], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    regs = [int(x) for x in r.stdout.split()[-24:]]
    assert all(0 < x <= 255 for x in regs)


_COMPILE_GLUON = """
import sys
from sglang_trinv.ops import gluon_intra as gi
case = sys.argv[1]
kw = {"fixed": {}, "varlen": {"varlen": True}, "pipeline": {"varlen": True, "g_cumsum": True, "store_A": False},
      "tf32-merges": {"merge_precision": "tf32"}, "merge-levels": {"merge_precision": "bf16x3+tf32"},
      "split-merge": {"merge_precision": "bf16x3+bf16x3*tf32", "varlen": True},
      "device-descriptors": {"launch": gi.GluonLaunch(DD=True), "varlen": True, "g_cumsum": True,
                             "store_A": False},
      "two-partitions": {"launch": gi.GluonLaunch(LD=False, ST=False, PAIR=False, REGS=72, NSTG=1, HF=False),
                         "varlen": True},
      "direct-diag": {"launch": gi.GluonLaunch(DM=False), "varlen": True},
      "pipeline-no-gqa": {"varlen": True, "g_cumsum": True, "store_A": False, "H": 8, "Hg": 8},
      "direct-gate": {"launch": gi.GluonLaunch(GF=False, DM=False), "varlen": True},
      "plain-split": {"launch": gi.GluonLaunch(SB=False), "varlen": True},
      "key-split": {"launch": gi.GluonLaunch(KS=True), "varlen": True},
      "key-split-pipeline": {"launch": gi.GluonLaunch(KS=True), "varlen": True, "g_cumsum": True,
                             "store_A": False}}[case]
r = gi.compile_report(**kw)
print("gluon", kw.get("launch", gi.DEFAULT_LAUNCH).REGS, r["launch_regs"], r["warps"], r["stack"], r["smem"], r["bar_after_stsm"],
      r["scratch"], r["sass_ops"]["F2F"], *r["setmaxnreg"])
"""


@pytest.mark.parametrize("case", ["fixed", "varlen", "pipeline", "tf32-merges", "merge-levels", "split-merge",
                                  "device-descriptors", "two-partitions", "direct-diag", "pipeline-no-gqa",
                                  "direct-gate", "plain-split", "key-split", "key-split-pipeline"])
def test_gluon_intra_compiles_for_sm90_with_the_planned_register_split(case):
    """The warp-specialized Gluon intra kernel (ops/gluon_intra.py; Gluon has no interpreter, so this compile is its CPU
    check), for one sequence, varlen with A and the plugin's varlen pipeline (cumsum in, no A) at the default
    precision (bf16x3), and other merge precisions: 4 inverter warps + one streamer warpgroup in one CTA per SM, the
    streamers lowered to their REGS and the inverters raised to the 256-register maximum, spills of at most 64 B
    (Triton 3.6, the device machines', default launch and precision: 8 B one sequence, 8 B varlen with A, 24 B in
    the pipeline), shared memory within the 227 KiB a Hopper CTA may have, and few compiler barriers between the Ai
    panel stores (one allocation per panel, stores by diagonals: 12–18 on Triton 3.6, 6–12 on 3.8; 52 / 35 when the
    panels shared one allocation — that change was worth 2 µs of 104 on an H200). "device-descriptors": the pipeline
    with the TMA descriptors built in the kernel (GluonLaunch.DD, for the host launch cost; compile-checked here,
    correctness on the GPU by the few-CTA test). The default launch has the streamers' TMA loads and stores issued
    by two one-warp partitions (GluonLaunch.LD / ST; Triton pads the CTA to 12 warps, the extra warpgroup lowered to
    XREGS); "two-partitions": the launch without them (8 warps). The default has the diagonal tiles' doubling with
    the level masks on the products (GluonLaunch.DM) and rank-1 gates below the diagonal blocks (GluonLaunch.GF);
    "direct-diag": the launch without DM, "direct-gate": without either (the session-15 launch). The default splits
    bf16x3 operands by packed conversions in inline PTX (GluonLaunch.SB, no F2F.BF16.F32 left); "plain-split": by
    ``x.to(bf16)``, one F2F per value; "key-split": the two warps of a key tile compute five K Kᵀ blocks each and
    exchange them (GluonLaunch.KS; the pipeline single-buffered then, 20 KiB for the exchange); "pipeline-no-gqa": H
    = Hg, one head per key tile (G = 1): four key tiles, so the panels stay single-buffered (double-buffered it
    needed 250 KiB and could not launch)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.experimental.gluon")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _COMPILE_GLUON, case], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    regs, launch, warps, stack, smem, bar_after_stsm, scratch, f2f, *setmax = (
        int(x) for x in r.stdout.split("gluon")[-1].split())
    # host-built TMA descriptors need no global scratch; device-built ones (DD) one 128-byte slot each of six
    assert scratch == (6 * 128 if case == "device-descriptors" else 0)
    if case == "plain-split":
        assert f2f > 0
    else:  # the packed conversions replaced every single-value one
        assert f2f == 0
    assert warps == (8 if case == "two-partitions" else 12) and launch * warps * 32 <= 65536  # one CTA per SM
    assert stack <= 64
    assert smem <= 227 * 1024
    assert bar_after_stsm <= 24
    assert regs in setmax and max(setmax) >= 248  # streamers lowered to REGS, inverters raised to the maximum


def test_gluon_key_split_launch_constraints():
    """GluonLaunch.KS: applies where two heads share a key tile (G = 2), keeps the panels single-buffered where it
    chooses (its 20 KiB exchange buffer leaves no room for a second set), and refuses an explicit DB or KD."""
    pytest.importorskip("triton.experimental.gluon")
    from sglang_trinv.ops import gluon_intra as gi

    ks = gi.GluonLaunch(KS=True)
    const = gi._constexprs(ks, 4, 2, 128, 128, False, True, True, "bf16x3", "bf16x3", False)
    assert const["KS"] and not const["DB"]  # the pipeline launch: single-buffered with KS
    assert gi._constexprs(gi.DEFAULT_LAUNCH, 4, 2, 128, 128, False, True, True, "bf16x3", "bf16x3", False)["DB"]
    assert not gi._constexprs(ks, 4, 4, 128, 128, True, True, False, "bf16x3", "bf16x3", False)["KS"]  # G = 1
    for bad in (gi.GluonLaunch(KS=True, DB=True), gi.GluonLaunch(KS=True, KD=True, G=2)):
        with pytest.raises(ValueError, match="KS"):
            gi._constexprs(bad, 4, 2, 128, 128, False, True, True, "bf16x3", "bf16x3", False)
    # the default (S, KS = None): a ring of 6 and the split for one sequence with A written, else 5 and no split
    for store_A, varlen, want in ((True, False, (6, True)), (True, True, (5, False)), (False, False, (5, False)),
                                  (False, True, (5, False))):
        c = gi._constexprs(gi.DEFAULT_LAUNCH, 4, 2, 128, 128, store_A, varlen, not store_A, "bf16x3", "bf16x3", False)
        assert (c["S"], c["KS"]) == want and c["DB"] == (not store_A)
    assert gi.ring_and_split(gi.GluonLaunch(S=5, KS=False), True, False) == (5, False)  # explicit values win


def test_gluon_backend_choice_is_explicit():
    """Where the Gluon kernel cannot run the choice says why; backend="gluon" refuses instead of falling back;
    SGLANG_TRINV_GLUON=0 forces Triton."""
    k, v, g, beta, _ = _inputs(64, 2, 1, 128, 128)
    k, v = k.bfloat16(), v.bfloat16()
    reason = ops.gluon_reason(k, v, g, beta)
    if not HAS_CUDA or torch.cuda.get_device_capability() != (9, 0):
        assert reason
        with pytest.raises(ValueError, match="Gluon intra kernel requested"):
            ops.gdn_fwd_intra(k, v, g, beta, backend="gluon")
    else:
        assert reason is None
        assert "method" in ops.gluon_reason(k, v, g, beta, method="column_sweep")
        assert "dtypes" in ops.gluon_reason(k.float(), v.float(), g, beta)
    # the auto policy (measured on an H200, eager calls): calls of fewer than GLUON_MIN_TILES tiles (host-bound)
    # stay on Triton, one sequence or varlen, for the intra call and the cumsum pipeline alike
    cu = torch.tensor([0, 10, 64], device=k.device, dtype=torch.int32)
    assert "host cost" in ops.gluon_auto_reason(k, beta, cu, False)
    assert "host cost" in ops.gluon_auto_reason(k, beta, None, True)
    big = torch.zeros(1, 32768, 32, device=k.device)  # T=32768 H=32: 16384 tiles, the Gluon kernel's side
    assert ops.gluon_auto_reason(k, big, None, True) is None and ops.gluon_auto_reason(k, big, None, False) is None
    cu_big = torch.tensor([0, 1, 5000, 32768], device=k.device, dtype=torch.int32)  # varlen: the same rule
    assert ops.gluon_auto_reason(k, big, cu_big, True) is None
    with pytest.MonkeyPatch.context() as mp:  # the threshold is a serving knob
        mp.setenv(ops.ENV_GLUON_MIN_TILES, "0")
        assert ops.gluon_auto_reason(k, beta, None, True) is None
        mp.setenv(ops.ENV_GLUON_MIN_TILES, "lots")
        with pytest.raises(ValueError, match=ops.ENV_GLUON_MIN_TILES):
            ops.gluon_auto_reason(k, beta, None, True)
    assert not ops._use_gluon(k, v, g, beta, "blockdoubling", None, None, None, "triton")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ops.ENV_GLUON, "0")
        assert not ops._use_gluon(k, v, g, beta, "blockdoubling", None, None, None, None)
    with pytest.raises(ValueError, match="backend"):
        ops._use_gluon(k, v, g, beta, "blockdoubling", None, None, None, "cuda")


def test_gluon_device_descriptors_keep_an_existing_allocator():
    """GluonLaunch(DD=True) builds its TMA descriptors in a global scratch that Triton's launcher allocates through
    triton.set_allocator: installed only where none is set, never replacing the process's own (SGLang's MoE
    kernels set one)."""
    import contextvars

    pytest.importorskip("triton.experimental.gluon")
    from triton.runtime import _allocation

    from sglang_trinv.ops import gluon_intra as gi

    def fresh():  # in a copy of the context: the test's allocator changes do not leak
        _allocation._allocator.set(_allocation._NULL_ALLOCATOR)
        gi._ensure_allocator()
        installed = _allocation._allocator.get()
        mine = lambda size, align, stream: None  # noqa: E731
        _allocation._allocator.set(mine)
        gi._ensure_allocator()
        return installed, _allocation._allocator.get() is mine

    installed, kept = contextvars.copy_context().run(fresh)
    assert not isinstance(installed, _allocation.NullAllocator) and callable(installed)
    assert kept


def test_gluon_chunk_table_is_cached_by_identity_and_version():
    """The Gluon kernel's per-chunk (first row, sequence end) table: right values, rebuilt for new or modified
    cu_seqlens / chunk_indices (SGLang reuses them across a forward's layers; in-place edits must not be missed)."""
    from sglang_trinv.ops import gluon_intra as gi

    cu = torch.tensor([0, 1, 70, 200], dtype=torch.int32)
    ci = ops.prepare_chunk_indices(cu, 64)
    tab = gi.chunk_table(cu, ci)
    want = [(0, 1), (1, 70), (65, 70), (70, 200), (134, 200), (198, 200)]
    assert tab.dtype == torch.int32 and tab.tolist() == [list(x) for x in want]
    assert gi.chunk_table(cu, ci) is tab  # same tensors: cached
    cu2 = cu.clone()
    assert gi.chunk_table(cu2, ci) is not tab  # another tensor with the same values: rebuilt
    cu[3] = 190  # in place: rebuilt with the new end
    assert gi.chunk_table(cu, ci).tolist()[-1] == [198, 190]


# Gluon cases (GPU): one sequence with a partial last chunk and G = 2 (two value heads per key head); no GQA (G = 1);
# varlen with a 1-token sequence, 63/64/65-token sequences and partial chunks between full ones (masked stores);
# B = 2 fixed-length rows with a partial chunk each (run as varlen) and without (one flat sequence)
GLUON_CASES = {
    "one-seq": dict(T=900, H=4, Hg=2, cu=None, B=1),
    "no-gqa": dict(T=300, H=2, Hg=2, cu=None, B=1),
    "varlen": dict(T=1000, H=4, Hg=2, cu=[0, 1, 64, 127, 192, 257, 700, 1000], B=1),
    "batch2": dict(T=100, H=4, Hg=2, cu=None, B=2),
    "batch2-aligned": dict(T=128, H=4, Hg=2, cu=None, B=2),  # T % 64 == 0: run as one flat sequence
}


def _gluon_inputs(c, seed=0, family="random"):
    k, v, g, beta, cu = _inputs(c["B"] * c["T"], c["H"], c["Hg"], 128, 128, c["cu"], seed=seed, family=family)
    if c["B"] > 1:  # fixed-length rows: the gate's chunk-local cumsum per row
        from importlib import import_module

        cumsum = import_module(f"{FLA}.cumsum").chunk_local_cumsum
        g_raw = -F.softplus(torch.randn(beta.shape, generator=torch.Generator().manual_seed(seed)) - 2.0)
        if family == "identical_keys":
            g_raw = torch.zeros_like(g_raw)
        g = cumsum(g_raw.to(DEVICE).view(c["B"], c["T"], -1), chunk_size=64)
        k, v, beta = (x.view(c["B"], c["T"], *x.shape[2:]) for x in (k, v, beta))
    return k.bfloat16(), v.bfloat16(), g.contiguous(), beta.bfloat16(), cu


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(GLUON_CASES))
def test_triton_clamped_rows_on_gpu(case):
    """Tuning.clamp_rows compiled (bf16, K = V = 128): fused and inverse-only outputs equal the masked build's,
    finite, on every case (a 1-token sequence, partial chunks, batch rows); identical keys without decay too."""
    c = GLUON_CASES[case]
    clamp_f = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, clamp_rows=True)
    masked_f = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, clamp_rows=False)
    clamp_i = dataclasses.replace(ops.DEFAULT_TUNING, clamp_rows=True)
    for family in ("random", "identical_keys"):
        k, v, g, beta, cu = _gluon_inputs(c, family=family)
        for x, y in zip(ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=clamp_f),
                        ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=masked_f), strict=True):
            assert torch.isfinite(x.float()).all() and torch.equal(x, y)
        Ai = ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu, tuning=clamp_i)
        assert torch.equal(Ai, ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu))


@pytest.mark.gpu
@pytest.mark.parametrize("variant", [{"a_store": "mid"}, {"a_store": "early"}, {"prefetch_v": "start"},
                                     {"prefetch_v": "kkt"}, {"prefetch_v": "kkt", "a_store": "early"},
                                     {"prefetch_v": "kkt", "prefetch_bulk": True}, {"w_first": True},
                                     {"v_early_stages": 3}, {"v_early_stages": 5},
                                     {"prefetch_v": "kkt", "prefetch_touch": 1},
                                     {"prefetch_v": "kkt", "prefetch_touch": 2}, {"l2_warm": 32}, {"pdl": True}],
                         ids=["mid-A", "early-A", "prefetch-v", "prefetch-v-kkt", "prefetch-v-kkt-early-A",
                              "prefetch-v-kkt-bulk", "w-first", "v-early-3", "v-early-5", "touch-kkt",
                              "touch-kkt-kept", "l2-warm", "pdl"])
@pytest.mark.parametrize("case", list(GLUON_CASES))
def test_triton_same_bits_variants_on_gpu(case, variant, monkeypatch):
    """Fused launch forms that move work, not values, compiled (bf16, K = V = 128): Tuning.a_store "mid" / "early"
    (Ai stored after the u loop / the inversion; the default "late": after the w loop), Tuning.prefetch_v (v's
    rows prefetched into L2 at the start / after K Kᵀ, by the hint, the TMA unit or loads — Tuning.prefetch_touch,
    whose kept words are stored back only where they hold one NaN pattern), Tuning.w_first (the w loop
    before the u loop) and Tuning.v_early_stages (the inversion inside u's pipelined loop) give w, u and A bitwise
    the default's, finite, on every case (a 1-token sequence, partial
    chunks, batch rows); identical keys without decay too; the cumsum-fused launch without A as well. Tuning.l2_warm
    too: these cases fill a small part of a wave, so its fill rule is lifted. Tuning.pdl: each launch waits for the
    previous kernel (the input preparation just before it) before its first load."""
    c = GLUON_CASES[case]
    tu = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, **variant)
    if "l2_warm" in variant:
        monkeypatch.setattr(ops, "L2_WARM_MIN_FILL", 0.0)
    for family in ("random", "identical_keys"):
        k, v, g, beta, cu = _gluon_inputs(c, family=family)
        for x, y in zip(ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=tu),
                        ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=ops.DEFAULT_TUNING_FUSED),
                        strict=True):
            assert torch.isfinite(x.float()).all() and torch.equal(x, y)
        if c["B"] == 1:
            for x, y in zip(ops.gdn_cumsum_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=tu),
                            ops.gdn_cumsum_fwd_intra(k, v, g, beta, cu_seqlens=cu, tuning=ops.DEFAULT_TUNING_FUSED),
                            strict=True):
                assert (y is None) if x is None else torch.equal(x, y)  # A: None (not written)


@pytest.mark.gpu
def test_l2_warm_at_a_one_wave_shape_on_gpu():
    """Tuning.l2_warm = 32 at T=8192 H=8 Hg=4 (bf16, K = V = 128, one sequence; 1024 chunk programs) adds the
    warm-up programs on a GPU whose wave they fill (132 SMs: 4 rows), and w, u, A and the cumsum-fused launch's
    outputs are bitwise those of the default launch without them."""
    torch.manual_seed(0)
    T, H, Hg, D = 8192, 8, 4, 128
    dev = torch.device("cuda")
    k = torch.nn.functional.normalize(torch.randn(1, T, Hg, D, device=dev), dim=-1).bfloat16()
    v = torch.randn(1, T, H, D, device=dev).bfloat16()
    g = -torch.rand(1, T, H, device=dev) * 0.1  # per-token log gates; the chunk-local cumsum below
    beta = torch.rand(1, T, H, device=dev).bfloat16()
    gc = g.view(1, T // 64, 64, H).cumsum(2).view(1, T, H)
    warm = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, l2_warm=32)
    rows = ops._warm_rows(warm, True, False, T // 64, H, v)
    if ops._gluon._sm_count(0) == 132:
        assert rows == 4
    for x, y in zip(ops.gdn_fwd_intra(k, v, gc, beta, tuning=warm),
                    ops.gdn_fwd_intra(k, v, gc, beta, backend="triton"), strict=True):
        assert torch.isfinite(x.float()).all() and torch.equal(x, y)
    for x, y in zip(ops.gdn_cumsum_fwd_intra(k, v, g, beta, tuning=warm),
                    ops.gdn_cumsum_fwd_intra(k, v, g, beta, backend="triton"), strict=True):
        assert (y is None) if x is None else torch.equal(x, y)


@pytest.mark.gpu
@pytest.mark.parametrize("first", ["zeros", "diag", "merge16"])
@pytest.mark.parametrize("case", list(GLUON_CASES))
def test_triton_A_tiles_first_on_gpu(case, first):
    """Tuning.a_first compiled (bf16, K = V = 128): Ai's zero / diagonal / 16 → 32 tiles stored before the rest give
    w, u, A (fused, late store) and Ai (inverse-only) bitwise the default's, into NaN-filled buffers (a tile left
    out would show), on every case; identical keys without decay too."""
    c = GLUON_CASES[case]
    fused = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, a_first=first)
    inverse = dataclasses.replace(ops.DEFAULT_TUNING, a_first=first)
    for family in ("random", "identical_keys"):
        k, v, g, beta, cu = _gluon_inputs(c, family=family)
        for x, y in zip(_launch_into_nan(k, v, g, beta, cu, fused, True),
                        _launch_into_nan(k, v, g, beta, cu, ops.DEFAULT_TUNING_FUSED, True), strict=True):
            assert not torch.isnan(x).any() and torch.equal(x, y)
        Ai, = _launch_into_nan(k, v, g, beta, cu, inverse, False)
        assert not torch.isnan(Ai).any() and torch.equal(Ai, _launch_into_nan(k, v, g, beta, cu, ops.DEFAULT_TUNING,
                                                                                False)[0])


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16x3", "bf16x3/tf32", "bf16x3/bf16x3+tf32", "bf16x3/bf16x3+bf16x3*tf32"])
@pytest.mark.parametrize("case", list(GLUON_CASES))
def test_gluon_intra_matches_fp64_and_triton_on_gpu(case, precision):
    """ops.gdn_fwd_intra on the Gluon kernel (bf16): w, u, A against the fp64 twin and the Triton kernel."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon kernel is sm_90 only")
    c = GLUON_CASES[case]
    k, v, g, beta, cu = _gluon_inputs(c)
    got = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, precision=precision, backend="gluon")
    tri = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, precision=precision, backend="triton")
    flat = lambda x: x.reshape(1, -1, *x.shape[2:])  # noqa: E731
    cu64 = cu if c["B"] == 1 else torch.arange(0, (c["B"] + 1) * c["T"], c["T"], device=DEVICE)
    ref64 = ref.fwd_intra(flat(k), flat(v), flat(g), flat(beta), cu64)
    for x, x64, y in zip(got, ref64, tri):
        assert torch.isfinite(x.float()).all()
        assert _rel(flat(x), x64) < 1.5e-2
        assert _rel(x, y) < 1.5e-2


@pytest.mark.gpu
@pytest.mark.parametrize("decay", [60.0, 300.0])
def test_gluon_gate_factors_under_strong_decay_on_gpu(decay):
    """The default Gluon launch (GF: the gate below the diagonal blocks as factors in [0, 1]) with a log-decay of
    up to −decay per token — e^{−g} alone overflows fp32 within two tokens at 60 and a chunk's cumulative gate
    reaches −19200 at 300 —: w, u, A finite, against fp64, against the direct gate (GluonLaunch(GF=False)) and the
    Triton kernel; varlen with partial chunks and a 1-token sequence, A written, the default precision."""
    from importlib import import_module

    from sglang_trinv.ops import gluon_intra as gi

    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon kernel is sm_90 only")
    assert gi.DEFAULT_LAUNCH.GF
    c = GLUON_CASES["varlen"]
    k, v, _, beta, cu = _gluon_inputs(c)
    g_raw = (-decay * torch.rand(beta.shape, generator=torch.Generator().manual_seed(11))).to(DEVICE)
    g = import_module(f"{FLA}.cumsum").chunk_local_cumsum(g_raw, chunk_size=64, cu_seqlens=cu)
    ci = ops.prepare_chunk_indices(cu, 64)
    diag, merge = ops.split_precision("blockdoubling", None)  # the default precision
    outs = {}
    for name, lc in (("factors", gi.DEFAULT_LAUNCH), ("direct", gi.GluonLaunch(GF=False))):
        w, u = k.new_empty(*k.shape[:2], c["H"], 128), torch.empty_like(v)
        A = k.new_empty(*k.shape[:2], c["H"], 64)
        gi.launch_intra(k, v, g, beta, w, u, A, None, cu, ci, diag, merge, launch=lc)
        outs[name] = (w, u, A)
    tri = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, backend="triton")
    for x, y, z, x64 in zip(outs["factors"], outs["direct"], tri, ref.fwd_intra(k, v, g, beta, cu), strict=True):
        assert torch.isfinite(x.float()).all()
        assert _rel(x, x64) < 1.5e-2 and _rel(x, y) < 1.5e-2 and _rel(x, z) < 1.5e-2


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["varlen", "batch2", "batch2-aligned"])
def test_gluon_pipeline_cumsum_matches_triton_on_gpu(case):
    """gdn_cumsum_fwd_intra on the Gluon kernel (the plugin's path: raw gate in, its chunk-local cumsum out, no
    A) against SGLang's cumsum and the Triton kernel."""
    from importlib import import_module

    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon kernel is sm_90 only")
    c = GLUON_CASES[case]
    k, v, _, beta, cu = _gluon_inputs(c)
    g_raw = F.logsigmoid(torch.randn(beta.shape, generator=torch.Generator().manual_seed(5))).to(DEVICE)
    cumsum = import_module(f"{FLA}.cumsum").chunk_local_cumsum
    g_ref = cumsum(g_raw, chunk_size=64, cu_seqlens=cu)
    g, w, u, A = ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu, backend="gluon")
    assert A is None
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)
    _, w2, u2, _ = ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu, backend="triton")
    assert _rel(w, w2) < 1.5e-2 and _rel(u, u2) < 1.5e-2


@pytest.mark.gpu
@pytest.mark.parametrize("launch", [{}, {"PAIR": True, "REGS": 120, "S": 4, "NSTG": 2}, {"G": 1}, {"DB": True},
                                    {"CS": 0}, {"G": 1, "KD": True}, {"DD": True}, {"DD": False}, {"EP": False},
                                    {"LD": True}, {"ST": True}, {"LD": True, "ST": True},
                                    {"LD": True, "ST": True, "NSTG": 2, "S": 7},
                                    {"LD": True, "ST": True, "DB": True},
                                    {"LD": True, "ST": True, "PAIR": True, "REGS": 120, "NSTG": 2},
                                    {"HF": True}, {"HF": True, "LD": True, "ST": True, "XREGS": 64},
                                    {"HF": True, "DB": True}, {"DM": False}, {"G": 1, "no_A": True},
                                    {"GF": False}, {"GF": False, "DM": False}],
                         ids=["default", "pair", "G1", "double-buffered-no-A", "cumsum-masked-sums",
                              "G1-ldmatrix-keys", "device-descriptors", "host-descriptors", "no-early-puts",
                              "loader-warp", "storer-warp", "loader-storer", "loader-storer-deep",
                              "loader-storer-no-A", "loader-storer-pair", "heads-fastest",
                              "heads-fastest-loader-storer", "heads-fastest-no-A", "direct-diag",
                              "G1-no-A-single-buffered", "direct-gate-masked-diag", "direct-gate-direct-diag"])
def test_gluon_batches_and_barriers_on_few_ctas(launch):
    """Several batches per CTA (3 CTAs): both mbarrier parities turn over, the TMA ring runs across batches, a
    last batch has fewer tiles than inverter warps (19 chunks × 6 heads = 114 tiles in batches of 4 on 3 CTAs),
    cumsum fused and A written (double-buffered panels: without A), against the Triton kernel."""
    from sglang_trinv.ops import gluon_intra as gi

    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon kernel is sm_90 only")
    c = dict(GLUON_CASES["varlen"], H=6, Hg=3)
    k, v, _, beta, cu = _gluon_inputs(c)
    g_raw = F.logsigmoid(torch.randn(beta.shape, generator=torch.Generator().manual_seed(7))).to(DEVICE)
    ci = ops.prepare_chunk_indices(cu, 64)
    w, u = k.new_empty(*k.shape[:2], c["H"], 128), torch.empty_like(v)
    A, g = k.new_empty(*k.shape[:2], c["H"], 64), torch.empty(beta.shape, device=DEVICE)
    launch = dict(launch)
    if launch.pop("no_A", False) or launch.get("DB"):  # (double-buffered panels: launches without the A output)
        A = None
    gi.launch_intra(k, v, g_raw, beta, w, u, A, g, cu, ci, launch=gi.GluonLaunch(**launch), max_ctas=3)
    g2, w2, u2, A2 = ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu, store_A=True, backend="triton")
    torch.testing.assert_close(g, g2, rtol=1e-5, atol=1e-5)
    for x, y in ((w, w2), (u, u2), (A, A2))[:2 if A is None else 3]:
        assert torch.isfinite(x.float()).all() and _rel(x, y) < 1.5e-2


@pytest.mark.gpu
@pytest.mark.parametrize("store_A", [True, False], ids=["A-written", "pipeline-no-A"])
@pytest.mark.parametrize("seqs", ["varlen", "one-sequence"])
@pytest.mark.parametrize("launch", [{"KS": True}, {"SB": False}, {"KS": True, "SB": False}, {"S": 5, "KS": False}],
                         ids=["key-split", "plain-split", "key-split-plain-split", "ring-5-no-split"])
def test_gluon_launch_variants_against_the_default(launch, store_A, seqs):
    """GluonLaunch.KS: each K Kᵀ block is computed by one warp of the key tile's pair with the default's products in
    the default's order (transposed blocks: the products commute) and exchanged — every output bit is the default
    launch's. GluonLaunch.SB (default) against the plain split ``x.to(bf16)``: the same roundings except where the
    compiler contracts the plain form's x − hi with a product into one FMA (found on an H200 in s17: 2 of 384000
    bf16 outputs one ulp apart) — so at most 0.1 % of the outputs may differ, each by at most one bf16 ulp, g
    bitwise. On a few CTAs (several batches per CTA, partial chunks, a 1-token sequence), cumsum fused; random
    inputs and identical keys without decay (the family where the products' lo parts carry the most: a swapped
    pair, a lost lo part or a misplaced block changes far more than that). The ring depth S changes no value: S = 5
    without the split (the launch before session 18) gives the bits of the one-sequence default (S = 6, KS); one
    sequence here is the varlen case's 1000 tokens as one (a partial last chunk)."""
    from sglang_trinv.ops import gluon_intra as gi

    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon kernel is sm_90 only")
    bitwise = launch.get("SB", gi.DEFAULT_LAUNCH.SB) == gi.DEFAULT_LAUNCH.SB
    c = dict(GLUON_CASES["varlen"], H=6, Hg=3)
    for family in ("random", "identical_keys"):
        k, v, _, beta, cu = _inputs(c["T"], c["H"], c["Hg"], 128, 128, c["cu"], family=family)
        k, v, beta = k.bfloat16(), v.bfloat16(), beta.bfloat16()
        g_raw = F.logsigmoid(torch.randn(beta.shape, generator=torch.Generator().manual_seed(7))).to(DEVICE)
        if family == "identical_keys":
            g_raw = torch.zeros_like(g_raw)
        ci = ops.prepare_chunk_indices(cu, 64)
        if seqs == "one-sequence":
            cu = ci = None
        outs = []
        for lc in (gi.DEFAULT_LAUNCH, gi.GluonLaunch(**launch)):
            w, u = k.new_zeros(*k.shape[:2], c["H"], 128), torch.zeros_like(v)
            A = k.new_zeros(*k.shape[:2], c["H"], 64) if store_A else None
            g = torch.zeros(beta.shape, device=DEVICE)
            gi.launch_intra(k, v, g_raw, beta, w, u, A, g, cu, ci, launch=lc, max_ctas=3)
            outs.append([x for x in (g, w, u, A) if x is not None])
        for i, (x, y) in enumerate(zip(*outs, strict=True)):
            assert torch.isfinite(x.float()).all()
            if bitwise or i == 0:  # g: the cumsum does not split
                torch.testing.assert_close(x, y, rtol=0, atol=0)
            else:
                diff = (x.float() - y.float()).abs()
                assert (diff > 0).float().mean() <= 1e-3 and (diff <= 2 ** -7 * y.float().abs()).all()


@pytest.mark.gpu
def test_gluon_launch_captured_in_a_cuda_graph_uses_host_descriptors():
    """GluonLaunch.DD = None: TMA descriptors built on the device in eager launches, on the host under CUDA-graph
    capture; a captured launch replays with new inputs copied into its buffers and matches the eager one."""
    from sglang_trinv.ops import gluon_intra as gi

    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon kernel is sm_90 only")
    c = GLUON_CASES["varlen"]
    k, v, g, beta, cu = _gluon_inputs(c)
    assert gi.device_descriptors(gi.DEFAULT_LAUNCH) and not gi.device_descriptors(gi.GluonLaunch(DD=False))
    ci = ops.prepare_chunk_indices(cu, 64)
    # compile both builds before the capture (the captured launch is the host-descriptor one)
    ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, chunk_indices=ci, backend="gluon")
    diag, merge = ops.split_precision("blockdoubling", None)
    w0, u0, A0 = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, chunk_indices=ci, backend="gluon")
    gi.launch_intra(k, v, g, beta, torch.empty_like(w0), torch.empty_like(u0), torch.empty_like(A0), None, cu, ci,
                    diag, merge, launch=gi.GluonLaunch(DD=False))
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured_dd = gi.device_descriptors(gi.DEFAULT_LAUNCH)
        out = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, chunk_indices=ci, backend="gluon")
    assert not captured_dd
    k2, v2, g2, beta2, _ = _gluon_inputs(c, seed=1)
    for dst, src in ((k, k2), (v, v2), (g, g2), (beta, beta2)):
        dst.copy_(src)
    graph.replay()
    torch.cuda.synchronize()
    want = ops.gdn_fwd_intra(k2, v2, g2, beta2, cu_seqlens=cu, chunk_indices=ci, backend="gluon")
    for x, y in zip(out, want):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_host_integer_helpers_give_tritons_values():
    """ops._host.cdiv / next_pow2 (plain ints on the launch paths, s29) give triton.cdiv's / next_power_of_2's
    values."""
    import triton

    from sglang_trinv.ops._host import cdiv, next_pow2

    assert all(cdiv(a, b) == triton.cdiv(a, b) for a in range(0, 700) for b in (1, 3, 16, 32, 64))
    assert all(next_pow2(n) == triton.next_power_of_2(n) for n in range(1, 5000))


def test_direct_launch_key_is_at_least_as_fine_as_the_binder():
    """The direct launch (SGLANG_TRINV_DIRECT_LAUNCH=1) reuses a compiled kernel for arguments of the same class
    (direct_launch.arg_class): two arguments of one class must get the same specialisation from Triton's binder
    (native_specialize_impl), or a kernel compiled for, e.g., 16-divisible T would run on T = 17."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    from sglang_trinv.ops import direct_launch as dl

    base = {dt: torch.zeros(64, dtype=dt) for dt in (torch.bfloat16, torch.float32, torch.int32, torch.int64)}
    values = [None, 0, 1, 2, 15, 16, 17, 32, 4096, 8191, 2 ** 31 - 16, 2 ** 31, 2 ** 31 + 1, -16, -1]
    values += [0.0, 1.0, 128 ** -0.5, 16.0, -2.5]  # floats (the KDA kernel's scale)
    values += [t[o:] for t in base.values() for o in (0, 1, 4, 8)]
    spec = lambda x: native_specialize_impl(BaseBackend, x, False, True, True)  # noqa: E731
    for a in values:
        for b in values:
            if dl.arg_class(a) == dl.arg_class(b):
                assert spec(a) == spec(b), (a, b)


def _direct_inputs(kind: str, seed: int):
    if kind.startswith("gluon"):
        k, v, g, beta, cu = _gluon_inputs(GLUON_CASES[kind.split(":")[1]], seed=seed)
        return k, v, g, beta, cu, "gluon"
    cu = None if kind == "triton:one-seq" else [0, 1, 517, 1000]
    k, v, g, beta, cu = _inputs(1000 if cu else 900, 8, 4, 128, 128, cu, seed=seed)
    return k.bfloat16(), v.bfloat16(), g.contiguous(), beta.bfloat16(), cu, "triton"


@pytest.mark.gpu
def test_direct_launch_matches_the_jit_launch():
    """SGLANG_TRINV_DIRECT_LAUNCH=1: the first launch of a kind goes through the JIT (and caches its kernel), later
    ones call the launcher directly; outputs bitwise equal to the JIT launch's, for new inputs of the same kind,
    one sequence and varlen, for lengths of another argument class (T = 900 vs 256: T % 16 ≠ 0 / = 0), on the
    Gluon kernel and on the Triton template."""
    from sglang_trinv.ops import direct_launch as dl

    kinds = ["triton:one-seq", "triton:varlen"]
    if torch.cuda.get_device_capability() == (9, 0):
        kinds += ["gluon:varlen", "gluon:one-seq", "gluon:batch2-aligned"]
    with pytest.MonkeyPatch.context() as mp:
        for kind in kinds:
            for seed in (0, 1):
                k, v, g, beta, cu, backend = _direct_inputs(kind, seed)
                mp.setenv(dl.ENV, "0")
                want = ops.gdn_cumsum_fwd_intra(k, v, g, beta, cu_seqlens=cu, backend=backend)
                mp.setenv(dl.ENV, "1")
                for _ in range(2):  # JIT launch (cached) or direct, then direct
                    got = ops.gdn_cumsum_fwd_intra(k, v, g, beta, cu_seqlens=cu, backend=backend)
                    for x, y in zip(got, want):
                        assert (x is None and y is None) or torch.equal(x, y), kind
    from sglang_trinv.ops import gluon_intra as gi

    assert len(ops.DIRECT.cache) >= 2 and not ops.DIRECT.off
    if "gluon:varlen" in kinds:
        assert len(gi.DIRECT.cache) >= 3 and not gi.DIRECT.off  # one entry per launch kind and argument class


class _FakeCompiled:
    function, packed_metadata = "fn", "meta"

    def __init__(self, runs):
        self.runs = runs

    def launch_metadata(self, grid, stream, *args):
        return ("lm", grid, stream, len(args))

    def run(self, *a):
        self.runs.append(a)


class _FakeJIT:
    def __init__(self, arg_names, jit_calls, runs):
        self.arg_names, self.jit_calls, self.runs = arg_names, jit_calls, runs

    def __getitem__(self, grid):
        def launch(*args, **kw):
            self.jit_calls.append((grid, args, kw))
            return _FakeCompiled(self.runs)
        return launch


def _fake_driver(monkeypatch):
    from triton.runtime import driver

    class FakeDriver:
        def get_current_device(self):
            return 0

        def get_current_stream(self, dev):
            return 1234

    monkeypatch.setattr(type(driver), "active", property(lambda self: FakeDriver()), raising=False)


def test_direct_launch_caches_per_class_and_falls_back(monkeypatch):
    """The direct-launch bookkeeping on a CPU (a stand-in for the JIT kernel and Triton's driver): the first call
    of a (launch key, argument classes) goes through the JIT and caches its compiled kernel; the next calls the
    kernel's launcher as the JIT would (grid padded to 3, stream, function, metadata, launch hooks, then every
    parameter in signature order: runtime arguments, then the constexpr values); another argument class (T = 17
    vs 16) compiles its own; a launcher that rejects the call sends it back to the JIT launch (logged, direct
    launches then off)."""
    from triton import knobs

    from sglang_trinv.ops import direct_launch as dl

    jit_calls, runs = [], []
    fake = _FakeJIT(["x_ptr", "T", "C1", "C2"], jit_calls, runs)
    launcher = dl.DirectLauncher("fake", lambda: fake)
    _fake_driver(monkeypatch)
    x = torch.zeros(32, dtype=torch.bfloat16)
    const, opts = {"C2": 7, "C1": "layout"}, {"num_warps": 8}
    assert launcher("kind", (3,), (x, 16), const, opts) and len(jit_calls) == 1 and not runs
    assert jit_calls[0] == ((3,), (x, 16), {**const, **opts})
    y = torch.ones_like(x)
    assert launcher("kind", (3,), (y, 32), const, opts) and len(jit_calls) == 1
    hooks = knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook
    assert runs[-1][:9] == (3, 1, 1, 1234, "fn", "meta", ("lm", (3, 1, 1), 1234, 4), *hooks)
    assert runs[-1][9] is y and runs[-1][10:] == (32, "layout", 7)
    assert launcher("kind", (5, 2), (y, 32), const, opts) and runs[-1][:3] == (5, 2, 1)  # a 2-D grid
    assert launcher("kind", (3,), (x, 17), const, opts) and len(jit_calls) == 2  # T % 16 ≠ 0: its own kernel
    assert launcher("other kind", (3,), (x, 16), const, opts) and len(jit_calls) == 3
    assert launcher("partial", (3,), (x, 16), {"C1": 1}, opts) and len(jit_calls) == 4  # C2 left to its default:
    assert launcher("partial", (3,), (x, 16), {"C1": 1}, opts) and len(jit_calls) == 5  # not cached, JIT each time

    def broken(*a):
        raise TypeError("launcher takes other arguments")

    for kern, _ in launcher.cache.values():
        kern.run = broken
    assert not launcher("kind", (3,), (x, 16), const, opts) and launcher.off
    assert not launcher("kind", (3,), (y, 16), const, opts) and len(jit_calls) == 5  # off: the caller launches


def test_triton_template_launch_gives_every_constexpr(monkeypatch):
    """The Triton template's launch passes every constexpr of gdn_intra_kernel by name (defaults included), so
    its direct launch caches the compiled kernel (a constexpr left to its default would send every call through
    the JIT), and with SGLANG_TRINV_DIRECT_LAUNCH=1 the second call of a kind skips the JIT."""
    from sglang_trinv.ops import direct_launch as dl
    from sglang_trinv.ops import gdn_intra

    jit_calls, runs = [], []
    fake = _FakeJIT(gdn_intra.gdn_intra_kernel.arg_names, jit_calls, runs)
    monkeypatch.setattr(ops._k, "gdn_intra_kernel", fake)
    monkeypatch.setattr(ops, "DIRECT", dl.DirectLauncher("fake template", lambda: fake))
    monkeypatch.setenv(dl.ENV, "1")
    _fake_driver(monkeypatch)
    k, v, g, beta, _ = _inputs(130, 4, 2, 32, 32)
    for _ in range(3):
        ops.gdn_cumsum_fwd_intra(k, v, g, beta, backend="triton")
    assert len(jit_calls) == 1 and len(runs) == 2
    assert runs[-1][:3] == (4, 3, 1)  # 4 heads × 3 chunks (heads fastest, the fused default)
    n_args = len(jit_calls[0][1])
    assert len(runs[-1]) == 9 + len(gdn_intra.gdn_intra_kernel.arg_names)
    assert runs[-1][9 + n_args - 1] == 130  # T, the last runtime argument


@pytest.mark.parametrize("case", ["fixed", "varlen", "varlen-padded"])
def test_gdn_fwd_o_matches_stock_without_the_memset(case, monkeypatch):
    """ops.gdn_fwd_o runs SGLang's chunk_fwd_o kernel into an empty o and zeroes only the rows past the last
    sequence on the device: the output equals stock's chunk_fwd_o (zeros_like + the same kernel) bit for bit —
    GQA, a partial last chunk, varlen with a 1-token sequence, and T past cu_seqlens[-1] (padding rows stay 0)."""
    from importlib import import_module

    chunk = import_module(f"{FLA}.chunk")
    T, H, Hg, K, V = 150, 4, 2, 32, 32
    cu = {"fixed": None, "varlen": [0, 1, 70, 150], "varlen-padded": [0, 1, 70, 131]}[case]
    k, v, g, beta, cu_t = _inputs(T, H, Hg, K, V, cu)
    gen = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(1, T, Hg, K, generator=gen), dim=-1).to(DEVICE)
    ci = chunk.prepare_chunk_indices(cu_t, 64) if cu_t is not None else None
    w, u, _ = ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu_t, chunk_indices=ci)
    N = 1 if cu is None else len(cu) - 1
    h, v_new = chunk.chunk_gated_delta_rule_fwd_h(k=k, w=w, u=u, g=g, initial_state=torch.zeros(N, H, V, K,
                                                  device=DEVICE), initial_state_indices=torch.arange(N, device=DEVICE),
                                                  cu_seqlens=cu_t, chunk_indices=ci)
    want = chunk.chunk_fwd_o(q=q, k=k, v=v_new, h=h, g=g, scale=K ** -0.5, cu_seqlens=cu_t)
    full_like = torch.full_like
    with monkeypatch.context() as mp:  # an "empty" o full of NaN: every row must be written or zeroed
        mp.setattr(torch, "empty_like", lambda x, **kw: full_like(x, float("nan"), **kw))
        got = ops.gdn_fwd_o(q, k, v_new, h, g, K ** -0.5, cu_seqlens=cu_t, chunk_indices=ci)
    assert torch.equal(got, want)
    # launch= (bench/sweep_fwd_o.py): other launch constants of the same kernel, here BV = 16 (two column tiles)
    other = ops.gdn_fwd_o(q, k, v_new, h, g, K ** -0.5, cu_seqlens=cu_t, chunk_indices=ci,
                          launch=dict(BK=32, BV=16, num_warps=4, num_stages=2))
    assert torch.allclose(other, want, rtol=1e-5, atol=1e-6)
    buf = torch.full((1, T + 10, H, V), float("nan"), device=DEVICE)  # out=: a time slice of a larger tensor
    assert ops.gdn_fwd_o(q, k, v_new, h, g, K ** -0.5, cu_seqlens=cu_t, chunk_indices=ci, out=buf[:, 5:T + 5]) \
        .data_ptr() == buf[:, 5:].data_ptr()
    assert torch.equal(buf[:, 5:T + 5], want) and buf[:, :5].isnan().all() and buf[:, T + 5:].isnan().all()
    with pytest.raises(ValueError, match="shaped like v"):
        ops.gdn_fwd_o(q, k, v_new, h, g, K ** -0.5, cu_seqlens=cu_t, out=buf[:, :T - 1])
    if case == "varlen-padded":
        assert got[0, 131:].abs().sum() == 0 and got[0, :131].abs().sum() > 0


def test_zero_tail_writes_only_the_rows_past_the_last_sequence():
    from sglang_trinv.ops import gdn_output

    o = torch.full((1, 100, 3, 40), 7.0, device=DEVICE)
    for end in (100, 99, 37, 0):
        o.fill_(7.0)
        gdn_output.zero_tail(o, torch.tensor([0, end // 2, end], device=DEVICE, dtype=torch.int32))
        assert (o[0, :end] == 7).all() and (o[0, end:] == 0).all(), end


def test_prefetch_touch_applies_to_one_head_per_program_on_a_gpu_only(monkeypatch):
    """Tuning.prefetch_touch reaches the template (PREFETCH_TOUCH) only with the prefetch on, in a fused launch, on a
    GPU (inline PTX: the interpreter runs without it) and with one head per program; an unknown mode is refused."""
    base = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, prefetch_v="kkt", prefetch_touch=2)
    args = (8, 4, 128, 128, 64, "blockdoubling", None, True, True, False)

    def touch(tuning, fused=True):
        ops._template_constexprs.cache_clear()
        a = list(args)
        a[7] = fused
        return ops._template_constexprs(*a, tuning, True, False, False)[0]["PREFETCH_TOUCH"]

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert touch(base) == 2 and touch(dataclasses.replace(base, prefetch_touch=1)) == 1
    assert touch(dataclasses.replace(base, group=2)) == 0  # two heads of a key head per program
    assert touch(dataclasses.replace(base, prefetch_v="off")) == 0 and touch(base, fused=False) == 0
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert touch(base) == 0
    ops._template_constexprs.cache_clear()
    with pytest.raises(ValueError, match="prefetch_touch"):
        ops.Tuning(prefetch_touch=3)
