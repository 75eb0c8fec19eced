"train and sat_train (nbs/25_training.ipynb): checkpoints, BLEU and early stopping, resume after a kill equals an uninterrupted run,\nfeatures held in memory, TensorBoard logs, the CLI."
import json, math, os, signal, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch

from show_attend_tell import training as T  # noqa: E402
from show_attend_tell.checkpoint import load_checkpoint
from show_attend_tell.cache import human_bytes
from show_attend_tell.features import load_prepared

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
    # a run that stopped early resumes to nothing
    assert T.train(cfg, shapes, out, resume=True, device='cpu', progress=False).first_epoch == 4


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
    cfg_file.write_text('hiden_dim: 3\n')
    for kw, msg in [(dict(), "unknown config key 'hiden_dim'"), (dict(log='mlflow', out=str(tmp_path/'o2')), "use 'tensorboard' or 'wandb'")]:
        with pytest.raises(SystemExit) as e:
            T.sat_train.__wrapped__(str(shapes), **{'config': str(cfg_file), 'out': str(out), 'quiet': True, 'device': 'cpu', **kw})
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith('error: ') and msg in err and err.count('\n') == 1, err
        cfg_file.write_text('epochs: 1\n')


def test_sat_train_reads_the_dataset_once_and_passes_its_options(shapes, tmp_path, monkeypatch, capsys):
    "dataset.json is parsed once; --compile, --num_workers and --features_in_memory reach the learner and loaders."
    from show_attend_tell import captions
    reads, seen = [], {}
    real_read, real_make = captions.read_json, T.make_learner
    monkeypatch.setattr(captions, 'read_json', lambda p, *a, **k: (reads.append(str(p)), real_read(p, *a, **k))[1])
    def spy(dls, *a, compile=False, **k):
        seen.update(compile=compile, workers=dls.train.fake_l.num_workers, held=dls.train.dataset.cache.table is not None)
        return real_make(dls, *a, compile=False, **k)                # compiling here would take minutes: its test is test_learner's
    monkeypatch.setattr(T, 'make_learner', spy)
    T.sat_train.__wrapped__(str(shapes), preset='tiny', epochs=1, out=str(tmp_path/'a'), device='cpu', quiet=True, compile=True)
    assert [r for r in reads if r.endswith('dataset.json')] == [str(shapes/'dataset.json')]
    assert seen == dict(compile=True, workers=0, held=False)          # on the CPU: no loader workers by default
    T.sat_train.__wrapped__(str(shapes), preset='tiny', epochs=1, out=str(tmp_path/'b'), device='cpu', quiet=True, num_workers=2)
    assert seen == dict(compile=False, workers=2, held=False)
    T.sat_train.__wrapped__(str(shapes), preset='tiny', epochs=1, out=str(tmp_path/'c'), device='cpu', features_in_memory='ram')
    assert seen['held'] and 'held in cpu memory' in capsys.readouterr().out


