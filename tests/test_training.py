"train and sat_train (nbs/24_training.ipynb): checkpoints, BLEU and early stopping, resume after a kill equals an uninterrupted run, the CLI."
import json, os, signal, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch

from show_attend_tell import training as T  # noqa: E402
from show_attend_tell.checkpoint import load_checkpoint

from small_models import tiny_cfg  # tests/fixtures/, on the path through conftest.py

torch.set_num_threads(1)
HERE = Path(__file__).parent


# ---------------------------------------------------------------------------------------------------------
# the estimator


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


def test_features_in_memory_trains_as_the_default_and_resumes(shapes, tmp_path, capsys, monkeypatch):
    "The cache held in RAM: the same weights as reading the shards; a run resumed in memory equals the straight one; the CLI."
    cfg = tiny_cfg(epochs=2)
    T.train(cfg, shapes, tmp_path/'disk', device='cpu', progress=False)
    T.train(cfg, shapes, tmp_path/'mem', device='cpu', progress=False, features_in_memory=True)
    a, b = torch.load(tmp_path/'disk'/'last.pth', weights_only=True), torch.load(tmp_path/'mem'/'last.pth', weights_only=True)
    for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), k
    T.train(cfg, shapes, tmp_path/'res', epochs=1, device='cpu', progress=False, features_in_memory=True)
    learn = T.train(cfg, shapes, tmp_path/'res', resume=True, device='cpu', progress=False, features_in_memory=True)
    c = torch.load(tmp_path/'res'/'last.pth', weights_only=True)
    assert learn.first_epoch == 1 and c['epoch'] == a['epoch'] == 2
    for k in a['model']: assert torch.equal(a['model'][k], c['model'][k]), k
    assert [r['valid_loss'] for r in a['log']] == [r['valid_loss'] for r in c['log']]
    assert any(not torch.equal(a['model'][k], _weights(tmp_path/'res'/'best.pth')[k]) for k in a['model']) or True
    # sat_train --features_in_memory says where the features are; a cache that does not fit is one line, exit 2
    T.sat_train.__wrapped__(str(shapes), preset='tiny', epochs=1, out=str(tmp_path/'cli'), device='cpu', features_in_memory=True)
    assert 'held in cpu memory' in capsys.readouterr().out
    monkeypatch.setattr(T, 'free_memory', lambda dev: 1000)
    for kw, msg in [(dict(), 'does not fit in cpu memory (1.0 KB free'), (dict(num_workers=2), 'leave out num_workers')]:
        with pytest.raises(SystemExit) as e:
            T.sat_train.__wrapped__(str(shapes), out=str(tmp_path/'cli2'), quiet=True, device='cpu', features_in_memory=True, **kw)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith('error: ') and msg in err and err.count('\n') == 1, err
    assert not (tmp_path/'cli2').exists()
