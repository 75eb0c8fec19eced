"Self-critical training: CIDEr-D equals coco-caption's scorer, the loss's sign, resume after a kill, torchrun, sat_scst's errors."
import json, os, signal, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import pytest, torch
from pycocoevalcap.cider.cider import Cider

sys.path.insert(0, str(Path(__file__).parent/'fixtures'))
from standin_encoder import TinyEncoder  # noqa: E402
from show_attend_tell import scst as S  # noqa: E402
from show_attend_tell import training as T
from show_attend_tell.config import preset
from show_attend_tell.decoder import ShowAttendTell
from show_attend_tell.features import prepare
from show_attend_tell.metrics import MetricsError
from show_attend_tell.vocab import START, END, PAD

torch.set_num_threads(1)
HERE = Path(__file__).parent
XE = dict(embed_dim=16, hidden_dim=48, attn_dim=16, batch_size=16, epochs=2, dropout=0.1, bleu_every=2)


# ---------------------------------------------------------------------------------------------------------
# CIDEr-D

def _flickr_refs():
    d = json.loads((HERE/'fixtures'/'dataset_flickr_mini.json').read_text())
    return {im['imgid']: [' '.join(s['tokens']) for s in im['sentences']] for im in d['images']}


def _candidates(refs):
    "Eval-style candidates: another image's reference, a truncated one, repeats, unseen words, one word, empty."
    keys = sorted(refs)
    styles = [lambda k, j: refs[keys[(j + 1) % len(keys)]][0],
              lambda k, j: ' '.join(refs[k][1 % len(refs[k])].split()[:4]),
              lambda k, j: ' '.join(refs[k][2 % len(refs[k])].split() * 2),
              lambda k, j: 'a zebra plays the violin on a ' + refs[k][0].split()[-1],
              lambda k, j: 'a', lambda k, j: '', lambda k, j: refs[k][-1]]
    return [{k: [styles[(j + s) % len(styles)](k, j)] for j, k in enumerate(keys)} for s in range(len(styles))]


@pytest.mark.parametrize('leave_one_out', [False, True])
def test_cider_d_equals_pycocoevalcap(leave_one_out):
    "Given the same corpus for its document frequencies, CiderD equals pycocoevalcap's Cider to 1e-6, image by image."
    gts = _flickr_refs()
    if leave_one_out: gts = {k: v[1:] if k % 2 else v for k, v in gts.items()}   # 4 or 5 references per image
    for res in _candidates(gts):
        ref_mean, ref_scores = Cider().compute_score(gts, res)
        mean, scores = S.CiderD(gts).compute_score(gts, res)
        assert abs(mean - ref_mean) < 1e-6, (mean, ref_mean)
        np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)
    print(f"CIDEr (pycocoevalcap) {ref_mean:.8f}  CiderD {mean:.8f}")


def test_cider_d_df_from_another_corpus_differs():
    "Document frequencies from a larger corpus change the scores (so the equality above has teeth), and score() agrees with compute_score()."
    gts = _flickr_refs()
    res = _candidates(gts)[0]
    keys = sorted(gts)
    small = {k: gts[k] for k in keys[:5]}
    same = S.CiderD(small).score(keys[:5], [res[k][0] for k in keys[:5]])
    np.testing.assert_allclose(same, Cider().compute_score(small, {k: res[k] for k in keys[:5]})[1], atol=1e-6)
    other = S.CiderD(gts).score(keys[:5], [res[k][0] for k in keys[:5]])
    assert np.abs(other - same).max() > 1e-3
    with pytest.raises(MetricsError, match='no references'): S.CiderD(small).score([keys[-1]], ['a dog'])


# ---------------------------------------------------------------------------------------------------------
# the loss

def _toy():
    torch.manual_seed(0)
    cfg = preset('tiny', embed_dim=16, hidden_dim=32, attn_dim=16, dropout=0.0)
    return ShowAttendTell(cfg, vocab_size=12, feat_dim=8).eval(), torch.randn(1, 16, 8)


def _caption_logp(model, feats, ids):
    caps = torch.tensor([[START] + ids + [END]])
    out = model(feats, caps)
    return out['logits'].log_softmax(-1).gather(2, caps[:, 1:, None]).sum().item()


@pytest.mark.parametrize('advantage', [1.0, -1.0])
def test_scst_loss_sign_on_toy_model(advantage):
    "A sampled caption rewarded above its baseline gains probability after a step; below the baseline it loses it."
    model, feats = _toy()
    s = S.sample_captions(model, feats, k=1, max_len=6, generator=torch.Generator().manual_seed(3))
    ids = s['ids'][0][s['mask'][0]].tolist()
    ids = ids[:-1] if ids and ids[-1] == END else ids
    before = _caption_logp(model, feats, ids)
    loss = S.scst_loss(s['logp'], s['mask'], torch.tensor([1.0 + advantage]), torch.tensor([1.0]))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    opt.zero_grad(); loss.backward(); opt.step()
    after = _caption_logp(model, feats, ids)
    assert (after - before) * advantage > 1e-4, (before, after)