def test_max_steps_cuts_each_epoch_then_validates_and_saves(shapes, tmp_path, monkeypatch):
    "max_steps=2: two training steps per epoch, each epoch still validated, scored and checkpointed; sat_train passes --max_steps."
    from fastai.callback.core import Callback
    class Count(Callback):
        def before_fit(self): self.steps = []
        def after_batch(self):
            if self.training: self.steps.append(self.epoch)
    count = Count()
    T.train('tiny', shapes, tmp_path/'r', device='cpu', epochs=2, progress=False, max_steps=2, cbs=[count])
    assert count.steps == [0, 0, 1, 1]
    assert torch.load(tmp_path/'r'/'last.pth', weights_only=True)['epoch'] == 2
    hist = json.loads((tmp_path/'r'/'log.json').read_text())['history']
    assert len(hist) == 2 and all(0 <= h['bleu4'] <= 1 and h['valid_loss'] > 0 for h in hist), hist   # every column (a cut epoch keeps them all)
    seen = {}
    monkeypatch.setattr(T, 'train', lambda *a, **k: seen.update(k) or (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(SystemExit): T.sat_train.__wrapped__(str(shapes), preset='tiny', out=str(tmp_path/'s'), max_steps=7, quiet=True)
    assert seen['max_steps'] == 7


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
    # best.pth of the resumed run is the straight run's, and the weights of the epoch log.json names as the best
    log = json.loads((tmp_path/'res'/'log.json').read_text())
    best, best_mem = (torch.load(tmp_path/r/'best.pth', weights_only=True) for r in ('res', 'mem'))
    assert best['epoch'] == log['best_epoch'] + 1 == best_mem['epoch']
    for k in a['model']: assert torch.equal(best['model'][k], best_mem['model'][k]), k
    assert all(torch.equal(a['model'][k], best['model'][k]) for k in a['model']) == (best['epoch'] == c['epoch'])
    # sat_train --features_in_memory says where the features are; a cache that does not fit is one line, exit 2
    T.sat_train.__wrapped__(str(shapes), preset='tiny', epochs=1, out=str(tmp_path/'cli'), device='cpu', features_in_memory='device')
    assert 'held in cpu memory' in capsys.readouterr().out
    monkeypatch.setattr(T, 'free_memory', lambda dev: 1000)
    nbytes = load_prepared(shapes)[2].nbytes
    for kw, msg in [(dict(), 'does not fit in cpu memory: 1.0 KB free (90% of it usable)'),
                    (dict(), 'of activations for a batch of 32 captions of up to'),
                    (dict(features_in_memory='ram'), f"({human_bytes(nbytes)} of float16 features + "),   # RAM is where a CPU trains
                    (dict(num_workers=2), 'leave out num_workers')]:
        with pytest.raises(SystemExit) as e:
            T.sat_train.__wrapped__(str(shapes), out=str(tmp_path/'cli2'), quiet=True, device='cpu', **{'features_in_memory': 'device', **kw})
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith('error: ') and msg in err and err.count('\n') == 1, err
    assert not (tmp_path/'cli2').exists()


# ---------------------------------------------------------------------------------------------------------
# logging


def test_tensorboard_log_holds_what_log_json_holds(shapes, tmp_path, monkeypatch, capsys):
    "sat_train --log tensorboard: the event files, read back, give log.json's values per epoch and a point per step; a resume goes on."
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path/'tb'
    T.sat_train.__wrapped__(str(shapes), preset='tiny', epochs=2, out=str(out), device='cpu', quiet=True, log='tensorboard')
    T.sat_train.__wrapped__(str(shapes), preset='tiny', epochs=3, out=str(out), device='cpu', quiet=True, log='tensorboard', resume=True)
    ev = EventAccumulator(str(out/'tensorboard')).Reload()
    hist = json.loads((out/'log.json').read_text())['history']
    assert len(hist) == 3
    for tag in ('valid_loss', 'nll', 'attn_entropy', 'bleu4'):
        got = [e.value for e in ev.Scalars(tag)]
        assert got == pytest.approx([r[tag] for r in hist], rel=1e-5), tag     # bleu4 is computed every epoch in tiny
    steps = [e.step for e in ev.Scalars('train_loss')]
    assert steps == sorted(set(steps)) and len(steps) > 3 * 2                 # one point per step, the resumed run after the first
    epoch_steps = [e.step for e in ev.Scalars('valid_loss')]
    assert epoch_steps == [steps[len(steps) * k // 3 - 1] for k in (1, 2, 3)]      # logged at the last step of their epoch
    assert [e.value for e in ev.Scalars('lr_0')] == pytest.approx([hist[0]['lr']] * len(steps))   # the constant rate, at every step
    assert 0 < hist[-1]['attn_entropy'] < math.log(16)                      # the 4×4 grid: below uniform attention
    # without the package: one line that says what to install
    monkeypatch.setitem(sys.modules, 'fastai.callback.tensorboard', None)
    monkeypatch.setitem(sys.modules, 'wandb', None)
    for log, msg in (('tensorboard', "pip install 'show_attend_tell[log]'"), ('wandb', 'pip install wandb')):
        with pytest.raises(SystemExit) as e:
            T.sat_train.__wrapped__(str(shapes), preset='tiny', epochs=1, out=str(tmp_path/log), device='cpu', quiet=True, log=log)
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and err.count('\n') == 1, err
