"""The plugin's KDA path as SGLang 0.5.23 runs it by default: the KDA extend captured in a breakable prefill CUDA
graph per token bucket, with tables padded to the bucket (``srt/layers/attention/linear/kda_prefill_graph.py``;
mirrored by ``benchmarks.kda_graph``): empty padded sequences, padded chunk rows (0, 2^20) that every chunk kernel
must skip, state slots PAD_SLOT_ID past the batch, rows past the batch's tokens that nobody may write.

On a CPU the extend runs eagerly under the interpreter (fp32, tiny); on a GPU it is captured once and replayed for a
second batch written into the same tables, as SGLang replays a bucket.
"""

import numpy as np
import pytest
import torch

import sglang_trinv.plugin as plugin
from sglang_trinv.benchmarks import kda_graph as kg
from sglang_trinv.plugin._state import ENV_KDA

from .conftest import DEVICE, HAS_CUDA
from .test_kda import clean_selection  # noqa: F401 (fixture)

# the bucket, heads, head size and the cap on sequences: tiny for the interpreter, SGLang's cap on a GPU
SHAPE = dict(num_tokens=512, H=4, K=128, max_seqs_cap=128) if HAS_CUDA else \
    dict(num_tokens=160, H=2, K=16, max_seqs_cap=6)
BATCHES = ([300, 1, 100], [64, 1, 30, 5, 64]) if HAS_CUDA else ([1, 70, 50], [64, 1, 30, 5])


@pytest.mark.parametrize("num_tokens,cap,lens", [(160, 128, [1, 70, 50]), (160, 4, [1, 70, 50]), (64, 128, [64]),
                                                 (2048, 128, [700, 1, 1000, 300]), (130, 3, [65, 64, 1])])
def test_tables_are_sglangs(num_tokens, cap, lens):
    """benchmarks.kda_graph's tables are what SGLang's KDAPrefillGraphMetadata writes (skipped where SGLang's server
    modules do not import)."""
    try:
        from sglang.srt.layers.attention.linear import kda_prefill_graph as sgl
    except ImportError as e:
        pytest.skip(f"SGLang's server modules do not import here: {e}")
    assert (sgl._PAD_CHUNK, sgl.KDA_CHUNK_SIZE) == (kg.PAD_CHUNK, kg.CHUNK)
    meta = sgl.KDAPrefillGraphMetadata.allocate(num_tokens=num_tokens, max_seqs_cap=cap, track=False,
                                                cache_index_dtype=torch.int32, device=torch.device("cpu"))
    meta._write_host_tables(lens=np.asarray(lens, dtype=np.int64), track_rows=None)
    ours = kg.prefill_graph_tables(lens, num_tokens, cap)
    assert (ours["max_seqs"], ours["max_chunks"]) == (meta.max_seqs, meta.max_chunks)
    for name in ("cu_seqlens", "chunk_indices", "chunk_offsets"):
        sglang_table = getattr(meta, name)  # (a view of the device buffer, filled from ``host`` by ``fill``)
        start = {"cu_seqlens": 0, "chunk_indices": meta.max_seqs + 1,
                 "chunk_offsets": meta.max_seqs + 1 + 2 * meta.max_chunks}[name]
        table = torch.from_numpy(meta.host[start:start + sglang_table.numel()].copy()).view(sglang_table.shape)
        assert torch.equal(ours[name].long(), table.long()), name
    with pytest.raises(ValueError, match="exceeds the bucket"):
        kg.prefill_graph_tables(lens + [num_tokens], num_tokens, cap)


def _check(case, out, stock_out, tol):
    o64, s64 = kg.reference(case, case["pool"])
    r = kg.compare(case, *out, o64, s64, stock=stock_out)
    s = kg.compare(case, *stock_out, o64, s64)
    assert r["untouched"] and s["untouched"]  # no row past the batch, no slot of no sequence written
    for key in ("o_err", "state_err"):  # as close to fp64 as stock (both round the Gram operands to bf16)
        assert r[key] < tol and r[key] <= 1.5 * s[key] + 1e-5, (key, r[key], s[key])
    return r


@pytest.mark.parametrize("gate", kg.GATES)
def test_plugin_on_padded_bucket_tables(clean_selection, monkeypatch, gate):  # noqa: F811
    """Through the plugin (default routing; the state recurrence at SGLang's launch, as said in the log), the extend
    on a bucket's padded tables gives the batch's o and final states as close to fp64 as stock's, writes nothing
    outside the batch, equals the plugin's own extend on the unpadded batch (bit for bit on a GPU), and stays right
    for a second batch written into the same tables (on a GPU: the graph captured for the first, replayed). The gate
    comes in as Kimi-Linear's extend passes it (raw, with A_log / dt_bias and raw β, activated inside SGLang's fused
    gate cumsum) and already activated."""
    monkeypatch.delenv(ENV_KDA, raising=False)
    dtype = torch.bfloat16 if HAS_CUDA else torch.float32
    tol = 3e-2 if HAS_CUDA else 1e-2
    first, second = BATCHES
    case = kg.make_case(SHAPE["num_tokens"], SHAPE["H"], SHAPE["K"], first, DEVICE, dtype,
                        max_seqs_cap=SHAPE["max_seqs_cap"], gate=gate)
    assert case["tables"]["max_chunks"] > sum(kg.cdiv(n, kg.CHUNK) for n in first)  # padded rows exist
    stock = kg.Captured(case, DEVICE)
    stock_out = tuple(x.clone() for x in stock.run())
    plugin.patch("blockdoubling")
    counts = plugin.active().counts
    before = counts.get("kda", 0), counts.get("kda_state_graph", 0), counts.get("kda_state_tuned", 0)
    ours = kg.Captured(case, DEVICE)
    out = tuple(x.clone() for x in ours.run())
    counts = plugin.active().counts
    assert counts.get("kda", 0) > before[0]  # our kernel served it (at the capture on a GPU)
    # the state recurrence keeps SGLang's launch there: the padded tables' sequence count is the bucket's bound
    assert counts.get("kda_state_graph", 0) > before[1] and counts.get("kda_state_tuned", 0) == before[2]
    _check(case, out, stock_out, tol)

    # the same batch without padding: cu_seqlens of the batch alone, chunk indices computed by chunk_kda_fwd
    total = sum(first)
    bare = dict(case, q=case["q"][:, :total].contiguous(), k=case["k"][:, :total].contiguous(),
                v=case["v"][:, :total].contiguous(), g_in=case["g_in"][:, :total].contiguous(),
                beta_in=case["beta_in"][:, :total].contiguous(), slots=case["slots"][:len(first)].contiguous(),
                tables=dict(cu_seqlens=case["tables"]["cu_seqlens"][:len(first) + 1].contiguous(),
                            chunk_indices=None, chunk_offsets=None))
    pool = case["pool"].clone()
    o_bare = kg.extend(bare, pool, bare["v"].clone())
    slots = case["slots"][:len(first)].long()
    for x, y in ((out[0][:, :total], o_bare), (out[1][slots], pool[slots])):
        if HAS_CUDA:
            assert torch.equal(x, y)
        else:  # (the interpreter's numpy products over other grids: the last bits)
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)

    # a second batch in the same tables: on a GPU both graphs replay without a new capture (on a CPU each path runs
    # eagerly again, so the plugin is off for stock's)
    kg.refill(case, second)
    plugin.unpatch()
    stock_out = tuple(x.clone() for x in stock.run())
    plugin.patch("blockdoubling")
    out = tuple(x.clone() for x in ours.run())
    plugin.unpatch()
    _check(case, out, stock_out, tol)
