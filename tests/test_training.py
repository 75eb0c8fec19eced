"Training: one-batch overfitting (soft, hard), REINFORCE unbiasedness, checkpoints (safety, versions), resume after a kill, sat_train."
import json, math, os, pickle, signal, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import pytest, torch

sys.path.insert(0, str(Path(__file__).parent/'fixtures'))
from standin_encoder import TinyEncoder  # noqa: E402
from show_attend_tell import training as T  # noqa: E402
from show_attend_tell.attention import doubly_stochastic_penalty
from show_attend_tell.checkpoint import CheckpointError, FORMAT_VERSION, build_model, load_checkpoint, save_checkpoint
from show_attend_tell.learner import make_learner
from show_attend_tell.losses import CaptionLoss, reinforce_loss, update_baseline
from show_attend_tell.config import preset# noqa: E402
from show_attend_tell.features import prepare, load_prepared
from show_attend_tell.loaders import get_dls
from show_attend_tell.vocab import Vocab, PAD# noqa: E402

torch.set_num_threads(1)
HERE = Path(__file__).parent


def tiny_cfg(attention='soft', **kw):
    "The tiny preset, smaller still: these tests train in about a second."
    return preset('tiny', **{**dict(embed_dim=16, hidden_dim=48, attn_dim=16, batch_size=16, epochs=3, dropout=0.1,
                                    attention=attention), **kw})


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    "A prepared Shapes folder: 40 training, 8 validation images, 4×4×8 features from the stand-in encoder."
    out = tmp_path_factory.mktemp('shapes')/'data'
    return prepare('shapes', out=out, encoder=TinyEncoder(), n_train=40, n_val=8, n_test=4, progress=False)


# ---------------------------------------------------------------------------------------------------------
# the estimator

def _single_sample_grads(theta, reward_fn, baseline, n, gen):
    "n single-sample gradient estimates of ∇_θ E_{s~softmax(θ)}[r_θ(s)], each from `reinforce_loss` by autograd."
    th = theta.repeat(n, 1).requires_grad_()                       # one copy of θ per sample: per-sample gradients
    s = torch.multinomial(theta.softmax(0), n, replacement=True, generator=gen)
    logp_s = th.log_softmax(1).gather(1, s[:, None]).squeeze(1)
    (-reinforce_loss(reward_fn(th, s), logp_s, baseline=baseline)).sum().backward()
    return th.grad.double()


@pytest.mark.parametrize('reward', ['table', 'depends_on_theta'])
@pytest.mark.parametrize('baseline', ['none', 'mean', 'off'])
def test_reinforce_gradient_is_unbiased(reward, baseline):
    "The mean of many single-sample estimates equals the exact gradient within 4 standard errors (every component)."
    gen = torch.Generator().manual_seed(1)
    K, n = 6, 40000
    theta = torch.randn(K, generator=gen, dtype=torch.float64)
    table = torch.randn(K, generator=gen, dtype=torch.float64) * 2
    if reward == 'table':                      # a fixed reward r(s): only the score-function term
        r_fn = lambda th, s: table[s]
        exact_fn = lambda t: (t.softmax(0) * table).sum()
    else:                                      # r_θ(s) = log q_θ(s): the log-likelihood term of eq. 11 as well
        r_fn = lambda th, s: (th * 0.7 + table).log_softmax(1).gather(1, s[:, None]).squeeze(1)
        exact_fn = lambda t: (t.softmax(0) * (t * 0.7 + table).log_softmax(0)).sum()
    b = {'none': 0., 'mean': float(exact_fn(theta)), 'off': 5.}[baseline]
    exact = torch.autograd.functional.jacobian(exact_fn, theta)
    est = _single_sample_grads(theta, r_fn, b, n, gen)
    se = est.std(0) / math.sqrt(n)
    z = ((est.mean(0) - exact) / se).abs()
    assert (z < 4).all(), f"estimate {est.mean(0)} vs exact {exact} (z = {z})"
    assert (se < 0.05).all()                   # the check has teeth: the standard errors are small


def test_baseline_reduces_variance_and_update_rule():
    gen = torch.Generator().manual_seed(0)
    theta, table = torch.randn(5, generator=gen), torch.randn(5, generator=gen) + 3.
    v = {}
    for b in (0., float((theta.softmax(0) * table).sum())):
        v[b] = _single_sample_grads(theta, lambda th, s: table[s], b, 20000, gen).var(0).sum()
    assert v[max(v)] < 0.5 * v[0.]
    r = torch.tensor([-10., -12.])
    assert update_baseline(-5., r, 0.9) == pytest.approx(0.9 * -5 + 0.1 * -11)


