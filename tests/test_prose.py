"""Prose stays true: every name the project's prose gives to a file, page, module, script, flag or make target exists.

Notebooks get renumbered, modules renamed, flags respelled; code that calls a removed name fails at once, but a
sentence that names it keeps telling readers about something that is gone. This module reads the prose and checks
each reference against the tree as it is at test time: every set below (notebooks, docs pages and their anchors,
modules and their names, console scripts and their flags, make targets, bench options, test files) is derived
from the files, never written down here.

The prose:
  - the markdown cells of every notebook under nbs/ (tutorials/, explanations/, index, benchmarks included),
    and the comments and docstrings of their code cells;
  - README.md and CONTRIBUTING.md (CHANGELOG.md is history: it names what used to exist, on purpose);
  - the module docstrings and leading comment blocks of bench/**/*.py and of the scripts in tools/;
  - the comments of the Makefile.

The references, one test per kind so that the failure's name says what is wrong:
  - notebooks: `01_config`, `nbs/tutorials/own_dataset.ipynb`, links to `x.ipynb` and to docs pages `x.html`
    (nbdev's page of nbs/[NN_]name.ipynb is name.html, beside the notebook's folder), anchors `page.html#anchor`
    (a symbol the notebook exports or show_doc's, a heading), links to the docs site and to repository files;
  - modules: `show_attend_tell.x`, `show_attend_tell.x.name`, `from show_attend_tell.x import a, b`, and the
    rows of the "map of the library" table (`| 05 | [encoder](...) |`: nbs/05_*.ipynb exports `encoder`);
  - paths: `tests/...`, bare `test_*.py` names, `tests/test_x.py::test_name`; bench/, tools/ and show_attend_tell/
    files (not bench/results/, which runs write);
  - console scripts: a word `sat_*` is a console script of settings.ini or a name the library defines
    (`sat_train` the function is `sat_train` the script);
  - flags: a `--flag` written after one of our programs in the same command (`sat_train DATA --preset coco`,
    `python -m show_attend_tell.x ...`, `bench/x.py ...`) must be an option of that program. A flag written alone
    (`--resume` in a sentence) must be an option of one of our programs named in its paragraph or in the code block
    just before it, or of the passage's own (a notebook's console script, a bench script's own docstring); with no
    program named, of any console script. Console-script options are the parameters of the `call_parse` function
    (`--name`, underscores as in Python: fastcore does not accept `--beam-size`; `--no-name` for a bool that
    defaults to True); bench options are the `add_argument` calls of the script and of the helpers it imports from
    bench/. Flags of other programs (a command starting with pip, git, nbdev_*, pytest, torchrun before its `-m`,
    and flags written alone after such a command) are not checked;
  - make targets: `make a b` in code names rules of the Makefile.

Each failure lists every finding as `file:line` (notebooks: `nbs/x.ipynb cell N line L`, cells counted from 1)
`: kind 'reference' — not found (close matches: ...)`. ALLOWED holds the few deliberate mentions of things that do
not exist, each with its reason; an entry that no longer matches anything fails too, so the list cannot rot.
Nothing heavy is imported: the library and bench scripts are read with `ast`, not imported.
"""
import ast, configparser, difflib, functools, io, json, posixpath, re, tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, LIB, BENCH, TOOLS = ROOT/'nbs', ROOT/'show_attend_tell', ROOT/'bench', ROOT/'tools'

# Deliberate mentions of things that do not exist: (kind, reference, text its line contains) -> why.
ALLOWED = {
    ('flag', '--scst', 'rather than a `--scst` flag'): "26_scst says SCST is a console script of its own, *not* a --scst flag",
    ('notebook', 'config.ipynb', '-> config.ipynb'): "tools/quarto names the renamed copy of a notebook it writes in _proc/",
    ('file', 'show_attend_tell/name.py', 'nbs/NN_name.ipynb'): "CONTRIBUTING's placeholder: the module notebook NN_name exports",
}


# ---------------------------------------------------------------------------------------------------------------
# What exists
# ---------------------------------------------------------------------------------------------------------------

def rel(p: Path) -> str: return p.relative_to(ROOT).as_posix()

@functools.cache
def notebooks() -> tuple:
    "Every notebook under nbs/, as paths relative to the repository root."
    return tuple(sorted(rel(p) for p in NBS.rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts))

@functools.cache
def read_nb(path: str) -> list:
    "The cells of a notebook: (1-based number, cell type, source)."
    cells = json.loads((ROOT/path).read_text(encoding='utf-8'))['cells']
    return [(i, c['cell_type'], ''.join(c['source']) if isinstance(c['source'], list) else c['source'])
            for i, c in enumerate(cells, 1)]

NUMBERED = re.compile(r'^\d+[a-zA-Z0-9]*_')       # nbdev's page name drops this prefix (nbdev.doclinks._nbpath2html)

def page_of(nb: str) -> str:
    "The docs page nbdev renders a notebook to, relative to the site root: nbs/13_grounding.ipynb -> grounding.html."
    p = Path(nb).relative_to('nbs')
    return (p.parent/NUMBERED.sub('', p.name.lower())).with_suffix('.html').as_posix()

@functools.cache
def pages() -> dict:
    "Docs page -> its notebook."
    return {page_of(nb): nb for nb in notebooks()}

def default_exp(nb: str):
    "The module a notebook exports to (`#| default_exp name`), or None."
    for _, kind, src in read_nb(nb):
        m = re.search(r'^#\|\s*default_exp\s+([\w.]+)', src, re.M) if kind == 'code' else None
        if m: return m.group(1)

def python_source(src: str) -> str:
    "A code cell as Python: IPython magics and shell lines (!, %) blanked, so that line numbers stay."
    return '\n'.join('' if re.match(r'\s*[!%?]', l) else l for l in src.split('\n'))

