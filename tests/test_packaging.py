"""The wheel carries what a non-editable install needs: the plugin entry point, the configs, and the shipped
model + task that `sglang-trinv eval` defaults to."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                        str(ROOT)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"pip wheel unavailable here: {r.stderr[-500:]}")
    return next(out.glob("sglang_trinv-*.whl"))


def test_wheel_ships_model_tasks_configs_and_entry_point(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    model = ROOT / "evals" / "models" / "qwen3-next-tiny-stdlib"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (model / f).exists() and f"sglang_trinv/shipped/models/qwen3-next-tiny-stdlib/{f}" in names
    assert "sglang_trinv/shipped/tasks/stdlib_mc.jsonl" in names
    assert "sglang_trinv/configs/methods.yaml" in names
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    assert "sglang.srt.plugins" in zipfile.ZipFile(wheel).read(ep).decode()


def test_installed_wheel_finds_its_default_model(wheel, tmp_path):
    """Installed without the checkout, DEFAULT_MODEL / DEFAULT_MC resolve to the wheel's copies."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True, timeout=600)
    code = ("import sglang_trinv.evals as e; assert 'shipped' in str(e.DEFAULT_MODEL), e.DEFAULT_MODEL; "
            "assert (e.DEFAULT_MODEL / 'model.safetensors').exists() and e.DEFAULT_MC.exists(); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_a_copy_of_the_shipped_model_gets_the_shipped_tasks(tmp_path):
    import shutil

    from sglang_trinv.evals import DEFAULT_MODEL, is_shipped_model

    copy = tmp_path / "copy"
    shutil.copytree(DEFAULT_MODEL, copy)
    assert is_shipped_model(DEFAULT_MODEL) and is_shipped_model(copy)
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("{", '{"x": 1, ', 1))
    assert not is_shipped_model(copy)
    assert not is_shipped_model(tmp_path / "missing")
