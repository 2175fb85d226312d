"""The kernel benchmark script runs end to end (CPU: interpreter, tiny shapes) and records real errors."""

import json

import pytest

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


def test_bench_layer_rows_cover_fused_pipeline_and_intra_only(tmp_path):
    """`sglang-trinv bench layer`: SGLang's chunk_gated_delta_rule_fwd stock (and stock with only its output
    stage's memset of o removed), through the fused pipeline (without that memset, and with it kept; with SGLang's
    own state kernel instead of the tuned launch) and with only
    the intra kernel swapped — each timed and compared with stock and with the fp64 twin of the whole
    forward (fp32 under the interpreter); ``--precision`` adds blockdoubling's fused pipeline at that precision."""
    import os

    from sglang_trinv.plugin._state import ENV_FUSE_PIPELINE

    with pytest.raises(SystemExit):  # a precision the kernels do not know is refused before any work
        main(["bench", "layer", "--smoke", "--precision", "bf16x9", "--out", str(tmp_path)])
    assert main(["bench", "layer", "--smoke", "--precision", "bf16x3", "--out", str(tmp_path)]) == 0
    assert ENV_FUSE_PIPELINE not in os.environ  # restored
    rows = json.loads((tmp_path / "whole.json").read_text())["rows"]
    assert [(r["method"], r["pipeline"], r["o_memset"]) for r in rows] == [
        ("stock", "stock", True), ("stock", "o not memset", False), ("blockdoubling", "fused pipeline", False),
        ("blockdoubling", "intra only", True), ("blockdoubling", "fused pipeline, o memset kept", True),
        ("blockdoubling", "fused pipeline, SGLang's state launch", False),
        ("column_sweep", "fused pipeline", False), ("blockdoubling", "fused pipeline", False)]
    assert [r["state_launch"] for r in rows] == ["sglang"] * 2 + ["tuned"] + ["sglang"] * 3 + ["tuned"] * 2
    assert rows[-1]["precision"].startswith("bf16x3,") and not rows[-1]["auto_pick"]
    assert rows[1]["o_rel_vs_stock"] == 0 and rows[1]["state_rel_vs_stock"] == 0  # the same output kernel
    for r in rows:
        assert r["us"] > 0 and r["o_rel_vs_stock"] < 1e-4 and r["state_rel_vs_stock"] < 1e-4, r
        assert r["o_rel_vs_fp64"] < 1e-4 and r["state_rel_vs_fp64"] < 1e-4, r  # vs the fp64 twin
    assert "Whole chunk_gated_delta_rule_fwd" in (tmp_path / "whole.md").read_text()
    assert (tmp_path / "whole.png").stat().st_size > 1000


def test_bench_kda_smoke_chosen_shapes(tmp_path):
    """`sglang-trinv bench kda --smoke --shapes …`: stock and ours on a safe_gate varlen shape, errors vs fp64,
    and the whole chunk_kda_fwd through the plugin (interpreter, fp32)."""
    assert main(["bench", "kda", "--smoke", "--shapes", "40:1:2:1", "--methods", "blockdoubling,column_sweep",
                 "--whole-methods", "blockdoubling", "--no-families", "--no-one-kernel", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "kda.json").read_text())["rows"]
    intra = {r["method"]: r for r in rows if r["kind"] == "intra"}
    assert set(intra) == {"stock", "blockdoubling", "column_sweep"}
    assert all(r["safe_gate"] and r["nseq"] == 2 and r["us"] > 0 for r in intra.values())
    ours, stock = intra["blockdoubling"], intra["stock"]
    # default Gram operands rounded as SGLang rounds them (bf16 off-diagonal): the same error as stock;
    # with fp32 Gram products the inversion's own error is fp32-small
    assert ours["max_rel"] <= 1.1 * stock["max_rel"] + 1e-6 and ours["exact_gram_max_rel"] < 1e-4, (ours, stock)
    assert ours["w_max_rel"] <= 1.1 * stock["w_max_rel"] + 1e-6 and ours["u_max_rel"] < 1e-2
    whole = {r["method"]: r for r in rows if r["kind"] == "kda_fwd"}
    assert set(whole) == {"stock", "blockdoubling"} and whole["blockdoubling"]["o_rel_vs_stock"] < 1e-4
    # blockdoubling twice: the plugin's tuned launch of SGLang's state kernel, and SGLang's own (the same values)
    ours_whole = [r for r in rows if r["kind"] == "kda_fwd" and r["method"] == "blockdoubling"]
    assert sorted(r["state_launch"] for r in ours_whole) == ["sglang", "tuned"]
    assert abs(ours_whole[0]["o_rel_vs_stock"] - ours_whole[1]["o_rel_vs_stock"]) < 1e-6
    # vs the fp64 whole-forward twin (reference.kda.chunk_fwd): bf16-rounded Gram operands (SGLang's, and ours by
    # default) set the level
    assert all(0 < r["o_rel_vs_fp64"] < 2e-2 and 0 < r["state_rel_vs_fp64"] < 2e-2 for r in whole.values())
    assert (tmp_path / "kda.png").stat().st_size > 1000
    # no GPU: no CUDA-graph time, shown as such in the whole-forward table
    assert all(r["graph_us"] is None for r in ours_whole)
    md = (tmp_path / "kda.md").read_text()
    assert "graph µs" in md and md.count("| — | — |") == len(whole) + 1
    with pytest.raises(SystemExit):
        main(["bench", "kda", "--smoke", "--shapes", "40:1", "--out", str(tmp_path)])