def parse(src: str):
    try: return ast.parse(src)
    except SyntaxError: return None

def slugs(heading: str) -> set:
    "The anchors a heading gets: Pandoc's (Quarto) and GitHub's, and an explicit {#id}."
    m = re.search(r'\{#([\w.-]+)[^}]*\}\s*$', heading)
    if m: return {m.group(1)}
    text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading).strip().lower()
    text = re.sub(r'[`*_~]', lambda m: m.group() if m.group() == '_' else '', text)
    pandoc = re.sub(r'^[^a-z]+', '', re.sub(r'\s+', '-', re.sub(r'[^\w\s.-]', '', text)))
    github = re.sub(r'\s', '-', re.sub(r'[^\w\s-]', '', text))
    return {pandoc, github}

def headings(md: str) -> set:
    "The anchors of the headings of some markdown."
    out = set()
    for line in strip_fences(md).split('\n'):
        m = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if m: out |= slugs(m.group(1))
    return out

def strip_fences(md: str) -> str:
    "Markdown with its fenced code blocks blanked (line numbers kept)."
    out, fence = [], None
    for line in md.split('\n'):
        m = re.match(r'\s*(```+|~~~+)', line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence): fence = None
            out.append('')
        elif m: fence = m.group(1); out.append('')
        else: out.append(line)
    return '\n'.join(out)