def test_loss_value_and_masking():
    "Padding does not count: a caption padded with PAD has the loss of the same caption unpadded."
    cfg = tiny_cfg(alpha_c=1.0)
    V, L, D = 10, 9, 8
    torch.manual_seed(0)
    model = build_model(cfg, V, D).eval()
    feats = torch.randn(1, L, D)
    cap = torch.tensor([[1, 5, 6, 7, 2]])
    padded = torch.tensor([[1, 5, 6, 7, 2, 0, 0]])
    loss = CaptionLoss(cfg)
    with torch.no_grad():
        a, b = loss(model(feats, cap), cap), loss(model(feats, padded), padded)
    assert torch.allclose(a, b, atol=1e-5)
    assert doubly_stochastic_penalty(torch.full((1, 3, 4), 0.25), torch.tensor([[True, True, False]])).item() == pytest.approx(4 * 0.25)


# ---------------------------------------------------------------------------------------------------------
# one-batch overfitting

def _one_batch_learner(shapes, cfg):
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader as FDL
    data, vocab, cache = load_prepared(shapes)
    dls = get_dls(data, vocab, cache=cache, bs=cfg.batch_size, seed=0)
    feats, caps = next(iter(dls.train))
    ds = torch.utils.data.TensorDataset(feats, caps)
    one = DataLoaders(FDL(ds, bs=len(caps)), FDL(ds, bs=len(caps)), device='cpu')
    torch.manual_seed(0)
    model = build_model(cfg, len(vocab), cache.feat_dim)
    return make_learner(one, model, cfg, vocab, bleu=False, progress=False)


def _valid_nll(learn):
    "Validation negative log-likelihood per word (the `nll` metric)."
    return learn.validate()[1]


def test_one_batch_overfit_soft(shapes):
    learn = _one_batch_learner(shapes, tiny_cfg('soft', lr=1e-2, dropout=0.0))
    before = _valid_nll(learn)
    learn.fit(150)
    after = _valid_nll(learn)
    print(f"soft, one batch: NLL/word {before:.3f} -> {after:.4f} ({1 - after/before:.1%} lower)")
    assert after < 0.1 * before


def test_one_batch_overfit_hard(shapes):
    learn = _one_batch_learner(shapes, tiny_cfg('hard', lr=1e-2, dropout=0.0))
    before = _valid_nll(learn)
    learn.fit(80)
    rows = [dict(zip(learn.recorder.metric_names[1:-1], v)) for v in learn.recorder.values]
    after = _valid_nll(learn)
    print(f"hard, one batch: NLL/word {before:.3f} -> {after:.4f} ({1 - after/before:.1%} lower); "
          f"baseline {rows[-1]['baseline']:.2f}, adv_msq first/last sampled epochs "
          f"{next(r['adv_msq'] for r in rows if not math.isnan(r['adv_msq'])):.2f} / "
          f"{next(r['adv_msq'] for r in rows[::-1] if not math.isnan(r['adv_msq'])):.3f}")
    assert after < 0.3 * before
    sampled = [r for r in rows if not math.isnan(r['adv_msq'])]
    assert 0.2 * len(rows) < len(sampled) < 0.8 * len(rows)          # about half the passes sample (p = 0.5)
    assert rows[-1]['baseline'] < 0 and learn.loss_func.baseline == pytest.approx(rows[-1]['baseline'])


# ---------------------------------------------------------------------------------------------------------
# checkpoints

class _Evil:
    "Unpickling this object opens (creates) the marker file: code execution."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (open, (self.marker, 'w'))


