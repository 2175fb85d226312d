"""`sglang-trinv stability` end to end (tiny sweeps) and its error metrics."""

import json
import math

import pytest
import torch

from sglang_trinv.cli import main
from sglang_trinv.reference.inverse import exact_inverse
from sglang_trinv.stability import error_metrics


def _strict_json(text):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=reject)


def test_cli_tiny_sweep_writes_json_markdown_png(tmp_path):
    rc = main(["stability", "--methods", "neumann,blockdoubling", "--precisions", "ieee,fp16",
               "--families", "identical_keys,random_keys", "--sizes", "16,64", "--batch", "2",
               "--presets", "hybrid-neumann4-tf32", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    doc = _strict_json((tmp_path / "stability.json").read_text())
    rows = doc["results"]
    assert len(rows) == 2 * 2 * (2 * 2 + 1)                        # families × sizes × (methods × precisions + preset)
    for key in ("torch", "date", "device", "python"):
        assert key in doc["meta"]["environment"]
    get = {(r["family"], r["n"], r["method"], r["precision"]): r for r in rows}
    # the headline effect: Neumann overflows in fp16 on identical keys at n = 64, block doubling is exact
    bad = get[("identical_keys", 64, "neumann", "fp16")]
    assert bad["nonfinite"] == 2 and bad["max_rel"] is None          # inf is written as null
    good = get[("identical_keys", 64, "blockdoubling", "fp16")]
    assert good["nonfinite"] == 0 and good["max_rel"] < 1e-3
    assert get[("random_keys", 16, "hybrid-neumann4-tf32", "tf32")]["max_rel"] < 1e-2
    md = (tmp_path / "stability.md").read_text()
    assert "| method | precision | identical_keys | random_keys |" in md
    assert "inf (2/2 non-finite)" in md
    png = (tmp_path / "stability.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_cli_no_plot(tmp_path):
    rc = main(["stability", "--methods", "column_sweep", "--precisions", "tf32", "--families", "partial_chunk",
               "--sizes", "37", "--batch", "1", "--presets", "none", "--out", str(tmp_path), "--no-plot",
               "--quiet"])
    assert rc == 0
    assert not (tmp_path / "stability.png").exists()
    rows = _strict_json((tmp_path / "stability.json").read_text())["results"]
    assert len(rows) == 1 and rows[0]["n"] == 37 and 0 < rows[0]["max_rel"] < 1e-2


@pytest.mark.parametrize("flag, value, message", [
    ("--methods", "gauss_jordan", "unknown inversion method 'gauss_jordan'"),
    ("--families", "hilbert", "unknown matrix family 'hilbert'"),
    ("--precisions", "fp8", "unknown precision 'fp8'"),
    ("--presets", "fastest", "unknown method preset 'fastest'"),
])
def test_cli_rejects_unknown_names(tmp_path, capsys, flag, value, message):
    rc = main(["stability", flag, value, "--sizes", "8", "--batch", "1", "--out", str(tmp_path), "--quiet"])
    assert rc != 0
    err = capsys.readouterr().err
    assert message in err and "choose from" in err
    assert not (tmp_path / "stability.json").exists()


def test_error_metrics_definitions():
    A = torch.tril(torch.full((2, 4, 4), 0.5), -1)
    ref = exact_inverse(A)
    exact = error_metrics(A, ref.float())
    assert exact["max_abs"] < 1e-7 and exact["nonfinite"] == 0 and exact["ref_max"] == pytest.approx(1.0)
    X = ref.clone()
    X[1, 3, 0] += 0.25                                              # one wrong entry in matrix 1
    m = error_metrics(A, X)
    assert m["max_abs"] == pytest.approx(0.25)
    assert m["max_rel"] == pytest.approx(0.25 / float(ref[1].abs().max()))
    assert m["fro_rel"] == pytest.approx(0.25 / float(torch.linalg.matrix_norm(ref[1])))
    assert m["backward"] == pytest.approx(0.25)                     # ‖(I + A)·0.25 e_3 e_0ᵀ‖_F, row 3 of M is e_3ᵀ+…
    X[0, 1, 1] = math.nan
    m = error_metrics(A, X)
    assert m["nonfinite"] == 1 and math.isinf(m["max_rel"])
