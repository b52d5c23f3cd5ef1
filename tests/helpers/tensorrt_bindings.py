"""The real TensorRT Python API, read from its pybind11 sources, and the TensorRT names optim uses.

Where the sources are: ``OPTIM_TENSORRT_HEADERS`` names a folder with one sub-folder per
TensorRT version (``10.16.1/``, ``11.1.0/``), each holding ``include/`` (NvInfer*.h) and
``python/src/`` (the bindings). ``.ci/run`` sets it to ``../shared/third_party/tensorrt``
(relative to the repository root) when that folder exists. Without it, the tests that need
the sources skip and say so. The project never copies these files.

``parse_bindings`` reads every ``py::class_<...>(scope, "Name")`` / ``py::enum_<...>`` and
its ``.def("x"`` / ``.def_property*("x"`` / ``.def_readwrite("x"`` / ``.value("X"`` chain,
plus module functions (``m.def("x"``). ``collect_uses`` walks optim/backends/tensorrt_api.py's
AST: every attribute taken on the injected ``tensorrt`` module and on the objects it returns
(their classes follow from ``RETURNS``), every attribute set, every method a subclass of a
TensorRT class overrides, and every ``getattr(trt.Enum, expr)`` whose member names come
from the engine plan (``PLAN_NAMES``).
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
API_MODULE = REPO / "optim" / "backends" / "tensorrt_api.py"
#: the header/bindings folder of each supported TensorRT major
VERSIONS = {10: "10.16.1", 11: "11.1.0"}
#: set by the tensorrt Python package's __init__.py, not by the bindings
PACKAGE_NAMES = {"__version__"}

#: what a call returns, as the bindings' Python class name: (receiver class, name) -> class ("" = module)
RETURNS = {
    ("", "Builder"): "Builder", ("", "Runtime"): "Runtime", ("", "OnnxParser"): "OnnxParser",
    ("", "get_plugin_registry"): "IPluginRegistry",
    ("Builder", "create_network"): "INetworkDefinition", ("Builder", "create_builder_config"): "IBuilderConfig",
    ("Builder", "create_optimization_profile"): "IOptimizationProfile",
    ("IBuilderConfig", "create_timing_cache"): "ITimingCache", ("IBuilderConfig", "get_timing_cache"): "ITimingCache",
    ("Runtime", "deserialize_cuda_engine"): "ICudaEngine",
    ("ICudaEngine", "create_execution_context"): "IExecutionContext",
    ("ICudaEngine", "create_engine_inspector"): "EngineInspector",
}
#: parameters of tensorrt_api.py functions that hold a TensorRT object
PARAM_TYPES = {"engine": "ICudaEngine"}
#: getattr(trt.<Enum>, ...) takes its member names from these EnginePlan fields
PLAN_NAMES = {"BuilderFlag": ("flags_on", "flags_off"), "NetworkDefinitionCreationFlag": ("network_flags",),
              "HardwareCompatibilityLevel": ("hardware_compatibility",), "ComputeCapability": ("compute_capabilities",)}
#: names only one flavour has, reached only through a plan field only that flavour's plans fill
#: (TensorRT-RTX's compute-capability targets: ``plan.compute_capabilities`` is empty on TensorRT 10/11,
#: which tests/test_tensorrt_api_check.py checks against every plan)
FLAVOUR_ONLY = {("", "ComputeCapability"): "tensorrt_rtx", ("IBuilderConfig", "num_compute_capabilities"): "tensorrt_rtx",
                ("IBuilderConfig", "set_compute_capability"): "tensorrt_rtx"}
MODULE = "<module>"


def headers_root() -> Path:
    return Path(os.environ.get("OPTIM_TENSORRT_HEADERS") or REPO.parent / "shared" / "third_party" / "tensorrt")


def version_dir(major: int) -> Path:
    return headers_root() / VERSIONS[major]


def missing_reason(major: int, what: str = "python/src") -> str | None:
    """Why TensorRT ``major``'s sources cannot be used here (None when they can)."""
    d = version_dir(major)
    if (d / what).is_dir():
        return None
    return (f"TensorRT {VERSIONS[major]} {what} not found at {d} (set OPTIM_TENSORRT_HEADERS to the folder "
            "holding 10.16.1/ and 11.1.0/; .ci/run does when ../shared/third_party/tensorrt exists)")


# -- the bindings -------------------------------------------------------------------------------
@dataclass
class Api:
    """Names in the ``tensorrt`` module: ``module`` name -> kind, ``members`` class/enum -> name -> kind.

    Kinds: class, enum, function (module); method, property (settable), readonly, value, init."""

    version: str
    module: dict[str, str] = field(default_factory=dict)
    members: dict[str, dict[str, str]] = field(default_factory=dict)

    def kind(self, cls: str, name: str) -> str | None:
        return self.module.get(name) if cls == "" else self.members.get(cls, {}).get(name)


