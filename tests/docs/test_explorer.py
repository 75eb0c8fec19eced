"""The static attention explorer (nbs/explanations/explorer.ipynb) on the built site, with no network: pick an image,
read its caption's words, click a word and move the slider, and see the attention picture change each time."""
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from .conftest import open_page, requested_urls
from .test_math_links import is_local, THEME_FONTS

PAGE = 'explanations/explorer.html'


def state(b):
    return b.execute_script("""
        const g = id => document.getElementById(id);
        if (!g('sat-explorer')) return null;
        return {words: [...document.querySelectorAll('#sat-explorer-words .sat-word')].map(e => e.textContent),
                options: g('sat-explorer-select').options.length, slider: +g('sat-explorer-slider').value,
                max: +g('sat-explorer-slider').max, att: g('sat-explorer-attention').src,
                att_loaded: g('sat-explorer-attention').complete && g('sat-explorer-attention').naturalWidth > 0,
                image: g('sat-explorer-image').src, label: g('sat-explorer-label').textContent};""")


def test_explorer_steps_through_words_offline(offline_browser, docs_dir):
    b = offline_browser
    if not (docs_dir/PAGE).exists(): pytest.fail(f"{docs_dir/PAGE} is missing: is explorer.ipynb in nbs/sidebar.yml, and was `make docs` run?")
    requested_urls(b)
    open_page(b, docs_dir/PAGE)
    s = state(b)
    assert s is not None, "the explorer did not render (no #sat-explorer: were the notebook's outputs saved?)"
    assert s['options'] >= 13, f"a dozen Shapes images and the packaged photos expected, got {s['options']}"
    assert len(s['words']) >= 1 and s['att_loaded'] and s['image'].startswith('data:image/'), s
    assert s['label'].startswith(f'attention for "{s["words"][0]}"')
    # pick an image with at least three words, click the second word, then step on with the slider
    for i in range(s['options']):
        b.execute_script("const s = document.getElementById('sat-explorer-select'); s.value = arguments[0];"
                         "s.dispatchEvent(new Event('change'))", str(i))
        if len(state(b)['words']) >= 3: break
    s0 = state(b)
    assert len(s0['words']) >= 3, "no caption with three words or more"
    second = b.find_elements(By.CSS_SELECTOR, '#sat-explorer-words .sat-word')[1]
    b.execute_script("arguments[0].click()", second)   # a DOM click: the page's floating TOC/navbar can sit over the button
    s1 = state(b)
    assert s1['slider'] == 1 and s1['att'] != s0['att'] and s1['label'].startswith(f'attention for "{s0["words"][1]}"'), s1
    b.find_element(By.ID, 'sat-explorer-slider').send_keys(Keys.ARROW_RIGHT)
    s2 = state(b)
    assert s2['slider'] == 2 and s2['att'] != s1['att'] and s2['att_loaded'], s2
    outside = [u for u in requested_urls(b) if not is_local(u) and not u.startswith(THEME_FONTS)]
    assert not outside, f"the explorer asked the network for {outside}"
