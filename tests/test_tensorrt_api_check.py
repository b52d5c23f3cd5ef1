"""Every TensorRT Python name optim uses exists in the real API of each supported TensorRT major.

The names are collected from optim/backends/tensorrt_api.py's code (its AST, see
tests/helpers/tensorrt_bindings.py), not from a list, and checked against the pybind11 sources of
TensorRT 10.16.1 and 11.1.0 (class names, ``.def``/``.def_property*`` names, enum ``.value``
names). Names that differ between majors (builder flags, the network creation flag) reach
TensorRT only through the engine plan, so they are checked per major against every plan
``plan_engine`` can make for it: TensorRT 10 plans may name FP16/BF16, TensorRT 11 plans may
not. Skipped, with the reason, where the sources are absent (``OPTIM_TENSORRT_HEADERS``).
This is an API check, not a run: only tests/gpu/ shows that TensorRT builds what optim asks.
"""

from __future__ import annotations

import ast
import itertools
import re
import shutil
import typing

import pytest

from optim.backends.engine_compat import SUPPORTED_MAJORS
from optim.backends.tensorrt_api import TensorRT
from optim.errors import OptimError
from optim.settings import BatchRange, BuildSettings
from optim.stages.build import onnx_precision, plan_engine, profile_for
from optim.onnx_tools import TensorInfo
from tests.helpers.fake_tensorrt_versions import REMOVED, fake_tensorrt, strict
from tests.helpers.tensorrt_bindings import (API_MODULE, PLAN_NAMES, REPO, RETURNS, VERSIONS, bindings, collect_uses,
                                     missing_reason, parse_bindings, problems, version_dir)

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")


def _api(major: int):
    why = missing_reason(major)
    if why:
        pytest.skip(why)
    return bindings(major)


def _options(field: str) -> tuple:
    """The values a BuildSettings field may take, from its type (bool or Literal)."""
    ann = BuildSettings.model_fields[field].annotation
    return (False, True) if ann is bool else typing.get_args(ann)


def plan_names(major: int, flavour: str = "tensorrt") -> dict[str, set[str]]:
    """Every enum member name any plan for ``major`` (of ``flavour``) hands to TensorRT (``PLAN_NAMES`` fields)."""
    prof = profile_for([TensorInfo("x", ("n", 8), 1)], BatchRange())
    out: dict[str, set[str]] = {enum: set() for enum in PLAN_NAMES}
    fields = ("tf32", "version_compatible", "hardware_compatibility")
    for model, want, values in itertools.product(PRECISIONS, (None, *PRECISIONS),
                                                 itertools.product(*map(_options, fields))):
        try:
            plan = plan_engine(model, want, BuildSettings(**dict(zip(fields, values))), prof, major, flavour)
        except OptimError:
            continue
        d = plan.as_dict()
        for enum, names in PLAN_NAMES.items():
            for f in names:
                out[enum].update([d[f]] if isinstance(d[f], str) else d[f])
    return out


def test_the_checked_versions_are_the_supported_majors():
    assert tuple(sorted(VERSIONS)) == SUPPORTED_MAJORS
    assert all(VERSIONS[m].split(".")[0] == str(m) for m in VERSIONS)


@pytest.mark.parametrize("major", SUPPORTED_MAJORS)
def test_every_tensorrt_name_optim_uses_exists_in_the_bindings(major):
    api = _api(major)
    assert problems(api, collect_uses(), plan_names(major)) == []


def test_version_specific_names_reach_tensorrt_only_through_the_plan_of_their_major():
    apis = {m: _api(m) for m in SUPPORTED_MAJORS}
    flags = {m: set(apis[m].members["BuilderFlag"]) for m in SUPPORTED_MAJORS}
    gone = flags[10] - flags[11]
    assert {"FP16", "BF16", "INT8", "FP8"} <= gone  # what TensorRT 11 removed (weak typing)
    assert REMOVED[11]["BuilderFlag"] <= gone  # the fake's fallback (no sources) agrees with the sources
    used = {m: plan_names(m)["BuilderFlag"] for m in SUPPORTED_MAJORS}
    assert {"FP16", "BF16"} <= used[10] and not used[11] & gone
    static = {(u.cls, u.name) for u in collect_uses() if u.how != "dynamic"}
    assert not {("BuilderFlag", f) for f in gone} & static  # never named in code, only by a plan
    assert plan_names(10)["NetworkDefinitionCreationFlag"] == {"STRONGLY_TYPED"}
    assert plan_names(11)["NetworkDefinitionCreationFlag"] == set()  # deprecated there: never set


