"""Reference inversion methods vs the fp64 triangular solve, and the GPU-precision emulation they use.

Tolerances: a stable method's error is O(u·growth) with u the unit roundoff of the products' operands
(ieee 2^-24, tf32/fp16 2^-11, bf16 2^-8, tf32x3 ≈ 2^-22, bf16x3 ≈ 2^-16: hi+lo keeps ~2× the mantissa
bits, lo·lo is dropped). On the matrices below the measured worst max-rel error is ≤ 2.7·u (n ≤ 128),
so ``TOL_FACTOR = 16`` leaves ~6× margin while still failing on any O(1)-wrong or precision-mislabelled
result (a tf32 result passed off as ieee would be 2^13× over).
"""

import math

import pytest
import torch
import triton
import triton.language as tl

from sglang_trinv.ops.gdn_intra import _round_tf32
from sglang_trinv.reference import inverse as ref
from sglang_trinv.reference.families import delta_rule_family
from sglang_trinv.reference.precision import matmul, round_tf32, round_to
from sglang_trinv.registry import METHODS, invert

from .conftest import DEVICE

UNIT_ROUNDOFF = {"ieee": 2.0**-24, "tf32": 2.0**-10, "tf32r": 2.0**-11, "fp16": 2.0**-11, "bf16": 2.0**-8,
                 "tf32x3": 2.0**-22, "bf16x3": 2.0**-16}
TOL_FACTOR = 16
SIZES = [1, 2, 16, 37, 64, 128]
PRECISIONS = ["ieee", "tf32", "bf16", "tf32x3"]
# the Neumann-type products (neumann, newton_schulz, hybrid's Neumann-16 blocks) grow like binomials on
# correlated keys (that is the point of the stability report), so they get the well-conditioned keys here
GROWTH_SENSITIVE = {"neumann", "newton_schulz", "hybrid"}


def max_rel(A: torch.Tensor, X: torch.Tensor) -> float:
    """max_ij |X − X*| / max_ij |X*| (worst over the batch), X* = fp64 solve."""
    R = ref.exact_inverse(A)
    err = (X.to(torch.float64) - R).abs().amax(dim=(-2, -1)) / R.abs().amax(dim=(-2, -1))
    return float(err.max())


def matrices_for(n: int, method: str) -> torch.Tensor:
    keys = "random" if method in GROWTH_SENSITIVE else "correlated"
    return delta_rule_family(n, 4, seed=1, name="test", keys=keys, cos=0.9, beta=(0.0, 1.0),
                             decay=(0.0, 0.05)).A


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("method", list(METHODS))
def test_method_matches_exact_inverse(method, n):
    A = matrices_for(n, method)
    for precision in PRECISIONS:
        X = invert(A, method, precision)
        assert X.shape == A.shape and X.dtype == torch.float32
        err = max_rel(A, X)
        assert err <= TOL_FACTOR * UNIT_ROUNDOFF[precision], (method, precision, n, err)


@pytest.mark.parametrize("method", list(METHODS))
def test_fp64_input_is_fp64_accurate(method):
    """In fp64 with plain products every method is exact up to fp64 roundoff (~1e-16·growth)."""
    for n in (37, 64):
        A = matrices_for(n, method).to(torch.float64)
        X = invert(A, method, "ieee")
        assert X.dtype == torch.float64
        assert max_rel(A, X) < 1e-12


@pytest.mark.parametrize("method", list(METHODS))
def test_batched_leading_dims(method):
    """[2, 3, n, n] inverts matrix by matrix: same result as the flattened batch."""
    n = 37
    A = delta_rule_family(n, 6, seed=3, name="batched", keys="random").A
    X_flat = invert(A, method, "tf32")
    X_4d = invert(A.reshape(2, 3, n, n), method, "tf32")
    assert X_4d.shape == (2, 3, n, n)
    torch.testing.assert_close(X_4d.reshape(6, n, n), X_flat, rtol=0, atol=1e-6)
    assert max_rel(A, X_4d.reshape(6, n, n)) <= TOL_FACTOR * UNIT_ROUNDOFF["tf32"]


def test_upper_triangle_and_diagonal_of_input_are_ignored():
    """Methods read only tril(A, −1): garbage above/on the diagonal must not change the result."""
    A = matrices_for(16, "blockdoubling")
    noisy = A + torch.triu(torch.full_like(A, 7.0))
    for method in METHODS:
        torch.testing.assert_close(invert(noisy, method, "ieee"), invert(A, method, "ieee"))


