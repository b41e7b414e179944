"""The house (docs/architecture.md): rooms by dependency, imports pointing down only, no import cycles.

The package's imports are read with ``ast`` (module-level and function-level imports alike), so the test needs
nothing imported and fails on the first upward import or cycle anyone adds.
"""
import ast
from pathlib import Path
from typing import Dict, Iterator, Optional, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / 'gmamba_zoo'

# room -> rank: a module may import from its own room and from rooms of a lower rank only. The applications (rank 4)
# may use each other as long as no cycle forms.
ROOMS: Dict[str, int] = {
    'compat': 0,
    'ops': 1,
    'layers': 2,
    'models': 3,
    'hub': 4, 'flops': 4, 'bench': 4, 'analysis': 4, 'train': 4, 'export': 4, 'integrations': 4,
    'cli': 5, 'timm': 5, '__main__': 5,  # timm.py: `python -m gmamba_zoo.timm`; __main__.py: `python -m gmamba_zoo`
}
ROOT_FILES = {'__init__.py', 'cli.py', 'timm.py', '__main__.py'}
ROOT_RANK = ROOMS['models']  # the package's __init__ registers the models and re-exports ops/layers/models names


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob('*.py')}


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ''
    base = module.split('.') if is_pkg else module.split('.')[:-1]
    base = base[:len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, known: Set[str]) -> Iterator[Tuple[str, int]]:
    """(imported package module, line) for every import of this package in ``path``."""
    is_pkg = path.name == '__init__.py'
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_pkg, node)
            # `from pkg import submodule` depends on the submodule; `from pkg import name` on the package
            targets = [f'{target}.{a.name}' if f'{target}.{a.name}' in known else target for a in node.names]
        else:
            continue
        for t in targets:
            if t == 'gmamba_zoo' or t.startswith('gmamba_zoo.'):
                while t not in known and '.' in t:
                    t = t.rsplit('.', 1)[0]
                yield t, node.lineno


def _room(module: str) -> Optional[str]:
    parts = module.split('.')
    return None if len(parts) == 1 else parts[1]


def _rank(module: str) -> int:
    room = _room(module)
    return ROOT_RANK if room is None else ROOMS[room]


def _graph() -> Dict[str, Dict[str, int]]:
    mods = _modules()
    return {m: dict(_imports(m, p, set(mods))) for m, p in mods.items()}


def test_package_root_holds_init_and_cli_only():
    loose = sorted(p.name for p in PACKAGE.glob('*.py') if p.name not in ROOT_FILES)
    assert not loose, f'modules loose in the package root (put them in a room): {loose}'


def test_every_subpackage_is_a_known_room():
    rooms = {p.parent.name for p in PACKAGE.glob('*/__init__.py')}
    unknown = sorted(rooms - set(ROOMS))
    assert not unknown, f'new rooms {unknown}: give them a rank in ROOMS and docs/architecture.md'


def test_imports_point_down():
    upward = []
    for module, deps in _graph().items():
        for dep, line in deps.items():
            if _rank(dep) > _rank(module):
                upward.append(f'{module}:{line} imports {dep}')
    assert not upward, 'upward imports:\n' + '\n'.join(upward)


def test_no_import_cycles():
    graph = {m: set(deps) - {m} for m, deps in _graph().items()}
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = 'open'
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 'open':
                cycles.append(' -> '.join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = 'done'

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    # a package importing its own submodules (re-exports) and those importing siblings through the package is no cycle
    cycles = [c for c in cycles if not _only_package_reexport(c)]
    assert not cycles, 'import cycles:\n' + '\n'.join(cycles)


def _only_package_reexport(cycle: str) -> bool:
    """True for a cycle made only of a package __init__ re-exporting submodules that import their own package."""
    mods = cycle.split(' -> ')
    pkgs = {m for m in mods if (PACKAGE.parent / m.replace('.', '/') / '__init__.py').exists()}
    if len(pkgs) != 1 or pkgs == {PACKAGE.name}:
        return False
    pkg = pkgs.pop()
    return all(m == pkg or m.startswith(pkg + '.') for m in mods)


def test_checker_sees_an_upward_import(tmp_path):
    """The checker itself: a lazy import of the CLI inside a model is found, with its line."""
    src = 'def f():\n    from ..cli import main\n'
    path = tmp_path / 'x.py'
    path.write_text(src)
    found = dict(_imports('gmamba_zoo.models.x', path, set(_modules())))
    assert found == {'gmamba_zoo.cli': 2}
    assert _rank('gmamba_zoo.cli') > _rank('gmamba_zoo.models.x')
