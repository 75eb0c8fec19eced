"Fixtures for checking the rendered docs site (`make docs` writes it to _docs/) in headless Chromium."
import os, shutil
from pathlib import Path
import pytest

DOCS = Path(os.environ.get('SAT_DOCS_DIR') or Path(__file__).resolve().parents[2]/'_docs')  # env: check another build


@pytest.fixture(scope='session')
def docs_dir():
    if not (DOCS/'index.html').exists(): pytest.fail(f"{DOCS}/index.html is missing: run `make docs` first")
    return DOCS


@pytest.fixture(scope='session')
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium, driver = shutil.which('chromium'), shutil.which('chromedriver')
    if not (chromium and driver): pytest.fail("chromium and chromedriver are needed: run `make sysdeps` (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
              '--disable-component-update', '--disable-sync', '--no-first-run', '--window-size=1280,1600'):
        opts.add_argument(a)
    b = webdriver.Chrome(service=Service(driver), options=opts)
    yield b
    b.quit()


def open_page(browser, path: Path):
    "Load a page and wait until every image has finished loading (or failed)."
    browser.get(path.as_uri())
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all([...document.images].map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))
               .then(() => done());""")
    return browser
