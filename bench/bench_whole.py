"""Whole SGLang ``chunk_gated_delta_rule_fwd`` (bf16, K=V=128), stock vs the plugin, every shape of issue 3:
T ∈ {4096, 8192, 32768}, (H, Hg) ∈ {(32, 16), (8, 4)}, one sequence and a varlen batch of 8. Each shape:
stock, blockdoubling with the fused pipeline (gate cumsum in our kernel, A not written), blockdoubling
swapping only the intra kernel, column_sweep (fused pipeline); the output's and final state's max-rel
difference to stock beside each time. Writes DIR/whole.json and DIR/whole.md.

    python3 bench/bench_whole.py DIR [--smoke]
"""
import datetime
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SMOKE = "--smoke" in sys.argv
if SMOKE:  # the interpreter must be on before Triton (and any kernel) is imported
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()
import torch  # noqa: E402
import triton  # noqa: E402

from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.benchmarks import kernels as bk  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
if SMOKE:
    bk.DEV = "cpu"
    bk.K_DIM = 16
    shapes = [(150, 4, 2, 1), (150, 4, 2, 3)]
else:
    shapes = [(T, H, Hg, n) for T in (8192, 32768, 4096) for H, Hg in ((32, 16), (8, 4)) for n in (1, 8)]
import sglang  # noqa: E402

meta = dict(gpu="cpu (interpreter smoke run)" if SMOKE else torch.cuda.get_device_name(),
            date=datetime.datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
            triton=triton.__version__, sglang=sglang.__version__, fla=None)
rows = []
for T, H, Hg, n in shapes:
    print(f"T={T} H={H}/{Hg} seqs={n}", flush=True)
    inp = bk.make_inputs(T, H, Hg, 128 if not SMOKE else 16, 128 if not SMOKE else 16, n, 0)
    bk.run_whole(inp, dict(T=T, H=H, Hg=Hg, nseq=n), rows, False)
    common.save_results(out, "whole", meta, rows)
    del inp
    if not SMOKE:
        torch.cuda.empty_cache()
common.save_results(out, "whole", meta, rows, bk.to_markdown(meta, rows))
print(bk.to_markdown(meta, rows))
