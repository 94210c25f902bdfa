"""`pip install .` (not only `-e .`) must ship cofee, its data modules, callbacks and configs."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_regular_install_imports_every_package_and_config(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    assert not (target / "callbacks").exists() and not (target / "src").exists()
    probe = (
        "import cofee, cofee.data_modules.wiki_anchor, cofee.callbacks.curriculum, cofee.data.wiki.build_anchors;"
        "from importlib.resources import files;"
        "print(cofee.__file__);"
        "print((files('cofee.conf') / 'pretrain.yaml').is_file(), (files('cofee.conf') / 'trainer' / 'ddp.yaml').is_file(),"
        " (files('cofee.conf') / 'mappings' / 'wnut16_coarse.yaml').is_file())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout.split("\n")
    assert out[0].startswith(str(target)) and out[1] == "True True True"
