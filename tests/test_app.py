"""sat_app (nbs/31_app.ipynb) in a browser: start the server on a free port with a tiny checkpoint, drive the page in
headless Chromium (selenium), and check bad uploads, a checkpoint that does not fit, and concurrent sessions."""
import os, subprocess, sys, threading, time
from pathlib import Path
import numpy as np
import pytest, torch

pytest.importorskip('gradio', reason="the app's tests need Gradio: pip install -e '.[dev]' (it installs the [app] extra)")
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from PIL import Image

from show_attend_tell import app as A
from show_attend_tell.captioning import load_captioner
from show_attend_tell.captions import load_image
from show_attend_tell.checkpoint import load_checkpoint, save_checkpoint
from show_attend_tell.vocab import END
from show_attend_tell.config import preset
from show_attend_tell.encoder import ColourGridEncoder
from show_attend_tell.features import prepare
from show_attend_tell.training import train
from docs.conftest import _chrome  # the docs tests' headless Chromium, with the same flags
import servers  # tests/fixtures/, on the path through conftest.py

torch.set_num_threads(1)
WAIT = 60   # seconds: the longest any step may take on a loaded 2-core machine


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    "A tiny soft-attention model trained for two epochs on 40 Shapes images with the weightless colour-grid encoder."
    root = tmp_path_factory.mktemp('app')
    enc = ColourGridEncoder(grid_size=4, feat_dim=8)     # 'colour_grid', a registry name: no code to trust
    data = prepare('shapes', out=root/'data', encoder=enc, n_train=40, n_val=8, n_test=4, progress=False)
    # annotation_norm 'none': the colour grid's features are an affine ramp over the feature index, scaled by the cell's
    # colour, which layer normalisation would make the same for every image (the model would see no image at all)
    cfg = preset('tiny', embed_dim=16, hidden_dim=48, attn_dim=16, batch_size=16, epochs=2, dropout=0.1, grid_size=4,
                 annotation_norm='none')
    train(cfg, data, root/'run', device='cpu', progress=False)
    # a few steps of training leave <end> the likeliest word early on: make it less likely, so that the captions
    # have several words to click (the page is under test here, not the model)
    model, cfg, vocab, extra = load_checkpoint(root/'run'/'best.pth')
    with torch.no_grad(): model.out.bias[END] -= 2.0
    save_checkpoint(root/'tuned.pth', model, cfg, vocab, feat_dim=extra.get('feat_dim'), encoder=extra.get('encoder'))
    return root/'tuned.pth'


@pytest.fixture(scope='module')
def shapes_image(checkpoint):
    return A.example_images(checkpoint.parent/'examples', 1)[0]






