"""The library's import structure: each module imports only the modules above it in the pipeline
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


NOISY = ('fastai', 'timm', 'pycocotools', 'pycocoevalcap', 'gradio')   # third-party packages that warn on import


def noisy_importers(pkg_dir:Path=ROOT/PKG)->list:
    "The modules that import, at the top level, a package known to print deprecation warnings when first imported."
    out = []
    for p in sorted(pkg_dir.glob('*.py')):
        body = ast.parse(p.read_text()).body
        body += [n for b in body if isinstance(b, (ast.With, ast.Try)) for n in b.body]   # `with catch_warnings(): import ...`
        tops = {(n.module or '').split('.')[0] if isinstance(n, ast.ImportFrom) else a.name.split('.')[0]
                for n in body if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [None])}
        if tops & set(NOISY): out.append(p.stem)
    return out


def test_importing_any_module_first_prints_no_warning():
    """Notebook outputs and users' logs show what an import prints: each module that imports a noisy package, imported
    first in a fresh interpreter, prints nothing (the library silences the warnings it triggers, where it triggers them)."""
    mods = noisy_importers()
    assert {'loaders', 'learner', 'training'} <= set(mods), mods
    loud = {}
    for m in mods:
        out = subprocess.run([sys.executable, '-c', f'import {PKG}.{m}'], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        if out.stderr.strip(): loud[m] = out.stderr.strip().splitlines()[0][:160]
    assert not loud, loud


# --- Notebook rhythm: each exported definition in its own cell, followed at once by a check (fastcore's habit) ---
CHECK = re.compile(r'\b(test_eq|test_ne|test_close|test_fail|test_is|test_stdout|test_warns)\(|^\s*assert\b', re.M)
SKIPPED = re.compile(r'^#\|\s*(export|exports|eval:\s*false|slow|gpu)\b', re.M)


def _code(cell)->str:
    s = cell['source']
    return ''.join(s) if isinstance(s, list) else s


def public_definitions(source:str)->list:
    "Names of the public functions and classes a cell defines at its top level (`@patch`ed methods included)."
    try: tree = ast.parse(re.sub(r'^\s*[#%!].*$', '', source, flags=re.M))
    except SyntaxError: return []
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not n.name.startswith('_')]


def notebook_rhythm(path:Path)->dict:
    "Per notebook: exported public definitions, those checked (a test or assert in one of the next two cells), and export cells with several."
    cells = json.loads(path.read_text())['cells']
    out = dict(defined=[], checked=[], crowded=[])
    for i, c in enumerate(cells):
        src = _code(c)
        if c['cell_type'] != 'code' or not re.search(r'^#\|\s*exports?\b', src, re.M): continue
        names = public_definitions(src)
        if len(names) > 1: out['crowded'].append(names)
        after = [_code(n) for n in cells[i + 1:i + 3] if n['cell_type'] == 'code']
        ok = any(CHECK.search(s) and not SKIPPED.search(s) for s in after)
        out['defined'] += names
        if ok: out['checked'] += names
    return out


def test_rhythm_checker_counts_what_it_should(tmp_path):
    nb = {'cells': [{'cell_type': 'code', 'source': '#| export\ndef f(): pass\ndef _g(): pass'},
                    {'cell_type': 'markdown', 'source': 'f is the identity of nothing'},
                    {'cell_type': 'code', 'source': 'test_eq(f(), None)'},
                    {'cell_type': 'code', 'source': '#| export\nclass A: pass\ndef h(): pass'},
                    {'cell_type': 'code', 'source': '#| slow\nassert h() is None'}]}
    (tmp_path/'x.ipynb').write_text(json.dumps(nb))
    r = notebook_rhythm(tmp_path/'x.ipynb')
    assert (r['defined'], r['checked'], r['crowded']) == (['f', 'A', 'h'], ['f'], [['A', 'h']])


def test_every_definition_has_its_cell_and_most_a_check_right_after():
    "One public definition per export cell, and at least 65% of them checked within the next two cells (fastcore's 01_basics: 68%)."
    rows = {p.name: notebook_rhythm(p) for p in sorted((ROOT/'nbs').glob('[0-9][0-9]_*.ipynb'))}
    crowded = [f"{nb}: {', '.join(names)}" for nb, r in rows.items() for names in r['crowded']]
    assert not crowded, "export cells with more than one public definition:\n" + '\n'.join(crowded)
    n, k = sum(len(r['defined']) for r in rows.values()), sum(len(r['checked']) for r in rows.values())
    table = '\n'.join(f"{nb}: {len(r['checked'])}/{len(r['defined'])}; unchecked: {', '.join(sorted(set(r['defined']) - set(r['checked'])))}"
                      for nb, r in rows.items())
    assert k >= 0.65 * n, f"{k}/{n} = {k/n:.0%} of exported definitions are checked within two cells:\n{table}"


# --- Errors: one base class, each error in the module that raises it -------------------------------------------------
BUILTIN_ERRORS = {'ValueError', 'TypeError', 'KeyError', 'IndexError', 'RuntimeError', 'Exception', 'AssertionError', 'OSError'}
# raises of a built-in error that are right as they are, each with its reason
ALLOWED_RAISES = {('checkpoint', 'TypeError'): "_check_plain: caught by save_checkpoint, which names the field in a CheckpointError",
                  ('cache', 'IndexError'): "the sequence protocol: FeatureCache[i] out of range raises IndexError, as any Python sequence"}


def error_classes(pkg_dir:Path=ROOT/PKG)->dict:
    "class name -> (module, names of its bases) for every class of the package whose name ends in 'Error'."
    out = {}
    for p in sorted(pkg_dir.glob('*.py')):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ClassDef) and n.name.endswith('Error'):
                out[n.name] = (p.stem, [b.id if isinstance(b, ast.Name) else getattr(b, 'attr', '') for b in n.bases])
    return out


def builtin_raises(pkg_dir:Path=ROOT/PKG)->list:
    "(module, line, exception) for every `raise ValueError(...)`-like statement of a built-in error in the package."
    out = []
    for p in sorted(pkg_dir.glob('*.py')):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.Raise) and n.exc is not None:
                f = n.exc.func if isinstance(n.exc, ast.Call) else n.exc
                if isinstance(f, ast.Name) and f.id in BUILTIN_ERRORS: out.append((p.stem, n.lineno, f.id))
    return out


def test_every_error_derives_from_SATError_and_none_is_a_bare_builtin():
    classes = error_classes()
    def root(name, seen=()):
        if name == 'SATError': return True
        if name not in classes or name in seen: return False
        return any(root(b, seen + (name,)) for b in classes[name][1])
    orphans = [f"{m}.{c}" for c, (m, _) in classes.items() if not root(c)]
    assert not orphans, f"errors that do not derive from core.SATError: {orphans}"
    bare = [f"{m}.py:{line}: raise {e}" for m, line, e in builtin_raises() if (m, e) not in ALLOWED_RAISES]
    assert not bare, "user-facing errors must be the module's SATError subclass:\n" + '\n'.join(bare)


def test_the_error_checks_catch_what_they_should(tmp_path):
    (tmp_path/'m.py').write_text("class SATError(ValueError): pass\nclass AError(SATError): pass\nclass BError(ValueError): pass\n"
                                 "def f():\n    raise ValueError('x')\n")
    assert error_classes(tmp_path)['BError'] == ('m', ['ValueError']) and builtin_raises(tmp_path) == [('m', 5, 'ValueError')]
