"Data-parallel training on 2 CPU processes (gloo): the ranks share the batches, agree on the weights, and learn."
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
import torch.multiprocessing as mp

import servers  # tests/fixtures/, on the path through conftest.py
from show_attend_tell import training as T  # noqa: E402
from show_attend_tell.checkpoint import unwrap
from show_attend_tell.loaders import shard_dl
from show_attend_tell.config import preset# noqa: E402
from show_attend_tell.features import load_prepared
from show_attend_tell.loaders import get_dls# noqa: E402

CFG = dict(embed_dim=16, hidden_dim=48, attn_dim=16, batch_size=16, epochs=3, lr=1e-2, bleu_every=3)


def test_sharded_plan_splits_every_epoch(shapes):
    "Each rank gets a different share of each epoch's batch plan; together they cover it; all run the same number of steps."
    data, vocab, cache = load_prepared(shapes)
    dl = get_dls(data, vocab, cache=cache, bs=16, seed=3).train
    for epoch in (0, 1):
        full = dl.plan(epoch)
        shards = []
        for r in range(3):
            s = shard_dl(dl, r, 3); s.epoch = epoch
            idxs = s.get_idxs()
            shards.append(s.epoch_batches)
            assert idxs == [i for b in s.epoch_batches for i in b] and list(s.sample()) == s.epoch_batches
            assert len(shards[-1]) == len(s)
        assert len({len(p) for p in shards}) == 1
        got = [tuple(b) for p in shards for b in p]
        assert set(got) == {tuple(b) for b in full} and len(got) - len(full) < 3      # padding: fewer than N repeats
        assert not set(map(tuple, shards[0])) & set(map(tuple, shards[1]))


def _worker(rank, world, port, data, out, attention):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    seen = []
    from fastai.callback.core import Callback
    class Spy(Callback):
        def before_batch(self):
            if self.training: seen.append(float(self.xb[0].sum()))
    learn = T.train(preset('tiny', attention=attention, **CFG), data, out, device='cpu', progress=False, cbs=[Spy()])
    torch.save({'weights': {k: v.clone() for k, v in unwrap(learn.model).state_dict().items()},
                'steps': len(seen), 'seen': seen, 'baseline': learn.loss_func.baseline}, Path(out)/f'rank{rank}.pt')


@pytest.mark.parametrize('attention', ['soft', 'hard'])
def test_two_process_gloo_training(shapes, tmp_path, attention):
    out = tmp_path/'ddp'
    mp.spawn(_worker, args=(2, servers.free_port(), str(shapes), str(out), attention), nprocs=2, join=True)
    r0, r1 = (torch.load(out/f'rank{r}.pt', weights_only=True) for r in (0, 1))
    for k, v in r0['weights'].items(): assert torch.equal(v, r1['weights'][k]), k       # the ranks agree
    assert r0['steps'] == r1['steps'] and r0['seen'] != r1['seen']                       # same steps, other batches
    assert r0['baseline'] == r1['baseline']
    hist = json.loads((out/'log.json').read_text())['history']
    assert len(hist) == 3 and hist[-1]['valid_loss'] < 0.9 * hist[0]['valid_loss']       # it learns
    last = torch.load(out/'last.pth', weights_only=True)                                 # rank 0 wrote the checkpoint
    for k, v in last['model'].items(): assert torch.equal(v, r0['weights'][k])
    # one epoch of 2 processes takes about half the steps of one process
    data, vocab, cache = load_prepared(shapes)
    n = len(get_dls(data, vocab, cache=cache, bs=16).train)
    assert r0['steps'] == 3 * -(-n // 2)


def test_torchrun_launch_command(shapes, tmp_path):
    "The documented launch: torchrun --nproc_per_node=2 -m show_attend_tell.training DATA …"
    out = tmp_path/'tr'
    cfg = tmp_path/'c.json'; cfg.write_text(json.dumps({**CFG, 'epochs': 2}))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', '-m', 'show_attend_tell.training',
           str(shapes), '--out', str(out), '--config', str(cfg), '--device', 'cpu', '--quiet']
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('checkpoints:') == 1 and str(out/'last.pth') in r.stdout        # rank 0 reports
    hist = json.loads((out/'log.json').read_text())['history']
    assert len(hist) == 2 and hist[-1]['valid_loss'] < hist[0]['valid_loss']
