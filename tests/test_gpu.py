"""The GPU checks (tools/gpu_check.sh runs `pytest -m gpu`): AMP training steps (bf16, fp16 with a GradScaler) that lower the
loss, beam search on CUDA giving the CPU's captions, `sat_train --device cuda` interrupted and resumed, DDP over NCCL in one
process, and the GPU bench topics' helpers.

Tests marked `gpu` skip without CUDA ("no CUDA device"); with SAT_REQUIRE_GPU=1 (the GPU check) they fail instead. Where the
test body is shared with the CPU it runs there too (the `cpu` parameter), so the test code itself is known to work before
anyone has a GPU."""
import copy, json, math, os, signal, subprocess, sys, textwrap
from contextlib import contextmanager
from pathlib import Path
# cuBLAS is deterministic only with a fixed workspace, which must be set before CUDA starts (the resume comparison below)
os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
import pytest, torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import servers  # tests/fixtures/, on the path through conftest.py
from small_models import Peaked, tiny, tiny_cfg, K, L, D
from show_attend_tell import training as T
from show_attend_tell.checkpoint import build_model, unwrap
from show_attend_tell.config import amp_dtype
from show_attend_tell.decoder import ShowAttendTell
from show_attend_tell.decoding import beam_search, greedy_decode
from show_attend_tell.features import load_prepared
from show_attend_tell.learner import make_learner
from show_attend_tell.loaders import get_dls
from show_attend_tell.losses import CaptionLoss

HERE = Path(__file__).parent
REPO = HERE.parent
gpu = pytest.mark.gpu
DEVICES = ['cpu', pytest.param('cuda', marks=gpu)]


def _shapes_batch(shapes, device, bs=16):
    "(features, captions, vocabulary size, D) of one training batch of the prepared Shapes folder, on `device`."
    data, vocab, cache = load_prepared(shapes)
    feats, caps = next(iter(get_dls(data, vocab, cache=cache, bs=bs, seed=0).train))
    return feats.float().to(device), caps.to(device), len(vocab), cache.feat_dim


def _dtypes_of(module):
    "A list that fills with the dtype of every output of `module` (a forward hook), and the hook's handle."
    seen = []
    return seen, module.register_forward_hook(lambda m, i, o: seen.append(o.dtype))


# ---------------------------------------------------------------------------------------------------------
# mixed precision


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_amp_training_steps_lower_the_loss(shapes, device, dtype):
    "40 steps on one Shapes batch: forward under autocast, CaptionLoss, backward through a GradScaler (fp16), Adam."
    dt = getattr(torch, dtype)
    feats, caps, V, Dim = _shapes_batch(shapes, device)
    cfg = tiny_cfg('soft', dropout=0.0)
    torch.manual_seed(0)
    model = build_model(cfg, V, Dim).to(device).train()
    loss_fn, opt = CaptionLoss(cfg), torch.optim.Adam(model.parameters(), 1e-2)
    scaler = torch.amp.GradScaler(device, enabled=dt == torch.float16)
    seen, _ = _dtypes_of(model.out)
    losses = []
    for _ in range(40):
        with torch.autocast(device, dtype=dt):
            loss = loss_fn(model(feats, caps), caps)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
        losses.append(float(loss.detach()))
    assert set(seen) == {dt}                                        # autocast really ran the output layer in dt
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())   # fp32 master weights
    assert all(map(math.isfinite, losses)) and losses[-1] < 0.5 * losses[0], losses
    assert scaler.is_enabled() == (dt == torch.float16) and (not scaler.is_enabled() or 0 < scaler.get_scale() < float('inf'))


