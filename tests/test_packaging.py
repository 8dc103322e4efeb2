"""What ``pip install .`` puts at the top of site-packages: the ``vigil`` namespace only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_an_install_adds_only_the_vigil_namespace(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-compile",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    top = {p.name for p in target.iterdir() if p.name != "bin"}
    dist = {n for n in top if n.endswith(".dist-info")}
    assert {n.split("-")[0] for n in dist} == {"vigil_ioc"}  # "vigil" is taken on PyPI
    assert top - dist == {"vigil"}  # no flows/, sources/, sinks/ ... of their own
    pkg = target / "vigil"
    assert {p.name for p in pkg.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "flows",
        "sources",
        "sinks",
        "detectors",
        "dashboards",
    }
    # The demo's data ships with the package, so `vigil demo` works from an install.
    assert (pkg / "flows" / "demo.yaml").is_file()
    assert any((pkg / "flows" / "demo_data").rglob("*.log"))
