"""ops.gdn_state: SGLang's state recurrence and output stage (copies) run at once, against SGLang's own two stages.

On a CPU under the Triton interpreter (fp32), where the two launches run one after the other, so the flags are
set before anyone waits; on a GPU side by side (bf16), eagerly and inside a CUDA graph.
"""

from importlib import import_module

import pytest
import torch
import torch.nn.functional as F

from sglang_trinv import ops

from .conftest import DEVICE, HAS_CUDA

FLA = "sglang.kernels.ops.attention.fla"


def _stages(T, H, Hg, K, V, cu, seed=0, dtype=torch.float32):
    """Inputs of the two stages (w, u from our fused pipeline), and SGLang's own h, v_new, o and final state."""
    chunk = import_module(f"{FLA}.chunk")
    gen = torch.Generator().manual_seed(seed)
    k = F.normalize(torch.randn(1, T, Hg, K, generator=gen), dim=-1).to(DEVICE, dtype)
    v = torch.randn(1, T, H, V, generator=gen).to(DEVICE, dtype)
    beta = torch.rand(1, T, H, generator=gen).to(DEVICE, dtype)
    g_raw = -F.softplus(torch.randn(1, T, H, generator=gen) - 3.0).to(DEVICE)
    q = F.normalize(torch.randn(1, T, Hg, K, generator=gen), dim=-1).to(DEVICE, dtype)
    cu_t = None if cu is None else torch.tensor(cu, dtype=torch.int64, device=DEVICE)
    g, w, u, _ = ops.gdn_cumsum_fwd_intra(k, v, g_raw, beta, cu_seqlens=cu_t)
    N = 1 if cu is None else len(cu) - 1
    h0 = (torch.randn(N, H, V, K, generator=gen) * 0.1).to(DEVICE)
    idx = torch.arange(N, device=DEVICE)
    ci = None if cu_t is None else chunk.prepare_chunk_indices(cu_t, 64)
    state = h0.clone()
    h, v_new = chunk.chunk_gated_delta_rule_fwd_h(k=k, w=w, u=u, g=g, initial_state=state, initial_state_indices=idx,
                                                  cu_seqlens=cu_t, chunk_indices=ci)
    o = chunk.chunk_fwd_o(q=q, k=k, v=v_new, h=h, g=g, scale=K ** -0.5, cu_seqlens=cu_t)
    return dict(q=q, k=k, w=w, u=u, g=g, h0=h0, idx=idx, cu=cu_t, ci=ci), (h, v_new, o, state)


CASES = {  # GQA, a partial last chunk; varlen with a 1-token sequence; padding rows past cu_seqlens[-1]; V < BV
    "fixed": dict(T=150, H=4, Hg=2, K=32, V=64, cu=None),
    "varlen": dict(T=150, H=4, Hg=2, K=32, V=64, cu=[0, 1, 70, 150]),
    "padded-narrow": dict(T=130, H=2, Hg=2, K=16, V=32, cu=[0, 1, 70, 120]),
}


@pytest.mark.skipif(HAS_CUDA, reason="interpreter form; the GPU test below covers the device")
@pytest.mark.parametrize("case", list(CASES))
def test_state_and_output_at_once_equal_sglangs_stages(case):
    """gdn_fwd_h_o: h, v_new (rows of a sequence), o and the final state bit for bit SGLang's fwd_h then
    chunk_fwd_o, with the flags (overlap) and without; the flags are all 0 again afterwards."""
    from sglang_trinv.ops import gdn_state

    c = CASES[case]
    x, (h, v_new, o, state) = _stages(**c)
    end = c["T"] if c["cu"] is None else c["cu"][-1]
    K = x["k"].shape[-1]
    for overlap, signal in ((False, None), (True, None), (True, dict(release="cta", lag=1, stride=32))):
        s = x["h0"].clone()
        h2, v_new2, o2 = gdn_state.gdn_fwd_h_o(x["q"], x["k"], x["w"], x["u"], x["g"], K ** -0.5, s, x["idx"],
                                               cu_seqlens=x["cu"], chunk_indices=x["ci"], overlap=overlap,
                                               signal=signal)
        assert torch.equal(h2, h) and torch.equal(o2, o) and torch.equal(s, state), (case, overlap, signal)
        assert torch.equal(v_new2[:, :end], v_new[:, :end]), (case, overlap)  # (padding rows: never written)
        if overlap:
            assert not gdn_state._FLAGS[x["k"].device].any()