@pytest.mark.parametrize('device, amp', [('cpu', 'auto'), pytest.param('cuda', 'auto', marks=gpu), pytest.param('cuda', 'fp16', marks=gpu)])
def test_learner_trains_under_autocast(shapes, device, amp):
    """`make_learner` on CUDA trains under autocast (bf16 where the GPU has it, else fp16 with a GradScaler), on the CPU in fp32;
    `Learner.to_fp16()` forces fp16. 40 steps on one batch halve its NLL either way."""
    from fastai.callback.core import Callback
    from fastai.callback.fp16 import MixedPrecision
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader as FDL
    feats, caps, V, Dim = _shapes_batch(shapes, 'cpu')
    n = len(caps)                                                   # an epoch of 40 steps, all on the same batch
    same = torch.utils.data.TensorDataset(feats.repeat(40, 1, 1), caps.repeat(40, 1))
    dls = DataLoaders(FDL(same, bs=n), FDL(torch.utils.data.TensorDataset(feats, caps), bs=n), device=device)
    cfg = tiny_cfg('soft', lr=1e-2, dropout=0.0)
    torch.manual_seed(0)
    learn = make_learner(dls, build_model(cfg, V, Dim).to(device), cfg, bleu=False, progress=False, mixed_precision=amp == 'auto')
    if amp == 'fp16': learn.to_fp16()
    scales = []
    class Scale(Callback):
        order = 20                                                  # after MixedPrecision (10) has updated the scaler
        def after_step(self):
            if getattr(self.learn, 'scaler', None) is not None and self.learn.scaler.is_enabled(): scales.append(self.learn.scaler.get_scale())
    learn.add_cb(Scale())
    seen, _ = _dtypes_of(unwrap(learn.model).out)
    before = learn.validate()[1]; learn.fit(1); after = learn.validate()[1]
    expect = torch.float32 if device == 'cpu' else torch.float16 if amp == 'fp16' else amp_dtype(torch.device(device))
    mps = [c for c in learn.cbs if isinstance(c, MixedPrecision)]
    assert len(mps) == (device != 'cpu') and set(seen) == {expect}, (mps, set(seen))
    assert bool(scales) == (expect == torch.float16) and all(0 < s < float('inf') for s in scales)
    assert after < 0.5 * before, (before, after)


# ---------------------------------------------------------------------------------------------------------
# decoding


@pytest.mark.parametrize('device', DEVICES)
def test_beam_search_on_the_device_gives_the_cpu_captions(batch, device):
    "The same model and images: beam search (k = 1, 3, 5) and greedy decoding on `device` pick the CPU's words, scores within 1e-4."
    feats, _, mask = batch
    torch.manual_seed(0)
    net = ShowAttendTell(tiny(), K, D).eval()
    with torch.no_grad(): net.out.weight.mul_(6.); net.out.bias.mul_(6.)   # peaked, like a trained model's: no near ties
    model = Peaked(net, end_bias=-4.0, end_slope=0.5)   # captions end, after different lengths
    moved = copy.deepcopy(model).to(device)
    assert next(moved.parameters()).device.type == device
    for k in (1, 3, 5):
        want = beam_search(model, feats, mask, beam_size=k, max_len=12)
        got = beam_search(moved, feats.to(device), mask.to(device), beam_size=k, max_len=12)
        assert [g['ids'] for g in got] == [w['ids'] for w in want], k
        assert len({len(w['ids']) for w in want}) > 1                  # captions of several lengths: <end> was chosen
        for g, w in zip(got, want):
            assert g['score'] == pytest.approx(w['score'], abs=1e-4)
            assert torch.allclose(torch.as_tensor(g['alphas']).cpu(), torch.as_tensor(w['alphas']), atol=1e-5)
    want, got = greedy_decode(model, feats, mask, max_len=12), greedy_decode(moved, feats.to(device), mask.to(device), max_len=12)
    assert [g['ids'] for g in got] == [w['ids'] for w in want]


# ---------------------------------------------------------------------------------------------------------
# sat_train on the device, interrupted and resumed


@contextmanager
def _reproducible():
    "PyTorch's deterministic kernels (warning where an op has none) and one CPU thread (as the subprocesses get), restored afterwards."
    old = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True); torch.set_num_threads(1)
    try: yield
    finally: torch.use_deterministic_algorithms(old[0], warn_only=old[1]); torch.set_num_threads(old[2])


_INTERRUPT_SCRIPT = textwrap.dedent('''
    import os, signal, sys, torch
    # Ctrl-C raises KeyboardInterrupt even when this process inherited SIGINT ignored (a shell's background job, as a CI
    # runner may start the tests): Python installs its handler only where SIGINT was not ignored at start
    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    from fastai.callback.core import Callback
    from show_attend_tell import training as T
    class Interrupt(Callback):
        "Say where the model runs and under which autocast, then Ctrl-C (SIGINT) once epoch {stop} has been checkpointed."
        order = 100
        def after_epoch(self):
            if self.epoch != {stop}: return
            amp = [c.amp_mode.value for c in self.learn.cbs if type(c).__name__ == 'MixedPrecision']
            print('ran on', next(self.model.parameters()).device, 'autocast', amp, flush=True)
            os.kill(os.getpid(), signal.SIGINT)
    _train = T.train
    T.train = lambda *a, **kw: _train(*a, **dict(kw, cbs=[Interrupt()]))
    sys.argv = ['sat_train', *{argv!r}]
    sys.exit(T.sat_train())
''')