@pytest.mark.parametrize('how', ['torch.save', 'pickle.dump', 'inside_real_checkpoint'])
def test_malicious_pickle_is_refused(tmp_path, how):
    marker = tmp_path/'pwned'
    path = tmp_path/'last.pth'
    if how == 'torch.save': torch.save({'format': 'show_attend_tell', 'x': _Evil(str(marker))}, path)
    elif how == 'pickle.dump': path.write_bytes(pickle.dumps(_Evil(str(marker))))
    else:
        cfg, vocab = tiny_cfg(), Vocab(['<pad>', '<start>', '<end>', '<unk>', 'a', 'b'])
        save_checkpoint(path, build_model(cfg, 6, 8), cfg, vocab, feat_dim=8)
        ck = torch.load(path, weights_only=True); ck['log'] = [_Evil(str(marker))]
        torch.save(ck, path)
    with pytest.raises(CheckpointError, match='refusing to load'):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_roundtrip_and_refusals(tmp_path):
    cfg = tiny_cfg('hard')
    vocab = Vocab(['<pad>', '<start>', '<end>', '<unk>', 'red', 'circle'])
    model = build_model(cfg, len(vocab), 8)
    p = save_checkpoint(tmp_path/'m.pth', model, cfg, vocab, feat_dim=8, encoder='tiny', epoch=2, baseline=-3.5,
                          log=[{'epoch': 0, 'bleu4': None}, {'epoch': 1, 'bleu4': 0.25}])
    assert sorted(os.listdir(tmp_path)) == ['m.pth']                  # no temp file left behind
    m2, cfg2, v2, extra = load_checkpoint(p)
    assert cfg2 == cfg and v2 == vocab and not m2.training
    assert extra['epoch'] == 2 and extra['encoder'] == 'tiny' and extra['feat_dim'] == 8 and extra['baseline'] == -3.5
    assert extra['log'][1]['bleu4'] == 0.25
    for k, v in model.state_dict().items(): assert torch.equal(v, m2.state_dict()[k])
    # another vocabulary
    with pytest.raises(CheckpointError, match='another vocabulary'):
        load_checkpoint(p, vocab=Vocab(['<pad>', '<start>', '<end>', '<unk>', 'red', 'square']))
    # another format version
    ck = torch.load(p, weights_only=True); ck['format_version'] = FORMAT_VERSION + 1; torch.save(ck, tmp_path/'v.pth')
    with pytest.raises(CheckpointError, match=f'format version {FORMAT_VERSION + 1}'): load_checkpoint(tmp_path/'v.pth')
    # not ours, damaged, missing
    torch.save({'weights': torch.zeros(2)}, tmp_path/'other.pth')
    with pytest.raises(CheckpointError, match='not a show_attend_tell checkpoint'): load_checkpoint(tmp_path/'other.pth')
    (tmp_path/'cut.pth').write_bytes(p.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match='not a readable checkpoint'): load_checkpoint(tmp_path/'cut.pth')
    with pytest.raises(CheckpointError, match='does not exist'): load_checkpoint(tmp_path/'nope.pth')
    # weights that do not fit the described model
    ck = torch.load(p, weights_only=True); ck['feat_dim'] = 9; torch.save(ck, tmp_path/'shape.pth')
    with pytest.raises(CheckpointError, match='weights do not fit'): load_checkpoint(tmp_path/'shape.pth')
    # every message is one line
    for f in ('v.pth', 'other.pth', 'cut.pth', 'shape.pth'):
        with pytest.raises(CheckpointError) as e: load_checkpoint(tmp_path/f)
        assert '\n' not in str(e.value)


# ---------------------------------------------------------------------------------------------------------
# train(): checkpoints every epoch, BLEU-4, early stopping, resume after a kill

def _weights(path):
    return torch.load(path, weights_only=True)['model']


def test_train_writes_checkpoints_bleu_and_stops_early(shapes, tmp_path):
    out = tmp_path/'run'
    cfg = tiny_cfg(bleu_every=2, epochs=5, patience=1, lr=0.0)       # lr 0: BLEU-4 cannot improve, so it stops
    learn = T.train(cfg, shapes, out, device='cpu', progress=False)
    log = json.loads((out/'log.json').read_text())
    hist = log['history']
    assert [r['epoch'] for r in hist] == [0, 1, 2, 3]                 # BLEU at epochs 1 and 3; no gain at 3: stop
    assert [r['bleu4'] is None for r in hist] == [True, False, True, False]
    assert log['stopped'] and log['best_epoch'] == 1 and log['monitor'] == 'bleu4'
    assert {'last.pth', 'best.pth', 'log.json', 'config.json', 'curves.png'} <= set(os.listdir(out))
    best, last = torch.load(out/'best.pth', weights_only=True), torch.load(out/'last.pth', weights_only=True)
    assert best['epoch'] == 2 and last['epoch'] == 4 and last['train_state']['stopped']
    assert all(0 <= r['bleu4'] <= 1 for r in hist if r['bleu4'] is not None)
    # a finished run resumes to nothing; an occupied folder is not overwritten
    assert T.train(cfg, shapes, out, resume=True, device='cpu', progress=False).first_epoch == 4
    with pytest.raises(T.TrainError, match='already holds a run'): T.train(cfg, shapes, out, device='cpu', progress=False)
    with pytest.raises(T.TrainError, match='hidden_dim'):
        T.train(tiny_cfg(hidden_dim=32), shapes, out, resume=True, device='cpu', progress=False)


