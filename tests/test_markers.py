"""The fast subset (`pytest -m "not slow"`) starts no end-to-end run: every test that launches ``launch.py``,
``python -m meal...`` or torchrun in a subprocess is marked ``slow`` (``slurm`` and ``cuda`` count as slow:
tests/conftest.py adds the marker to them).

The test modules are read, not imported: a test launches when its body, a function or class of its module
(or one imported from ``tests.*``) that it names, or a fixture it requests (from its module or a conftest.py
above it), calls ``run_launch`` or starts ``sys.executable`` / ``torchrun`` through :mod:`subprocess` with
anything but ``-c`` (a few lines of Python, such as the lock holder of tests/test_runlock.py).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
#: markers that keep a test out of `-m "not slow"` (tests/conftest.py adds `slow` to slurm and cuda tests)
SLOW_MARKERS = {"slow", "slurm", "cuda"}
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain (calls and subscripts are looked through); "" otherwise."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return ".".join(reversed(parts))
        else:
            return ""


def _marks(expr: ast.AST) -> set[str]:
    """The marker names in a decorator or a `pytestmark` value (one mark or a list of marks)."""
    if isinstance(expr, ast.List | ast.Tuple):
        return set().union(*(_marks(e) for e in expr.elts)) if expr.elts else set()
    name = _dotted(expr)
    return {name.split(".")[2]} if name.startswith("pytest.mark.") and name.count(".") >= 2 else set()


def _pytestmark(body: list[ast.stmt]) -> set[str]:
    marks: set[str] = set()
    for node in body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            marks |= _marks(node.value)
    return marks


def _fixture_name(fn: ast.FunctionDef) -> str | None:
    for deco in fn.decorator_list:
        if _dotted(deco) == "pytest.fixture":
            if isinstance(deco, ast.Call):
                for kw in deco.keywords:
                    if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                        return str(kw.value.value)
            return fn.name
    return None


def _starts_a_run(call: ast.Call, subprocess_names: set[str], assigned: dict[str, ast.expr]) -> bool:
    """A subprocess call whose command is ``[sys.executable, ARG, ...]`` with ARG not ``-c``, or torchrun; a
    command held in a variable is looked up in `assigned` (the assignments of the function around the call)."""
    name = _dotted(call.func)
    if not ((name.startswith("subprocess.") and name.split(".", 1)[1] in SUBPROCESS_CALLS) or name in subprocess_names):
        return False
    command = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "args"), None)
    if isinstance(command, ast.Name):
        command = assigned.get(command.id)
    if not isinstance(command, ast.List | ast.Tuple) or not command.elts:
        return False
    first = command.elts[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.endswith("torchrun"):
        return True
    if _dotted(first) != "sys.executable":
        return False
    second = command.elts[1] if len(command.elts) > 1 else None
    return not (isinstance(second, ast.Constant) and second.value == "-c")


@dataclass
class Module:
    """One parsed test module: its functions and classes by name, and how each test is marked."""

    path: Path
    tree: ast.Module
    defs: dict[str, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef] = field(default_factory=dict)
    imported: dict[str, tuple[Path, str]] = field(default_factory=dict)  # name -> (tests/ module, its name there)
    subprocess_names: set[str] = field(default_factory=set)  # `from subprocess import run` and the like

    @classmethod
    def parse(cls, path: Path, source: str | None = None) -> Module:
        text = path.read_text() if source is None else source
        module = cls(path, ast.parse(text, filename=str(path)))
        for node in module.tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                module.defs[node.name] = node
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "subprocess":
                    module.subprocess_names |= {a.asname or a.name for a in node.names if a.name in SUBPROCESS_CALLS}
                elif node.module == "tests" or node.module.startswith("tests."):
                    source = TESTS.parent.joinpath(*node.module.split("."))
                    source = source / "__init__.py" if source.is_dir() else source.with_suffix(".py")
                    for alias in node.names:
                        module.imported[alias.asname or alias.name] = (source, alias.name)
        return module

    def tests(self) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef, set[str]]]:
        """(node id, test function, its markers with the module's and its class's) for each test."""
        module_marks = _pytestmark(self.tree.body)
        for node in self.tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                yield node.name, node, module_marks | set().union(*map(_marks, node.decorator_list))
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                class_marks = module_marks | _pytestmark(node.body) | set().union(*map(_marks, node.decorator_list))
                for fn in node.body:
                    if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.name.startswith("test"):
                        marks = class_marks | set().union(*map(_marks, fn.decorator_list))
                        yield f"{node.name}::{fn.name}", fn, marks


class Launches:
    """Which functions start a run, following names through modules, imports from tests.*, and fixtures."""

    def __init__(self) -> None:
        self.modules: dict[Path, Module] = {}
        self.memo: dict[tuple[Path, str], bool] = {}
        self.fixture_maps: dict[Path, dict[str, tuple[Path, str]]] = {}

    def module(self, path: Path) -> Module:
        if path not in self.modules:
            self.modules[path] = Module.parse(path)
        return self.modules[path]

    def fixtures(self, path: Path) -> dict[str, tuple[Path, str]]:
        """Fixtures a test of `path` can request: conftest.py files from tests/ down, then its own module."""
        if path in self.fixture_maps:
            return self.fixture_maps[path]
        found: dict[str, tuple[Path, str]] = {}
        folders = [path.parent, *path.parent.parents]
        sources = [f / "conftest.py" for f in reversed(folders) if f.is_relative_to(TESTS)] + [path]
        for source in sources:
            if source in self.modules or source.is_file():
                for name, node in self.module(source).defs.items():
                    if isinstance(node, ast.FunctionDef) and (fixture := _fixture_name(node)):
                        found[fixture] = (source, name)
        self.fixture_maps[path] = found
        return found

    def defined(self, path: Path, name: str) -> bool:
        """Whether module `path`'s function or class `name` (own or imported from tests.*) starts a run."""
        key = (path, name)
        if key not in self.memo:
            self.memo[key] = False  # a cycle adds nothing
            module = self.module(path)
            if name in module.defs:
                self.memo[key] = self.node(path, module.defs[name])
            elif name in module.imported and (
                module.imported[name][0] in self.modules or module.imported[name][0].is_file()
            ):
                self.memo[key] = self.defined(*module.imported[name])
        return self.memo[key]

    def node(self, path: Path, node: ast.AST, requested: tuple[str, ...] = ()) -> bool:
        """Whether `node` (a function, class or decorator-less body) starts a run, directly or through a name."""
        module = self.module(path)
        assigned: dict[str, ast.expr] = {}
        calls: list[ast.Call] = []
        names: set[str] = set()
        for child in ast.walk(node):
            if isinstance(child, ast.Assign | ast.AnnAssign) and child.value is not None:
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                assigned |= {t.id: child.value for t in targets if isinstance(t, ast.Name)}
            elif isinstance(child, ast.Call):
                calls.append(child)
            elif isinstance(child, ast.Name):
                names.add(child.id)
        if any(_starts_a_run(call, module.subprocess_names, assigned) for call in calls):
            return True
        if any(self.defined(path, name) for name in names if name in module.defs or name in module.imported):
            return True
        fixtures = self.fixtures(path)
        return any(arg in fixtures and self.defined(*fixtures[arg]) for arg in requested)

    def test(self, path: Path, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        """Whether test `fn` starts a run: its body, the names it uses, the fixtures it requests (autouse too)."""
        body = ast.Module(body=fn.body, type_ignores=[])
        requested = tuple(a.arg for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs))
        return self.node(path, body, requested) or any(self._autouse(path))

    def _autouse(self, path: Path) -> Iterator[bool]:
        for source, name in self.fixtures(path).values():
            node = self.module(source).defs[name]
            autouse = any(
                isinstance(d, ast.Call)
                and _dotted(d) == "pytest.fixture"
                and any(k.arg == "autouse" and isinstance(k.value, ast.Constant) and k.value.value for k in d.keywords)
                for d in node.decorator_list
            )
            if autouse:
                yield self.defined(source, name)