# ---------------------------------------------------------------------------------------- precision emulation
def test_round_tf32_keeps_10_mantissa_bits():
    """tf32 operands: truncated (the tensor core reading fp32 registers, what Triton's tf32 dots do — no cvt in
    their sm_90 PTX) by default, rounded to nearest with ties away (cvt.rna, Triton's tf32x3 split) on request."""
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 1e3
    for mode, bound in (("trunc", 2.0**-10), ("rna", 2.0**-11)):
        r = round_tf32(x, mode)
        assert torch.all(r.view(torch.int32) & 0x1FFF == 0)                # 13 low mantissa bits cleared
        assert torch.all((r - x).abs() <= x.abs() * bound)                 # < one ulp / ≤ half an ulp
    t = round_tf32(x)
    assert torch.all(t.abs() <= x.abs()) and torch.equal(t, round_tf32(x, "trunc"))  # toward zero
    # 1 + 2^-11 is halfway between 1 and 1 + 2^-10: rna goes away from zero, truncation to 1
    tie = torch.tensor([1 + 2.0**-11, -(1 + 2.0**-11)])
    assert round_tf32(tie, "rna").tolist() == [1 + 2.0**-10, -(1 + 2.0**-10)]
    assert round_tf32(tie).tolist() == [1.0, -1.0]
    assert round_tf32(torch.tensor([1 + 2.0**-12]), "rna").item() == 1.0
    assert round_tf32(torch.tensor([1 + 2.0**-10 - 2.0**-23])).item() == 1.0  # just below 1 + ulp: truncated
    special = torch.tensor([math.inf, -math.inf, 0.0])
    for mode in ("trunc", "rna"):
        assert round_tf32(special, mode).tolist() == [math.inf, -math.inf, 0.0]
        assert torch.isnan(round_tf32(torch.tensor([math.nan]), mode)).all()
    with pytest.raises(ValueError, match="tf32 rounding"):
        round_tf32(x, "rtz")
    # "tf32r" (our kernels' rounded tf32 operands) emulates rna; "tf32" the tensor core's truncation
    assert torch.equal(round_to(x, "tf32r"), round_tf32(x, "rna")) and torch.equal(round_to(x, "tf32"), t)


@triton.jit
def _round_tf32_kernel(x_ptr, y_ptr, N: tl.constexpr):
    o = tl.arange(0, N)
    tl.store(y_ptr + o, _round_tf32(tl.load(x_ptr + o)))


def test_rounded_tf32_kernel_helper_matches_the_emulation():
    """ops.gdn_intra._round_tf32 (integer ops in the kernel: "tf32r" products) rounds exactly as the emulation's
    rna, ties and specials included (interpreter on a CPU, compiled on a GPU)."""
    x = torch.cat([torch.randn(1000, generator=torch.Generator().manual_seed(1)) * 1e3,
                   torch.tensor([1 + 2.0**-11, -(1 + 2.0**-11), math.inf, -math.inf, 0.0, -0.0, 3.4e38])])
    x = torch.cat([x, torch.zeros(1024 - x.numel())]).to(DEVICE)
    y = torch.empty_like(x)
    _round_tf32_kernel[(1,)](x, y, N=1024)
    assert torch.equal(y.cpu(), round_tf32(x.cpu(), "rna"))


def test_split_precisions_beat_single():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 64, generator=g), torch.randn(64, 64, generator=g)
    exact = a.double() @ b.double()
    err = {p: float((matmul(a, b, p).double() - exact).abs().max()) for p in UNIT_ROUNDOFF}
    assert err["bf16x3"] < err["bf16"] / 50
    assert err["tf32x3"] < err["tf32"] / 50
    assert err["ieee"] <= err["tf32x3"] * 4 and err["tf32"] < err["bf16"]


def test_fp16_overflow_becomes_inf():
    assert torch.isinf(round_to(torch.tensor([7e4, -1e5]), "fp16")).all()
    # operands are rounded to fp16, products accumulate in fp32: 300·300·4 = 3.6e5 > 65504 stays finite
    a = torch.full((4, 4), 300.0)
    assert torch.isfinite(matmul(a, a, "fp16")).all()
    big = torch.full((4, 4), 1e5)                                         # but operands > 65504 become inf
    assert torch.isinf(matmul(big, big, "fp16")).all()


