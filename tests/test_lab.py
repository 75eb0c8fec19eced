"""`make lab`: JupyterLab with the project's environment as its kernel. Start it headless on a free port, open the
visualization notebook (nbs/21_visualization.ipynb) in headless Chromium, run it, and check that the ipywidgets
attention explorer renders (its slider and image) and that its image changes when the slider moves."""
import json, os, subprocess, sys, time
from pathlib import Path
import pytest

pytest.importorskip('jupyterlab', reason="JupyterLab is not installed: pip install -e '.[dev]' installs it (make lab)")
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from docs.conftest import _chrome  # the docs tests' headless Chromium, with the same flags
import servers  # tests/fixtures/, on the path through conftest.py

NBS = Path(__file__).resolve().parents[1]/'nbs'
WAIT = 240   # seconds: running the whole notebook on a loaded 2-core machine






@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "JupyterLab as `make lab` starts it (this venv's python, so its kernel is the project's environment), no token."
    root = tmp_path_factory.mktemp('lab')
    # a copy, so that running it does not touch the source notebook; less its last cell (nbdev_export needs the repo)
    nb = json.loads((NBS/'21_visualization.ipynb').read_text(encoding='utf-8'))
    nb['cells'] = [c for c in nb['cells'] if 'nbdev_export' not in ''.join(c['source'])]
    (root/'21_visualization.ipynb').write_text(json.dumps(nb), encoding='utf-8')
    port = servers.free_port()
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(root/'.config'), 'JUPYTER_RUNTIME_DIR': str(root/'.runtime'),
           'JUPYTERLAB_SETTINGS_DIR': str(root/'.settings'), 'JUPYTERLAB_WORKSPACES_DIR': str(root/'.workspaces')}
    p = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', '--ip=127.0.0.1',
                          '--allow-root', f'--ServerApp.root_dir={root}', '--IdentityProvider.token=',
                          '--ServerApp.password=', '--LabApp.expose_app_in_browser=True', '--LabApp.news_url=None',
                          '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
                         cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f'http://127.0.0.1:{port}/'
    try:
        t0 = time.time()
        while not servers.answers(url + 'lab'):
            if p.poll() is not None: pytest.fail(f"jupyter lab exited with {p.returncode}: {p.stdout.read()[-3000:]}")
            if time.time() - t0 > 90: pytest.fail("jupyter lab did not answer within 90 s")
            time.sleep(0.5)
        yield url
    finally:
        p.terminate()
        try: p.wait(15)
        except subprocess.TimeoutExpired: p.kill(); p.wait(10)


@pytest.fixture(scope='module')
def browser():
    b = _chrome()
    yield b
    b.quit()


def test_explorer_widget_renders_and_follows_the_slider(lab, browser):
    b = browser
    b.get(lab + 'lab/tree/21_visualization.ipynb')
    wait = WebDriverWait(b, WAIT, poll_frequency=0.5)
    wait.until(lambda _: b.execute_script("return !!(window.jupyterapp && document.querySelector('.jp-Notebook'))"),
               message='the notebook did not open')
    wait.until(lambda _: b.execute_script("""
        const d = document.querySelector('.jp-Dialog .jp-mod-accept'); if (d) d.click();   // 'select kernel': the default
        const w = jupyterapp.shell.currentWidget;
        return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel &&
                  w.sessionContext.session.kernel.status === 'idle');"""), message='the kernel did not start')
    name = b.execute_script("return jupyterapp.shell.currentWidget.sessionContext.session.kernel.name")
    assert name == 'python3', name
    b.execute_script("jupyterapp.commands.execute('notebook:run-all-cells')")
    slider = wait.until(lambda _: b.find_elements(By.CSS_SELECTOR, '.jp-OutputArea .widget-slider .noUi-handle'),
                        message='the explorer widget (its sliders) did not render')
    img = lambda: [e.get_attribute('src') for e in b.find_elements(By.CSS_SELECTOR, '.jp-OutputArea .widget-image')]
    wait.until(lambda _: any(img()), message="the explorer's image did not render")
    wait.until(lambda _: b.execute_script("""
        const busy = [...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.includes('*'));
        return !busy && jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle';"""),
        message='the notebook did not finish running')
    errors = b.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"] .ansi-red-fg')
    assert not errors, [e.text for e in errors]
    before = img()[0]
    word_handle = slider[-1]                                # the explorer's sliders: beam size, then word
    word_handle.click()
    word_handle.send_keys(Keys.ARROW_RIGHT)
    wait.until(lambda _: img()[0] != before, message='the image did not change when the word slider moved')
    if os.environ.get('SAT_SCREENSHOTS'):
        b.execute_script("arguments[0].scrollIntoView({block: 'center'})", b.find_elements(By.CSS_SELECTOR, '.widget-image')[0])
        b.save_screenshot(str(Path(os.environ['SAT_SCREENSHOTS'])/'lab_explorer.png'))