def unmarked_launches(paths: list[Path], launches: Launches | None = None) -> list[str]:
    """`path::test` for each test in `paths` that starts a run but has none of SLOW_MARKERS."""
    launches = launches or Launches()
    found = []
    for path in paths:
        for node_id, fn, marks in launches.module(path).tests():
            if not marks & SLOW_MARKERS and launches.test(path, fn):
                found.append(f"{path.relative_to(TESTS.parent)}::{node_id}")
    return found


def _test_modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if p.is_file())


def test_every_test_that_starts_a_run_is_marked_slow() -> None:
    unmarked = unmarked_launches(_test_modules())
    assert not unmarked, (
        "these tests start launch.py, python -m meal... or torchrun in a subprocess but are not marked slow "
        "(add @pytest.mark.slow, or pytestmark = pytest.mark.slow for a whole module):\n  " + "\n  ".join(unmarked)
    )


def test_the_guard_sees_the_tests_that_start_runs() -> None:
    """Known launching tests of this suite are found (a guard that finds nothing would pass vacuously)."""
    launches = Launches()
    expected = {
        "tests/config/test_compose.py": "test_launch_prints_the_job_config",  # subprocess [sys.executable, ...]
        "tests/reliability/test_bad_inputs.py": "test_bad_input",  # a module fixture -> class -> run_launch
        "tests/search/test_search_launch.py": "test_search_on_the_test_set_is_refused_and_writes_no_study",
        "tests/test_bench.py": "test_bench_prints_one_json_object",  # python -m meal.bench via a helper
        "tests/engine/test_ddp.py": "test_two_ranks_match_one_process",
        "tests/reliability/test_entry_points.py": "test_ctrl_c_before_training_ends_quietly_with_status_130",
    }
    for relative, name in expected.items():
        path = TESTS.parent / relative
        fn = next(fn for node_id, fn, _ in launches.module(path).tests() if node_id == name)
        assert launches.test(path, fn), f"{relative}::{name} is not seen to start a run"
    fast = TESTS / "test_runlock.py"  # python -c HOLDER: a lock holder, not a run
    holder = "test_a_killed_holder_frees_the_directory"
    fn = next(fn for node_id, fn, _ in launches.module(fast).tests() if node_id == holder)
    assert not launches.test(fast, fn)


