"The rendered docs site, opened in headless Chromium: what a reader sees."
import pytest
from selenium.webdriver.common.by import By
from .conftest import open_page


def broken_images(b):
    return b.execute_script("return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src.slice(0, 80))")


def cell_images(b):
    "Images that are outputs of notebook cells (figures made by code), loaded and non-empty."
    return b.execute_script("""return [...document.querySelectorAll('.cell-output img, .cell-output-display img')]
        .filter(i => i.naturalWidth > 50 && i.naturalHeight > 50).length""")


def test_home_page(browser, docs_dir):
    b = open_page(browser, docs_dir/'index.html')
    assert b.find_element(By.CSS_SELECTOR, 'h1.title').text == 'show_attend_tell'
    body = b.find_element(By.ID, 'quarto-document-content')
    # markdown is rendered, not shown as source: bold text, headings and the results table exist as HTML
    assert body.find_element(By.XPATH, ".//strong[contains(normalize-space(.), 'looks at a part of the image')]")
    assert body.find_elements(By.XPATH, ".//h2[normalize-space(.)='Quick start']")
    assert body.find_elements(By.XPATH, ".//table//th[normalize-space(.)='BLEU-4']")
    assert '**' not in body.text and '| dataset |' not in body.text
    assert 'make demo' in body.text and 'make test' in body.text
    assert cell_images(b) >= 1, "the home page shows no figure produced by a notebook cell"
    assert broken_images(b) == []
    # the attention figure: the first cell image after 'Where it looks', wide (one panel per word), loaded
    w = b.execute_script("""const h = [...document.querySelectorAll('h2')].find(e => e.textContent.trim() === 'Where it looks');
        if (!h) return -1;
        const img = [...document.querySelectorAll('.cell-output img, .cell-output-display img')]
            .find(i => h.compareDocumentPosition(i) & Node.DOCUMENT_POSITION_FOLLOWING);
        return img ? img.naturalWidth : 0;""")
    assert w != -1, "the home page has no 'Where it looks' section"
    assert w >= 500, f"the home page shows no attention figure under 'Where it looks' (image width {w})"
    assert body.find_elements(By.XPATH, ".//table//th[normalize-space(.)='α mass in box']"), "no attention-correctness table"
    b.save_screenshot(str(docs_dir/'screenshot_home.png'))      # what a reader sees, kept with the build


def test_visualization_page_shows_figures(browser, docs_dir):
    b = open_page(browser, docs_dir/'visualization.html')
    assert cell_images(b) >= 4, "the visualization page shows fewer than 4 figures"
    assert broken_images(b) == []
    b.save_screenshot(str(docs_dir/'screenshot_visualization.png'))


def test_api_page_has_signatures(browser, docs_dir):
    b = open_page(browser, docs_dir/'config.html')
    assert b.find_element(By.CSS_SELECTOR, 'h1.title').text == 'Configuration'
    # show_doc output: a heading per documented symbol and its rendered signature
    assert b.find_elements(By.CSS_SELECTOR, 'h3#preset'), "no rendered API doc for `preset`"
    sigs = [e.text for e in b.find_elements(By.CSS_SELECTOR, 'pre code') if e.text.startswith('def ')]
    assert any(s.startswith('def preset(') and 'name:str' in s for s in sigs), f"no signature of preset() in {sigs[:3]}"
    assert broken_images(b) == []


def test_no_page_has_broken_images_or_tracebacks(browser, docs_dir):
    pages = sorted(docs_dir.rglob('*.html'))
    assert len(pages) >= 10
    for p in pages:
        b = open_page(browser, p)
        assert broken_images(b) == [], f"{p.name} has broken images"
        text = b.find_element(By.TAG_NAME, 'body').text
        assert 'Traceback (most recent call last)' not in text, f"{p.name} shows a Python traceback"
