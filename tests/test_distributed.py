"""Data-parallel training on 2 CPU processes (gloo): the ranks share the batches with one caption length per step, agree on
the weights, learn, and validate in shares that add up to the scores and the decisions of one process."""
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
import torch.multiprocessing as mp
from fastai.callback.core import Callback

import servers  # tests/fixtures/, on the path through conftest.py
from show_attend_tell import training as T  # noqa: E402
from show_attend_tell.checkpoint import unwrap
from show_attend_tell.config import preset  # noqa: E402
from show_attend_tell.features import load_prepared
from show_attend_tell.loaders import get_dls, shard_dl  # noqa: E402

CFG = dict(embed_dim=16, hidden_dim=48, attn_dim=16, batch_size=16, epochs=3, lr=1e-2, bleu_every=3)


def test_sharded_plan_splits_every_epoch(shapes):
    "Each rank gets its share of each epoch's batch plan, one length per step; together they cover it; all run as many steps."
    data, vocab, cache = load_prepared(shapes)
    dl = get_dls(data, vocab, cache=cache, bs=16, seed=3).train
    lengths = dl.dataset.lengths
    n_lengths = len(set(lengths.tolist()))
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
        for step in zip(*shards): assert len({int(lengths[b[0]]) for b in step}) == 1     # one caption length per step
        seen = [i for p in shards for b in p for i in b]
        assert sorted(set(seen)) == sorted(i for b in full for i in b)                       # together they cover the epoch …
        assert len(seen) - len(set(seen)) < 3 * n_lengths     # … repeating a caption only where a length's last step has fewer than N
    assert n_lengths > 1 and len({int(lengths[b[0]]) for b in full}) == n_lengths            # the comparison has teeth


def _worker(rank, world, port, data, out, attention):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    seen = []
    class Spy(Callback):
        def before_batch(self):
            if self.training: seen.append((float(self.xb[0].sum()), self.yb[0].shape[1]))
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
    assert [n for _, n in r0['seen']] == [n for _, n in r1['seen']]                      # … of one caption length at each step
    assert len({n for _, n in r0['seen']}) > 1
    assert r0['baseline'] == r1['baseline']
    hist = json.loads((out/'log.json').read_text())['history']
    assert len(hist) == 3 and hist[-1]['valid_loss'] < 0.9 * hist[0]['valid_loss']       # it learns
    last = torch.load(out/'last.pth', weights_only=True)                                 # rank 0 wrote the checkpoint
    for k, v in last['model'].items(): assert torch.equal(v, r0['weights'][k])
    # an epoch of 2 processes takes half the batches of each length, rounded up
    data, vocab, cache = load_prepared(shapes)
    dl = get_dls(data, vocab, cache=cache, bs=16).train
    per_length = {}
    for b in dl.plan(0): per_length[int(dl.dataset.lengths[b[0]])] = per_length.get(int(dl.dataset.lengths[b[0]]), 0) + 1
    assert r0['steps'] == 3 * len(shard_dl(dl, 0, 2)) == 3 * sum(-(-k // 2) for k in per_length.values())


# ---------------------------------------------------------------------------------------------------------
# validation in shares: the scores and decisions of one process


class Replay(Callback):
    "Before each validation, put the weights of `states[order[epoch]]` in the model: validation values that go up and down."
    order = 30
    def __init__(self, path, order): self.path, self.seq = path, order
    def before_validate(self):
        if not getattr(self, 'in_fit', True): return
        states = torch.load(self.path, weights_only=True)
        unwrap(self.learn.model).load_state_dict(states[self.seq[self.epoch]])


def _replay_worker(rank, world, port, data, out, states, order, cfg):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    T.train(preset('tiny', **cfg), data, out, device='cpu', progress=False, cbs=[Replay(states, order)])


def test_two_processes_validate_and_decide_as_one(shapes, tmp_path):
    "The same weights at each validation, on 1 and on 2 processes: the same losses and BLEU-4, the same best and stop epochs."
    class Keep(Callback):
        def before_fit(self): self.states = []
        def after_epoch(self): self.states.append({k: v.clone() for k, v in unwrap(self.learn.model).state_dict().items()})
    keep = Keep()
    T.train(preset('tiny', **{**CFG, 'epochs': 4, 'bleu_every': 1}), shapes, tmp_path/'source', device='cpu', progress=False,
            cbs=[keep])
    torch.save(keep.states, tmp_path/'states.pt')
    order = [0, 3, 1, 2, 2, 2]          # a good model at epoch 1, worse ones after it: patience 2 stops at epoch 3
    cfg = {**CFG, 'epochs': len(order), 'bleu_every': 1, 'patience': 2}
    T.train(preset('tiny', **cfg), shapes, tmp_path/'one', device='cpu', progress=False, cbs=[Replay(tmp_path/'states.pt', order)])
    mp.spawn(_replay_worker, args=(2, servers.free_port(), str(shapes), str(tmp_path/'two'), str(tmp_path/'states.pt'), order, cfg),
             nprocs=2, join=True)
    one, two = (json.loads((tmp_path/r/'log.json').read_text()) for r in ('one', 'two'))
    print({k: one[k] for k in ('best_epoch', 'stopped', 'best')}, [r['bleu4'] for r in one['history']])
    assert (one['best_epoch'], one['stopped'], len(one['history'])) == (1, True, 4)            # the decisions have teeth …
    assert (two['best_epoch'], two['stopped'], two['best'], two['wait']) == (one['best_epoch'], one['stopped'], one['best'], one['wait'])
    assert len(two['history']) == len(one['history'])                                        # … and two processes take them
    for a, b in zip(one['history'], two['history']):
        assert a['bleu4'] == b['bleu4']                                                      # the gathered captions, scored on rank 0
        for k in ('valid_loss', 'nll', 'attn_entropy'): assert b[k] == pytest.approx(a[k], rel=1e-6), k   # sums in another order
    assert len({r['bleu4'] for r in one['history']}) > 1 and len({round(r['nll'], 4) for r in one['history']}) > 2
    best1, best2 = (torch.load(tmp_path/r/'best.pth', weights_only=True)['model'] for r in ('one', 'two'))
    for k, v in best1.items(): assert torch.equal(v, best2[k]), k                             # the same best checkpoint


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
