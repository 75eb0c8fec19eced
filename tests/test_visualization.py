"""Attention figures, the attention statistics and the widget explorer (nbs/21_visualization.ipynb)."""
import os
os.environ.setdefault('MPLBACKEND', 'Agg')
from datetime import datetime
import io
import numpy as np
import pytest
import matplotlib.pyplot as plt
from PIL import Image

from show_attend_tell import visualization as vz
from show_attend_tell.attention import AttentionError

G = 14


def one_hot(loc, L=G*G):
    a = np.zeros(L); a[loc] = 1.0
    return a


WORDS = ['a', 'red', 'circle', 'to', 'the', 'left', 'of', 'a', 'unbelievably', 'blue', 'square']


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))


def test_plot_attention_panels_titles_and_png(tmp_path, image):
    rng = np.random.default_rng(1)
    alphas = rng.dirichlet(np.ones(G*G), len(WORDS))
    fig = vz.plot_attention(image, WORDS, alphas)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 1 + len(WORDS)
    assert [ax.get_title() for ax in shown[1:]] == WORDS
    assert fig.get_size_inches()[0] <= 8.0
    fig.canvas.draw()                                  # no title wider than its panel
    r = fig.canvas.get_renderer()
    for ax in shown:
        tb, ab = ax.title.get_window_extent(r), ax.get_window_extent(r)
        assert tb.width <= ab.width + 1, ax.get_title()
    plt.close(fig)
    p = vz.save_attention_figure(image, WORDS, alphas, tmp_path/'sub'/'att.png')
    with Image.open(p) as im:
        assert im.format == 'PNG' and im.size[0] <= 800
    assert sorted(x.name for x in p.parent.iterdir()) == ['att.png']