@functools.cache
def anchors(nb: str) -> frozenset:
    "The anchors of a notebook's page: exported and show_doc'd symbols (lower case, as nbdev writes them), headings."
    out = set()
    for _, kind, src in read_nb(nb):
        if kind == 'markdown': out |= headings(src); continue
        tree = parse(python_source(src))
        if tree is None: continue
        if re.search(r'^#\|\s*exports?\b', src, re.M):
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    out.add(node.name.lower())
                    cls = node.args.args[0].annotation if isinstance(node, ast.FunctionDef) and node.args.args else None
                    if isinstance(cls, ast.Name): out.add(f'{cls.id}.{node.name}'.lower())       # @patch def f(self:Cls)
                if isinstance(node, ast.ClassDef):
                    out |= {f'{node.name}.{f.name}'.lower() for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and getattr(call.func, 'id', None) == 'show_doc' and call.args:
                out.add(ast.unparse(call.args[0]).lower())
    return frozenset(out)

@functools.cache
def modules() -> dict:
    "Library module name -> its file."
    return {p.stem: p for p in sorted(LIB.glob('*.py')) if p.stem != '__init__'} | {'__init__': LIB/'__init__.py'}

def bound_names(tree, here: Path = None) -> set:
    "The names a module binds at top level (defs, classes, assignments, imports), through if/try/with blocks."
    out = set()
    def visit(body):
        for n in body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): out.add(n.name)
            elif isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target]):
                    out.update(x.id for x in ast.walk(t) if isinstance(x, ast.Name))
            elif isinstance(n, ast.Import): out.update((a.asname or a.name).split('.')[0] for a in n.names)
            elif isinstance(n, ast.ImportFrom):
                for a in n.names:
                    if a.name != '*': out.add(a.asname or a.name)
                    elif here and n.level == 1 and n.module in modules(): out.update(module_names(n.module))
            elif isinstance(n, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                visit(n.body); visit(getattr(n, 'orelse', [])); visit(getattr(n, 'finalbody', []))
                for h in getattr(n, 'handlers', []): visit(h.body)
    visit(tree.body)
    return out

@functools.cache
def module_tree(name: str): return ast.parse(modules()[name].read_text(encoding='utf-8'))

@functools.cache
def module_names(name: str) -> frozenset:
    "The names `from show_attend_tell.<name> import ...` can import (submodules of the package included)."
    names = bound_names(module_tree(name), here=modules()[name])
    return frozenset(names | (set(modules()) if name == '__init__' else set()))

@functools.cache
def library_names() -> frozenset:
    return frozenset().union(*(module_names(m) for m in modules()))

@functools.cache
def settings() -> configparser.SectionProxy:
    cp = configparser.ConfigParser(interpolation=None); cp.read(ROOT/'settings.ini')
    return cp['DEFAULT']

@functools.cache
def console_scripts() -> dict:
    "Console script -> (module, function), from settings.ini's console_scripts."
    out = {}
    for entry in settings().get('console_scripts', '').split():
        name, target = entry.split('=')
        mod, func = target.split(':')
        out[name] = (mod.rsplit('.', 1)[-1], func)
    return out

HELP_FLAGS = frozenset({'--help', '-h'})

def call_parse_flags(fn: ast.FunctionDef) -> frozenset:
    "The options fastcore's call_parse makes of a function: --name per parameter with a default (--no-name for True bools)."
    a = fn.args
    params = a.posonlyargs + a.args
    with_default = list(zip(params[len(params) - len(a.defaults):], a.defaults)) + \
                   [(p, d) for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
    flags = set()
    for p, d in with_default:
        ann = p.annotation
        is_bool = (isinstance(ann, ast.Name) and ann.id == 'bool') or \
                  (isinstance(ann, ast.Call) and any(isinstance(x, ast.Name) and x.id == 'bool' for x in ann.args[1:2]))
        negated = is_bool and isinstance(d, ast.Constant) and d.value is True
        flags.add(f'--no-{p.arg}' if negated else f'--{p.arg}')
    return frozenset(flags | HELP_FLAGS | {'--pdb', '--xtra'})

@functools.cache
def module_cli_flags(mod: str):
    "The flags of `python -m show_attend_tell.<mod>`: its call_parse functions' options, or None if it has none."
    if mod not in modules(): return None
    fns = [n for n in module_tree(mod).body if isinstance(n, ast.FunctionDef)
           and any(ast.unparse(d).startswith('call_parse') for d in n.decorator_list)]
    return frozenset().union(*map(call_parse_flags, fns)) if fns else None

@functools.cache
def script_flags(script: str):
    """The flags of a console script: its function in the module settings.ini names, or (while a renamed module is
    not exported yet) the function of that name in any library module; None when there is none."""
    mod, func = console_scripts()[script]
    for m in [mod] * (mod in modules()) + sorted(modules()):
        fn = next((n for n in module_tree(m).body if isinstance(n, ast.FunctionDef) and n.name == func), None)
        if fn: return call_parse_flags(fn)

def argparse_flags(tree) -> tuple:
    "(flags of every add_argument call in `tree`, whether it builds an ArgumentParser)."
    flags, parser = set(), False
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            fname = getattr(n.func, 'attr', getattr(n.func, 'id', ''))
            parser |= fname == 'ArgumentParser'
            if fname == 'add_argument':
                flags |= {a.value for a in n.args if isinstance(a, ast.Constant) and str(a.value).startswith('-')}
    return flags, parser

@functools.cache
def bench_scripts() -> dict:
    return {rel(p): p for p in sorted(BENCH.rglob('*.py'))}

@functools.cache
def bench_flags(script: str):
    "The options of a bench script: its own add_argument calls and those of the bench helpers it imports; None if none."
    path = bench_scripts()[script]
    tree = ast.parse(path.read_text(encoding='utf-8'))
    flags, parser = argparse_flags(tree)
    for imp in (n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module):
        sib = path.parent/(imp.module.replace('.', '/') + '.py')
        if not sib.exists(): continue
        used = {a.name for a in imp.names}
        for fn in ast.parse(sib.read_text(encoding='utf-8')).body:
            if isinstance(fn, ast.FunctionDef) and fn.name in used:
                f, p = argparse_flags(fn); flags |= f; parser |= p
    return frozenset(flags | HELP_FLAGS) if parser else None

@functools.cache
def make_targets() -> frozenset:
    "The rules of the Makefile (not variables, not special targets like .PHONY)."
    out = set()
    for line in (ROOT/'Makefile').read_text(encoding='utf-8').split('\n'):
        m = re.match(r'^([A-Za-z0-9_][\w.%/ -]*?)\s*::?(?!=)', line)
        if m and '$' not in m.group(1): out.update(m.group(1).split())
    return frozenset(out)

@functools.cache
def files_under_tests() -> frozenset:
    "Every file and folder under tests/."
    return frozenset(rel(p) for p in (ROOT/'tests').rglob('*') if '__pycache__' not in p.parts)


# ---------------------------------------------------------------------------------------------------------------
# The prose
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Passage:
    "One piece of prose: a markdown file or cell, a docstring, a block of comments."
    path: str            # the file, relative to the repository root
    cell: int            # notebooks: the cell's number (from 1); else 0
    start: int           # the line (in the file or cell) of the text's first line
    text: str
    markdown: bool       # markdown (code is fenced or in backticks) or plain comments/docstrings (backticks optional)
    owners: tuple = ()   # the programs the passage documents: flags written alone default to them

    def where(self, line: int) -> str:
        return f'{self.path} cell {self.cell} line {line}' if self.cell else f'{self.path}:{line}'

    @property
    def site_dir(self) -> str:
        "Where relative links to docs pages resolve from: the notebook's folder on the site (README: index's)."
        if self.path.startswith('nbs/'): return posixpath.dirname(page_of(self.path))
        return ''

    @property
    def file_dir(self) -> str:
        "Where relative links to files resolve from (README.md is rendered from nbs/index.ipynb but lives at the root)."
        return posixpath.dirname(self.path)

def notebook_owners(nb: str) -> tuple:
    "The console scripts a notebook defines (its module is their module)."
    mod = default_exp(nb)
    return tuple(('script', s) for s, (m, _) in console_scripts().items() if m == mod)

def comments_and_docstrings(path: str, src: str, cell: int = 0, owners=(), leading_only=False):
    "Passages of a Python source: its docstrings and its blocks of consecutive comments (not `#|` directives)."
    tree = parse(src)
    first_code = None
    if tree is not None:
        nodes = [tree] if leading_only else [n for n in ast.walk(tree)
                 if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        for n in nodes:
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(getattr(n.body[0], 'value', None), ast.Constant) \
                    and isinstance(n.body[0].value.value, str):
                yield Passage(path, cell, n.body[0].lineno, n.body[0].value.value, False, owners)
        body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(getattr(n, 'value', None), ast.Constant))]
        first_code = body[0].lineno if body else None
    block, start = [], 0
    try:
        toks = [t for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        toks = []
    for t in toks:
        line = t.start[0]
        if leading_only and first_code and line >= first_code: break
        if t.string.startswith(('#|', '#!')): continue
        if block and line != start + len(block):
            yield Passage(path, cell, start, '\n'.join(block), False, owners); block = []
        if not block: start = line
        block.append(re.sub(r'^#\s?', '', t.string))
    if block: yield Passage(path, cell, start, '\n'.join(block), False, owners)

def leading_comments(path: str, src: str, prefix: str):
    "The comment block at the top of a script (after its #! line), for shell and JavaScript."
    lines, start = [], 0
    for i, line in enumerate(src.split('\n'), 1):
        s = line.strip()
        if s.startswith('#!') and i == 1: continue
        if s.startswith(prefix):
            if not lines: start = i
            lines.append(re.sub(rf'^{re.escape(prefix)}\s?', '', s))
        elif s or lines: break
    if lines: yield Passage(path, 0, start, '\n'.join(lines), False)

@functools.cache
def passages() -> tuple:
    out = []
    for nb in notebooks():
        owners = notebook_owners(nb)
        for n, kind, src in read_nb(nb):
            if kind == 'markdown': out.append(Passage(nb, n, 1, src, True, owners))
            elif kind == 'code': out.extend(comments_and_docstrings(nb, python_source(src), n, owners))
    for md in ('README.md', 'CONTRIBUTING.md'):
        out.append(Passage(md, 0, 1, (ROOT/md).read_text(encoding='utf-8'), True))
    for script in bench_scripts():
        out.extend(comments_and_docstrings(script, (ROOT/script).read_text(encoding='utf-8'),
                                           owners=(('bench', script),), leading_only=True))
    for p in sorted(TOOLS.rglob('*')):
        if not p.is_file(): continue
        src = p.read_text(encoding='utf-8', errors='replace')
        head = src.split('\n', 1)[0]
        if p.suffix == '.py' or 'python' in head: out.extend(comments_and_docstrings(rel(p), src, leading_only=True))
        elif p.suffix == '.js' or 'node' in head: out.extend(leading_comments(rel(p), src, '//'))
        elif p.suffix == '.sh' or head.startswith('#!'): out.extend(leading_comments(rel(p), src, '#'))
    mk = (ROOT/'Makefile').read_text(encoding='utf-8')
    blanked = '\n'.join(l if l.lstrip().startswith('#') else '' for l in mk.split('\n'))
    out.extend(comments_and_docstrings('Makefile', blanked))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------------
# Parsing prose: pieces of code and of text, in paragraphs
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Piece:
    line: int      # line in the file or cell
    text: str
    code: bool     # an inline code span or a line of a fenced block
    fence: bool    # a line of a fenced block (a whole command line)
    block: int     # paragraph number within its passage: a paragraph, list item, table row or fenced block

NEW_BLOCK = re.compile(r'\s*(\||[-*+]\s|\d+\.\s|#{1,6}\s)')        # table rows, list items and headings start blocks
CODE_SPAN = re.compile(r'(`+)(.+?)(?<!`)\1(?!`)', re.S)

@functools.cache
def pieces(p: Passage) -> tuple:
    "The passage cut into code and text, each with its line and paragraph."
    out, buf, fence, block = [], [], None, 0
    def flush():
        nonlocal block
        if buf: out.extend(inline_pieces(buf, block)); buf.clear()
        block += 1
    lines = p.text.split('\n')
    i = 0
    while i < len(lines):
        line, n = lines[i], p.start + i
        m = re.match(r'\s*(```+|~~~+)', line) if p.markdown else None
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence): fence = None; block += 1
            else:
                while line.endswith('\\') and i + 1 < len(lines): i += 1; line = line[:-1] + ' ' + lines[i]
                out.append(Piece(n, line, True, True, block))
        elif m: flush(); fence = m.group(1)
        elif not line.strip(): flush()
        else:
            if NEW_BLOCK.match(line): flush()
            buf.append((n, line))
        i += 1
    flush()
    return tuple(out)

def inline_pieces(lines: list, block: int) -> list:
    "A paragraph's text and inline code spans (a span may run over a line break)."
    text = '\n'.join(l for _, l in lines)
    line_at = lambda pos: lines[text.count('\n', 0, pos)][0]
    out, pos = [], 0
    def text_piece(a, b):
        for k, chunk in enumerate(text[a:b].split('\n')):
            if chunk.strip(): out.append(Piece(line_at(a) + k if k else line_at(a), chunk, False, False, block))
    for m in CODE_SPAN.finditer(text):
        text_piece(pos, m.start())
        out.append(Piece(line_at(m.start()), ' '.join(m.group(2).split()), True, False, block))
        pos = m.end()
    text_piece(pos, len(text))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    where: str
    kind: str
    ref: str
    note: str
    line_text: str = ''

    def __str__(self): return f"{self.where}: {self.kind} '{self.ref}' — {self.note}"

def missing(p: Passage, line: int, kind: str, ref: str, candidates=(), note='not found', text='') -> Finding:
    "A finding; `text` is the piece it was found in, the allow-list matches the whole line of the file."
    close = difflib.get_close_matches(ref, sorted(candidates), n=3, cutoff=0.6)
    return Finding(p.where(line), kind, ref, note + (f" (close matches: {', '.join(close)})" if close else ''),
                   line_of(p, line) or text)

def allowance(f: Finding):
    "The ALLOWED entry that excuses a finding, or None."
    return next((key for key in ALLOWED if key[:2] == (f.kind, f.ref) and key[2] in f.line_text), None)

_used_allowances = set()

def report(findings) -> str:
    "One message listing every finding that no allowance excuses (and remembering which allowances were used)."
    keep, seen = [], set()
    for f in findings:
        if allowance(f): _used_allowances.add(allowance(f)); continue
        key = (f.where, f.kind, f.ref.rsplit('/', 1)[-1])                 # a link is also a mention: report it once
        if key not in seen: seen.add(key); keep.append(f)
    return '\n'.join(['prose names things that do not exist:'] + [f'  {f}' for f in keep]) if keep else ''

def line_of(p: Passage, line: int) -> str:
    lines = p.text.split('\n')
    k = line - p.start
    return lines[k] if 0 <= k < len(lines) else ''


# ---------------------------------------------------------------------------------------------------------------
# Checks, one kind each
# ---------------------------------------------------------------------------------------------------------------

URL = re.compile(r'\b(?:https?|git\+https?)://[^\s)>\]`"\']+')
NB_NUMBERED = re.compile(r'(?<![\w./-])((?:[\w.-]+/)*)(\d\d[a-z]?_[A-Za-z]\w*)(\.ipynb)?(?![\w-])')
NB_NAMED = re.compile(r'(?<![\w./-])((?:[\w.-]+/)*)([A-Za-z_][\w-]*)\.ipynb\b')
LINK = re.compile(r'!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')

def is_placeholder(stem: str) -> bool:
    "Names that stand for any notebook: nbs/NN_name.ipynb, {nb}.ipynb, <name>.ipynb, *.ipynb."
    return bool(re.search(r'[*{}<>]', stem) or re.match(r'^[A-Z]+(_[a-z]+)?$', stem))

def notebook_exists(p: Passage, path: str, stem: str) -> bool:
    "A notebook named with or without a folder: relative to the passage, to the root, to nbs/, or (bare) anywhere."
    name = f'{stem}.ipynb'
    if not path: return any(posixpath.basename(nb) == name for nb in notebooks())
    return any(posixpath.normpath(posixpath.join(base, path, name)) in notebooks()
               for base in (p.file_dir, '', 'nbs'))

def check_notebook_mentions(p: Passage) -> list:
    "Numbered notebook names (01_config, nbs/01_config.ipynb) and any x.ipynb, in text and code alike."
    out = []
    for pc in pieces(p):
        text = URL.sub(' ', pc.text)
        for rx in (NB_NUMBERED, NB_NAMED):
            for m in rx.finditer(text):
                path, stem = m.group(1), m.group(2)
                if rx is NB_NAMED and NB_NUMBERED.fullmatch(stem + '.ipynb'): continue
                if is_placeholder(stem) or notebook_exists(p, path, stem): continue
                ref = m.group(0)
                out.append(missing(p, pc.line, 'notebook', ref, [posixpath.basename(nb) for nb in notebooks()] +
                                   [Path(nb).stem for nb in notebooks()] + list(notebooks()), text=pc.text))
    return out

def check_anchor(p: Passage, line: int, nb: str, anchor: str, ref: str, text: str) -> list:
    if not anchor or anchor.lower() in anchors(nb): return []
    return [missing(p, line, 'anchor', ref, [f'{page_of(nb)}#{a}' for a in anchors(nb)],
                    note=f'no such anchor on {page_of(nb)}', text=text)]

def own_headings(p: Passage) -> set:
    "The anchors of the page a passage is on (README.md is nbs/index.ipynb's page)."
    if p.path.startswith('nbs/'): return anchors(p.path)
    md = p.text
    if p.path == 'README.md' and 'nbs/index.ipynb' in notebooks():
        md += '\n' + '\n'.join(s for _, k, s in read_nb('nbs/index.ipynb') if k == 'markdown')
    return headings(md)

def check_link(p: Passage, line: int, target: str, text: str, site_dir: str = None) -> list:
    "A relative link: a docs page (and its anchor), a notebook, or a file of the repository."
    site_dir = p.site_dir if site_dir is None else site_dir
    target, _, anchor = target.partition('#')
    target = target.split('?')[0]
    if not target:                                                   # #anchor: a heading or symbol of this page
        if anchor.lower() in own_headings(p): return []
        return [missing(p, line, 'anchor', '#' + anchor, ['#' + a for a in own_headings(p)], note='no such anchor', text=text)]
    if target.endswith('.html'):
        page = posixpath.normpath(posixpath.join(site_dir, target))
        if page not in pages(): return [missing(p, line, 'page', target, pages(), text=text)]
        return check_anchor(p, line, pages()[page], anchor, f'{target}#{anchor}', text)
    path = posixpath.normpath(posixpath.join(p.file_dir, target))
    if target.endswith('.ipynb'):
        if path not in notebooks(): return [missing(p, line, 'notebook', target, notebooks(), text=text)]
        return check_anchor(p, line, path, anchor, f'{target}#{anchor}', text)
    if not (ROOT/path).exists(): return [missing(p, line, 'file', target, text=text)]
    return []

def check_links(p: Passage) -> list:
    "Markdown links, links to the docs site (settings.ini's doc_host + doc_baseurl) and to this repository's files."
    out, s = [], settings()
    site = s.get('doc_host', '').rstrip('/') + s.get('doc_baseurl', '').rstrip('/') + '/'
    blob = re.escape(s.get('git_url', '').rstrip('/')) + r'/(?:blob|tree)/[^/]+/'
    text = strip_fences(p.text) if p.markdown else p.text
    for k, line in enumerate(text.split('\n')):
        n = p.start + k
        for m in URL.finditer(line):
            url = m.group(0).rstrip('.,;:')
            if site != '/' and url.startswith(site): out += check_link(p, n, url[len(site):], line, site_dir='')
            elif s.get('git_url') and re.match(blob, url):
                path = re.sub(blob, '', url).split('#')[0]
                if not (ROOT/path).exists(): out.append(missing(p, n, 'file', path, text=line))
        if not p.markdown: continue
        for m in LINK.finditer(line):
            target = m.group(1)
            if re.match(r'^[a-z][\w+.-]*:', target) or '{' in target: continue      # absolute URLs, templates
            out += check_link(p, n, target, line)
    return out

MODULE_REF = re.compile(r'(?<![\w./-])show_attend_tell((?:\.[A-Za-z_]\w*)+)(?![\w-])')
FROM_IMPORT = re.compile(r'\bfrom\s+show_attend_tell((?:\.\w+)*)\s+import\s+(\([^)]*\)|[^\n#;`]+)')

def check_module_name(p: Passage, line: int, dotted: str, text: str) -> list:
    "show_attend_tell.<module>[.<name>]: the module exists, and binds the name."
    parts = dotted.lstrip('.').split('.')
    mod = parts[0]
    if mod not in modules():
        if mod in module_names('__init__'): return []
        return [missing(p, line, 'module', 'show_attend_tell.' + mod, ['show_attend_tell.' + m for m in modules()], text=text)]
    if len(parts) > 1 and parts[1] not in module_names(mod):
        return [missing(p, line, 'name', f'show_attend_tell.{mod}.{parts[1]}',
                        [f'show_attend_tell.{mod}.{n}' for n in module_names(mod)], note=f'not defined in {mod}', text=text)]
    return []

def check_modules(p: Passage) -> list:
    "show_attend_tell.x[.name] anywhere in the text, and each name of `from show_attend_tell.x import a, b`."
    out = []
    for k, line in enumerate(p.text.split('\n')):
        n, clean = p.start + k, URL.sub(' ', line)
        for m in MODULE_REF.finditer(clean): out += check_module_name(p, n, m.group(1), line)
    for m in FROM_IMPORT.finditer(URL.sub(' ', p.text)):
        n = p.start + p.text.count('\n', 0, m.start())
        mod = m.group(1).lstrip('.') or '__init__'
        if mod not in modules(): continue                                # reported by check_module_name
        for name in re.split(r'[,\s]+', m.group(2).strip('() \n')):
            name = name.strip()
            if not name or name in ('as',) or not name.isidentifier(): continue
            if name not in module_names(mod) and not re.search(rf'\bas\s+{name}\b', m.group(2)):
                out.append(missing(p, n, 'name', f'show_attend_tell.{mod}.{name}' if mod != '__init__' else name,
                                   module_names(mod), note=f'not defined in {mod}', text=line_of(p, n)))
    return out

def check_library_table(p: Passage) -> list:
    "Markdown tables with a `module` column: a library module each; with a `#` column, nbs/<#>_*.ipynb exports it."
    out, header = [], None
    if not p.markdown: return out
    for k, line in enumerate(strip_fences(p.text).split('\n')):
        if not line.lstrip().startswith('|'): header = None; continue
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if header is None: header = [c.lower() for c in cells]; continue
        if 'module' not in header or set(line) <= set('|-: '): continue
        cell = cells[header.index('module')] if header.index('module') < len(cells) else ''
        m = re.match(r'\[`?([\w.]+)`?\]\(|`([\w.]+)`|([\w.]+)$', cell)
        if not m: continue
        mod = next(g for g in m.groups() if g).removeprefix('show_attend_tell.')
        n = p.start + k
        if mod not in modules():
            out.append(missing(p, n, 'module', mod, modules(), note='not a module of the library', text=line)); continue
        if '#' in header and header.index('#') < len(cells) and re.fullmatch(r'\d+', cells[header.index('#')]):
            num = cells[header.index('#')]
            nbs = [nb for nb in notebooks() if re.match(rf'nbs/{num}_', nb)]
            if not any(default_exp(nb) == mod for nb in nbs):
                exporter = [nb for nb in notebooks() if default_exp(nb) == mod]
                out.append(missing(p, n, 'notebook', f'{num} {mod}', note=f'no nbs/{num}_*.ipynb exports {mod}'
                                   + (f" (it is {', '.join(exporter)})" if exporter else ''), text=line))
    return out

REPO_PATH = re.compile(r'(?<![\w./$-])((?:bench|tools|show_attend_tell)/[\w./-]*[\w/])')

def check_repo_paths(p: Passage) -> list:
    "Paths of scripts and library files (bench/x.py, tools/x, show_attend_tell/x.py); bench/results/ holds run outputs."
    out = []
    for pc in pieces(p):
        for m in REPO_PATH.finditer(URL.sub(' ', pc.text)):
            path = m.group(1).rstrip('/.')
            if path.startswith('bench/results') or re.search(r'[*{<]', pc.text[m.end():m.end() + 1]): continue
            mod, _, name = path.rpartition('.')
            if not (ROOT/path).exists() and (ROOT/f'{mod}.py').is_file():          # bench/common.TrainStep: a name in a file
                if name not in bound_names(ast.parse((ROOT/f'{mod}.py').read_text(encoding='utf-8'))):
                    out.append(missing(p, pc.line, 'name', path, note=f'not defined in {mod}.py', text=pc.text))
            elif not (ROOT/path).exists():
                near = [rel(x) for x in (ROOT/path.split('/')[0]).rglob('*') if '__pycache__' not in x.parts]
                out.append(missing(p, pc.line, 'file', path, near, text=pc.text))
    return out

TEST_PATH = re.compile(r'(?<![\w./-])(tests/[\w./-]*[\w/])(?:::(\w+))?')
TEST_FILE = re.compile(r'(?<![\w./-])(test_\w+\.py)\b')

def check_test_files(p: Passage) -> list:
    "tests/ paths (files or folders), tests/x.py::test_name, and test_*.py named without their folder."
    out = []
    for pc in pieces(p):
        text = URL.sub(' ', pc.text)
        for m in TEST_PATH.finditer(text):
            path, func = m.group(1).rstrip('/'), m.group(2)
            if path not in files_under_tests() and path != 'tests':
                out.append(missing(p, pc.line, 'test file', path, files_under_tests(), text=pc.text))
            elif func and not re.search(rf'^\s*(?:async\s+)?def {func}\b', (ROOT/path).read_text(encoding='utf-8'), re.M):
                out.append(missing(p, pc.line, 'test', f'{path}::{func}', note=f'no such test in {path}', text=pc.text))
        for m in TEST_FILE.finditer(text):
            if text[max(0, m.start() - 6):m.start()] == 'tests/': continue
            if not any(posixpath.basename(t) == m.group(1) for t in files_under_tests()):
                out.append(missing(p, pc.line, 'test file', m.group(1), [posixpath.basename(t) for t in files_under_tests()], text=pc.text))
    return out

SAT_WORD = re.compile(r'(?<![\w.-])((?:[\w.$()-]*/)?)(sat_[a-z]\w*)(?![\w-]|/|\.\w)')

def check_console_scripts(p: Passage) -> list:
    "A word sat_* is a console script, or a name the library defines; path parts like /tmp/sat_site are not words."
    out = []
    for pc in pieces(p):
        for m in SAT_WORD.finditer(URL.sub(' ', pc.text)):
            prefix, word = m.groups()
            if prefix and not prefix.endswith('bin/'): continue
            if word not in console_scripts() and word not in library_names():
                out.append(missing(p, pc.line, 'console script', word, console_scripts(), text=pc.text))
    return out


# --- commands and their flags ---------------------------------------------------------------------------------

FLAG = re.compile(r'^[\[(]*(--[A-Za-z][\w-]*?)-?(?:[=\])},.;:]|$)')
SEPARATORS = {'|', '||', '&&', ';'}

def program_flags(prog):
    "The flags of one of our programs: ('script', name), ('module', mod) for python -m, ('bench', path)."
    kind, name = prog
    if kind == 'script': return script_flags(name)
    if kind == 'module': return module_cli_flags(name)
    if kind == 'bench': return bench_flags(name)

def describe(prog) -> str:
    kind, name = prog
    return {'script': name, 'module': f'python -m show_attend_tell.{name}', 'bench': name}.get(kind, name)

def our_program(tok: str, prev: str):
    "The program a token names, if it is one of ours."
    t = re.sub(r'^\$\(which\s*|^[\[(`$]+|[)\]`,.;:]+$', '', tok)
    base = posixpath.basename(t)
    if base in console_scripts(): return ('script', base)
    if prev == '-m' and t.startswith('show_attend_tell.'): return ('module', t.split('.', 1)[1])
    b = posixpath.normpath(t.lstrip('./')) if t.endswith('.py') else ''
    if b in bench_scripts(): return ('bench', b)

def tokens(text: str) -> list:
    return text.replace('$(which ', '$(which').split()

@dataclass
class Event:
    "A program or a flag, in the order the paragraph names them."
    line: int
    kind: str          # 'program', 'foreign', 'flag', 'target'
    value: object
    bound: bool = False  # a flag written after its program in the same command (not alone)
    text: str = ''

def command_events(pc: Piece) -> list:
    "Programs, flags and make targets of a code piece; a command starting with another program's name is not ours."
    text = re.sub(r'(^|\s)#.*$', '', pc.text) if pc.fence else pc.text       # a shell comment after a command
    out, cmd = [], []
    for tok in tokens(text) + [';']:
        if tok not in SEPARATORS: cmd.append(tok); continue
        out += one_command(pc, cmd); cmd = []
    return out

def one_command(pc: Piece, cmd: list) -> list:
    if not cmd: return []
    ev = lambda kind, value, bound=False: Event(pc.line, kind, value, bound, pc.text)
    if cmd[0] == 'make':                                              # make [VAR=x] [-j2] target ...
        targets = []
        for t in cmd[1:]:
            if t.startswith('-') or '=' in t: continue
            if not re.fullmatch(r'[\w.-]+', t): break
            targets.append(ev('target', t))
        return targets
    out, prog, alone = [], None, bool(FLAG.match(cmd[0]))             # alone: `--resume`, `--k 5 --epochs N`
    if not alone and not our_program(cmd[0], '') and (any(t.startswith('-') for t in cmd[1:]) or
                                                      re.match(r'(.*/)?(bin|\.venv)/', cmd[0])):
        out.append(ev('foreign', cmd[0]))                             # pip, git, torchrun, nbdev_test ...
    for i, t in enumerate(cmd):
        p = our_program(t, cmd[i - 1] if i else '')
        if p: prog = p; out.append(ev('program', p)); continue
        f = FLAG.match(t)
        if f and (prog or alone): out.append(ev('flag', f.group(1), bound=prog is not None))
    return out

def text_events(pc: Piece) -> list:
    "Programs and flags in plain text: a command-like word right before a flag is a program (ours or another's)."
    out, toks = [], tokens(URL.sub(' ', pc.text))
    for i, t in enumerate(toks):
        p = our_program(t, toks[i - 1] if i else '')
        f = FLAG.match(t)
        if p: out.append(Event(pc.line, 'program', p, text=pc.text))
        elif f: out.append(Event(pc.line, 'flag', f.group(1), text=pc.text))
        elif i + 1 < len(toks) and FLAG.match(toks[i + 1]) and re.fullmatch(r'[\w.-]*[_./][\w./-]*', t):
            out.append(Event(pc.line, 'foreign', t, text=pc.text))
    return out

def resolve_flag(p: Passage, events: list, k: int, before_block: list):
    """The programs a flag may belong to: the program of its command when it follows one. A flag written alone may
    belong to any of our programs named in its paragraph or in the code block right before it (which it often
    explains), or to the passage's own; to none of ours when the last program its paragraph names before it is another's
    (`nbdev_test --flags gpu` ... `--flags "slow gpu"`); with nothing named, to any console script."""
    ev = events[k]
    before = next((e for e in reversed(events[:k]) if e.kind in ('program', 'foreign')), None)
    if ev.bound: return [before.value]
    if before and before.kind == 'foreign': return None
    cands = list(dict.fromkeys([e.value for e in events + before_block if e.kind == 'program'] + list(p.owners)))
    return cands or [('script', s) for s in console_scripts()]

def check_flags(p: Passage) -> list:
    "Flags and make targets, paragraph by paragraph (see resolve_flag for which program a flag belongs to)."
    out = []
    by_block = {}
    for pc in pieces(p): by_block.setdefault(pc.block, []).append(pc)
    previous = []
    for block in by_block.values():
        events = [e for pc in block for e in (command_events(pc) if pc.code else text_events(pc))]
        before_block, previous = previous, (events if all(pc.fence for pc in block) else [])
        for k, ev in enumerate(events):
            if ev.kind == 'target' and ev.value not in make_targets():
                out.append(missing(p, ev.line, 'make target', ev.value, make_targets(), text=ev.text))
            if ev.kind != 'flag': continue
            progs = resolve_flag(p, events, k, before_block)
            if progs is None: continue
            known = [(prog, program_flags(prog)) for prog in progs]
            if any(fl is not None and ev.value in fl for _, fl in known): continue
            if all(fl is None and prog[0] == 'bench' for prog, fl in known) and not ev.bound: continue
            names = ' or '.join(describe(prog) for prog, _ in known) if len(known) <= 3 else 'any console script'
            cands = set().union(*(fl or () for _, fl in known))
            note = (f'not an option of {names}' if any(fl is not None for _, fl in known)
                    else f'{names} takes no options')
            out.append(missing(p, ev.line, 'flag', ev.value, cands, note=note, text=ev.text))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------------------------

def run(check) -> str:
    "Every finding of one check over all the prose, as one message ('' when there is none)."
    return report(f for p in passages() for f in check(p))

def test_prose_is_read():
    "The parsers see the prose: every notebook, the markdown files, bench and tools; and each kind of reference."
    paths = {p.path for p in passages()}
    assert set(notebooks()) <= paths, set(notebooks()) - paths
    assert {'README.md', 'CONTRIBUTING.md', 'Makefile'} <= paths
    assert any(x.startswith('bench/') for x in paths) and any(x.startswith('tools/') for x in paths)
    assert console_scripts() and make_targets() and all(script_flags(s) for s in console_scripts())
    text = '\n'.join(p.text for p in passages())
    for rx in (NB_NUMBERED, MODULE_REF, TEST_PATH, SAT_WORD, LINK): assert rx.search(text), rx.pattern

def test_notebooks_and_pages():
    "Notebook names, links to notebooks, docs pages and their anchors, files linked."
    msg = run(lambda p: check_notebook_mentions(p) + check_links(p))
    assert not msg, msg

def test_modules():
    "show_attend_tell.<module>[.<name>], from ... import names, and the map of the library."
    msg = run(lambda p: check_modules(p) + check_library_table(p))
    assert not msg, msg

def test_paths():
    "tests/ paths and test_*.py names; bench/, tools/ and show_attend_tell/ files."
    msg = run(lambda p: check_test_files(p) + check_repo_paths(p))
    assert not msg, msg

def test_console_scripts():
    msg = run(check_console_scripts)
    assert not msg, msg

def test_flags_and_make_targets():
    "--flags of our console scripts, python -m show_attend_tell.x and bench/*.py; make targets."
    msg = run(check_flags)
    assert not msg, msg

def test_allow_list_is_used():
    "Every ALLOWED entry still excuses a finding: fixed prose takes its entry with it."
    for check in (check_notebook_mentions, check_links, check_modules, check_library_table, check_test_files, check_repo_paths,
                  check_console_scripts, check_flags):
        run(check)
    unused = [key for key in ALLOWED if key not in _used_allowances]
    assert not unused, f'ALLOWED entries that match nothing any more (remove them): {unused}'


ISSUE = re.compile(r'(?:^|[\s(])(?:[Ii]ssues?|PR|[Pp]ull request) ?#?\d+')


def test_no_issue_numbers():
    """Project files speak to the project's users: no 'issue 19' a reader cannot follow. A numbered issue of another
    project is fine when the line says whose (its repository's name or a link)."""
    files = [p for pat in ('nbs/**/*.ipynb', '*.md', 'tests/**/*.py', 'bench/**/*.py', 'experiments/*.py', 'tools/*', 'Makefile', 'settings.ini')
             for p in ROOT.glob(pat) if p.is_file() and '.ipynb_checkpoints' not in p.parts]
    text = lambda p: ('\n'.join(''.join(c['source']) for c in json.loads(p.read_text(encoding='utf-8'))['cells'])   # cells, not outputs
                      if p.suffix == '.ipynb' else p.read_text(encoding='utf-8', errors='replace'))
    found = [f"{rel(p)}:{n}: {line.strip()[:100]}" for p in files for n, line in enumerate(text(p).splitlines(), 1)
             if ISSUE.search(line) and not re.search(r'github\.com/|arctic-captions|/issues/', line) and p.name != 'test_prose.py']
    assert not found, "issue numbers a reader cannot follow:\n  " + '\n  '.join(found)


def test_rendered_outputs_show_no_warnings():
    """The docs site shows the notebooks' saved outputs: a third-party warning there (with a path into the machine's
    site-packages that built it) says nothing to a reader. The library silences the ones it triggers on import."""
    found = []
    for p in sorted(NBS.rglob('*.ipynb')):
        if '.ipynb_checkpoints' in p.parts: continue
        for n, c in enumerate(json.loads(p.read_text(encoding='utf-8'))['cells'], 1):
            for o in c.get('outputs', []):
                txt = ''.join(o.get('text', '')) if o.get('output_type') == 'stream' else ''.join(o.get('data', {}).get('text/plain', ''))
                for line in txt.splitlines():
                    if re.search(r'\w+Warning\b|site-packages/', line): found.append(f"{rel(p)} cell {n}: {line.strip()[:120]}")
    assert not found, "warnings in saved outputs (re-run the notebook, or silence the warning where the library triggers it):\n  " + '\n  '.join(found)
