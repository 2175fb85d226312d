"""Compile the GDN kernel for sm_90 on any machine (no GPU: Triton's bundled ptxas) and print each
configuration's registers, spills and stack from ``cuobjdump -res-usage``. Registers per 1-warp program bound
how many programs an SM keeps resident (65536 registers per SM, at most 32 blocks).

    python -m sglang_trinv.benchmarks.resources
"""
import os
import re
import subprocess
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # a real compile: run in a process without the interpreter
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from sglang_trinv import ops  # noqa: E402
from sglang_trinv.ops import gdn_intra  # noqa: E402

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_gdn(method="blockdoubling", precision=None, fused=True, tuning=None, H=32, Hg=16, K=128, V=128):
    fn = gdn_intra.gdn_intra_kernel
    diag, whole, dp, mp = ops._method_codes(method, precision, fused)
    tu = tuning or (ops.DEFAULT_TUNING_FUSED if fused else ops.DEFAULT_TUNING)
    sig = {n: "*bf16" for n in ("k", "v", "beta", "Ai", "w", "u")}
    sig.update({"g": "*fp32", "g_out": "*fp32", "A_in": "*fp32", "cu_seqlens": "*i64", "chunk_indices": "*i64", "T": "i32"})
    const = dict(H=H, Hg=Hg, K=K, V=V, BT=64, BC=16, BK=tu.BK, BV=tu.BV, GROUP=tu.group, DIAG=diag, WHOLE=whole,
                 DIAG_PREC=dp, MERGE_PREC=mp, USE_G=True, IS_VARLEN=False, STORE_A=True, FUSE_WU=fused,
                 FROM_A=False, FOLD_SCALE=tu.fold_scale and fused, G_CUMSUM=False)
    sig.update({n: "constexpr" for n in const})
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(n),): v for n, v in const.items()})
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": tu.num_warps, "num_stages": tu.num_stages})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(c.asm["cubin"])
        f.flush()
        out = subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True, text=True).stdout
    reg = int(re.search(r"REG:(\d+)", out).group(1))
    stack = int(re.search(r"STACK:(\d+)", out).group(1))
    shared = int(re.search(r"SHARED:(\d+)", out).group(1))
    return dict(regs=reg, stack=stack, shared=shared,
                resident_programs=min(32, 65536 // (max(reg, 1) * 32 * tu.num_warps)))


if __name__ == "__main__":
    rows = [
        ("inverse only, blockdoubling bf16x3/tf32", dict(fused=False)),
        ("inverse only, forward_substitution", dict(method="forward_substitution", fused=False)),
        ("fused, blockdoubling bf16x3, BV=32 st=3 (default)", dict()),
        ("fused, blockdoubling bf16x3, BV=64 st=2", dict(tuning=ops.Tuning(BV=64, num_stages=2))),
        ("fused, blockdoubling bf16x3, BV=16 st=3", dict(tuning=ops.Tuning(BV=16, num_stages=3))),
        ("fused, blockdoubling bf16x3/tf32, BV=32 st=3", dict(precision="bf16x3/tf32")),
    ]
    for name, kw in rows:
        print(f"{name:50s} {compile_gdn(**kw)}", flush=True)
