"""bench/device_server.py (the one-shot GPU driver of issue 7) on CPU, with the stand-in server of
tests/test_bench_prefill.py in place of ``sglang.launch_server``.

Runs the ``eager`` phase for real (two stand-in servers side by side, log proofs, long-prompt log-probs
against the fp32 transformers reference of the shipped model, greedy continuations) and the ``prefill``
phase's command; the ``sglang-trinv eval`` / ``bench prefill`` commands it would run are captured and parsed by
those commands' own argument parsers instead of being run (each is tested on its own; a full CPU run of
every phase: ``python bench/device_server.py --launch-module tests.test_bench_prefill …``, see bench/SERVER.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "evals" / "models" / "qwen3-next-tiny-stdlib"
pytestmark = pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="shipped model missing")


def _driver():
    spec = importlib.util.spec_from_file_location("device_server", ROOT / "bench" / "device_server.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _parse_cli(cmd: list[str]) -> argparse.Namespace:
    """Parse a captured ``python -m sglang_trinv.cli SUB …`` command with that subcommand's real parser."""
    i = cmd.index("sglang_trinv.cli")
    sub, rest = cmd[i + 1], cmd[i + 2:]
    if sub == "eval":
        from sglang_trinv import evals

        p = argparse.ArgumentParser()
        evals.add_arguments(p)
        return p.parse_args(rest)
    assert sub == "bench" and rest[0] == "prefill"
    from sglang_trinv.benchmarks import prefill

    p = argparse.ArgumentParser()
    prefill.add_arguments(p)
    return p.parse_args(rest[1:])


def test_driver_eager_phase_and_prefill_command(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    ds = _driver()
    captured = []

    def fake_sh(cmd, timeout, env=None, cwd=None):
        captured.append((cmd, env))
        return {"cmd": " ".join(cmd), "rc": 0, "seconds": 0.0, "tail": ""}

    monkeypatch.setattr(ds, "sh", fake_sh)
    out = tmp_path / "run"
    rc = ds.main(["--out", str(out), "--phases", "eager,prefill,tp2,evallaunch", "--launch-module", "tests.test_bench_prefill",
                  "--min-scale", "0", "--long-prompt-tokens", "130", "--greedy-tokens", "2",
                  "--greedy-prompt-tokens", "64", "--tiny-lengths", "64", "--tiny-batches", "1"])
    s = json.loads((out / "summary.json").read_text())
    md = (out / "SUMMARY.md").read_text()
    assert rc == 0, md
    e = s["phases"]["eager"]
    assert not e["failures"] and not e["errors"]
    stock, ours = e["servers"]["stock"], e["servers"]["blockdoubling"]
    assert "--cuda-graph-backend-decode disabled" in ours["command"] and "--attention-backend triton" in ours["command"]
    assert stock["log_check"]["served_lines"] == 0 and ours["log_check"]["served_methods"] == ["blockdoubling"]
    assert stock["exit_code"] is not None and ours["exit_code"] is not None
    assert any("first GDN chunk prefill served by blockdoubling" in ln for ln in ours["log_lines"])
    lp = e["logprobs_eager"]
    assert lp["tokens"] == 129 and lp["verdict"] == "PASS" and lp["top1_agree"] == 1.0
    assert lp["mean_abs_dlogp"] < 1e-4  # fp32 under the interpreter: stock and ours agree to round-off
    assert lp["ref_mean_abs_stock"] > 0 and "ref_mean_abs_method" in lp  # the fp32 reference ran
    assert e["greedy_eager"]["identical"]
    assert "tp2" in s["skipped"] and "--phases tp2" in md  # no 2 GPUs here
    assert "## eager — ok" in md and "PASS" in md

    cmds = {c[c.index("sglang_trinv.cli") + 1] + ("-" + c[c.index("sglang_trinv.cli") + 2] if "bench" in c else "")
            + ("-launch" if "--launch" in c else ""): c for c, _ in captured}
    ev = _parse_cli(cmds["eval"])
    assert [u.split("=")[0] for u in ev.server_url] == ["stock", "blockdoubling"] and Path(ev.model) == SHIPPED
    evl = _parse_cli(cmds["eval-launch"])  # evallaunch phase: the eval starts and stops the servers itself
    assert evl.launch and not evl.server_url and evl.methods == "stock,blockdoubling" and Path(evl.model) == SHIPPED
    assert "--cuda-graph-backend-decode disabled" in evl.server_args and evl.launch_module == "tests.test_bench_prefill"
    assert "evallaunch" in s["phases"] and "sglang-trinv eval --launch" in md
    pf = [_parse_cli(c) for c, _ in captured if "prefill" in c]
    tiny = next(p for p in pf if p.server_url)
    launch = next(p for p in pf if not p.server_url)
    assert tiny.lengths == "64" and Path(tiny.model_path) == SHIPPED
    cfg = json.loads((Path(launch.model_path) / "config.json").read_text())
    assert cfg["linear_key_head_dim"] == 128 and cfg["linear_num_value_heads"] == 32 and cfg["model_type"] == "qwen3_next"
    assert launch.methods == "stock,blockdoubling" and "--load-format dummy" in launch.server_args
    assert "--linear-attn-prefill-backend triton" in launch.server_args
    assert launch.launch_module == "tests.test_bench_prefill"


def test_driver_refuses_unknown_method_and_phase(tmp_path):
    ds = _driver()
    with pytest.raises(SystemExit, match="unknown method"):
        ds.main(["--out", str(tmp_path), "--method", "nope"])
    with pytest.raises(SystemExit, match="unknown phases"):
        ds.main(["--out", str(tmp_path), "--phases", "eager,warp"])


def test_shell_scripts_parse():
    for f in ("device_server.sh", "prepare_device_server.sh", "device/build_site.sh", "device/serve.sh"):
        r = subprocess.run(["bash", "-n", str(ROOT / "bench" / f)], capture_output=True, text=True)
        assert r.returncode == 0, (f, r.stderr)