_KILL_SCRIPT = textwrap.dedent('''
    import os, signal, sys, torch
    sys.path.insert(0, {fixtures!r}); sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from fastai.callback.core import Callback
    from show_attend_tell import training as T
    from show_attend_tell.config import preset
    class Kill(Callback):
        "SIGKILL this process once epoch {stop} has been checkpointed (the checkpoint callback runs first)."
        order = 100
        def after_epoch(self):
            if self.epoch == {stop}: os.kill(os.getpid(), signal.SIGKILL)
    cfg = preset('tiny', **{cfg!r})
    T.train(cfg, {data!r}, {out!r}, device='cpu', progress=False, cbs=[Kill()])
''')


@pytest.mark.parametrize('attention', ['soft', 'hard'])
def test_resume_after_kill_equals_uninterrupted_run(shapes, tmp_path, attention):
    "3 epochs straight vs 2 epochs, SIGKILL, resume to 3: the same weights, bit for bit."
    cfg = tiny_cfg(attention, bleu_every=2)
    kw = {k: v for k, v in cfg.to_dict().items() if k != 'name'}
    straight, killed = tmp_path/'straight', tmp_path/'killed'
    T.train(cfg, shapes, straight, device='cpu', progress=False)
    script = _KILL_SCRIPT.format(fixtures=str(HERE/'fixtures'), tests=str(HERE), stop=1, cfg=kw, data=str(shapes), out=str(killed))
    r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert torch.load(killed/'last.pth', weights_only=True)['epoch'] == 2
    learn = T.train(cfg, shapes, killed, resume=True, device='cpu', progress=False)
    assert learn.first_epoch == 2
    a, b = torch.load(straight/'last.pth', weights_only=True), torch.load(killed/'last.pth', weights_only=True)
    assert a['epoch'] == b['epoch'] == 3
    for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), k
    assert a['baseline'] == b['baseline'] and (attention == 'soft') == (a['baseline'] == 0.)
    assert [r['valid_loss'] for r in a['log']] == [r['valid_loss'] for r in b['log']]
    # the comparison has teeth: another seed gives other weights
    T.train(cfg, shapes, tmp_path/'other', seed=cfg.seed + 1, device='cpu', progress=False)
    c = _weights(tmp_path/'other'/'last.pth')
    assert any(not torch.equal(a['model'][k], c[k]) for k in c)


# ---------------------------------------------------------------------------------------------------------
# sat_train

def test_sat_train_cli(shapes, tmp_path, capsys):
    out = tmp_path/'cli'
    cfg_file = tmp_path/'over.yaml'
    cfg_file.write_text('embed_dim: 16\nhidden_dim: 32\nattn_dim: 16\nbatch_size: 16\n')
    T.sat_train.__wrapped__(str(shapes), config=str(cfg_file), epochs=1, out=str(out), quiet=True, device='cpu')
    said = capsys.readouterr().out
    assert str(out/'best.pth') in said and str(out/'log.json') in said
    _, cfg, _, extra = load_checkpoint(out/'last.pth')
    assert (cfg.name, cfg.hidden_dim, cfg.epochs, cfg.encoder, extra['encoder']) == ('tiny', 32, 1, 'tiny', 'tiny')
    for args, msg in [((str(tmp_path/'nowhere'),), 'not a prepared data folder'),
                      ((str(shapes),), 'already holds a run'),
                      ((str(shapes),), "unknown config key 'hiden_dim'")]:
        if 'hiden' in msg: cfg_file.write_text('hiden_dim: 3\n')
        with pytest.raises(SystemExit) as e:
            T.sat_train.__wrapped__(*args, config=str(cfg_file), out=str(out), quiet=True, device='cpu')
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith('error: ') and msg in err and err.count('\n') == 1, err