# ---------------------------------------------------------------------------------------------- instability
def test_neumann_blows_up_on_identical_keys_where_blockdoubling_does_not():
    """Identical unit keys, β = 1, no decay: A = strictly lower ones, (A^m)_ij = C(i−j−1, m−1) reaches
    C(63, 31) ≈ 9e17 at n = 64 while M⁻¹ is bidiagonal (entries 0, ±1)."""
    A = delta_rule_family(64, 2, seed=0, name="identical", keys="identical", beta=1.0, decay=None).A
    torch.testing.assert_close(A[0], torch.tril(torch.ones(64, 64), -1))
    X_neumann = ref.neumann(A, precision="fp16")
    assert (not torch.isfinite(X_neumann).all()) or max_rel(A, X_neumann) > 1.0
    X_bd = ref.blockdoubling(A, precision="fp16")
    assert torch.isfinite(X_bd).all() and max_rel(A, X_bd) <= TOL_FACTOR * UNIT_ROUNDOFF["fp16"]
    # the blow-up is the algorithm, not the format: plain fp32 products still lose everything
    assert max_rel(A, ref.neumann(A, precision="ieee")) > 1.0


def test_refine_improves_tf32_result():
    A = matrices_for(64, "blockdoubling")
    X = ref.blockdoubling(A, precision="tf32")
    before = max_rel(A, X)
    after = max_rel(A, ref.refine(A, X, precision="tf32x3"))
    assert before > 1e-5 and after < before / 50


def test_hybrid_inner_methods_agree():
    """Every inner method of the hybrid gives the same inverse (up to fp32 roundoff) on benign input."""
    A = matrices_for(64, "hybrid")
    for inner in ("substitution", "column_sweep", "neumann", "blockdoubling", "newton_schulz"):
        X = ref.hybrid(A, block=16, inner=inner, precision="ieee")
        assert max_rel(A, X) <= TOL_FACTOR * UNIT_ROUNDOFF["ieee"], inner


# --------------------------------------------------------------------------- whole GDN forward twin
@pytest.mark.parametrize("varlen", [False, True], ids=["dense", "varlen"])
def test_chunk_forward_twin_equals_the_token_recurrence(varlen):
    """The fp64 chunked twin of SGLang's chunk_gated_delta_rule_fwd (exact inverse, WY form) reproduces the
    token-by-token delta rule: GQA, a 1-token sequence and partial chunks, strong and no decay."""
    import torch.nn.functional as F

    from sglang_trinv.reference import gdn

    gen = torch.Generator().manual_seed(11)
    T, H, Hg, K, V = 150, 4, 2, 8, 6
    q = torch.randn(1, T, Hg, K, generator=gen)
    k = F.normalize(torch.randn(1, T, Hg, K, generator=gen), dim=-1)
    v = torch.randn(1, T, H, V, generator=gen)
    g = F.logsigmoid(torch.randn(1, T, H, generator=gen) * 3)
    g[..., 0] = 0.0  # one head without decay
    beta = torch.rand(1, T, H, generator=gen) * 2
    cu = torch.tensor([0, 1, 70, 150]) if varlen else None
    h0 = torch.randn(3 if varlen else 1, H, V, K, generator=gen)
    o_r, s_r = gdn.recurrent_fwd(q, k, v, g, beta, 0.3, h0, cu)
    o_c, s_c = gdn.chunk_fwd(q, k, v, g, beta, 0.3, h0, cu)
    assert o_r.dtype == torch.float64 and s_r.shape == h0.shape
    torch.testing.assert_close(o_c, o_r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s_c, s_r, rtol=1e-10, atol=1e-10)
    assert not torch.equal(s_r, h0.double())


@pytest.mark.parametrize("varlen", [False, True], ids=["dense", "varlen"])
def test_kda_chunk_forward_twin_equals_the_token_recurrence(varlen):
    """KDA's fp64 chunked twin (reference.kda.chunk_fwd: per-channel gates, one state update per chunk — the
    benchmarks' reference) reproduces its token recurrence: a 1-token sequence and partial chunks, channels without
    decay and channels decaying 20–30 nats per token (Γ's exponents stay ≤ 0: nothing overflows)."""
    import torch.nn.functional as F

    from sglang_trinv.reference import kda

    gen = torch.Generator().manual_seed(12)
    T, H, K, V = 150, 2, 8, 6
    q = torch.randn(1, T, H, K, generator=gen)
    k = F.normalize(torch.randn(1, T, H, K, generator=gen), dim=-1)
    v = torch.randn(1, T, H, V, generator=gen)
    g = F.logsigmoid(torch.randn(1, T, H, K, generator=gen) * 3)
    g[..., 0] = 0.0  # a channel without decay
    g[..., 1] = -(20 + 10 * torch.rand(1, T, H, generator=gen))  # one decaying far past fp32's range per chunk
    beta = torch.rand(1, T, H, generator=gen) * 2
    cu = torch.tensor([0, 1, 70, 150]) if varlen else None
    h0 = torch.randn(3 if varlen else 1, H, V, K, generator=gen)
    o_r, s_r = kda.recurrent_fwd(q, k, v, g, beta, 0.3, h0, cu)
    o_c, s_c = kda.chunk_fwd(q, k, v, g, beta, 0.3, h0, cu)
    assert torch.isfinite(o_c).all() and torch.isfinite(s_c).all()
    torch.testing.assert_close(o_c, o_r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s_c, s_r, rtol=1e-10, atol=1e-10)
    assert not torch.equal(s_r, h0.double())


