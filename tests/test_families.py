"""The delta-rule matrix twins (gdn_A, gdn_A_varlen, kda_A) vs brute-force loops, and the family generators."""

import math

import pytest
import torch

from sglang_trinv.reference import families as fam
from sglang_trinv.reference.inverse import exact_inverse


def random_inputs(B, T, H, Hg, K, seed=0, gate=True, per_channel=False, chunk=64, cu_seqlens=None):
    """k (unit rows), chunk-local cumulative log-gate g (reset at every chunk start), β ∈ (0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.nn.functional.normalize(torch.randn(B, T, Hg, K, generator=gen, dtype=torch.float64), dim=-1)
    beta = torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    g = None
    if gate:
        shape = (B, T, H, K) if per_channel else (B, T, H)
        logs = -0.1 * torch.rand(*shape, generator=gen, dtype=torch.float64)
        g = torch.empty_like(logs)
        starts = []
        for s0, s1 in zip(cu_seqlens[:-1], cu_seqlens[1:]) if cu_seqlens else [(0, T)]:
            starts += [(c, min(c + chunk, s1)) for c in range(s0, s1, chunk)]
        for c0, c1 in starts:
            g[:, c0:c1] = torch.cumsum(logs[:, c0:c1], dim=1)
    return k, g, beta


def brute_gdn_chunk(k, g, beta, b, start, end, h, BT):
    """One chunk [start, end) of batch b, value head h, by the definition, entry by entry."""
    H, Hg = beta.shape[-1], k.shape[2]
    kh = h // (H // Hg)
    A = torch.zeros(BT, BT, dtype=torch.float64)
    for i in range(end - start):
        for j in range(i):
            ti, tj = start + i, start + j
            decay = 1.0 if g is None else math.exp(float(g[b, ti, h] - g[b, tj, h]))
            A[i, j] = float(beta[b, ti, h]) * float(k[b, ti, kh] @ k[b, tj, kh]) * decay
    return A


@pytest.mark.parametrize("gate", [True, False])
def test_gdn_A_matches_brute_force_with_gqa_and_partial_chunk(gate):
    B, T, H, Hg, K, BT = 2, 37, 4, 2, 8, 16          # GQA 2:1, last chunk 5 of 16 tokens
    k, g, beta = random_inputs(B, T, H, Hg, K, gate=gate, chunk=BT)
    A = fam.gdn_A(k, g, beta, BT=BT, dtype=torch.float64)
    assert A.shape == (B, 3, H, BT, BT)
    for b in range(B):
        for c in range(3):
            for h in range(H):
                expected = brute_gdn_chunk(k, g, beta, b, c * BT, min(c * BT + BT, T), h, BT)
                torch.testing.assert_close(A[b, c, h], expected, rtol=1e-12, atol=1e-14)
    # padding: rows/columns of the 11 missing tokens are zero, so M = I + A has identity rows there
    assert A[:, 2, :, 5:, :].abs().max() == 0 and A[:, 2, :, :, 5:].abs().max() == 0


def test_gdn_A_default_chunk_64_fp32():
    B, T, H, Hg, K = 1, 70, 2, 1, 16
    k, g, beta = random_inputs(B, T, H, Hg, K, chunk=64)
    A = fam.gdn_A(k.float(), g.float(), beta.float())
    assert A.shape == (1, 2, 2, 64, 64) and A.dtype == torch.float32
    for c, (s, e) in enumerate([(0, 64), (64, 70)]):
        expected = brute_gdn_chunk(k, g, beta, 0, s, e, 1, 64)
        torch.testing.assert_close(A[0, c, 1].double(), expected, rtol=1e-5, atol=1e-6)


def test_gqa_heads_share_keys():
    """With equal β and g, value heads mapped to the same key head get identical matrices."""
    k, _, _ = random_inputs(1, 16, 4, 2, 8)
    beta = torch.full((1, 16, 4), 0.5, dtype=torch.float64)
    A = fam.gdn_A(k, None, beta, BT=16, dtype=torch.float64)[0, 0]
    torch.testing.assert_close(A[0], A[1])
    torch.testing.assert_close(A[2], A[3])
    assert (A[0] - A[2]).abs().max() > 1e-3


def test_gdn_A_varlen_chunks_each_sequence_independently():
    cu = [0, 5, 40, 41, 100]                        # lengths 5, 35, 1, 59 with BT = 16
    BT, H, Hg, K = 16, 2, 1, 8
    k, g, beta = random_inputs(1, cu[-1], H, Hg, K, chunk=BT, cu_seqlens=cu)
    chunks = fam.gdn_A_varlen(k, g, beta, torch.tensor(cu), BT=BT, dtype=torch.float64)
    spans = fam.chunk_spans(cu, BT)
    assert [s[0] for s in spans] == [0, 1, 1, 1, 2, 3, 3, 3, 3]
    assert chunks.shape == (len(spans), H, BT, BT)
    for c, (_, start, end) in enumerate(spans):
        for h in range(H):
            expected = brute_gdn_chunk(k, g, beta, 0, start, end, h, BT)
            torch.testing.assert_close(chunks[c, h], expected, rtol=1e-12, atol=1e-14)


def test_chunk_spans_follow_sglang_chunk_indices():
    from sglang.kernels.ops.attention.fla.index import prepare_chunk_indices

    cu = torch.tensor([0, 5, 40, 41, 100, 228])
    ours = [(s, (start - int(cu[s])) // 64) for s, start, _ in fam.chunk_spans(cu, 64)]
    theirs = [tuple(x) for x in prepare_chunk_indices(cu, 64).tolist()]
    assert ours == theirs


def test_token_layouts_roundtrip():
    B, T, H, BT = 1, 37, 2, 16
    k, g, beta = random_inputs(B, T, H, 1, 8, chunk=BT)
    A = fam.gdn_A(k, g, beta, BT=BT, dtype=torch.float64)
    rows = fam.to_token_layout(A, T)
    assert rows.shape == (B, T, H, BT)
    torch.testing.assert_close(rows[0, 20, 1], A[0, 1, 1, 4])       # token 20 = row 4 of chunk 1
    cu = [0, 7, 37]
    chunks = fam.gdn_A_varlen(k, g, beta, cu, BT=BT, dtype=torch.float64)
    packed = fam.varlen_to_token_layout(chunks, cu)
    assert packed.shape == (1, T, H, BT)
    torch.testing.assert_close(packed[0, 30, 0], chunks[2, 0, 7])    # seq 1 starts at 7: token 30 = chunk 1 row 7


def test_gdn_A_matches_sglang_stock_kernel():
    """SGLang's fused kkt + solve kernel (run by the Triton interpreter on CPU, fp32) returns (I + A)⁻¹ of
    exactly our A (partial chunk, GQA and varlen included)."""
    from sglang.kernels.ops.attention.fla.chunk_fwd import chunk_gated_delta_rule_fwd_intra

    cu = [0, 20, 100]
    T, H, Hg, K, V = cu[-1], 2, 1, 32, 16
    k, g, beta = random_inputs(1, T, H, Hg, K, chunk=64, cu_seqlens=cu)
    k, g, beta = k.float(), g.float(), beta.float()
    v = torch.zeros(1, T, H, V)
    _, _, Ai = chunk_gated_delta_rule_fwd_intra(k, v, g, beta, cu_seqlens=torch.tensor(cu, dtype=torch.long))
    chunks = fam.gdn_A_varlen(k, g, beta, cu, dtype=torch.float64)
    expected = fam.varlen_to_token_layout(exact_inverse(chunks).tril(), cu)
    # padded rows of M⁻¹ are identity rows: the kernel never stores them, so compare only valid columns
    for _, start, end in fam.chunk_spans(cu, 64):
        n = end - start
        torch.testing.assert_close(Ai[0, start:end, :, :n].double(), expected[0, start:end, :, :n],
                                   rtol=1e-4, atol=1e-5)


def test_kda_A_matches_brute_force():
    B, T, H, K, BT = 1, 21, 2, 4, 16
    k, g, beta = random_inputs(B, T, H, H, K, per_channel=True, chunk=BT)
    A = fam.kda_A(k, g, beta, BT=BT, dtype=torch.float64)
    for c, (s, e) in enumerate([(0, 16), (16, 21)]):
        for h in range(H):
            exp = torch.zeros(BT, BT, dtype=torch.float64)
            for i in range(e - s):
                for j in range(i):
                    exp[i, j] = beta[0, s + i, h] * (k[0, s + i, h] * k[0, s + j, h]
                                                     * torch.exp(g[0, s + i, h] - g[0, s + j, h])).sum()
            torch.testing.assert_close(A[0, c, h], exp, rtol=1e-12, atol=1e-14)
    # log2 gates give the same matrix as natural-log gates divided by ln 2
    torch.testing.assert_close(fam.kda_A(k, g / math.log(2.0), beta, BT, base2=True, dtype=torch.float64), A)


# ------------------------------------------------------------------------------------------------ generators
def test_families_are_deterministic_and_well_formed():
    for name in fam.family_specs():
        a = fam.make_family(name, 32, 3, seed=5)
        b = fam.make_family(name, 32, 3, seed=5)
        c = fam.make_family(name, 32, 3, seed=6)
        assert a.A.shape == (3, 32, 32) and a.A.dtype == torch.float32, name
        assert torch.equal(a.A, b.A), name
        assert torch.equal(a.A, torch.tril(a.A, -1)), name
        assert torch.isfinite(a.A).all(), name
        # another seed changes the matrices (identical_keys with β = 1 is always tril(ones): its keys change)
        assert not torch.equal(a.A, c.A) or not torch.equal(a.k, c.k), name


def test_identical_keys_give_beta_times_lower_ones():
    fb = fam.make_family("identical_keys", 16, 2)
    torch.testing.assert_close(fb.A, torch.tril(torch.ones(2, 16, 16), -1))
    kb = fam.delta_rule_family(16, 2, keys="identical", beta=(0.2, 0.9), decay=None)
    torch.testing.assert_close(kb.A, torch.tril(kb.beta[:, :, None].expand(2, 16, 16), -1), rtol=1e-5, atol=1e-6)


def test_key_kinds():
    gen = torch.Generator().manual_seed(0)
    corr = fam.make_keys("correlated", 2, 64, 128, gen, cos=0.99)
    i, j = torch.tril_indices(64, 64, -1)
    dots = (corr @ corr.transpose(-1, -2))[:, i, j]
    assert abs(float(dots.mean()) - 0.99) < 0.003 and float(dots.min()) > 0.97
    low = fam.make_keys("low_rank", 2, 64, 128, gen, rank=4)
    assert torch.linalg.matrix_rank(low).tolist() == [4, 4]
    rnd = fam.make_keys("random", 2, 64, 128, gen)
    torch.testing.assert_close(rnd.norm(dim=-1), torch.ones(2, 64, dtype=torch.float64))
    assert (rnd @ rnd.transpose(-1, -2)).tril(-1).abs().max() < 0.5
    with pytest.raises(ValueError, match="unknown key kind"):
        fam.make_keys("nope", 1, 4, 4, gen)


def test_beta_and_decay_ranges():
    neg = fam.make_family("negative_eigen", 64, 4)
    assert neg.beta.min() >= 1.0 and neg.beta.max() <= 2.0
    near = fam.make_family("beta_near_one", 64, 4)
    assert near.beta.min() >= 0.95
    assert fam.make_family("no_decay", 64, 2).g is None
    strong = fam.make_family("strong_decay", 64, 2)
    steps = strong.g.diff(dim=-1)
    assert (steps <= -0.5).all() and (steps >= -1.0).all()              # non-increasing log-gate
    # strong decay: entries 8+ tokens apart are < e^-4 of the undecayed value
    assert strong.A[:, 8:, :].tril(-8).abs().max() < math.exp(-4)


def test_partial_chunk_and_synthetic():
    part = fam.make_family("partial_chunk", 64, 2)
    assert part.valid == 37
    assert part.A[:, 37:, :].abs().max() == 0 and part.A[:, :, 37:].abs().max() == 0
    assert part.A[:, :37, :37].abs().max() > 0.5
    syn = fam.make_family("synthetic_uniform", 64, 2)
    i, j = torch.tril_indices(64, 64, -1)
    lower = syn.A[:, i, j]
    assert lower.min() >= 0 and lower.max() < 0.5 and abs(float(lower.mean()) - 0.25) < 0.02
