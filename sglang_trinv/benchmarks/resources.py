"""Compile the GDN kernel for sm_90 on any machine (no GPU: Triton's bundled ptxas) and print each
configuration's registers, spills and stack from ``cuobjdump -res-usage``. Use the device's Triton version
(3.6 on the lent H100/H200 machines: ``pip install --target DIR triton==3.6.0`` and ``PYTHONPATH=DIR``): on
2026-11-27 a Triton 3.8 compile predicted no spills for BK=32 where the device's 3.6 spilled; with 3.6 and
the JIT's 16-byte alignment hints (below) the stack sizes order the variants as ncu's spill counts did. Registers per 1-warp program bound
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


def cubin_usage(cubin: bytes, sass: bool = False) -> dict:
    """Registers, stack and static shared memory per thread/block of a compiled kernel (cuobjdump -res-usage);
    with sass=True also its SASS text."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True, text=True).stdout
        code = subprocess.run([CUOBJDUMP, "-sass", f.name], capture_output=True, text=True).stdout if sass else None
    return dict(regs=int(re.search(r"REG:(\d+)", out).group(1)), stack=int(re.search(r"STACK:(\d+)", out).group(1)),
                shared=int(re.search(r"SHARED:(\d+)", out).group(1)), sass=code)


def compile_gdn(method="blockdoubling", precision=None, fused=True, tuning=None, H=32, Hg=16, K=128, V=128,
                varlen=False, store_A=True, g_cumsum=False, sass=False, warm=0):
    fn = gdn_intra.gdn_intra_kernel
    tu = tuning or (ops.DEFAULT_TUNING_FUSED if fused else ops.DEFAULT_TUNING)
    sig = {n: "*bf16" for n in ("k", "v", "beta", "Ai", "w", "u")}
    table = "*i32" if varlen and tu.chunk_table else "*i64"  # varlen: the int32 chunk table in chunk_indices' place
    sig.update({"g": "*fp32", "g_out": "*fp32", "A_in": "*fp32", "cu_seqlens": "*i64", "chunk_indices": table,
                "T": "i32"})
    # the launch's own constexprs and options (one sequence of whole chunks or varlen, A written or not, gated,
    # cumsum fused or not — the plugin's pipeline: no A, cumsum fused; the row bounds the launch would take)
    const, options = ops._template_constexprs(H, Hg, K, V, 64, method, precision, fused, store_A, False, tu, True,
                                              varlen, g_cumsum, ops._row_bounds(tu, not varlen, 64, False), warm)
    sig.update({n: "constexpr" for n in const})
    # as the JIT specialises a launch: every tensor pointer 16-byte aligned ("D"). Without it Triton neither
    # vectorises the loads nor pipelines them through shared memory, and the registers/spills differ.
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n, t in sig.items() if t.startswith("*")}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(n),): v for n, v in const.items()},
                    attrs=attrs)
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    use = cubin_usage(c.asm["cubin"])
    reg, stack, shared = use["regs"], use["stack"], use["shared"]
    # resident programs per SM: registers (64K per SM) and shared memory (up to 228 KiB per SM, 1 KiB per block
    # reserved by the driver: cuobjdump's SHARED) both bound it
    by_regs = 65536 // (max(reg, 1) * 32 * tu.num_warps)
    by_smem = (228 * 1024) // (c.metadata.shared + max(shared, 1024))
    extra = {}
    if sass:  # static instruction count of the SASS (cuobjdump -sass), for comparing builds
        code = cubin_usage(c.asm["cubin"], sass=True)["sass"]
        extra["sass_instructions"] = len(re.findall(r"^\s+/\*[0-9a-f]{4,}\*/\s+\S", code, flags=re.M))
    return dict(**extra, regs=reg, stack=stack, shared=shared, dyn_shared=c.metadata.shared,
                resident_programs=min(32, by_regs, by_smem),
                l2_prefetches=c.asm["ptx"].count("prefetch.global.L2"),  # Tuning.prefetch_v
                bulk_prefetches=c.asm["ptx"].count("cp.async.bulk.prefetch.L2"),  # Tuning.prefetch_bulk
                touch_loads=c.asm["ptx"].count("ld.volatile.global.L2::256B"),  # Tuning.prefetch_touch
                pdl_waits=c.asm["ptx"].count("griddepcontrol.wait"),  # Tuning.pdl
                launch_pdl=bool(getattr(c.metadata, "launch_pdl", False)),
                # tensor-core products issued before the first prefetch (PTX order): where it sits in the program
                mma_before_prefetch=re.split(r"prefetch\.global\.L2|cp\.async\.bulk\.prefetch|ld\.volatile\.global",
                                             c.asm["ptx"])[0].count("mma.sync"))


if __name__ == "__main__":
    print(f"Triton {triton.__version__} (the lent GPU machines run 3.6: compile with that version)", flush=True)
    T_ = ops.Tuning
    rows = [
        ("inverse only, blockdoubling bf16x3/tf32 (default)", dict(fused=False)),
        ("inverse only, blockdoubling, maxnreg 168", dict(fused=False, tuning=T_(maxnreg=168))),
        ("inverse only, blockdoubling, maxnreg 128", dict(fused=False, tuning=T_(maxnreg=128))),
        ("inverse only, forward_substitution", dict(method="forward_substitution", fused=False)),
        ("fused, blockdoubling bf16x3, BV=32 st=3 (default)", dict()),
        ("fused, blockdoubling bf16x3, maxnreg 200", dict(tuning=T_(BV=32, num_stages=3, maxnreg=200))),
        ("fused, blockdoubling bf16x3, maxnreg 168", dict(tuning=T_(BV=32, num_stages=3, maxnreg=168))),
        ("fused, blockdoubling bf16x3, maxnreg 128", dict(tuning=T_(BV=32, num_stages=3, maxnreg=128))),
        ("fused, blockdoubling bf16x3, BK=32", dict(tuning=T_(BK=32, BV=32, num_stages=3))),
        ("fused, blockdoubling bf16x3/tf32, BV=32 st=3", dict(precision="bf16x3/tf32")),
    ]
    for name, kw in rows:
        print(f"{name:52s} {compile_gdn(**kw)}", flush=True)