def _inv_diag_emulated(a: torch.Tensor, masks_on_products: bool) -> torch.Tensor:
    """The Gluon kernel's 16×16 diagonal-tile doubling (ops/gluon_intra._inv_diag) with bf16x3 products emulated:
    X ← X − X·A_b·X per level (A_b = A on the level's blocks), or with the mask on the product (GluonLaunch.DM)."""
    r = torch.arange(16)[:, None]
    c = torch.arange(16)[None, :]
    x = torch.eye(16) - torch.where(r // 2 == c // 2, a, 0.0)
    for lvl in range(1, 4):
        blk = (r // (2 << lvl) == c // (2 << lvl)) & ((r // (1 << lvl)) % 2 == 1) & ((c // (1 << lvl)) % 2 == 0)
        if masks_on_products:
            x = x - torch.where(blk, matmul(matmul(x, a, "bf16x3"), x, "bf16x3"), 0.0)
        else:
            x = x - matmul(matmul(x, torch.where(blk, a, 0.0), "bf16x3"), x, "bf16x3")
    return x


def test_doubling_level_masks_move_from_A_to_the_product_bitwise():
    """X is block-diagonal in the level's b-blocks, so block (I, J) of X·A·X is X_II·A_IJ·X_JJ: the other terms are
    exact zeros, and masking the product equals masking A, bit for bit (the DM form of the Gluon kernel splits and
    converts A once for the three levels). Random gates and identical keys, β up to 2."""
    gen = torch.Generator().manual_seed(0)
    low = torch.tril(torch.ones(16, 16, dtype=torch.bool), -1)
    cases = [torch.randn(16, 16, generator=gen) * 0.3, torch.full((16, 16), 2.0),  # identical keys, β = 2
             torch.rand(16, 16, generator=gen) * 2.0]
    for a in cases:
        a = torch.where(low, a, 0.0)
        x0, x1 = _inv_diag_emulated(a, False), _inv_diag_emulated(a, True)
        assert torch.equal(x0, x1)
        assert torch.allclose(x1, torch.linalg.inv(torch.eye(16) + a), rtol=1e-3, atol=1e-3 * x1.abs().max())


def test_gate_rank1_factors_match_the_direct_gate_and_never_overflow():
    """GluonLaunch.GF: below the diagonal block J, e^{g_i − g_j} = e^{min(g_i − s, 0)}·e^{min(s − g_j, 0)} with s the
    smallest gate of block J (gluon_intra._gate_factors). For a chunk-local cumulative log-gate (non-increasing)
    both factors lie in [0, 1] and their product is the direct gate — here in fp32 against fp64 for mild and for
    extreme decay (−300 per 16 rows, where e^{s − g_j} computed the other way round would overflow), with rows past
    the sequence's end (gate 0, β = 0) giving exact zeros."""
    gen = torch.Generator().manual_seed(1)
    for per_row in (0.05, 20.0):
        g64 = torch.cumsum(-per_row * torch.rand(64, generator=gen, dtype=torch.float64), 0)
        beta = torch.rand(64, generator=gen, dtype=torch.float64) * 2
        g64[50:], beta[50:] = 0.0, 0.0  # a partial chunk: 50 valid rows
        g = g64.float()
        for J in range(3):
            cols = slice(16 * J, 16 * J + 16)
            s = g[cols].min()
            col = torch.exp(torch.clamp(s - g[cols], max=0.0))
            assert torch.isfinite(col).all() and (col <= 1).all()
            for Ib in range(J + 1, 4):
                rows = slice(16 * Ib, 16 * Ib + 16)
                row = beta[rows].float() * torch.exp(torch.clamp(g[rows] - s, max=0.0))
                assert torch.isfinite(row).all()
                got = row[:, None] * col[None, :]
                # against e^{g_i − g_j} in fp64 of the same fp32 gates (the kernel's inputs)
                gd = g.double()
                ref = (beta[rows, None] * torch.exp(gd[rows, None] - gd[None, cols])).float()
                assert torch.allclose(got, ref, rtol=2e-6, atol=1e-36)  # a few fp32 roundings; denormals aside
                assert (got[beta[rows] == 0] == 0).all()