def test_sampled_logp_is_the_models():
    "The log-probabilities sample_captions differentiates are the teacher-forced model's, renormalised without <pad>/<start>."
    model, feats = _toy()
    s = S.sample_captions(model, feats, k=3, max_len=8, generator=torch.Generator().manual_seed(1))
    for r in range(3):
        ids = s['ids'][r][s['mask'][r]].tolist()
        caps = torch.tensor([[START] + ids])
        logits = model(feats, caps)['logits'][0].float()
        lp = S._word_logp(logits.log_softmax(-1))
        want = lp.gather(1, caps[0, 1:, None]).squeeze(1)
        torch.testing.assert_close(s['logp'][r][s['mask'][r]], want, atol=1e-5, rtol=1e-5)


def test_sample_captions_refuses_bad_arguments_with_scst_error():
    model, feats = _toy()
    with pytest.raises(S.ScstError, match=r'\(B, L, D\)'): S.sample_captions(model, feats[0], k=2)
    with pytest.raises(S.ScstError, match='k=0'): S.sample_captions(model, feats, k=0)
    assert issubclass(S.ScstError, S.SATError)


def test_scst_step_under_bf16_autocast():
    "The autocast path (bf16 on the CPU here, as on a GPU): log p and the loss in float32, finite, gradients on every weight it used."
    model, feats = _toy()
    cider = S.CiderD({0: [['w1', 'w2']], 1: [['w3']]})
    from show_attend_tell.vocab import Vocab
    vocab = Vocab(['<pad>', '<start>', '<end>', '<unk>'] + [f'w{i}' for i in range(8)])
    loss, st = S.scst_step(model, feats.repeat(2, 1, 1), [0, 1], cider, vocab, k=3, max_len=6,
                           generator=torch.Generator().manual_seed(0), amp=torch.bfloat16)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())


def test_scst_max_len_covers_95_percent_of_the_references():
    lengths = [9] * 60 + [12] * 35 + [40] * 5
    assert S.scst_max_len(lengths) == 13 and S.scst_max_len(lengths, cover=1.0) == 41 and S.scst_max_len(lengths, cap=10) == 10


# ---------------------------------------------------------------------------------------------------------
# the run

@pytest.fixture(scope='module')
def xe(tmp_path_factory):
    "A prepared Shapes folder and a 2-epoch XE checkpoint of a very small model."
    root = tmp_path_factory.mktemp('scst')
    data = prepare('shapes', out=root/'data', encoder=TinyEncoder(), n_train=40, n_val=8, n_test=4, progress=False)
    T.train(preset('tiny', **XE), data, root/'xe', device='cpu', progress=False)
    return data, root/'xe'/'best.pth'


_KILL_SCRIPT = textwrap.dedent('''
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from show_attend_tell import scst as S
    def kill(epoch, row):
        if epoch == {stop}: os.kill(os.getpid(), signal.SIGKILL)
    S.scst_train({init!r}, {data!r}, {out!r}, k=3, epochs=3, batch_size=8, device='cpu', progress=False, on_epoch_end=kill)
''')


def test_resume_after_kill_equals_uninterrupted_run(xe, tmp_path):
    "3 SCST epochs straight vs 2, SIGKILL, resume to 3: the same weights and log, bit for bit."
    data, init = xe
    kw = dict(k=3, epochs=3, batch_size=8, device='cpu', progress=False)
    a = S.scst_train(init, data, tmp_path/'straight', **kw)
    script = _KILL_SCRIPT.format(stop=1, init=str(init), data=str(data), out=str(tmp_path/'killed'))
    r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=180)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert torch.load(tmp_path/'killed'/'last.pth', weights_only=True)['epoch'] == 2
    b = S.scst_train(init, data, tmp_path/'killed', resume=True, **kw)
    A, B = (torch.load(p/'last.pth', weights_only=True) for p in (tmp_path/'straight', tmp_path/'killed'))
    assert A['epoch'] == B['epoch'] == 3
    for k in A['model']: assert torch.equal(A['model'][k], B['model'][k]), k
    strip = lambda log: [{k: v for k, v in r.items() if k != 'seconds'} for r in log]
    assert strip(a['history']) == strip(b['history']) and a['best'] == b['best']
    # the weights moved, and another seed moves them elsewhere
    X = torch.load(init, weights_only=True)['model']
    assert any(not torch.equal(A['model'][k], X[k]) for k in X)
    c = S.scst_train(init, data, tmp_path/'other', **{**kw, 'epochs': 1}, seed=123)
    C = torch.load(tmp_path/'other'/'last.pth', weights_only=True)['model']
    first = S.scst_train(init, data, tmp_path/'one', **{**kw, 'epochs': 1})
    O = torch.load(tmp_path/'one'/'last.pth', weights_only=True)['model']
    assert any(not torch.equal(C[k], O[k]) for k in C)