@pytest.mark.parametrize(
    ("source", "unmarked"),
    [
        ("from tests.conftest import run_launch\ndef test_a(meal_env):\n    run_launch(['x'], meal_env)\n", True),
        (
            "import pytest\nfrom tests.conftest import run_launch\n"
            "@pytest.mark.slow\ndef test_a(meal_env):\n    run_launch(['x'], meal_env)\n",
            False,
        ),
        (
            "import pytest\nfrom tests.conftest import run_launch\npytestmark = [pytest.mark.slurm]\n"
            "def test_a(meal_env):\n    run_launch(['x'], meal_env)\n",
            False,
        ),
        (
            "import subprocess, sys\ndef _go():\n    return subprocess.run([sys.executable, 'launch.py', 'x=1'])\n"
            "def test_a():\n    _go()\n",
            True,
        ),
        (
            "import pytest, subprocess, sys\n@pytest.fixture\ndef done():\n"
            "    return subprocess.run([sys.executable, '-m', 'meal.report', 'd'])\n"
            "class TestA:\n    def test_a(self, done):\n        assert done\n",
            True,
        ),
        (
            "import subprocess, sys\ndef test_a(tmp_path):\n"
            "    command = [sys.executable, 'launch.py', f'x={tmp_path}']\n    subprocess.Popen(command).wait()\n",
            True,
        ),
        ("import subprocess, sys\ndef test_a():\n    subprocess.run([sys.executable, '-c', 'pass'])\n", False),
        ("def test_a():\n    assert 1 + 1 == 2\n", False),
    ],
    ids=["run_launch", "marked", "slurm-module", "helper", "fixture-in-class", "command-variable", "python-c", "unit"],
)
def test_the_guard_fails_an_unmarked_launch(source: str, unmarked: bool) -> None:
    module = TESTS / "markers_probe" / "test_probe.py"  # under tests/ so conftest fixtures resolve; never written
    launches = Launches()
    launches.modules[module] = Module.parse(module, source)
    found = unmarked_launches([module], launches)
    assert bool(found) == unmarked, found