def test_compute_capability_names_reach_only_tensorrt_rtx():
    """The RTX-only names (tests/helpers/tensorrt_bindings.FLAVOUR_ONLY) sit behind plan.compute_capabilities,
    which no TensorRT 10/11 plan fills: so skipping them in the 10/11 check is sound."""
    for major in SUPPORTED_MAJORS:
        assert plan_names(major)["ComputeCapability"] == set()
    assert plan_names(1, "tensorrt_rtx")["ComputeCapability"] == {"SM86", "SM89", "SM120"}
    assert plan_names(1, "tensorrt_rtx")["BuilderFlag"] <= {"TF32", "VERSION_COMPATIBLE"}  # no FP16/BF16 flags
    assert plan_names(1, "tensorrt_rtx")["NetworkDefinitionCreationFlag"] == set()  # always strongly typed


def test_every_name_optim_uses_exists_in_the_installed_tensorrt_rtx():
    """The same check against the real TensorRT-RTX bindings (introspected, not parsed), where installed."""
    rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed (pip install tensorrt-rtx-cu12)")
    from tests.helpers.tensorrt_bindings import live_api

    api = live_api(rtx)
    major = int(api.version.split(".")[0])
    assert problems(api, collect_uses(), plan_names(major, "tensorrt_rtx"), "tensorrt_rtx") == []
    # the check can fail: a name TensorRT-RTX lacks (it has no FP16 builder flag) is found
    assert problems(api, collect_uses(), {"BuilderFlag": {"FP16"}}, "tensorrt_rtx") == [
        f"TensorRT-RTX {api.version} has no BuilderFlag.FP16 (an engine plan for TensorRT {api.version} uses it)"]


def test_the_collector_follows_every_object_and_every_dynamic_name():
    uses = collect_uses()
    calls = {(u.cls, u.name) for u in uses if u.how == "call"}
    assert set(RETURNS) <= calls  # every object optim gets from TensorRT is typed and followed
    assert {u.cls for u in uses if u.how == "dynamic"} == set(PLAN_NAMES)
    assert ("ILogger", "log") in {(u.cls, u.name) for u in uses if u.how == "override"}
    sets = {(u.cls, u.name) for u in uses if u.how == "set"}
    assert {("Runtime", "engine_host_code_allowed"), ("EngineInspector", "execution_context")} <= sets
    assert len({u.cls for u in uses}) >= 12


@pytest.mark.parametrize("old, new, bad_in", [
    (".execute_async_v3(", ".execute_async_v2(", (10, 11)),  # v2 went with TensorRT 10
    ("config.set_flag(getattr(trt.BuilderFlag, name))", "config.set_flag(trt.BuilderFlag.FP16)", (11,)),
    ("runtime.engine_host_code_allowed = True", "runtime.num_DLA_cores = 1", (10, 11)),  # read-only
])
def test_a_name_the_api_lacks_in_optims_code_fails_the_check(old, new, bad_in, tmp_path):
    """tensorrt_api.py, edited on a copy: a gone method, a static FP16 flag (fine on 10 only), a bad set."""
    text = API_MODULE.read_text()
    assert old in text
    copy = tmp_path / "tensorrt_api.py"
    copy.write_text(text.replace(old, new))
    for major in SUPPORTED_MAJORS:
        found = problems(_api(major), collect_uses(copy), plan_names(major))
        assert bool(found) == (major in bad_in), (major, found)


