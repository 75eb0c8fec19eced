"Fixtures for checking the rendered docs site (`make docs` writes it to _docs/) in headless Chromium."
import os, shutil
from pathlib import Path
import pytest

DOCS = Path(os.environ.get('SAT_DOCS_DIR') or Path(__file__).resolve().parents[2]/'_docs')  # env: check another build


@pytest.fixture(scope='session')
def docs_dir():
    if not (DOCS/'index.html').exists(): pytest.fail(f"{DOCS}/index.html is missing: run `make docs` first")
    return DOCS


def _chrome(*extra_args, log_network=False):
    "Headless Chromium under selenium; `log_network` records every request the pages make (see `requested_urls`)."
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium, driver = shutil.which('chromium'), shutil.which('chromedriver')
    if not (chromium and driver): pytest.fail("chromium and chromedriver are needed: run `make sysdeps` (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
              '--disable-component-update', '--disable-sync', '--no-first-run', '--window-size=1280,1600', *extra_args):
        opts.add_argument(a)
    if log_network: opts.set_capability('goog:loggingPrefs', {'performance': 'ALL'})
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope='session')
def browser():
    b = _chrome()
    yield b
    b.quit()


@pytest.fixture(scope='session')
def offline_browser():
    "A browser with no network: every host name fails to resolve (localhost still works), and requests are logged."
    b = _chrome('--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost', log_network=True)
    yield b
    b.quit()


def requested_urls(browser) -> list:
    "The URLs the browser asked for since the last call (from Chrome's performance log; `offline_browser` only)."
    import json
    msgs = (json.loads(e['message'])['message'] for e in browser.get_log('performance'))
    return [m['params']['request']['url'] for m in msgs if m.get('method') == 'Network.requestWillBeSent']


def open_page(browser, path: Path):
    "Load a page and wait until every image and web font has finished loading (or failed)."
    browser.get(path.as_uri())
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all([...document.images].map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))
               .then(() => document.fonts.ready).then(() => done());""")
    return browser
