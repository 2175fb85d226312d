"""The YAML configs and their loader."""

import pytest
import torch

from sglang_trinv.presets import (available_configs, expand_shape_set, load_config, method_preset,
                                  preset_inverter, varlen_cu_seqlens)
from sglang_trinv.reference.families import family_specs, make_family
from sglang_trinv.reference.inverse import exact_inverse
from sglang_trinv.reference.precision import PRECISIONS
from sglang_trinv.registry import METHODS


def test_configs_ship_and_load():
    assert {"methods", "shapes", "families"} <= set(available_configs())
    assert load_config("methods.yaml") == load_config("methods")


def test_missing_config_lists_available():
    with pytest.raises(FileNotFoundError, match="available: .*families.*methods.*shapes"):
        load_config("no_such_config")


def test_method_presets_are_valid_and_invert():
    cfg = load_config("methods")
    assert cfg["default"] in cfg["presets"]
    A = make_family("random_keys", 64, 2).A      # benign keys: even the unstable presets are accurate here
    ref = exact_inverse(A)
    for name, p in cfg["presets"].items():
        assert p["method"] in METHODS and p["precision"] in PRECISIONS, name
        X = preset_inverter(name)(A)
        err = float((X.double() - ref).abs().max())
        assert err < 16 * 2.0**-11, (name, err)   # every preset is at least tf32-accurate on these
    assert method_preset("stock-like")["block"] == 16
    with pytest.raises(KeyError, match="available"):
        method_preset("nope")


def test_shape_sets():
    cases = expand_shape_set("default")
    assert len(cases) == 4 * 3 * 2
    qwen = [c for c in cases if c["model"] == "qwen3-next-tp1"][0]
    assert (qwen["H"], qwen["Hg"], qwen["K"], qwen["V"]) == (32, 16, 128, 128)
    assert {c["T"] for c in cases} == {4096, 8192, 32768}
    for c in cases:
        assert c["H"] % c["Hg"] == 0
        if c["layout"] == "varlen8":
            cu = c["cu_seqlens"]
            assert len(cu) == 9 and cu[0] == 0 and cu[-1] == c["T"] and all(b > a for a, b in zip(cu, cu[1:]))
    assert varlen_cu_seqlens([1, 1, 2], 8) == [0, 2, 4, 8]


def test_default_sweep_names_exist():
    fam = load_config("families")
    sweep = fam["default_sweep"]
    assert set(sweep["methods"]) <= set(METHODS)
    assert set(sweep["precisions"]) <= set(PRECISIONS)
    assert set(sweep["families"]) <= set(family_specs())
    assert set(sweep["presets"]) <= set(load_config("methods")["presets"])
    # Neumann must be swept in a low precision so its overflow shows
    assert {"fp16", "bf16", "tf32"} & set(sweep["precisions"])