def test_soft_map_peaks_at_the_attended_cell(image):
    y, x = 3, 11
    fig = vz.plot_attention(np.zeros((224, 224, 3)), ['w'], one_hot(y*G + x)[None], cmap='gray', opacity=1.0)
    data = fig.axes[1].images[0].get_array()
    r, c = np.unravel_index(np.asarray(data)[..., 0].argmax(), data.shape[:2])
    assert (r // 16, c // 16) == (y, x)
    plt.close(fig)


def test_hard_mode_draws_the_sampled_cell():
    gray = np.full((224, 224, 3), 0.5)
    y, x = 2, 9
    alphas = np.full((2, G*G), 1/(G*G))
    fig = vz.plot_attention(gray, ['a', 'dog'], alphas, mode='hard', samples=[0, y*G + x])
    data = np.asarray(fig.axes[2].images[0].get_array())
    cell = np.zeros((224, 224), bool); cell[y*16:(y + 1)*16, x*16:(x + 1)*16] = True
    assert np.allclose(data[cell], 0.5*0.75 + 0.25) and np.allclose(data[~cell], 0.5*0.3)
    first = np.asarray(fig.axes[1].images[0].get_array())
    assert np.allclose(first[:16, :16], 0.625) and np.allclose(first[16:, :], 0.15)
    plt.close(fig)
    with pytest.raises(vz.VisualizationError, match='samples has 1 entries for 2 words'):
        vz.plot_attention(gray, ['a', 'dog'], alphas, mode='hard', samples=[3])


def test_hard_mode_without_samples_uses_argmax():
    fig = vz.plot_attention(np.full((140, 140, 3), 0.5), ['w'], one_hot(13*G + 13)[None], mode='hard')
    data = np.asarray(fig.axes[1].images[0].get_array())
    assert np.allclose(data[130:, 130:], 0.625) and np.allclose(data[:130], 0.15)
    plt.close(fig)


def test_plot_attention_accepts_tensors_and_checks_shapes(image):
    torch = pytest.importorskip('torch')
    fig = vz.plot_attention(image, ['a', 'b'], torch.softmax(torch.randn(2, 49), -1))
    assert len([ax for ax in fig.axes if ax.images]) == 3
    plt.close(fig)
    with pytest.raises(AttentionError, match='not a square grid'):
        vz.plot_attention(image, ['a'], np.ones((1, 50))/50)


def test_statistics_plots():
    N, T, L = 4, 6, G*G
    A = np.full((N, T, L), 1/L); A[0, :3] = one_hot(5)
    lengths = [3, 6, 6, 2]
    H = vz.step_entropy(A, lengths)
    assert np.allclose(H[0, :3], 0) and np.allclose(H[1], np.log(L)) and np.isnan(H[3, 2:]).all()
    cov = vz.alpha_coverage(A, lengths)
    assert np.allclose(cov.sum(1), lengths) and cov[0, 5] == pytest.approx(3.0)
    for fig in (vz.plot_attention_entropy(A, lengths), vz.plot_alpha_coverage(A, lengths)):
        ax = fig.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel()
        plt.close(fig)
    fig = vz.plot_alpha_coverage(A, lengths)
    assert any(np.allclose(l.get_xdata(), 1.0) for l in fig.axes[0].lines)      # τ = 1 marked
    plt.close(fig)


def test_training_curves_skip_missing_bleu():
    log = [{'epoch': 1, 'train_loss': 3.0, 'valid_loss': 3.2, 'bleu4': None},
           {'epoch': 2, 'train_loss': 2.5, 'valid_loss': 2.9, 'bleu4': 0.11},
           {'epoch': 3, 'train_loss': 2.2, 'valid_loss': 2.95, 'bleu4': None},
           {'epoch': 4, 'train_loss': 2.0, 'valid_loss': 3.0, 'bleu4': 0.13}]
    fig = vz.plot_training_curves(log)
    loss_ax, bleu_ax = fig.axes
    assert len(loss_ax.lines) == 2
    assert list(bleu_ax.lines[0].get_xdata()) == [2, 4]
    assert 'epoch 4' in bleu_ax.get_legend().get_texts()[0].get_text()
    plt.close(fig)
    with pytest.raises(vz.VisualizationError):
        vz.plot_training_curves([])


# ---- explorer ------------------------------------------------------------------------------------------------
def test_explorer_constructs_and_reacts(image):
    calls = []
    def caption_fn(img, beam_size):
        calls.append(beam_size)
        n = 3 + beam_size % 2
        rng = np.random.default_rng(beam_size)
        return [f'w{i}' for i in range(n)], rng.dirichlet(np.ones(G*G), n)
    ex = vz.attention_explorer(caption_fn, {'one': image, 'two': image.rotate(90)}, beam_size=2)
    assert calls == [2] and ex.status.value == '' and ex.view.value[:4] == b'\x89PNG'
    assert (ex.word.min, ex.word.max, ex.word.value) == (0, 2, 0)
    before = ex.view.value
    ex.word.value = 2
    assert ex.view.value != before and '<b style="color:#c40">w2</b>' in ex.caption_html.value
    ex.beam.value = 3
    assert calls == [2, 3] and ex.word.max == 3 and ex.word.value == 0
    ex.beam.value = 2                                   # cached
    assert calls == [2, 3]
    buf = io.BytesIO(); Image.new('RGB', (50, 30), 'white').save(buf, format='PNG')
    ex.upload.value = ({'name': 'up.png', 'type': 'image/png', 'size': buf.tell(), 'content': memoryview(buf.getvalue()),
                        'last_modified': datetime.now()},)
    assert ex.picker.value == 'up.png' and calls[-1] == 2 and ex.status.value == ''


def test_explorer_shows_caption_errors_instead_of_raising(image):
    def broken(img, beam_size): raise RuntimeError('no model loaded')
    ex = vz.attention_explorer(broken, [image])
    assert 'no model loaded' in ex.status.value and ex.result is None
    ex.word.value = 0                                   # nothing to draw, no exception


def test_explorer_hard_samples(image):
    def hard_fn(img, beam_size):
        return ['a', 'b'], np.full((2, G*G), 1/(G*G)), np.array([0, G*G - 1])
    ex = vz.attention_explorer(hard_fn, [image])
    fig = ex.figure(1)
    data = np.asarray(fig.axes[1].images[0].get_array())
    assert data.shape[:2] == (224, 224)
    bright = data.mean(-1) > np.asarray(image, float).mean(-1)/255*0.3 + 1e-6
    assert bright[-16:, -16:].all() and not bright[:-16].any()
    plt.close(fig)
