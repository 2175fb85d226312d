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