def test_scst_checkpoints_are_evaluable_and_best_starts_from_xe(xe, tmp_path):
    "best.pth exists from the start (the XE weights), and every checkpoint loads with load_checkpoint."
    from show_attend_tell.checkpoint import load_checkpoint
    data, init = xe
    res = S.scst_train(init, data, tmp_path/'run', k=2, epochs=1, batch_size=8, baseline='mean', device='cpu', progress=False)
    assert res['init_val'] is not None and res['best'] >= res['init_val']['cider']
    for name in ('best.pth', 'last.pth'):
        model, cfg, vocab, extra = load_checkpoint(tmp_path/'run'/name)
        assert extra['train_state']['mode'] == 'scst'
    log = json.loads((tmp_path/'run'/'log.json').read_text())
    assert log['monitor'] == 'val_cider' and len(log['history']) == 1
    # the default sampling length, and the reward's statistics saved for every process to memory-map
    from show_attend_tell.features import load_prepared
    from show_attend_tell.loaders import ImageSet
    d, _, cache = load_prepared(data)
    train = list(ImageSet(d, 'train', cache).image_idx)
    assert res['max_len'] == S.scst_max_len([len(t) for i in train for t in d[i].tokens], cap=cfg.max_decode_len)
    saved = S.CiderD.load(tmp_path/'run'/'cider_refs')
    caps = [d[i].tokens[-1][:5] for i in train]
    np.testing.assert_array_equal(saved.score(train, caps), S.CiderD({i: d[i].tokens for i in train}).score(train, caps))
    assert S._holds(tmp_path/'run'/'cider_refs', train) and not S._holds(tmp_path/'run'/'cider_refs', train[1:])
    assert not S._holds(tmp_path/'nothing', train)


def test_resume_keeps_the_runs_sampling_length(xe, tmp_path):
    "A run started with --max_len resumes without it: the stored length, not the default, is the run's."
    data, init = xe
    kw = dict(k=2, batch_size=8, device='cpu', progress=False, val_images=4)
    S.scst_train(init, data, tmp_path/'r', epochs=1, max_len=7, **kw)
    res = S.scst_train(init, data, tmp_path/'r', epochs=2, resume=True, **kw)
    assert res['max_len'] == 7 and len(res['history']) == 2


def test_scst_on_hard_attention_checkpoint(tmp_path, xe):
    "Hard attention composes: SCST fine-tunes its expected-context decoder."
    data, _ = xe
    T.train(preset('tiny', **{**XE, 'attention': 'hard', 'epochs': 1}), data, tmp_path/'hard', device='cpu', progress=False)
    res = S.scst_train(tmp_path/'hard'/'best.pth', data, tmp_path/'scst', k=2, epochs=1, batch_size=8, device='cpu', progress=False)
    assert len(res['history']) == 1 and np.isfinite(res['history'][0]['train_loss'])


def test_torchrun(xe, tmp_path):
    "torchrun --nproc_per_node=2 -m show_attend_tell.scst: both ranks train, rank 0 reports and writes."
    data, init = xe
    out = tmp_path/'tr'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', '-m', 'show_attend_tell.scst',
           str(init), str(data), '--out', str(out), '--k', '2', '--epochs', '1', '--batch_size', '8', '--device', 'cpu', '--quiet']
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('checkpoints:') == 1
    assert len(json.loads((out/'log.json').read_text())['history']) == 1


# ---------------------------------------------------------------------------------------------------------
# sat_scst

def _cli_error(capsys, *args, **kw):
    with pytest.raises(SystemExit) as e: S.sat_scst(*args, **kw)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err and 'Traceback' not in err, err
    return err


def test_sat_scst_errors(xe, tmp_path, capsys):
    data, init = xe
    assert 'does not exist' in _cli_error(capsys, str(tmp_path/'nope.pth'), str(data), out=str(tmp_path/'a'), device='cpu')
    assert 'sat_prepare' in _cli_error(capsys, str(init), str(tmp_path), out=str(tmp_path/'a'), device='cpu')
    assert '--k 2' in _cli_error(capsys, str(init), str(data), out=str(tmp_path/'a'), k=1, baseline='mean', device='cpu')
    assert 'greedy or mean' in _cli_error(capsys, str(init), str(data), out=str(tmp_path/'a'), baseline='max', device='cpu')
    out = tmp_path/'run'
    S.sat_scst(str(init), str(data), out=str(out), k=2, epochs=1, batch_size=8, device='cpu', quiet=True)
    assert 'checkpoints:' in capsys.readouterr().out
    assert '--resume' in _cli_error(capsys, str(init), str(data), out=str(out), k=2, epochs=1, batch_size=8, device='cpu', quiet=True)
    assert 'k = 2' in _cli_error(capsys, str(init), str(data), out=str(out), k=3, epochs=2, batch_size=8, resume=True, device='cpu', quiet=True)
    assert 'not an SCST run' in _cli_error(capsys, str(init), str(data), out=str(init.parent), resume=True, device='cpu', quiet=True)