@pytest.mark.parametrize('device', DEVICES)
def test_sat_train_interrupted_and_resumed(shapes, tmp_path, device):
    """3 epochs straight vs `sat_train --device DEVICE` stopped by Ctrl-C after epoch 2 and resumed with `--resume` (the console
    script): the same weights (bit for bit on the CPU; on CUDA, with deterministic kernels, far closer than another seed's)."""
    cfg = tiny_cfg('soft', bleu_every=2)
    cfg_file = tmp_path/'cfg.json'
    cfg_file.write_text(json.dumps({k: v for k, v in cfg.to_dict().items() if k != 'name'}))
    straight, stopped = tmp_path/'straight', tmp_path/'stopped'
    argv = [str(shapes), '--preset', 'tiny', '--config', str(cfg_file), '--device', device, '--out', str(stopped), '--quiet']
    with _reproducible():                                           # CPU threads change the sums' order
        T.train(cfg, shapes, straight, device=device, progress=False)
        T.train(cfg, shapes, tmp_path/'other', seed=cfg.seed + 1, device=device, progress=False)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    script = tmp_path/'interrupt.py'          # a file: fastcore's call_parse reads sys.argv only in a file run as __main__
    script.write_text(_INTERRUPT_SCRIPT.format(stop=1, argv=argv))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert r.returncode == 130 and 'rerun the same command with --resume' in r.stderr, (r.returncode, r.stderr[-3000:])
    amp = [] if device == 'cpu' else ['bf16' if amp_dtype(torch.device(device)) == torch.bfloat16 else 'fp16']
    assert f'ran on {device}' in r.stdout and f'autocast {amp}' in r.stdout, r.stdout[-2000:]
    assert torch.load(stopped/'last.pth', weights_only=True)['epoch'] == 2
    sat_train = Path(sys.executable).with_name('sat_train')
    cmd = [str(sat_train)] if sat_train.exists() else [sys.executable, '-m', 'show_attend_tell.training']
    r = subprocess.run(cmd + argv + ['--resume'], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert str(stopped/'last.pth') in r.stdout
    a, b, c = (torch.load(p/'last.pth', weights_only=True) for p in (straight, stopped, tmp_path/'other'))
    assert a['epoch'] == b['epoch'] == 3 and [r['epoch'] for r in b['log']] == [0, 1, 2]
    diff = max(float((a['model'][k].float() - b['model'][k].float()).abs().max()) for k in a['model'])
    other = max(float((a['model'][k].float() - c['model'][k].float()).abs().max()) for k in a['model'])
    print(f"{device}: resumed vs straight, largest weight difference {diff:.3g}; another seed's {other:.3g}")
    if device == 'cpu':
        assert diff == 0 and [r['valid_loss'] for r in a['log']] == [r['valid_loss'] for r in b['log']]
    else:
        assert diff <= 2e-3 and other > 20 * max(diff, 1e-6), (diff, other)
        assert [r['valid_loss'] for r in a['log']] == pytest.approx([r['valid_loss'] for r in b['log']], rel=1e-2)


# ---------------------------------------------------------------------------------------------------------
# DDP


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('attention', ['soft', 'hard'])
def test_ddp_in_one_process(shapes, tmp_path, device, attention):
    """`train` inside a process group of one (NCCL on CUDA, gloo on the CPU): the model is wrapped in DDP, its collectives
    (gradient all-reduce; hard attention's statistics; the BLEU broadcast) run, it learns, and rank 0 saves the weights."""
    backend = 'nccl' if device == 'cuda' else 'gloo'
    dist.init_process_group(backend, init_method=f'tcp://127.0.0.1:{servers.free_port()}', rank=0, world_size=1)
    try:
        assert dist.get_backend() == backend
        learn = T.train(tiny_cfg(attention, epochs=3, lr=1e-2, bleu_every=3), shapes, tmp_path/'ddp', device=device, progress=False)
        assert isinstance(learn.model, DistributedDataParallel) and dist.is_initialized()   # train() leaves a group it did not start
        weights = {k: v.detach().cpu() for k, v in unwrap(learn.model).state_dict().items()}
        assert next(unwrap(learn.model).parameters()).device.type == device
    finally:
        dist.destroy_process_group()
    hist = json.loads((tmp_path/'ddp'/'log.json').read_text())['history']
    assert len(hist) == 3 and hist[-1]['valid_loss'] < 0.9 * hist[0]['valid_loss'] and hist[-1]['bleu4'] is not None
    last = torch.load(tmp_path/'ddp'/'last.pth', weights_only=True)
    for k, v in last['model'].items(): assert torch.equal(v, weights[k]), k


# ---------------------------------------------------------------------------------------------------------
# the GPU check itself, and the GPU bench topics' helpers


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a GPU: the check would run')
def test_gpu_check_fails_clearly_without_cuda(tmp_path):
    "tools/gpu_check.sh and `bench/run.py --device cuda` on a CPU machine: exit status ≠ 0 and the no-CUDA message, nothing run."
    env = dict(os.environ, OUT=str(tmp_path/'out'))
    r = subprocess.run(['bash', str(REPO/'tools'/'gpu_check.sh')], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    msg = 'error: no CUDA device (torch.cuda.is_available() is False): run this on a GPU machine'
    assert r.returncode == 1 and msg in r.stderr, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert '== ' not in r.stdout                                       # no step started
    assert msg in (tmp_path/'out'/'gpu_check.log').read_text()
    r = subprocess.run([sys.executable, str(REPO/'bench'/'run.py'), '--device', 'cuda', '--out', str(tmp_path/'bench')],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith('error: no CUDA device'), r.stderr[-2000:]
    assert not (tmp_path/'bench').exists()


# A stand-in for the GPU machine's own python3 in tools/gpu_check.sh's offline mode: it logs each call with its PYTHONPATH, says
# CUDA is there (unless FAKE_CUDA=0), "installs" the wheels by writing pip's nbdev_test console script into the --target folder,
# and runs the script's notebook scan (`python3 -` reading stdin) with the real Python. Everything else succeeds at once.
_FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "python3 $* | PYTHONPATH=${PYTHONPATH:-}" >> "$FAKE_LOG"
case "$1" in
  -) exec "$REAL_PY" - ;;
  -c) case "$2" in *cuda.is_available*) [ "${FAKE_CUDA:-1}" = 1 ] || exit 1 ;; esac ;;
  -m) if [ "$2" = pip ]; then
          while [ $# -gt 0 ]; do if [ "$1" = --target ]; then mkdir -p "$2/bin"; : > "$2/bin/nbdev_test"; fi; shift; done
      fi ;;
esac
exit 0
"""


def _offline_tree(tmp_path):
    """A copy of tools/gpu_check.sh in a bare tree with .whl/ (two wheels) and one notebook with a gpu cell, no .venv; a bin/ with
    the stand-in python3, an nvidia-smi that names a GPU, and a make that only logs (the offline mode must not call it)."""
    tree, bin_ = tmp_path/'tree', tmp_path/'bin'
    for d in (tree/'tools', tree/'.whl', tree/'nbs', bin_): d.mkdir(parents=True)
    (tree/'tools'/'gpu_check.sh').write_text((REPO/'tools'/'gpu_check.sh').read_text())
    for w in ('fastai-2.8.7-py3-none-any.whl', 'nbdev-2.4.14-py3-none-any.whl'): (tree/'.whl'/w).write_bytes(b'')
    nb = dict(cells=[dict(cell_type='code', source=['#| gpu\n', 'import torch\n'], metadata={}, outputs=[], execution_count=None)],
              metadata={}, nbformat=4, nbformat_minor=5)
    (tree/'nbs'/'01_x.ipynb').write_text(json.dumps(nb))
    for name, text in (('python3', _FAKE_PYTHON), ('nvidia-smi', '#!/bin/sh\necho "Fake GPU, 1.0, 1 MiB"\n'),
                       ('make', '#!/bin/sh\necho "make $*" >> "$FAKE_LOG"\nexit 1\n')):
        (bin_/name).write_text(text); (bin_/name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith('GPU_CHECK_') and k != 'PYTHONPATH'}
    env.update(PATH=f"{bin_}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(tmp_path/'calls.log'), REAL_PY=sys.executable,
               OUT=str(tmp_path/'out'), GPU_CHECK_SITE=str(tmp_path/'site'))
    return tree, env


def test_gpu_check_offline_mode_uses_the_wheels_and_the_machines_python(tmp_path):
    """No .venv and a .whl/ folder (the GPU machine without network): tools/gpu_check.sh installs the wheels with pip's offline
    flags into GPU_CHECK_SITE for the machine's python3, never calls make, and runs nbdev_test (pip's console script), pytest and
    the bench with that python3 and PYTHONPATH = site:tree."""
    tree, env = _offline_tree(tmp_path)
    site, out = tmp_path/'site', tmp_path/'out'
    r = subprocess.run(['bash', str(tree/'tools'/'gpu_check.sh')], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0 and 'gpu_check: all passed' in r.stdout, (r.returncode, r.stdout[-3000:], r.stderr[-2000:])
    calls = (tmp_path/'calls.log').read_text().splitlines()
    assert not [c for c in calls if c.startswith('make')], calls
    pip = [c for c in calls if c.startswith('python3 -m pip')]
    assert pip == [f'python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target {site} '
                   f'.whl/fastai-2.8.7-py3-none-any.whl .whl/nbdev-2.4.14-py3-none-any.whl | PYTHONPATH='], calls
    after = calls[calls.index(pip[0]) + 1:]
    assert after and all(c.endswith(f'| PYTHONPATH={site}:{tree}') for c in after), after
    steps = [c.split(' | ')[0] for c in after if not c.startswith(('python3 -c', 'python3 - '))]
    assert steps == [f'python3 {site}/bin/nbdev_test --path nbs --flags gpu --file_re ^(01_x\\.ipynb)$ --n_workers 1 --timing',
                     f'python3 -m pytest -q -m gpu tests --ignore=tests/docs -p no:cacheprovider -rfEs --durations=8 '
                     f'--junitxml {out}/pytest_gpu.xml',
                     steps[-1]], steps
    assert steps[-1].startswith(f'python3 bench/run.py --device cuda --out {out} --budget-s '), steps
    assert 'offline mode' in (out/'gpu_check.log').read_text()


def test_gpu_check_offline_mode_without_cuda_fails_first(tmp_path):
    "The offline mode on a machine whose python3 sees no CUDA device: exit status 1 with the no-CUDA message, nothing installed."
    tree, env = _offline_tree(tmp_path)
    env['FAKE_CUDA'] = '0'
    r = subprocess.run(['bash', str(tree/'tools'/'gpu_check.sh')], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    msg = 'error: no CUDA device (torch.cuda.is_available() is False): run this on a GPU machine'
    assert r.returncode == 1 and msg in r.stderr and '== ' not in r.stdout, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    calls = (tmp_path/'calls.log').read_text()
    assert 'pip' not in calls and not (tmp_path/'site').exists(), calls


def test_gpu_memory_sweep_stops_at_oom():
    "bench/gpu/gpu_memory.py's sweep doubles the batch until a step runs out of memory, records that, and keeps the rows before it."
    sys.path.insert(0, str(REPO/'bench'/'gpu'))
    try: import gpu_memory
    finally: sys.path.remove(str(REPO/'bench'/'gpu'))
    made = []
    def make_step(B):
        made.append(B)
        if B >= 64: raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return lambda: None
    rows = gpu_memory.sweep(make_step, start=16, max_batch=1024, device='cpu', reps=1, log=lambda s: None)
    assert made == [16, 32, 64] and [r['batch'] for r in rows] == [16, 32, 64]
    assert [r['oom'] for r in rows] == [False, False, True] and rows[0]['peak_bytes'] is None and rows[0]['captions_per_s'] > 0
    rows = gpu_memory.sweep(lambda B: (lambda: None), start=16, max_batch=64, device='cpu', reps=1, log=lambda s: None)
    assert [r['batch'] for r in rows] == [16, 32, 64] and not any(r['oom'] for r in rows)