@pytest.mark.skipif(HAS_CUDA, reason="interpreter form; the GPU test below covers the device")
@pytest.mark.parametrize("sms,bv", [(132, 16), (1, 64)], ids=["BV16", "BV64-one-SM"])
def test_tuned_state_launch_under_the_interpreter(monkeypatch, sms, bv):
    """launch="tuned" (BV=16 here: 3 sequences x 4 heads x 4 blocks of 16 value columns fit in a wave; on a GPU
    of one SM, the BV=64 form of many programs and short sequences): h, o and the final state those of SGLang's
    stages, to the last bits of numpy's products in other blocks."""
    from sglang_trinv.ops import gdn_state

    c = CASES["varlen"]
    x, (h, v_new, o, state) = _stages(**c)
    monkeypatch.setattr(gdn_state, "sm_count", lambda device: sms)
    assert gdn_state.tuned_launch(3, 4, 64, x["k"].device, tokens=x["k"].shape[1])[0] == bv
    s = x["h0"].clone()
    h2, _, o2 = gdn_state.gdn_fwd_h_o(x["q"], x["k"], x["w"], x["u"], x["g"], 32 ** -0.5, s, x["idx"],
                                      cu_seqlens=x["cu"], chunk_indices=x["ci"], overlap=False, launch="tuned")
    for name, a, b in (("h", h2, h), ("o", o2, o), ("final state", s, state)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=name)


def test_tuned_state_launch_rule(monkeypatch):
    """BV=16 (2 warps, 3 stages) while its programs fit in one wave of 132 SMs; BV=64 (4 warps, 2 stages) where
    BV=32 would make more than 3 programs per SM and sequences average ≤ 2048 tokens; else BV=32 (4 warps, 3
    stages); SGLang's launch variables set in the environment are the user's choice and win."""
    from sglang_trinv.ops import gdn_state

    cpu = torch.device("cpu")
    assert gdn_state.tuned_launch(1, 8, 128, cpu) == (16, 2, 3)  # 64 programs
    assert gdn_state.tuned_launch(2, 8, 128, cpu) == (16, 2, 3)  # 128
    assert gdn_state.tuned_launch(1, 32, 128, cpu) == (32, 4, 3)  # 256 at BV=16
    assert gdn_state.tuned_launch(8, 8, 128, cpu, tokens=8192) == (32, 4, 3)  # 256 at BV=32
    # the s28 sweep's shapes: 512 / 1024 programs at BV=32
    assert gdn_state.tuned_launch(8, 16, 128, cpu, tokens=8192) == (64, 4, 2)
    assert gdn_state.tuned_launch(8, 32, 128, cpu, tokens=8192) == (64, 4, 2)
    assert gdn_state.tuned_launch(8, 32, 128, cpu, tokens=4096) == (64, 4, 2)
    assert gdn_state.tuned_launch(4, 32, 128, cpu, tokens=8192) == (64, 4, 2)  # mean 2048: the cut
    assert gdn_state.tuned_launch(8, 32, 128, cpu, tokens=32768) == (32, 4, 3)  # long sequences
    assert gdn_state.tuned_launch(8, 32, 128, cpu) == (32, 4, 3)  # tokens unknown
    assert gdn_state.tuned_launch(40, 32, 32, cpu, tokens=8192) == (32, 4, 3)  # V=32: no BV=64
    for name in gdn_state.SGLANG_LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    assert gdn_state.sglang_launch_set() == []
    monkeypatch.setenv("SGLANG_GDN_CHUNK_H_BV", "64")
    assert gdn_state.sglang_launch_set() == ["SGLANG_GDN_CHUNK_H_BV"]


def test_state_copy_checks_the_installed_kernel(monkeypatch):
    """The copy is used only where SGLang's state kernel has the parameters it was made from."""
    from types import SimpleNamespace

    from sglang_trinv.ops import gdn_state

    assert gdn_state.stock_reason() is None
    chunk_h = import_module(f"{FLA}.chunk_delta_h")
    monkeypatch.setattr(chunk_h, gdn_state.STOCK_KERNEL, SimpleNamespace(arg_names=["k", "v"]))
    assert "is not the copied signature" in gdn_state.stock_reason()