def test_bench_pipeline_tuning_smoke(tmp_path):
    """bench/bench_pipeline_tuning.py end to end on CPU: sweep rows with errors vs fp64, the whole forward at
    the default and at the chosen configuration (restored afterwards), markdown + JSON."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "bench_pipeline_tuning.py"), str(tmp_path), "--smoke"],
                       capture_output=True, text=True, timeout=900, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((tmp_path / "pipeline_tuning.json").read_text())
    sweep = [x for x in data["rows"] if "kind" not in x]
    assert sweep[0]["variant"] == "stock cumsum + intra" and len(sweep) == 3
    assert all(x["us"] > 0 and x["w"] < 1e-4 and x["u"] < 1e-4 and x["g_vs_stock"] < 1e-5 for x in sweep[1:])
    whole = [x for x in data["rows"] if x.get("kind") == "gdn_fwd"]
    chosen = data["meta"]["best"]
    assert any(chosen in x["variant"] for x in whole) and all(x["o_rel_vs_fp64"] < 1e-4 for x in whole)
    assert "Best with w/u errors" in (tmp_path / "pipeline_tuning.md").read_text()


def test_ab_tuning_smoke(tmp_path):
    """bench/ab_tuning.py end to end on CPU: stock, the fused default with AB_TUNING's fields ("on", here two fields
    of two types, and AB_ENV's environment for its whole forwards) and without ("off") for the intra kernel with A, the pipeline launch and the whole forward both
    ways (fused pipeline, intra only), errors vs fp64, the table and JSON."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, AB_TUNING="l2_warm=32,pdl=1", AB_ENV="SGLANG_TRINV_OVERLAP_O=1")
    r = subprocess.run([sys.executable, str(root / "bench" / "ab_tuning.py"), str(tmp_path), "--smoke"],
                       capture_output=True, text=True, timeout=900, cwd=root, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((tmp_path / "ab_tuning.json").read_text())
    assert data["change"] == {"l2_warm": 32, "pdl": True} and data["env"] == {"SGLANG_TRINV_OVERLAP_O": "1"}
    assert data["plugin_counts"]["gdn_overlap"] >= 1  # the "on" fused-pipeline forwards (timed and checked)
    rows = data["rows"]
    forms = {(x["measure"], x["form"]) for x in rows}
    assert {("intra with A", f) for f in ("stock", "on", "off")} <= forms
    assert {("whole forward", f) for f in ("stock", "on", "off")} <= forms
    assert {("whole forward, intra kernel only", "on"), ("pipeline launch (cumsum in, no A)", "off")} <= forms
    assert all(x["us"] > 0 and x["warm_rows"] > 0 and x["w"] < 1e-4 and x["u"] < 1e-4 and x["o"] < 1e-4
               for x in rows)
    assert "| on vs off |" in r.stdout and "l2_warm=32, pdl=True, env SGLANG_TRINV_OVERLAP_O=1" in r.stdout
    bad = subprocess.run([sys.executable, str(root / "bench" / "ab_tuning.py"), str(tmp_path), "--smoke"],
                         capture_output=True, text=True, timeout=300, cwd=root, env=dict(env, AB_TUNING="nope=1"))
    assert bad.returncode != 0 and "no field 'nope'" in bad.stderr


def test_sweep_fwd_o_smoke(tmp_path):
    """bench/sweep_fwd_o.py on CPU: stock's launch and other launch constants of the output stage, each checked
    against stock's o (bitwise flag, largest difference), then the whole forward with the fastest bitwise form."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "sweep_fwd_o.py"), str(tmp_path), "--smoke"],
                       capture_output=True, text=True, timeout=900, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((tmp_path / "sweep_fwd_o.json").read_text())
    rows = data["rows"]
    assert sum(x["stock"] for x in rows) == 2 and all(x["us"] > 0 and x["maxdiff"] < 1e-5 for x in rows)
    assert data["best"] and {x["output_launch"] for x in data["whole"]} >= {"stock launch"}
    assert all(x["o_rel_vs_fp64"] < 1e-4 for x in data["whole"])
    assert "| fastest bitwise launch |" in r.stdout


def test_profile_kda_host_smoke(tmp_path):
    """bench/profile_kda_host.py on CPU (own process: it patches and unpatches SGLang): the chosen paths of the whole
    chunk_kda_fwd each timed and profiled, the report written."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "profile_kda_host.py"), str(tmp_path), "64", "1", "1",
                        "tuned,stock", "--smoke"], capture_output=True, text=True, timeout=900, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    heads = [line for line in r.stdout.splitlines() if line.startswith("## ")]
    assert [h.split(":")[0] for h in heads] == ["## plugin, tuned state launch", "## stock"], r.stdout[-2000:]
    report = (tmp_path / "profile_kda_host.txt").read_text()
    assert report.count("function calls") == 2 and "chunk_kda_fwd" in report