def start_app(tmp_path, *args):
    "sat_app as its console-script entry point runs it, in a subprocess; returns (process, url)."
    port = servers.free_port()
    script = tmp_path/'entry.py'
    script.write_text('from show_attend_tell.app import sat_app\nsat_app()\n')
    env = {**os.environ, 'GRADIO_ANALYTICS_ENABLED': 'False', 'OMP_NUM_THREADS': '1'}
    p = subprocess.Popen([sys.executable, str(script), '--port', str(port), *map(str, args)], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p, f'http://127.0.0.1:{port}/'


def stop(p):
    p.terminate()
    try: p.wait(10)
    except subprocess.TimeoutExpired: p.kill(); p.wait(10)


@pytest.fixture(scope='module')
def server(checkpoint, tmp_path_factory):
    p, url = start_app(tmp_path_factory.mktemp('serve'), '--checkpoint', checkpoint)
    try:
        t0 = time.time()
        while not servers.answers(url):
            if p.poll() is not None: pytest.fail(f"sat_app exited with {p.returncode}: {p.stdout.read()}")
            if time.time() - t0 > 2*WAIT: pytest.fail(f"sat_app did not serve {url} within {2*WAIT} s")
            time.sleep(0.5)
        yield url
    finally: stop(p)


@pytest.fixture(scope='module')
def browser():
    b = _chrome()
    yield b
    b.quit()


def wait_for(b, fn, what):
    return WebDriverWait(b, WAIT, poll_frequency=0.25).until(lambda _: fn(), message=f"waited {WAIT} s for {what}")


def caption_words(b): return [e.text for e in b.find_elements(By.CSS_SELECTOR, '#words label') if e.text]
def attention_src(b):
    imgs = b.find_elements(By.CSS_SELECTOR, '#attention img')
    return imgs[0].get_attribute('src') if imgs else None
def message(b): return b.find_element(By.ID, 'message').text


def upload(b, path):
    b.find_element(By.CSS_SELECTOR, '#upload input[type=file]').send_keys(str(path))


def test_page_captions_an_upload_and_shows_each_words_attention(server, browser, shapes_image, tmp_path):
    b = browser
    b.get(server)
    wait_for(b, lambda: b.find_elements(By.CSS_SELECTOR, '#upload input[type=file]'), 'the upload box')
    upload(b, shapes_image)
    words = wait_for(b, lambda: caption_words(b), 'the caption words')
    assert len(words) >= 2 and all(w.strip() for w in words), words
    assert ' '.join(words) in message(b)
    first = wait_for(b, lambda: attention_src(b), 'the attention image')
    b.find_elements(By.CSS_SELECTOR, '#words label')[1].click()
    second = wait_for(b, lambda: (s := attention_src(b)) != first and s, 'a new attention image after clicking a word')
    assert second != first
    if os.environ.get('SAT_SCREENSHOTS'): b.save_screenshot(str(Path(os.environ['SAT_SCREENSHOTS'])/'sat_app.png'))
    nbest = [e.text for e in b.find_elements(By.CSS_SELECTOR, '#nbest label') if e.text]
    assert 1 <= len(nbest) <= 3 and nbest[0].startswith('1. ' + ' '.join(words)) and 'log p' in nbest[0], nbest
    # a text file named .jpg: a line on the page, and the server keeps serving
    bad = tmp_path/'notes.jpg'
    bad.write_text('this is text, not a JPEG')
    b.get(server)                                           # a fresh page: a new session and an empty upload box
    wait_for(b, lambda: b.find_elements(By.CSS_SELECTOR, '#upload input[type=file]'), 'the upload box')
    upload(b, bad)
    wait_for(b, lambda: 'not an image' in message(b), 'the error line for a text file named .jpg')
    assert 'notes.jpg' in message(b) and 'Traceback' not in b.page_source
    if os.environ.get('SAT_SCREENSHOTS'): b.save_screenshot(str(Path(os.environ['SAT_SCREENSHOTS'])/'sat_app_error.png'))
    assert servers.answers(server)
    b.get(server)
    wait_for(b, lambda: b.find_elements(By.CSS_SELECTOR, '#upload input[type=file]'), 'the upload box')
    upload(b, shapes_image)
    wait_for(b, lambda: 'not an image' not in message(b) and caption_words(b), 'a caption again after the error')


def test_two_sessions_at_once_get_their_own_results(checkpoint, shapes_image):
    "Concurrent calls (as two visitors' requests) give each its own result, the same as one at a time."
    cap = load_captioner(checkpoint)
    # a second image the colour-grid encoder sees differently: saturated quadrants (a grey photo's cells, layer-normalised,
    # look almost like a Shapes image's, and the two results would differ by rounding only)
    quad = np.zeros((64, 64, 3), np.uint8); quad[:32, :32, 0] = quad[:32, 32:, 1] = quad[32:, :32, 2] = 255; quad[32:, 32:, :2] = 255
    Image.fromarray(quad).save(checkpoint.parent/'quadrants.png')
    ims = [load_image(shapes_image), load_image(checkpoint.parent/'quadrants.png')]
    alone = [A.explain(cap, im, beam_size=3) for im in ims]
    got = [None, None]
    def visit(i):
        for _ in range(3): got[i] = A.explain(cap, ims[i], beam_size=3)
    ts = [threading.Thread(target=visit, args=(i,)) for i in range(2)]
    for t in ts: t.start()
    for t in ts: t.join(WAIT)
    for a, g in zip(alone, got):
        assert [h['words'] for h in g] == [h['words'] for h in a]
        assert all(np.allclose(x['alphas'], y['alphas']) for x, y in zip(g, a))
    a0, a1 = alone[0][0]['alphas'], alone[1][0]['alphas']
    n = min(len(a0), len(a1))
    assert [h['words'] for h in alone[0]] != [h['words'] for h in alone[1]] or np.abs(a0[:n] - a1[:n]).max() > 1e-4   # the two differ


def test_cli_one_line_errors(tmp_path, checkpoint):
    (tmp_path/'junk.pth').write_bytes(b'')
    for args, says in [(('--checkpoint', tmp_path/'missing.pth'), 'missing.pth does not exist'),
                       (('--checkpoint', tmp_path/'junk.pth'), 'junk.pth is not a readable checkpoint')]:
        p, _ = start_app(tmp_path, *args)
        out, _ = p.communicate(timeout=2*WAIT)
        assert p.returncode == 2 and out.startswith('error: ') and says in out and out.count('\n') == 1, out