_COMPILE_SM90 = """
import re
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from sglang_trinv.benchmarks.resources import cubin_usage
from sglang_trinv.ops import gdn_state as S

def build(fn, sig, const, **opts):
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n, t in sig.items() if t.startswith("*")}
    sig = dict(sig, **{n: "constexpr" for n in const})
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(n),): v for n, v in const.items()},
                    attrs=attrs)
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)
    ptx = c.asm["ptx"]
    return dict(stack=cubin_usage(c.asm["cubin"])["stack"], launch_pdl=bool(getattr(c.metadata, "launch_pdl", 0)),
                waits=ptx.count("griddepcontrol.wait"), triggers=ptx.count("griddepcontrol.launch_dependents"),
                releases=len(re.findall(r"atom[.a-z]*release", ptx)), acquires=ptx.count("acquire"),
                reds=ptx.count("red.release"), cp_async=ptx.count("cp.async.cg") + ptx.count("cp.async.ca"),
                sleeps=ptx.count("nanosleep"))

SLEEP = "nanosleep.u32 200; mov.u32 $0, $1;"
for varlen, lag, release in ((False, 0, S.RED_RELEASE_PTX), (True, 1, S.RED_RELEASE_PTX), (False, 0, ""),
                             (True, 1, "")):
    sig_h = dict(k="*bf16", v="*bf16", w="*bf16", v_new="*bf16", h="*bf16", g="*fp32", initial_state="*fp32",
                 initial_state_indices="*i64", stride_init_state="i64", cu_seqlens="*i64", chunk_offsets="*i64",
                 flags="*i32", T="i32")
    fh = build(S.fwd_h_kernel, sig_h, dict(H=8, Hg=4, K=128, V=128, BT=64, BV=32, USE_G=True, USE_INITIAL_STATE=True,
                                           INPLACE_UPDATE=True, IS_VARLEN=varlen, FLAGS=True, PDL=True, LAG=lag,
                                           FSTRIDE=32, RELEASE_PTX=release),
               num_warps=4, num_stages=2)
    sig_o = dict(q="*bf16", k="*bf16", v="*bf16", h="*bf16", o="*bf16", g="*fp32", cu_seqlens="*i64",
                 chunk_indices="*i64", flags="*i32", scale="fp32", T="i32")
    fo = build(S.fwd_o_kernel, sig_o, dict(H=8, Hg=4, K=128, V=128, BT=64, BK=128, BV=64, BV_H=32, USE_G=True,
                                           IS_VARLEN=varlen, FLAGS=True, PDL=True, FSTRIDE=32, COUNT=128,
                                           SLEEP_PTX=SLEEP),
               num_warps=4, num_stages=2, launch_pdl=True)
    # one release per step (lag: chunk t's in step t+1, the last one's after the loop); per-thread releases keep
    # the loop's cp.async prefetches, the CTA barrier of the other form removes them
    assert fh["triggers"] == 1 and fh["waits"] == 0 and fh["stack"] == 0, fh
    assert fh["releases"] == (0 if release else 1 + lag) and fh["reds"] == (1 + lag if release else 0), fh
    assert (fh["cp_async"] > 0) == bool(release), fh
    assert fo["launch_pdl"] and fo["waits"] == 1 and fo["acquires"] >= 2 and fo["sleeps"] == 2, fo
    assert fo["stack"] == 0, fo
for bv, (warps, stages) in S.TUNED_LAUNCH.items():  # the tuned launches, without flags: no spills
    fh = build(S.fwd_h_kernel, sig_h, dict(H=8, Hg=4, K=128, V=128, BT=64, BV=bv, USE_G=True, USE_INITIAL_STATE=True,
                                           INPLACE_UPDATE=True, IS_VARLEN=True, FLAGS=False, PDL=False, LAG=0,
                                           FSTRIDE=1, RELEASE_PTX=""),
               num_warps=warps, num_stages=stages)
    assert fh["stack"] == 0 and fh["releases"] == fh["reds"] == 0 and fh["cp_async"] > 0, (bv, fh)
print("ok")
"""


