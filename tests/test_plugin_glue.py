"""The TensorRT plugin glue (csrc/preprocess/preprocess_trt_plugin.cpp) compiled and linked against the
real TensorRT 10.16.1 and 11.1.0 headers, with the project's CMakeLists.txt, warnings in optim's own
sources as errors (-DOPTIM_WERROR=ON).

The headers come from ``OPTIM_TENSORRT_HEADERS`` (tests/helpers/tensorrt_bindings.py says where), never
from the project: 10.16.1 through ``-DTENSORRT_ROOT``, 11.1.0 through the include-only
``-DOPTIM_TENSORRT_INCLUDE_DIR``, so both routes are exercised. Each library must export the
entry points ``IPluginRegistry::loadLibrary`` looks for in a plugin library (``getCreators``
for IPluginV3 creators, and ``setLoggerFinder``) and need no TensorRT symbol at link time.
This says the glue compiles and links against both APIs; whether TensorRT loads and runs it
is for tests/gpu/test_plugin.py on a GPU.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.helpers.tensorrt_bindings import REPO, VERSIONS, missing_reason, version_dir

pytestmark = pytest.mark.slow  # configures and builds the glue against both TensorRT majors

ENTRY_POINTS = ("getCreators", "setLoggerFinder")


def _tools_missing() -> str | None:
    missing = [t for t in ("cmake", "nvcc", "nm") if shutil.which(t) is None]
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler")
    if missing:
        return (f"the plugin glue cannot be built here: {', '.join(missing)} not found (it needs cmake, nvcc "
                "for the kernel it carries, a C++ compiler and nm)")
    return None


def _configure_args(major: int) -> list[str]:
    root = version_dir(major)
    return [f"-DTENSORRT_ROOT={root}"] if major == 10 else [f"-DOPTIM_TENSORRT_INCLUDE_DIR={root / 'include'}"]


@pytest.fixture(scope="module")
def glue_builds(tmp_path_factory) -> dict[int, dict]:
    """Both majors configured and built side by side (one job each); the results per major."""
    why = _tools_missing()
    if why:
        pytest.skip(why)
    runs = {}
    for major in VERSIONS:
        if missing_reason(major, "include"):
            continue
        build = tmp_path_factory.mktemp(f"glue{major}")
        configure = ["cmake", "-S", str(REPO), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DOPTIM_WERROR=ON",
                     "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", *_configure_args(major)]
        script = (f"{subprocess.list2cmdline(configure)} && cmake --build {build} --target optim_preprocess_trt -j1")
        runs[major] = (build, subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True))
    out = {}
    for major, (build, proc) in runs.items():
        log, _ = proc.communicate(timeout=600)
        out[major] = {"build": build, "log": log, "rc": proc.returncode,
                      "lib": build / "plugins" / "liboptim_preprocess_trt.so"}
    return out


def _result(glue_builds, major):
    why = missing_reason(major, "include")
    if why:
        pytest.skip(why)
    r = glue_builds[major]
    assert r["rc"] == 0, f"building the glue against TensorRT {VERSIONS[major]} failed:\n{r['log'][-6000:]}"
    return r


@pytest.mark.parametrize("major", sorted(VERSIONS))
def test_glue_compiles_and_links_against_the_real_headers(glue_builds, major):
    r = _result(glue_builds, major)
    assert f"optim: TensorRT plugin glue for TensorRT {VERSIONS[major]} ({version_dir(major) / 'include'})" \
        in r["log"], r["log"][-3000:]
    assert r["lib"].is_file()
    # -Werror on optim's own sources; TensorRT's headers are system headers (their warnings are not ours)
    commands = json.loads((r["build"] / "compile_commands.json").read_text())
    glue = [c["command"] for c in commands if c["file"].endswith("preprocess_trt_plugin.cpp")]
    assert glue and "-Werror" in glue[0] and f"-isystem {version_dir(major) / 'include'}" in glue[0]


@pytest.mark.parametrize("major", sorted(VERSIONS))
def test_glue_exports_what_loadlibrary_looks_for_and_needs_no_tensorrt_symbol(glue_builds, major):
    r = _result(glue_builds, major)
    defined = subprocess.run(["nm", "-D", "--defined-only", str(r["lib"])], capture_output=True, text=True,
                             check=True).stdout.split("\n")
    exported = {line.split()[-1] for line in defined if len(line.split()) == 3 and line.split()[1] == "T"}
    assert set(ENTRY_POINTS) <= exported, sorted(exported)[:20]
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(r["lib"])], capture_output=True, text=True,
                               check=True).stdout
    assert "nvinfer1" not in undefined and "nvinfer" not in undefined.lower()  # loads without libnvinfer linked
