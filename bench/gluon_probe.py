"""Feasibility probe (CPU, no GPU): can one Hopper CTA hold many-register inverter warps beside few-register
streaming warps? Compiles a toy warp-specialized Gluon kernel for sm_90 and prints the register split.

Why: the fused intra kernel hides none of its inversion behind the w/u stream (bench/results/2026-11-27-h200-
overlap): an SM's register file holds 8 one-warp inversion programs at 255 registers *or* enough streaming
warps, never both. Warp specialization with ``setmaxnreg`` is the way out: in one CTA the inverter warps keep
~224+ registers while the warps that stream v/k in and w/u out run on ~56. Triton 3.6 (the device machines'
version) exposes it through Gluon: ``gl.warp_specialize([(default_fn, args), (worker_fn, args)],
worker_num_warps, worker_num_regs)``. This probe is *not* a product kernel: the default partition runs a
stand-in chain of dependent 16×16 tensor-core products (one tile per warp, as the inversion does), the worker
a plain copy; only the compiled resources are read (cuobjdump: launch registers, USETMAXREG values, stack).

    PYTHONPATH=<triton 3.6 dir> python bench/gluon_probe.py

Result on 2026-11-27 (Triton 3.6.0, sm_90): 8 inverter warps + 4 streamer warps at 56 registers launch at 168
registers × 12 warps (one CTA per SM, 64.5K registers) and rebalance to 224–240 for the inverters and 56 for
the streamers; with 4 inverter warps the launch is 255 × 8 warps. (The toy chain spills; the real inversion
fits 168 registers — bench/NOTES.md, register caps.)
"""

import os
import re
import subprocess
import tempfile

os.environ.pop("TRITON_INTERPRET", None)
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.experimental import gluon  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402
from triton.experimental.gluon.language.nvidia.ampere import mma_v2  # noqa: E402

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


@gluon.jit
def _stream(x_ptr, y_ptr, n, NW: gl.constexpr):
    """Worker partition: copy [64, 128] bf16 tiles (stand-in for streaming v/k in and w/u out)."""
    L: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [NW, 1], [1, 0])
    r = gl.arange(0, 64, layout=gl.SliceLayout(1, L))
    c = gl.arange(0, 128, layout=gl.SliceLayout(0, L))
    for t in range(gl.program_id(0), n, gl.num_programs(0)):
        off = t * 64 * 128 + r[:, None] * 128 + c[None, :]
        gl.store(y_ptr + off, gl.load(x_ptr + off))


@gluon.jit
def _invert(a_ptr, o_ptr, n, W: gl.constexpr, STEPS: gl.constexpr):
    """Default partition: W warps, one 16×16 tile each ([W, 16, 16] batched mma_v2), STEPS doubling-like
    steps X ← X − (X·A)·X (a chain of dependent tensor-core products, as in the inversion)."""
    MMA: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[W, 1, 1], instr_shape=[1, 16, 8])
    A_OP: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    B_OP: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=2)
    b = gl.arange(0, W, layout=gl.SliceLayout(1, gl.SliceLayout(2, MMA)))
    i = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, MMA)))
    j = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(1, MMA)))
    off = b[:, None, None] * 256 + i[None, :, None] * 16 + j[None, None, :]
    for t in range(gl.program_id(0), n, gl.num_programs(0)):
        a = gl.load(a_ptr + t * W * 256 + off)
        x = a
        for _ in gl.static_range(STEPS):
            xa = mma_v2(gl.convert_layout(x.to(gl.bfloat16), A_OP), gl.convert_layout(a.to(gl.bfloat16), B_OP),
                        gl.zeros([W, 16, 16], gl.float32, MMA))
            x = x - mma_v2(gl.convert_layout(xa.to(gl.bfloat16), A_OP), gl.convert_layout(x.to(gl.bfloat16), B_OP),
                           gl.zeros([W, 16, 16], gl.float32, MMA))
        gl.store(o_ptr + t * W * 256 + off, x)


@gluon.jit
def ws_probe(x_ptr, y_ptr, a_ptr, o_ptr, n_copy, n_inv, W: gl.constexpr, STEPS: gl.constexpr,
             REGS: gl.constexpr, NS: gl.constexpr):
    gl.warp_specialize([(_invert, (a_ptr, o_ptr, n_inv, W, STEPS)), (_stream, (x_ptr, y_ptr, n_copy, NS))],
                       [NS], [REGS])


def compile_probe(W: int, REGS: int, NS: int = 4, STEPS: int = 8) -> dict:
    sig = {"x_ptr": "*bf16", "y_ptr": "*bf16", "a_ptr": "*fp32", "o_ptr": "*fp32", "n_copy": "i32", "n_inv": "i32"}
    const = dict(W=W, STEPS=STEPS, REGS=REGS, NS=NS)
    sig.update({k: "constexpr" for k in const})
    src = GluonASTSource(fn=ws_probe, signature=sig,
                         constexprs={(ws_probe.arg_names.index(k),): v for k, v in const.items()})
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": W})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(c.asm["cubin"])
        f.flush()
        res = subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([CUOBJDUMP, "-sass", f.name], capture_output=True, text=True).stdout
    return dict(launch_regs=int(re.search(r"REG:(\d+)", res).group(1)), warps=c.metadata.num_warps,
                stack=int(re.search(r"STACK:(\d+)", res).group(1)),
                setmaxnreg=sorted({int(v, 16) for v in re.findall(r"USETMAXREG\.\w+\.CTAPOOL (?:UP0, )?(0x[0-9a-f]+)", sass)}))


if __name__ == "__main__":
    print(f"Triton {triton.__version__}, sm_90")
    for W, REGS in [(8, 56), (8, 64), (4, 56)]:
        print(f"{W} inverter warps + 4 streamer warps at {REGS} registers:", compile_probe(W, REGS), flush=True)