def _statements(text: str) -> list[str]:
    """C++ text without comments and preprocessor lines, cut at the ';' outside parentheses."""
    out, cur, depth, i, n = [], [], 0, 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i) or (c == "#" and (i == 0 or text[i - 1] == "\n")):
            i = text.find("\n", i)
            i = n if i < 0 else i
            continue
        if text.startswith("/*", i):
            i = text.find("*/", i + 2) + 2 if text.find("*/", i + 2) >= 0 else n
            continue
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if c == ";" and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    return out


_START = re.compile(r'py::(class_|enum_)<.*?>\s*(?:(\w+)\s*)?[({]\s*(\w+)\s*,\s*"(\w+)"', re.S)
_VAR_USE = re.compile(r"(?:^|[{}])\s*(\w+)\s*\.\s*def\w*\(")
_MEMBER = re.compile(r'\.(def|def_static|def_property|def_property_readonly|def_readwrite|def_readonly|value)'
                     r'\(\s*"(\w+)"')
_KINDS = {"def": "method", "def_static": "method", "def_property": "property", "def_readwrite": "property",
          "def_property_readonly": "readonly", "def_readonly": "readonly", "value": "value"}


def parse_bindings(src: Path, version: str = "") -> Api:
    """The Python names a version's ``python/src`` binds (``#if`` branches all counted as present)."""
    api, variables = Api(version), {"m": ""}
    for path in sorted(Path(src).rglob("*.cpp")):
        for st in _statements(path.read_text(errors="replace")):
            start = _START.search(st)
            if start:
                what, var, scope, name = start.groups()
                parent = variables.get(scope)
                if parent is None:
                    continue  # a scope we do not know (a local helper): not part of the module's API
                owner, tail = (name if parent == "" else f"{parent}.{name}"), st[start.end():]
                if parent == "":
                    api.module[name] = "class" if what == "class_" else "enum"
                else:
                    api.members.setdefault(parent, {})[name] = "class" if what == "class_" else "enum"
                if var:
                    variables[var] = owner
                export_to = parent if ".export_values()" in tail else None
            else:
                m = _VAR_USE.search(st)
                if not m or m.group(1) not in variables:
                    continue
                owner, tail, export_to = variables[m.group(1)], st[m.end(1):], None
            members = api.members.setdefault(owner, {}) if owner else api.module
            if owner and "py::init" in tail:
                members["__init__"] = "init"
            for kind, member in _MEMBER.findall(tail):
                k = "function" if not owner else _KINDS[kind]
                members.setdefault(member, k)
                if export_to is not None and kind == "value":
                    (api.members.setdefault(export_to, {}) if export_to else api.module).setdefault(member, k)
    return api


@lru_cache(maxsize=None)
def bindings(major: int) -> Api | None:
    """TensorRT ``major``'s Python API from its sources, or None where they are absent."""
    if missing_reason(major):
        return None
    return parse_bindings(version_dir(major) / "python" / "src", VERSIONS[major])


# -- what optim uses ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Use:
    cls: str  # "" = the module
    name: str | None  # None: getattr(<enum>, <expr>), names from the plan
    how: str  # get, set, call, override, dynamic
    line: int
    expr: str = ""


class _Walker:
    def __init__(self) -> None:
        self.uses: list[Use] = []
        self.self_types: dict[str, dict[str, str]] = {}

    def type_of(self, node: ast.AST, env: dict[str, str], cls: str) -> str | None:
        if isinstance(node, ast.Name):
            return MODULE if node.id in ("trt", "tensorrt") else env.get(node.id)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return MODULE if node.attr == "trt" else self.self_types.get(cls, {}).get(node.attr)
            return node.attr if self.type_of(node.value, env, cls) == MODULE else None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = self.type_of(node.func.value, env, cls)
            if owner is not None:
                return RETURNS.get(("" if owner == MODULE else owner, node.func.attr))
        return None

    def assign(self, target: ast.AST, value: ast.AST, env: dict[str, str], cls: str) -> None:
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
            for t, v in zip(target.elts, value.elts):
                self.assign(t, v, env, cls)
            return
        t = self.type_of(value, env, cls)
        if isinstance(target, ast.Name):
            env.pop(target.id, None) if t is None else env.__setitem__(target.id, t)
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
            if t is not None:
                self.self_types.setdefault(cls, {})[target.attr] = t

    def function(self, fn: ast.FunctionDef, cls: str, record: bool) -> None:
        env = {a.arg: PARAM_TYPES[a.arg] for a in fn.args.args if a.arg in PARAM_TYPES}
        nodes = _in_order(fn)
        called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}  # recorded as calls, not gets
        for node in nodes:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    self.assign(target, node.value, env, cls)
            if not record:
                continue
            if isinstance(node, ast.Attribute) and id(node) not in called:
                owner = self.type_of(node.value, env, cls)
                if owner is not None:
                    how = "set" if isinstance(node.ctx, ast.Store) else "get"
                    self.uses.append(Use("" if owner == MODULE else owner, node.attr, how, node.lineno))
            elif isinstance(node, ast.Call):
                if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) == 2:
                    owner = self.type_of(node.args[0], env, cls)
                    if owner not in (None, MODULE):
                        self.uses.append(Use(owner, None, "dynamic", node.lineno, ast.unparse(node.args[1])))
                elif isinstance(node.func, ast.Attribute):
                    owner = self.type_of(node.func.value, env, cls)
                    if owner is not None:
                        self.uses.append(Use("" if owner == MODULE else owner, node.func.attr, "call", node.lineno))

    def klass(self, node: ast.ClassDef, record: bool) -> None:
        bases = [b.attr for b in node.bases if isinstance(b, ast.Attribute) and self.type_of(b.value, {}, "") == MODULE]
        for item in node.body:
            if isinstance(item, ast.FunctionDef):
                self.function(item, node.name, record)
                if record and bases and not item.name.startswith("_"):
                    self.uses.append(Use(bases[0], item.name, "override", item.lineno))