@pytest.mark.skipif(HAS_CUDA, reason="on a GPU the kernels run compiled")
def test_state_kernels_compile_for_sm90():
    """Both copies built for an H100 (sm_90) with the flags and the programmatic-dependent launch, under both
    release forms (per thread; a CTA barrier and one exchange), right after the stores and a step later: the state
    kernel triggers its dependent once, releases one flag per step and keeps its cp.async prefetches only in the
    per-thread form; the output kernel is launched as a dependent, acquires its two flags (polling with a sleep)
    and ends with griddepcontrol.wait."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _COMPILE_SM90], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.parametrize("signal", [None, dict(release="thread", lag=1, stride=32), dict(release="cta")],
                         ids=["default", "thread-lag-spread", "cta"])
@pytest.mark.parametrize("shape", [(8192, 8, 4, None), (4096, 8, 4, [0, 1, 700, 2000, 4096])],
                         ids=["T8192-H8", "varlen"])
def test_state_and_output_at_once_on_gpu(shape, signal):
    """Compiled (bf16, K = V = 128): the two kernels side by side give SGLang's h, v_new, o and final state bit for
    bit, eagerly and replayed twice from a CUDA graph (the flags go back to 0 each time), under the default signal
    and two other forms (releases a step later, flags 128 B apart; one release per CTA after a barrier)."""
    from sglang_trinv.ops import gdn_state

    T, H, Hg, cu = shape
    x, (h, v_new, o, state) = _stages(T, H, Hg, 128, 128, cu, dtype=torch.bfloat16)
    s = x["h0"].clone()
    run = lambda: gdn_state.gdn_fwd_h_o(x["q"], x["k"], x["w"], x["u"], x["g"], 128 ** -0.5, s, x["idx"],  # noqa
                                        cu_seqlens=x["cu"], chunk_indices=x["ci"], signal=signal)
    h2, v_new2, o2 = run()
    assert torch.equal(h2, h) and torch.equal(v_new2, v_new) and torch.equal(o2, o) and torch.equal(s, state)
    assert not gdn_state._FLAGS[x["k"].device].any()
    graph = torch.cuda.CUDAGraph()
    s.copy_(x["h0"])
    run()  # (warm-up outside the capture)
    with torch.cuda.graph(graph):
        out = run()
    for _ in range(2):
        s.copy_(x["h0"])
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out[0], h) and torch.equal(out[2], o) and torch.equal(s, state)
    assert not gdn_state._FLAGS[x["k"].device].any()


@pytest.mark.gpu
@pytest.mark.parametrize("shape,bv", [((8192, 8, 4, None), 16), ((4096, 8, 4, [0, 1, 700, 2000, 4096]), 32),
                                      ((4096, 32, 16, [0, 1, 700, 2000, 4096]), 64)],
                         ids=["T8192-H8-BV16", "varlen-BV32", "varlen-H32-BV64"])
def test_tuned_state_launch_on_gpu(shape, bv):
    """Compiled (bf16, K = V = 128): the state kernel at the tuned launch constants (BV=16 for one sequence at 8
    heads; BV=32 for 4 sequences; BV=64 for 4 short sequences at 32 heads) and the output stage give SGLang's h,
    v_new, o and final state bit for bit."""
    from sglang_trinv.ops import gdn_state

    T, H, Hg, cu = shape
    assert gdn_state.tuned_launch(1 if cu is None else len(cu) - 1, H, 128, torch.device("cuda"), tokens=T)[0] == bv
    x, (h, v_new, o, state) = _stages(T, H, Hg, 128, 128, cu, dtype=torch.bfloat16)
    s = x["h0"].clone()
    h2, v_new2, o2 = gdn_state.gdn_fwd_h_o(x["q"], x["k"], x["w"], x["u"], x["g"], 128 ** -0.5, s, x["idx"],
                                           cu_seqlens=x["cu"], chunk_indices=x["ci"], overlap=False, launch="tuned")
    assert torch.equal(h2, h) and torch.equal(v_new2, v_new) and torch.equal(o2, o) and torch.equal(s, state)