def test_profile_kda_host_parts_smoke(tmp_path):
    """bench/profile_kda_host.py --parts on CPU: one chunk_kda_fwd's stage calls recorded as stock and as the plugin
    binds them, each replayed and timed with the whole forwards and the intra call's pieces; table and JSON written."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "profile_kda_host.py"), str(tmp_path), "64", "1", "1",
                        "--parts", "--rounds", "1", "--smoke"], capture_output=True, text=True, timeout=900, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "kda_host_parts.json").read_text())["rows"]
    calls = [x["call"] for x in rows]
    for who in ("stock", "plugin"):  # the four stages of chunk_kda_fwd, recorded through each binding
        for stage in ("chunk_local_cumsum", "chunk_kda_fwd_intra", "chunk_gated_delta_rule_fwd_h",
                      "chunk_gla_fwd_o_gk"):
            assert f"{who}: {stage}" in calls, calls
    assert "plugin intra: its Python alone (both launches stubbed)" in calls
    assert all(x["enqueue_us"] > 0 and len(x["rounds"]) == 1 for x in rows)
    assert (tmp_path / "kda_host_parts.md").read_text().count("\n| ") == len(rows) + 1


def test_proto_onchip_intra_compiles_for_sm90():
    """bench/proto_onchip_intra.py (NOTES item 0 (d), untimed prototype; Gluon has no interpreter, so this compile is
    its CPU check): one-warp CTAs with v's tile TMA-loaded into shared memory first (four [64, 32] boxes), 8 CTAs
    per SM by registers and shared memory (≤ 28.5 KiB each), as the Triton program's wave."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton.experimental.gluon")
    root = Path(__file__).resolve().parents[1]
    code = ("import importlib.util, json, sys; sys.argv = ['x']\n"
            "spec = importlib.util.spec_from_file_location('p', %r)\n"
            "p = importlib.util.module_from_spec(spec); spec.loader.exec_module(p)\n"
            "print('report', json.dumps(p.compile_report()))" % str(root / "bench" / "proto_onchip_intra.py"))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout.split("report", 1)[1])
    assert rep["utmaldg"] == 4 and rep["hmma"] > 0
    assert rep["smem"] <= 28.5 * 1024 and rep["ctas_per_sm"] == 8, rep
    assert rep["regs"] <= 255 and rep["stack"] <= 256, rep  # s28, Triton 3.6: 255 + 88 B (the spills to cut)


