"""Read the YAML configs that ship as ``sglang_trinv.configs`` (the top-level ``configs/`` directory).

``load_config("methods")`` -> the dict in ``configs/methods.yaml``; likewise ``shapes`` and ``families``.
The CLIs, the benchmark and the plugin all read presets from here, so the YAML files are the single place
to add a method preset, a benchmark shape or a matrix family.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

_PACKAGE = "sglang_trinv.configs"


def _config_dir():
    """The installed ``sglang_trinv.configs`` package, or ``<repo>/configs`` when running from a source
    checkout that was not pip-installed (``PYTHONPATH=.``: the package-dir mapping does not exist then)."""
    try:
        return resources.files(_PACKAGE)
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "configs"


def available_configs() -> list[str]:
    """Names (file stems) of the YAML configs shipped in ``sglang_trinv.configs``."""
    return sorted(p.name[: -len(".yaml")] for p in _config_dir().iterdir() if p.name.endswith(".yaml"))


def load_config(name: str) -> dict[str, Any]:
    """Parse ``configs/<name>.yaml`` (``name`` with or without ``.yaml``) into a dict."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    path = _config_dir() / f"{stem}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no config {stem!r} in {_PACKAGE}; available: {', '.join(available_configs())}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"config {stem!r} must be a YAML mapping, got {type(data).__name__}")
    return data


def method_preset(name: str) -> dict[str, Any]:
    """One entry of ``methods.yaml`` ``presets`` (keys: method, precision, block, inner, description)."""
    presets = load_config("methods")["presets"]
    if name not in presets:
        raise KeyError(f"unknown method preset {name!r}; available: {', '.join(presets)}")
    return {"name": name, **presets[name]}


def preset_inverter(name: str):
    """A function ``A -> (I + A)^{-1}`` running the reference twin of method preset ``name``
    (its method, precision, diagonal block size and inner method)."""
    from .reference import inverse as ref

    p = method_preset(name)
    method, precision = p["method"], p["precision"]
    if method == "forward_substitution":
        return lambda A: ref.forward_substitution(A, block=p.get("block", 16), precision=precision)
    if method == "hybrid":
        return lambda A: ref.hybrid(A, block=p.get("block", 16), inner=p.get("inner", "neumann"),
                                    precision=precision)
    from .registry import get_method

    m = get_method(method)
    return lambda A: m.invert(A, precision)


def expand_shape_set(name: str) -> list[dict[str, Any]]:
    """The benchmark cases of ``shapes.yaml`` shape set ``name``: one dict per (model × T × layout) with
    ``model, kernel, H, Hg, K, V, dtype, T, B`` and, for varlen layouts, ``cu_seqlens`` (list of ints)."""
    cfg = load_config("shapes")
    sets = cfg["shape_sets"]
    if name not in sets:
        raise KeyError(f"unknown shape set {name!r}; available: {', '.join(sets)}")
    spec = sets[name]
    cases = []
    for model in spec["models"]:
        m = cfg["models"][model]
        for T in spec["T"]:
            for layout in spec.get("layouts", ["fixed"]):
                case = {"model": model, **m, "T": int(T), "layout": layout, "B": 1}
                if layout != "fixed":  # packed sequences: B = 1, T tokens split by cu_seqlens
                    case["cu_seqlens"] = varlen_cu_seqlens(cfg["layouts"][layout]["weights"], int(T))
                cases.append(case)
    return cases


def varlen_cu_seqlens(weights: list[float], T: int) -> list[int]:
    """Split ``T`` tokens into ``len(weights)`` sequences with lengths ∝ ``weights`` (rounded, each ≥ 1,
    the rounding remainder going to the last one) and return ``cu_seqlens`` = [0, l1, l1+l2, …, T]."""
    total = float(sum(weights))
    lens = [max(1, round(T * w / total)) for w in weights[:-1]]
    lens.append(T - sum(lens))
    if lens[-1] < 1:
        raise ValueError(f"T={T} too small for {len(weights)} sequences")
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    return cu
