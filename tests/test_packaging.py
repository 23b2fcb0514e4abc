"""pyproject.toml packages what the code needs, and names nothing that does not exist.

Read from pyproject.toml and the source tree (no wheel is built: that takes a
minute; `pip wheel . --no-deps -w /tmp/whl` and a listing of the wheel is the
manual check this test stands in for).
"""
import glob
import os
import tomllib

from setuptools import find_namespace_packages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("engine", "kernels", "tf_integration", "workflows")


def _config():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def _source_files():
    """Every file under the packages, relative to the root (caches left out)."""
    out = []
    for pkg in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, pkg)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            out += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files
                    if not f.endswith((".pyc", ".timing_cache"))]
    return out


def _packaged_data():
    """{file relative to the root} that package-data's globs select, and the globs
    that select nothing."""
    selected, empty = set(), []
    for pkg, patterns in _config().get("package-data", {}).items():
        for pattern in patterns:
            hits = glob.glob(os.path.join(ROOT, pkg.replace(".", os.sep), pattern))
            if not hits:
                empty.append(f"{pkg}: {pattern}")
            selected |= {os.path.relpath(h, ROOT) for h in hits}
    return selected, empty


def test_every_folder_with_python_files_is_a_package_in_the_wheel():
    found = set(find_namespace_packages(ROOT, include=_config()["packages"]["find"]["include"]))
    folders = {os.path.dirname(p).replace(os.sep, ".") for p in _source_files() if p.endswith(".py")}
    assert folders <= found, f"not packaged: {sorted(folders - found)}"


def test_package_data_names_only_files_that_exist():
    _, empty = _packaged_data()
    assert not empty, f"package-data globs matching no file: {empty}"


def test_every_data_file_the_code_reads_is_packaged():
    """Non-Python files under the packages ship with them (the CUDA sources NVRTC
    compiles at run time); Markdown notes for developers are not read by code."""
    selected, _ = _packaged_data()
    data = {p for p in _source_files() if not p.endswith((".py", ".md"))}
    assert data, "expected the CUDA sources under kernels/cuda"
    assert any(p.endswith(".cu") for p in data) and any(p.endswith(".cuh") for p in data)
    assert data <= selected, f"not in package-data: {sorted(data - selected)}"