def test_bench_stages_smoke(tmp_path):
    """`sglang-trinv bench stages --smoke`: every stock stage and our pipeline kernel timed per shape (fixed and
    varlen), stage outputs checked against fp64, Amdahl columns consistent (expected ≤ bound)."""
    assert main(["bench", "stages", "--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "stages.json").read_text())["rows"]
    assert [x["nseq"] for x in rows] == [1, 3]
    for x in rows:
        assert set(x["us"]) == {"cumsum", "intra", "fwd_h", "fwd_o", "ours"} and min(x["us"].values()) > 0
        assert max(x["w_stock"], x["u_stock"], x["w_ours"], x["u_ours"], x["o_stock"]) < 1e-4
        assert 1 < x["bound"] and x["expected"] < x["bound"]
    assert "| T | H/Hg |" in (tmp_path / "stages.md").read_text()


def test_bench_host_smoke(tmp_path):
    """`python3 bench/bench_host.py --smoke` (a checkout wrapper, own process: it patches and unpatches SGLang):
    every path (stock/ours intra, pipeline kernel, whole forward stock and through the plugin) runs per shape and
    reports its enqueue time; then at a chosen shape and head dim (--shape, --head-dim: a small model's layer)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "bench_host.py"), "--out", str(tmp_path), "--smoke",
                        "--rounds", "1"], capture_output=True, text=True, timeout=900, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "host.json").read_text())["rows"]
    assert len(rows) == 12 and len({x["path"] for x in rows}) == 6 and all(x["enqueue"] > 0 for x in rows)
    r = subprocess.run([sys.executable, str(root / "bench" / "bench_host.py"), "--out", str(tmp_path / "one"),
                        "--smoke", "--shape", "70,2,1,2", "--head-dim", "32"],
                       capture_output=True, text=True, timeout=900, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "one" / "host.json").read_text())["rows"]
    assert len(rows) == 6 and all((x["T"], x["H"], x["Hg"], x["nseq"]) == (70, 2, 1, 2) for x in rows)
    assert "K=V=32" in (tmp_path / "one" / "host.md").read_text()
    # every path timed once per round (default 3), the median reported
    assert all(len(x["enqueue_rounds"]) == 3 and x["enqueue"] == sorted(x["enqueue_rounds"])[1] for x in rows)
    # --kda: the whole chunk_kda_fwd, stock / plugin / plugin with SGLang's state launch, two rounds
    r = subprocess.run([sys.executable, str(root / "bench" / "bench_host.py"), "--out", str(tmp_path / "kda"),
                        "--smoke", "--kda", "--shape", "70,1,1,2", "--rounds", "2"],
                       capture_output=True, text=True, timeout=900, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "kda" / "host.json").read_text())["rows"]
    assert [x["path"] for x in rows] == ["kda whole: stock", "kda whole: plugin",
                                         "kda whole: plugin, SGLang's state launch"]
    assert all(len(x["enqueue_rounds"]) == 2 and x["enqueue"] > 0 for x in rows)
    assert "| range |" in (tmp_path / "kda" / "host.md").read_text()


def test_bench_roofline_smoke(tmp_path):
    """`sglang-trinv bench roofline --smoke`: the traffic-only kernel writes exactly what it copies (the run raises
    otherwise) under every launch configuration; stock and ours are timed beside it with errors vs fp64."""
    assert main(["bench", "roofline", "--smoke", "--shape", "150,4,2,3", "--out", str(tmp_path)]) == 0
    (r,) = json.loads((tmp_path / "roofline.json").read_text())["rows"]
    assert r["nseq"] == 3 and len([k for k in r["us"] if " hpp" in k]) == 8
    assert r["us"]["traffic intra"] == min(v for k, v in r["us"].items() if k.startswith("traffic intra hpp"))
    assert r["bound intra"] == r["us"]["stock intra"] / r["us"]["traffic intra"] > 0
    errs = {k: [float(x) for x in e.split("/")] for k, e in r["err"].items()}
    assert sum(map(len, errs.values())) == 8  # w/u/A of both intra calls, A of both inverses
    # fp32 under the interpreter; the KKᵀ + inverse default rounds its merge operands to tf32 (2^-11) on purpose
    assert max(errs.pop("ours kkt_inv")) < 1e-3 and max(max(e) for e in errs.values()) < 1e-4
    assert "## Intra" in (tmp_path / "roofline.md").read_text()


def test_traffic_kernel_gqa_and_partial_chunk():
    """The roofline's traffic kernel on a partial last chunk with GQA (interpreter): w = k per head, u = v,
    A = even + odd key columns, rows past T untouched."""
    import torch

    from sglang_trinv.benchmarks import roofline

    T, H, Hg, K = 70, 4, 2, 16
    k, v = torch.randn(1, T, Hg, K), torch.randn(1, T, H, K)
    w, u, A = torch.zeros(1, T, H, K), torch.zeros(1, T, H, K), torch.zeros(1, T, H, K // 2)
    roofline.traffic(k, v, w, u, A, hpp=2, num_warps=4)
    we, ue, Ae = roofline.traffic_expected(k, v)
    assert torch.equal(w, we) and torch.equal(u, ue) and torch.allclose(A, Ae)
    assert torch.equal(w[0, :, 1], k[0, :, 0]) and torch.equal(w[0, :, 2], k[0, :, 1])


def test_stream_diagnostic_patches_apply_and_keep_values(tmp_path):
    """bench/diag_stream_reads.py times patched copies of the Triton template: every patch must still find its text
    (each edit once, or as often as it says) after template changes; the patches meant to move bytes or cache
    policies, not values (L2 policies, prefetches — off under the interpreter —, v loaded before the inversion, the
    L2 warm-up programs left idle or with more loads in flight; not the applypriority demotions or the warm-up's
    sleep: inline PTX) give the template's bits under the interpreter (tiny fused launch, A written and not)."""
    import dataclasses
    import importlib.util
    import sys
    from pathlib import Path

    import torch

    from sglang_trinv import ops

    path = Path(__file__).resolve().parents[1] / "bench" / "diag_stream_reads.py"
    spec = importlib.util.spec_from_file_location("diag_stream_reads", path)
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)
    torch.manual_seed(0)
    T, H, Hg, K = 128, 2, 1, 32
    k = torch.nn.functional.normalize(torch.randn(1, T, Hg, K), dim=-1)
    v = torch.randn(1, T, H, K)
    g = torch.nn.functional.logsigmoid(torch.randn(1, T, H)).reshape(1, 2, 64, H).cumsum(2).reshape(1, T, H)
    beta = torch.rand(1, T, H)
    # (the demotions are inline PTX, which the interpreter cannot run: they only have to apply)
    same = [n for n in diag.VARIANTS if n.startswith(("stores evict", "pf ", "v loaded early", "l2 warm"))
            and "demote" not in n and "late" not in n]
    assert len(same) >= 10 and {"l2 warm 32 idle", "l2 warm 32 wide"} <= set(same)
    for name, (edits, fields) in diag.VARIANTS.items():
        if not edits:
            continue
        mod = diag.patched_module(name, edits, str(tmp_path))
        if name not in same:
            continue
        tuning = dataclasses.replace(ops.DEFAULT_TUNING_FUSED, **fields)
        for store_A in (True, False):
            ref = ops.gdn_fwd_intra(k, v, g, beta, tuning=tuning, store_A=store_A)
            saved, ops._k = ops._k, mod
            try:
                out = ops.gdn_fwd_intra(k, v, g, beta, tuning=tuning, store_A=store_A)
            finally:
                ops._k = saved
            for x, y in zip(out, ref, strict=True):
                assert (x is None and y is None) or torch.equal(x, y), name
        sys.modules.pop(mod.__name__, None)


def test_profile_forward_kernels_smoke(tmp_path):
    """bench/profile_forward_kernels.py on CPU: SGLang's GDN chain (l2norm, then the forward) stock and through the
    plugin, and the intra kernels alone, each with its error vs the fp64 twins (the profile itself needs a GPU)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "profile_forward_kernels.py"), str(tmp_path), "--smoke"],
                       capture_output=True, text=True, timeout=900, cwd=root, env=dict(os.environ, AB_TUNING=""))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "profile_forward_kernels.json").read_text())["summary"]
    forms = {x["form"] for x in summary}
    assert forms == {"stock: chain", "plugin: chain", "stock: intra alone", "plugin: intra with A alone",
                     "plugin: pipeline alone (cumsum in, no A)"}
    assert {(x["T"], x["nseq"]) for x in summary} == {(130, 1), (130, 3)}
    for x in summary:  # fp32 under the interpreter
        errs = [x["o"]] if "chain" in x["form"] else [x["w"], x["u"]]
        assert all(0 <= e < 1e-4 for e in errs), x


def test_bench_kda_graph_smoke(tmp_path):
    """`sglang-trinv bench kda-graph --smoke`: a bucket's padded tables, stock and the plugin (which served the call),
    errors vs fp64 next to each row, nothing written past the batch, the markdown table."""
    rc = main(["bench", "kda-graph", "--smoke", "--cases", "70:1:1+40", "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "kda_graph.json").read_text())["rows"]
    assert [r["path"] for r in rows] == ["stock", "blockdoubling"]
    assert rows[1]["served_by_plugin"] is True and all(r["untouched"] for r in rows)
    assert all(r["max_chunks"] == 72 and r["real_chunks"] == 2 for r in rows)  # min(70, 128) sequences + 2 chunks
    assert all(r["o_err"] < 2e-2 and r["state_err"] < 2e-2 for r in rows), rows  # (bf16 Gram operands, as stock)
    assert rows[1]["o_vs_stock"] < 1e-3
    assert "| 70 | 1 | 1+40 | 2 / 72 |" in (tmp_path / "kda_graph.md").read_text()
    with pytest.raises(SystemExit):
        main(["bench", "kda-graph", "--smoke", "--cases", "70:1", "--out", str(tmp_path)])
