"""The ROS-workspace route: CMake in full mode installs a working package into a prefix.

``colcon build`` runs exactly this for an ament_cmake package: configure, build and install
``CMakeLists.txt`` with ``PANOPTIC_MAPPER_INSTALL_PYTHON=ON`` (the default) into a prefix. colcon
itself is not installed here, so the test calls CMake the same way, from a copy of the tracked
sources (CMake rejects the ROS wheels' exported include paths when a venv sits inside the
source folder), against the ament/rosidl packages of this venv.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "panoptic_mapper"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracked_files() -> list[str]:
    """The tracked source files, listed once (others may commit while the test runs)."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know the tracked sources")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, check=True,
                             capture_output=True, text=True).stdout
    return [name for name in listing.split("\0") if name and (REPO_ROOT / name).is_file()]


def _run(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        result = subprocess.run(command, cwd=cwd, env=env, stdout=handle,
                                stderr=subprocess.STDOUT, timeout=600)
    if result.returncode:
        pytest.fail(f"{command[:3]} failed (rc={result.returncode}):\n"
                    + "\n".join(log.read_text().splitlines()[-40:]))


@pytest.fixture(scope="module")
def install_prefix(tmp_path_factory, tracked_files) -> Path:
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    root = tmp_path_factory.mktemp("cmake_full")
    source, build, prefix, log = root / "src", root / "build", root / "install", root / "log.txt"
    for name in tracked_files:
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    venv = Path(sys.prefix)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(venv),
               PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    _run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
          "-DPANOPTIC_MAPPER_INSTALL_PYTHON=ON", f"-DCMAKE_PREFIX_PATH={venv}",
          f"-DCMAKE_INSTALL_PREFIX={prefix}", f"-DPython3_EXECUTABLE={sys.executable}"],
         env, root, log)
    _run(["cmake", "--build", str(build), f"-j{os.cpu_count() or 1}"], env, root, log)
    _run(["cmake", "--install", str(build)], env, root, log)
    return prefix


def test_installed_package_imports_from_the_prefix(install_prefix):
    site = install_prefix / Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONSAFEPATH="1",
               AMENT_PREFIX_PATH=f"{install_prefix}{os.pathsep}{sys.prefix}",
               LD_LIBRARY_PATH=f"{install_prefix / 'lib'}{os.pathsep}"
                               f"{os.environ.get('LD_LIBRARY_PATH', '')}")
    env.pop("PANOPTIC_MAPPER_CONFIG_DIR", None)
    script = (
        "import panoptic_mapper, panoptic_mapper.core.types, panoptic_mapper.srv\n"
        "from panoptic_mapper.msg import MapInstance\n"
        "from panoptic_mapper.srv import QueryObjects\n"
        "from rclpy.serialization import serialize_message\n"
        "assert len(serialize_message(MapInstance(label='chair'))) > 0\n"
        "assert QueryObjects.Request(query='mug').query == 'mug'\n"
        "print(panoptic_mapper.__file__)\n"
        "print(panoptic_mapper.core.types.__file__)\n"
        "print(panoptic_mapper.srv.__file__)\n"
        "from panoptic_mapper.core.labels.registry import default_label_file\n"
        "print(default_label_file())\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=install_prefix, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    files = [Path(line) for line in result.stdout.split()]
    assert len(files) == 4
    for path in files:
        assert install_prefix in path.parents, f"{path} is not from the installed prefix"


def test_executables_and_share_files_are_installed(install_prefix, tracked_files):
    share = install_prefix / "share" / PACKAGE
    scripts = [Path(name).name for name in tracked_files if name.startswith("scripts/")]
    assert scripts, "no scripts/ to install"
    for name in scripts:
        executable = install_prefix / "lib" / PACKAGE / name
        assert executable.is_file() and os.access(executable, os.X_OK), executable
    assert (share / "package.xml").is_file()
    assert (install_prefix / "share" / "ament_index" / "resource_index" / "packages"
            / PACKAGE).is_file()
    shipped = [name for name in tracked_files if name.split("/")[0] in ("config", "launch")]
    assert "config/labels/default.yaml" in shipped
    for name in shipped:
        assert (share / name).is_file(), f"{name} not installed"
