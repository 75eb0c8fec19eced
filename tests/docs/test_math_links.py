"""The docs site offline: equations are typeset with no network, and every internal link and asset resolves.

The math checks open the pages in a browser that cannot resolve any host name (as on a machine, a CI runner or a
reader's laptop with no network) and fail if a page asks for anything outside file:// or localhost.
The link check reads the built HTML files directly (no browser): it is fast and sees every page.
"""
import configparser
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from selenium.webdriver.common.by import By
from .conftest import open_page, requested_urls

ROOT = Path(__file__).resolve().parents[2]
# The pages that explain the paper's equations (eq. 1-14); each shows display maths.
MATH_PAGES = ['attention.html', 'decoder.html', 'losses.html', 'tutorials/soft_vs_hard.html']
RAW_TEX = ('\\frac', '\\[', '\\]', '\\(', '$$', '\\tag', '\\begin{', '\\mathbf')  # TeX that only shows when nothing typeset it
LOCAL_SCHEMES = ('file:', 'data:', 'blob:', 'about:', 'chrome:', 'chrome-extension:', 'devtools:')
LOCAL_HOSTS = ('localhost', '127.0.0.1', '[::1]')
# The one request allowed out: the Bootswatch theme's CSS (smalldocs' cosmo, like Quarto's) @imports its web font from
# Google Fonts. Offline the text falls back to the system sans-serif and nothing is missing; maths must not need it.
THEME_FONTS = ('https://fonts.googleapis.com/',)


def is_local(url: str) -> bool:
    "A URL a page may load with no network: a file, inline data, or a server on this machine."
    if url.startswith(LOCAL_SCHEMES): return True
    p = urlsplit(url)
    return p.scheme in ('http', 'https', 'ws', 'wss') and p.hostname in {h.strip('[]') for h in LOCAL_HOSTS}


def visible_text_outside_code(b) -> str:
    "The page's visible text (what selenium reads), less code (blocks and inline): code may legitimately show TeX or `$$`."
    text = b.find_element(By.TAG_NAME, 'body').text
    for code in sorted(b.find_elements(By.CSS_SELECTOR, 'pre, code'), key=lambda e: -len(e.text)):
        t = code.text
        if t: text = text.replace(t, '')
    return text


MATH_STATE = """
    const fams = [...document.fonts].filter(f => f.family.replace(/["']/g, '') === 'KaTeX_Main');
    const boxes = [...document.querySelectorAll('.katex-html')].map(e => e.getBoundingClientRect());
    return {katex: document.querySelectorAll('.katex').length,
            display: document.querySelectorAll('.katex-display').length,
            mathml: document.querySelectorAll('math').length,
            errors: [...document.querySelectorAll('.katex-error')].map(e => (e.title || e.textContent).slice(0, 120)),
            font_loaded: fams.some(f => f.status === 'loaded'),
            zero_size: boxes.filter(r => r.width === 0 || r.height === 0).length};"""


@pytest.mark.parametrize('page', MATH_PAGES)
def test_equations_render_offline(offline_browser, docs_dir, page):
    b = offline_browser
    requested_urls(b)                                   # forget what earlier pages asked for
    open_page(b, docs_dir/page)
    s = b.execute_script(MATH_STATE)
    shown = visible_text_outside_code(b)
    raw = sorted({t for t in RAW_TEX if t in shown})
    outside = sorted({u[:100] for u in requested_urls(b) if not (is_local(u) or u.startswith(THEME_FONTS))})
    problems = []
    if s['katex'] + s['mathml'] == 0: problems.append("no typeset maths (.katex or <math> elements) on the page")
    if s['display'] == 0 and s['mathml'] == 0: problems.append("no display equation (.katex-display)")
    if raw: problems.append(f"raw TeX visible in the page text: {raw}")
    if s['errors']: problems.append(f"KaTeX could not typeset {len(s['errors'])} formula(s): {s['errors'][:3]}")
    if s['katex'] and not s['font_loaded']: problems.append("the KaTeX_Main web font did not load (katex.min.css or its fonts/ missing from the site)")
    if s['zero_size']: problems.append(f"{s['zero_size']} formula(s) laid out with zero size")
    if outside: problems.append(f"the page asked the network for: {outside}")
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


