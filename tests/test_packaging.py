"""The wheel contains every subpackage: an editable install (what the tests run on) would hide
a package missing from pyproject.toml, and a normal install would then fail on import."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def packages_on_disk(folder: Path = ROOT, name: str = "gpconv") -> set[str]:
    """``name`` and every folder below it that has an ``__init__.py``, walked from the package
    root only through packages (so build/ or .venv/ copies of the tree are not counted)."""
    found = {name}
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and (sub / "__init__.py").is_file():
            found |= packages_on_disk(sub, f"{name}.{sub.name}")
    return found


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"gpconv": "."}
    listed, on_disk = set(config["packages"]), packages_on_disk()
    assert on_disk - listed == set(), f"packages missing from pyproject.toml: {on_disk - listed}"
    assert listed - on_disk == set(), f"pyproject.toml lists absent packages: {listed - on_disk}"
