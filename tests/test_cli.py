"""The top-level command: subcommand dispatch, help, and the methods table."""

from sglang_trinv.cli import main
from sglang_trinv.ops import DEFAULT_PRECISION
from sglang_trinv.registry import METHOD_NAMES


def test_methods_lists_every_method_with_kernel_defaults(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in METHOD_NAMES:
        assert f"| {name} |" in out
    assert DEFAULT_PRECISION["blockdoubling"] in out


def test_unknown_subcommand_exits_nonzero_with_the_choices(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    assert "stability" in capsys.readouterr().err


def test_check_reports_what_the_plugin_will_do(capsys, monkeypatch):
    """`sglang-trinv check` against the installed SGLang: hooks present, pipeline fusable, KDA ours for the exact
    gate by default (safe_gate stock), whether the Gluon intra kernel can serve here, how the state recurrence runs
    (tuned copies by default; SGLang's own, the overlap, SGLang's launch variables and a bad value as asked);
    exit 1 with the reason for a method that has no kernel, a warning for an unstable one."""
    monkeypatch.delenv("SGLANG_TRINV_KDA", raising=False)
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "[ok] server-argument hooks" in out and "[ok] GDN prefill hook" in out
    assert "A not written (SGLang drops it)" in out and "output stage without the memset of o" in out
    assert "KDA prefill" in out and "uses it too for the exact gate" in out and "safe_gate calls stay stock" in out
    assert "skipped in chunk_kda_fwd (SGLang drops Akk)" in out
    assert "Gluon intra kernel" in out and "SGLANG_TRINV_GLUON=0|1" in out
    assert "direct kernel launch" in out and "off (SGLANG_TRINV_DIRECT_LAUNCH=1" in out
    line = next(x for x in out.splitlines() if "GDN state recurrence" in x)
    assert "SGLang's kernels (copies), the state kernel's launch constants picked per shape" in line
    assert "SGLANG_TRINV_STATE_LAUNCH=sglang keeps SGLang's own" in line
    for name, value, expected in (("SGLANG_TRINV_OVERLAP_O", "1", "side by side (SGLANG_TRINV_OVERLAP_O=1"),
                                  ("SGLANG_TRINV_STATE_LAUNCH", "sglang",
                                   "SGLang's own state kernel, then the output stage"),
                                  ("SGLANG_GDN_CHUNK_H_NUM_STAGES", "2", "constants SGLang's "
                                   "(SGLANG_GDN_CHUNK_H_NUM_STAGES set)"),
                                  ("SGLANG_TRINV_STATE_LAUNCH", "fast", "not as asked: SGLANG_TRINV_STATE_LAUNCH="
                                   "'fast' is not 'tuned' or 'sglang'")):
        monkeypatch.setenv(name, value)
        assert main(["check"]) == 0
        assert expected in capsys.readouterr().out, (name, value)
        monkeypatch.delenv(name)
    assert "--linear-attn-inv blockdoubling would patch GDN prefill here" in out
    assert main(["check", "--method", "gauss_jordan"]) == 1
    out = capsys.readouterr().out
    assert "[NO] method gauss_jordan" in out and "would NOT work here" in out
    assert main(["check", "--method", "hybrid"]) == 0
    assert "marked unstable" in capsys.readouterr().out