def test_math_screenshots(offline_browser, docs_dir):
    "What a reader sees: the decoder page at its first equation, and the attention page (kept with the build)."
    b = open_page(offline_browser, docs_dir/'decoder.html')
    found = b.execute_script("""const e = document.querySelector('.katex-display, math[display="block"], .katex, math');
        if (!e) return false;
        e.scrollIntoView({block: 'center'});
        return true;""")
    b.save_screenshot(str(docs_dir/'screenshot_decoder_math.png'))
    open_page(b, docs_dir/'attention.html').save_screenshot(str(docs_dir/'screenshot_attention.png'))
    assert found, "decoder.html has no typeset equation to scroll to (screenshot_decoder_math.png shows the top of the page)"


# ---- links

class PageLinks(HTMLParser):
    "The ids (fragment targets) and the href/src links of one HTML page."
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if v is None: continue
            if k == 'id' or (k == 'name' and tag == 'a'): self.ids.add(v)
            elif k in ('href', 'src'): self.links.append((tag, k, v.strip()))


def site_url() -> tuple:
    "The published site's address (settings.ini: doc_host + doc_baseurl), and its base path."
    cfg = configparser.ConfigParser()
    cfg.read(ROOT/'settings.ini')
    host, base = cfg['DEFAULT']['doc_host'].rstrip('/'), '/' + cfg['DEFAULT']['doc_baseurl'].strip('/')
    return host + base.rstrip('/'), base.rstrip('/')


def parse_site(docs: Path) -> dict:
    pages = {}
    for p in sorted(docs.rglob('*.html')):
        parser = PageLinks()
        parser.feed(p.read_text(errors='replace'))
        pages[p.resolve()] = parser
    return pages


def check_link(url: str, page: Path, docs: Path, pages: dict, site: str, base: str):
    "None when `url` (found on `page`) is external or resolves inside the built site, else why it is broken."
    parts = urlsplit(url)
    if parts.scheme in ('http', 'https'):
        if not (url == site or url.startswith((site + '/', site + '#', site + '?'))): return None  # another site: not ours to check
        path = '/' + url[len(site):].lstrip('/')
        path = urlsplit(path).path
        target = docs/unquote(path).lstrip('/')
    elif parts.scheme == 'file': return "a file:// link, which works only on the machine that built the site"
    elif parts.scheme or parts.netloc: return None   # mailto:, data:, javascript:, //cdn.example: not a file of the site
    elif parts.path.startswith('/'):
        if not (parts.path == base or parts.path.startswith(base + '/')): return f"a root path outside the site's base {base}/"
        target = docs/unquote(parts.path[len(base):]).lstrip('/')
    else:
        target = page.parent/unquote(parts.path) if parts.path else page
    target = Path(target).resolve()
    if not target.is_relative_to(docs): return "points outside the built site"
    if target.is_dir(): target = target/'index.html'
    if not target.is_file(): return f"no such file: {target.relative_to(docs).as_posix()}"
    frag = unquote(parts.fragment)
    if frag and target.suffix == '.html' and frag not in pages[target].ids:
        return f"no id {frag!r} in {target.relative_to(docs).as_posix()}"
    return None


def test_internal_links_resolve(docs_dir):
    docs = docs_dir.resolve()
    site, base = site_url()
    pages = parse_site(docs)
    assert len(pages) >= 10
    broken = defaultdict(list)                           # (link, why) -> the pages that have it
    n = 0
    for page, parsed in pages.items():
        for tag, attr, url in parsed.links:
            if not url or url == '#': continue
            n += 1
            why = check_link(url, page, docs, pages, site, base)
            if why: broken[(f'<{tag} {attr}="{url}">', why)].append(page.relative_to(docs).as_posix())
    assert n > 100, f"only {n} links found: is the site built?"
    lines = [f"{link}: {why} (on {len(on)} page(s): {', '.join(on[:5])}{' ...' if len(on) > 5 else ''})"
             for (link, why), on in sorted(broken.items())]
    assert not broken, f"{len(broken)} broken internal link(s) in {docs}:\n  " + "\n  ".join(lines)
