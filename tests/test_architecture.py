"""The library's import structure (issue 14): each module imports only the modules above it in the pipeline
(the notebook numbers), never a sibling inside a function, with no cycle; the config imports no torch and the
model imports no fastai. `import_graph` reads the source with `ast`, function bodies included, so an import
hidden in a function counts like any other."""
import ast, json, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = 'show_attend_tell'


def module_order(nbs:Path=ROOT/'nbs')->dict:
    "module name -> its notebook's number, from each notebook's `#| default_exp`."
    order = {}
    for nb in sorted(nbs.glob('[0-9][0-9]_*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            m = re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(c['source']), re.M)
            if m: order[m.group(1)] = int(nb.name[:2]); break
    return order


def sibling_imports(path:Path)->list:
    "(imported module, line, inside a function?) for every import of a module of the package in `path`."
    tree = ast.parse(path.read_text(), str(path))
    out = []
    def visit(node, in_func):
        for child in ast.iter_child_nodes(node):
            f = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                mod = child.module or ''
                if child.level == 1: names = [mod] if mod else [a.name for a in child.names]
                elif mod == PKG: names = [a.name for a in child.names]
                elif mod.startswith(PKG + '.'): names = [mod.split('.')[1]]
                else: names = []
                out.extend([(n.split('.')[0], child.lineno, f) for n in names])
            elif isinstance(child, ast.Import):
                out.extend([(a.name.split('.')[1], child.lineno, f) for a in child.names if a.name.startswith(PKG + '.')])
            visit(child, f)
    visit(tree, False)
    return out


def import_graph(pkg_dir:Path=ROOT/PKG)->dict:
    "module -> list of (imported sibling, line, inside a function?), for every module of the package."
    return {p.stem: [i for i in sibling_imports(p) if i[0] != p.stem]
            for p in sorted(pkg_dir.glob('*.py')) if not p.name.startswith('_')}


def find_cycle(graph:dict):
    "One import cycle as a list of modules, or None."
    state, stack = {}, []
    def dfs(m):
        state[m] = 1; stack.append(m)
        for n, *_ in graph.get(m, []):
            if state.get(n) == 1: return stack[stack.index(n):] + [n]
            if n not in state and (c := dfs(n)): return c
        state[m] = 2; stack.pop()
    for m in graph:
        if m not in state and (c := dfs(m)): return c
    return None


def problems(pkg_dir:Path=ROOT/PKG, nbs:Path=ROOT/'nbs')->list:
    "Every violation of the import rules, one line each."
    graph, order, out = import_graph(pkg_dir), module_order(nbs), []
    if (c := find_cycle(graph)): out.append('import cycle: ' + ' -> '.join(c))
    for m, imps in graph.items():
        for n, line, in_func in imps:
            if in_func: out.append(f"{m}.py:{line}: imports {n} inside a function")
            if m in order and n in order and order[n] >= order[m]:
                out.append(f"{m}.py:{line}: imports {n}, which comes after it (notebook {order[n]:02d} >= {order[m]:02d})")
    return out


def test_the_checker_catches_what_it_should(tmp_path):
    pkg, nbs = tmp_path/PKG, tmp_path/'nbs'
    pkg.mkdir(); nbs.mkdir()
    for i, name in enumerate(('a', 'b')):
        (nbs/f'0{i}_{name}.ipynb').write_text(json.dumps({'cells': [{'cell_type': 'code', 'source': [f'#| default_exp {name}']}]}))
    (pkg/'a.py').write_text('def f():\n    from .b import g\n    return g\n')
    (pkg/'b.py').write_text('from show_attend_tell.a import f\ndef g(): pass\n')
    found = problems(pkg, nbs)
    assert any(p.startswith('import cycle: ') for p in found), found
    assert 'a.py:2: imports b inside a function' in found
    assert 'a.py:2: imports b, which comes after it (notebook 01 >= 00)' in found
    assert not any(p.startswith('b.py') for p in found)                 # b imports a, which is above it


def test_imports_flow_downward():
    assert set(module_order()) == set(import_graph()), "every module comes from one numbered notebook"
    found = problems()
    assert not found, '\n'.join(found)


@pytest.mark.parametrize('module,heavy', [('config', 'torch'), ('core', 'torch'), ('vocab', 'torch'),
                                          ('attention', 'fastai'), ('decoder', 'fastai'), ('losses', 'fastai')])
def test_light_modules_stay_light(module, heavy):
    code = f"import sys, {PKG}.{module}; print('{heavy}' in sys.modules or any(k.startswith('{heavy}.') for k in sys.modules))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'False', f"importing {PKG}.{module} imports {heavy}"
