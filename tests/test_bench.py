"""The kernel benchmark script runs end to end (CPU: interpreter, tiny shapes) and records real errors."""

import json

from sglang_trinv.cli import main


def test_bench_kernels_smoke(tmp_path):
    rc = main(["bench", "kernels", "--smoke", "--no-families", "--no-fla", "--no-whole",
               "--methods", "blockdoubling:bf16x3/tf32", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "kernels.json").read_text())
    rows = [r for r in data["rows"] if "us" in r]
    kinds = {(r["kind"], r["method"]) for r in rows}
    assert {("kkt_inv", "stock"), ("kkt_inv", "blockdoubling"), ("intra", "stock"), ("intra", "blockdoubling"),
            ("solve", "blockdoubling")} <= kinds
    for r in rows:  # fp32 under the interpreter: every kernel agrees with the fp64 reference
        if "max_rel" in r:
            assert r["max_rel"] < 1e-4, r
            assert r.get("nonfinite", 0) == 0
        assert r["us"] > 0
    assert "Fused KKᵀ + inverse" in (tmp_path / "kernels.md").read_text()