def _copy_without(major: int, name: str, tmp_path):
    """A copy of ``major``'s binding sources in which ``name`` is bound nowhere."""
    src = shutil.copytree(version_dir(major) / "python" / "src", tmp_path / f"src{major}-{name}")
    pattern = re.compile(r'(\.(?:def\w*|value)\(\s*)"' + re.escape(name) + '"')
    hits = 0
    for f in src.rglob("*.cpp"):
        text, n = pattern.subn(r'\1"removed_by_test"', f.read_text(errors="replace"))
        f.write_text(text)
        hits += n
    assert hits, f"{name} is not bound in TensorRT {VERSIONS[major]}"
    return parse_bindings(src, VERSIONS[major] + " (copy)")


@pytest.mark.parametrize("major", SUPPORTED_MAJORS)
@pytest.mark.parametrize("name, fragment", [
    ("build_serialized_network", "has no Builder.build_serialized_network"),
    ("execution_context", "has no EngineInspector.execution_context"),
    ("TF32", "has no BuilderFlag.TF32 (an engine plan"),
    ("WORKSPACE", "has no MemoryPoolType.WORKSPACE"),
])
def test_removing_one_name_from_a_copy_of_the_bindings_fails_the_check(major, name, fragment, tmp_path, onnx_int8):
    _api(major)
    api = _copy_without(major, name, tmp_path)
    found = problems(api, collect_uses(), plan_names(major))
    assert len(found) == 1 and fragment in found[0], found
    # the recording fake, made to mimic that copy, refuses the name in a build too
    trt = TensorRT(strict(fake_tensorrt(major), api=api))
    plan = plan_engine("int8", None, BuildSettings(workspace_mib=8), profile_for([TensorInfo("x", ("n", 8), 1)],
                                                                                BatchRange()), major)
    with pytest.raises(AttributeError, match=re.escape(name)):
        session = trt.session(trt.deserialize(trt.build(onnx_int8, plan, b"")[0]))
        session.layer_information()


@pytest.fixture
def onnx_int8(tmp_path):
    import onnx

    from tests.helpers.models import precision_model

    p = tmp_path / "m.int8.onnx"
    onnx.save(precision_model("int8"), str(p))
    assert onnx_precision(precision_model("int8")) == "int8"
    return p


def test_the_parser_reads_each_binding_form(tmp_path):
    """A few lines in the bindings' style (written here), one per form the parser must read."""
    (tmp_path / "a.cpp").write_text('''
        // py::class_<Fake>(m, "Commented") must not count
        py::class_<IThing, std::unique_ptr<IThing, py::nodelete>>(m, "Thing", "doc")
            .def(py::init<>())
            .def("run", [](IThing& self) { int a = 1; return a; }, "doc")
            .def_property("level", &IThing::getLevel, &IThing::setLevel)
            .def_property_readonly(
                "count", &IThing::getCount);
        py::class_<ILog, PyLog> logBinding{m, "ILog", "doc"};
        py::enum_<ILog::Severity>(logBinding, "Severity", "doc")
            .value("ERROR", ILog::Severity::kERROR)
            .export_values();
        logBinding.def("log", &ILog::log);
        py::enum_<Flag>(m, "Flag", py::arithmetic{})
            .value("A", Flag::kA)
            .value("B", Flag::kB);
        m.def("make_thing", &makeThing, "logger"_a);
    ''')
    api = parse_bindings(tmp_path)
    assert api.module == {"Thing": "class", "ILog": "class", "Flag": "enum", "make_thing": "function"}
    assert api.members["Thing"] == {"__init__": "init", "run": "method", "level": "property", "count": "readonly"}
    assert api.members["ILog"] == {"Severity": "enum", "ERROR": "value", "log": "method"}
    assert api.members["ILog.Severity"] == {"ERROR": "value"} and api.members["Flag"] == {"A": "value", "B": "value"}


def test_only_tensorrt_api_imports_tensorrt():
    importers = []
    for path in sorted((REPO / "optim").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n in ("tensorrt", "tensorrt_rtx") or n.startswith(("tensorrt.", "tensorrt_rtx.")) for n in names):
                importers.append(str(path.relative_to(REPO)))
    assert set(importers) == {str(API_MODULE.relative_to(REPO))}