def _in_order(fn: ast.AST):
    """The nodes of a function in source order (nested classes and functions included)."""
    nodes = [n for n in ast.walk(fn) if hasattr(n, "lineno")]
    return sorted(nodes, key=lambda n: (n.lineno, n.col_offset))


def collect_uses(path: Path = API_MODULE) -> list[Use]:
    """Every TensorRT name ``path`` takes from the injected module and the objects it returns."""
    tree = ast.parse(Path(path).read_text())
    w = _Walker()
    for record in (False, True):  # first pass: what each class keeps on self; second: the uses
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                w.klass(node, record)
            elif isinstance(node, ast.FunctionDef) and not any(
                    node in getattr(c, "body", ()) for c in ast.walk(tree) if isinstance(c, ast.ClassDef)):
                w.function(node, "", record)
    return sorted(set(w.uses), key=lambda u: (u.line, u.cls, u.name or "", u.how))


def problems(api: Api, uses: list[Use], plan_names: dict[str, set[str]], flavour: str = "tensorrt") -> list[str]:
    """What ``uses`` (and the names the plans pass) need that ``api`` lacks, one line each."""
    out = []
    where = f"{'TensorRT-RTX' if flavour == 'tensorrt_rtx' else 'TensorRT'} {api.version}"
    for u in uses:
        if FLAVOUR_ONLY.get((u.cls, u.name or ""), flavour) != flavour:
            continue
        label = f"{'tensorrt' if u.cls == '' else u.cls}.{u.name} (tensorrt_api.py:{u.line})"
        if u.how == "dynamic":
            if u.cls not in PLAN_NAMES:
                out.append(f"getattr({u.cls}, {u.expr}) at tensorrt_api.py:{u.line}: no rule says where its "
                           "names come from (tests/helpers/tensorrt_bindings.PLAN_NAMES)")
            continue
        if u.cls == "" and u.name in PACKAGE_NAMES:
            continue
        kind = api.kind(u.cls, u.name)
        if u.name.startswith("__") and u.name != "__init__":
            continue
        if kind is None:
            out.append(f"{where} has no {label}")
        elif u.how == "set" and kind != "property":
            out.append(f"{where}: {label} is a {kind}, not a settable property")
        elif u.how == "call" and kind not in ("method", "function", "class", "init"):
            out.append(f"{where}: {label} is a {kind}, not callable")
    for enum, names in sorted(plan_names.items()):
        for name in sorted(names):
            if api.kind(enum, name) is None:
                out.append(f"{where} has no {enum}.{name} (an engine plan for TensorRT {api.version} uses it)")
    for (cls, name), ret in sorted(RETURNS.items()):
        if api.kind(cls, name) is None or api.kind("", ret) != "class":
            out.append(f"{where} has no {cls or 'tensorrt'}.{name} returning {ret} (tests/helpers/tensorrt_bindings.RETURNS)")
    return out


def live_api(module) -> Api:
    """The Python API of an installed module (TensorRT-RTX's real bindings), read by introspection:
    classes and enums with their methods, properties (settable or not) and enum values."""
    import enum
    import inspect

    api = Api(str(getattr(module, "__version__", "?")))
    for name, obj in vars(module).items():
        if name.startswith("_"):
            continue
        if inspect.isclass(obj):
            is_enum = hasattr(obj, "__members__") or issubclass(obj, enum.Enum)
            api.module[name] = "enum" if is_enum else "class"
            members = api.members.setdefault(name, {})
            for m in getattr(obj, "__members__", {}):
                members[m] = "value"
            for m, attr in inspect.getmembers(obj):
                if m.startswith("__") and m != "__init__" or m in members:
                    continue
                if isinstance(attr, property):
                    members[m] = "property" if attr.fset is not None else "readonly"
                elif callable(attr):
                    members[m] = "init" if m == "__init__" else "method"
                else:
                    members[m] = "value"
        elif callable(obj):
            api.module[name] = "function"
    return api
