"""The feature cache's format (nbs/08_cache.ipynb): rows and lazy reading, and the background shard writer (`ShardQueue`):
its output equals writing in turn, a slow disk does not hold up the caller until the queue is full, a failing write
reaches the caller and leaves nothing half-written, and a process killed while the writer thread is inside a shard
leaves a cache that the rerun finishes."""
import json, os, signal, subprocess, sys, textwrap, threading, time
from pathlib import Path
import numpy as np
import pytest
import torch

from show_attend_tell.captions import load_image, read_karpathy
from show_attend_tell.cache import CacheError, CacheWriter, FeatureCache, ShardQueue, ShardWriter, shard_name
from show_attend_tell.features import prepare_features

from standin_encoder import TinyEncoder  # tests/fixtures/, on the path through conftest.py
REPO = Path(__file__).resolve().parents[1]


def shard_mtimes(d): return {p.name: p.stat().st_mtime_ns for p in sorted(Path(d).glob('shard_*.npy'))}


def test_cache_rows_and_lazy_reading(shapes_dir, tmp_path):
    data = read_karpathy(shapes_dir/'dataset_shapes.json')
    enc = TinyEncoder()
    cache = prepare_features(data, enc, tmp_path/'c', shard_size=10, progress=False)
    m = json.loads((tmp_path/'c'/'manifest.json').read_text())
    assert m['complete'] and m['images'] == [r.path for r in data] and m['grid'] == [4, 4] and m['dtype'] == 'float16'
    assert m['input_size'] == [32, 32] and m['feat_dim'] == 8 and m['encoder'] == 'tiny' and m['num_shards'] == 5
    assert np.load(tmp_path/'c'/'shard_00004.npy', mmap_mode='r').shape == (2, 16, 8)
    for i in (0, 17, 41):
        expect = enc(enc.transform(load_image(data.image_path(i)))[None])[0].detach()
        assert torch.allclose(cache[i], expect, atol=2e-3)
    fresh = FeatureCache(tmp_path/'c')
    assert fresh._open == {}
    fresh[25]
    assert list(fresh._open) == [2]                                     # only the shard read is open
    mm = FeatureCache(tmp_path/'c', mmap=True)
    assert torch.equal(mm[33], cache[33])
    assert not list((tmp_path/'c').glob('*.tmp'))


# ---------------------------------------------------------------- ShardQueue

N, L, D, S = 23, 4, 3, 5                    # 23 images in shards of 5 (the last one of 3), blocks of 2 rows


def _manifest(): return {'encoder': 'random', 'num_images': N, 'grid': [2, 2], 'feat_dim': D, 'shard_size': S, 'images': [f'{i}.jpg' for i in range(N)]}
def _rows(): return np.random.default_rng(0).standard_normal((N, L, D)).astype(np.float16)


def _blocks(todo):
    "(shard, first row, last row + 1) of blocks of at most 2 rows over the shards `todo`, in order."
    for k in todo:
        for a in range(k*S, min(k*S + S, N), 2): yield k, a, min(a + 2, k*S + S, N)


def _fill(folder, depth, on_shard=None):
    cw = CacheWriter(folder, _manifest())
    sq, rows = ShardQueue(cw, depth, on_shard), _rows()
    for k, a, b in _blocks(cw.todo): sq.put(k, rows[a:b], bad=[[f'{a}.jpg', 'unreadable']] if a == 7 else None)
    sq.close()
    return cw.finish()


@pytest.mark.parametrize('depth', [0, 1, 3])
def test_shard_queue_writes_what_writing_in_turn_writes(tmp_path, depth):
    landed = []
    bad = _fill(tmp_path/'q', depth, landed.append)
    assert landed == list(range(5)) and bad == [['7.jpg', 'unreadable']]
    cache = FeatureCache(tmp_path/'q')
    assert torch.equal(cache.rows(range(N)), torch.from_numpy(_rows()).float()) and cache.bad == {'7.jpg'}
    if depth:
        _fill(tmp_path/'ref', 0)
        for k in range(5): assert (tmp_path/'q'/shard_name(k)).read_bytes() == (tmp_path/'ref'/shard_name(k)).read_bytes()


def test_shard_queue_overlaps_a_slow_disk_and_bounds_what_waits(tmp_path):
    "While the writer thread is stuck in a shard's landing, `put` returns at once until `depth` blocks wait, then waits."
    go, entered = threading.Event(), threading.Event()
    def stuck(k):
        entered.set(); assert go.wait(30)
    cw = CacheWriter(tmp_path/'q', _manifest())
    sq, rows = ShardQueue(cw, depth=2, on_shard=stuck), _rows()
    blocks = list(_blocks(cw.todo))                         # shard 0 is blocks 0-2
    for k, a, b in blocks[:3]: sq.put(k, rows[a:b])
    assert entered.wait(30)                                 # the writer is inside shard 0's landing, blocked
    t0 = time.perf_counter()
    for k, a, b in blocks[3:5]: sq.put(k, rows[a:b])        # two blocks fit in the queue: no waiting
    assert time.perf_counter() - t0 < 1.0
    fifth = threading.Thread(target=lambda: sq.put(*blocks[5][:1], rows[blocks[5][1]:blocks[5][2]]))
    fifth.start(); fifth.join(0.5)
    assert fifth.is_alive()                                 # a third block waits for room
    go.set(); fifth.join(30)
    assert not fifth.is_alive()
    for k, a, b in blocks[6:]: sq.put(k, rows[a:b])
    sq.close(); cw.finish()
    assert torch.equal(FeatureCache(tmp_path/'q').rows(range(N)), torch.from_numpy(rows).float())


def test_shard_queue_failure_reaches_the_caller_and_leaves_no_partial_shard(tmp_path, monkeypatch):
    "A write that fails in the thread (a full disk) is raised by the next `put` or by `close`; no .tmp, no shard after it."
    real = ShardWriter.write
    def failing(self, a):
        if self.path.name == shard_name(2): raise OSError(28, 'No space left on device')
        return real(self, a)
    monkeypatch.setattr(ShardWriter, 'write', failing)
    cw = CacheWriter(tmp_path/'q', _manifest())
    sq, rows = ShardQueue(cw, depth=2), _rows()
    with pytest.raises(OSError, match='No space left'):
        for k, a, b in _blocks(cw.todo):
            sq.put(k, rows[a:b]); time.sleep(0.01)
        sq.close()
    sq.close(raise_error=False)
    assert sorted(shard_mtimes(tmp_path/'q')) == [shard_name(0), shard_name(1)] and not list((tmp_path/'q').glob('*.tmp'))
    with pytest.raises(CacheError, match='incomplete'): FeatureCache(tmp_path/'q')
    monkeypatch.setattr(ShardWriter, 'write', real)
    before = shard_mtimes(tmp_path/'q')
    _fill(tmp_path/'q', 2)                                  # the rerun writes shards 2-4 only
    assert {k: v for k, v in shard_mtimes(tmp_path/'q').items() if k in before} == before
    assert torch.equal(FeatureCache(tmp_path/'q').rows(range(N)), torch.from_numpy(_rows()).float())


_KILLED = textwrap.dedent('''
    import sys, time, numpy as np
    from show_attend_tell.cache import CacheWriter, ShardQueue, ShardWriter
    real = ShardWriter.write
    def slow(self, a):                                      # a slow disk: the thread spends its time inside shards
        real(self, a); self.f.flush(); time.sleep(0.1)
    ShardWriter.write = slow
    man = {man!r}
    rows = np.random.default_rng(0).standard_normal(({N}, {L}, {D})).astype(np.float16)
    cw = CacheWriter(sys.argv[1], man)
    sq = ShardQueue(cw, depth=3)
    for k in cw.todo:
        for a in range(k*{S}, min(k*{S} + {S}, {N}), 2): sq.put(k, rows[a:min(a + 2, k*{S} + {S}, {N})])
    sq.close(); cw.finish()
''')


def test_killed_while_the_writer_thread_is_in_a_shard_resumes(tmp_path):
    "SIGKILL while the writer thread has a shard half-written (its .tmp on disk): the rerun keeps the whole shards, writes the rest."
    out = tmp_path/'q'
    script = tmp_path/'write.py'
    script.write_text(_KILLED.format(man=_manifest(), N=N, L=L, D=D, S=S))
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')]))}
    p = subprocess.Popen([sys.executable, str(script), str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    try:
        while not ((out/shard_name(1)).exists() and list(out.glob('*.tmp'))):
            assert p.poll() is None, p.communicate()
            assert time.time() - t0 < 90
            time.sleep(0.005)
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
    before = shard_mtimes(out)
    assert 2 <= len(before) < 5 and list(out.glob('*.tmp'))
    assert json.loads((out/'manifest.json').read_text())['complete'] is False
    cw = CacheWriter(out, _manifest())
    assert cw.todo == list(range(len(before), 5)) and not list(out.glob('*.tmp'))   # the half-written shard's temp file is gone
    sq, rows = ShardQueue(cw, depth=2), _rows()
    for k, a, b in _blocks(cw.todo): sq.put(k, rows[a:b])
    sq.close(); cw.finish()
    after = shard_mtimes(out)
    assert {k: after[k] for k in before} == before and len(after) == 5
    assert torch.equal(FeatureCache(out).rows(range(N)), torch.from_numpy(rows).float())


@pytest.mark.parametrize('workers, ahead', [(0, 0), (2, 4)])
def test_prepare_features_writes_the_same_cache_with_workers_and_the_writer_thread(shapes_dir, tmp_path, workers, ahead):
    data = read_karpathy(shapes_dir/'dataset_shapes.json')
    ref = prepare_features(data, TinyEncoder(), tmp_path/'ref', shard_size=10, bs=4, progress=False, num_workers=0, write_ahead=0)
    got = prepare_features(data, TinyEncoder(), tmp_path/'got', shard_size=10, bs=4, progress=False, num_workers=workers, write_ahead=ahead)
    for k in range(ref.manifest['num_shards']):
        assert (tmp_path/'ref'/shard_name(k)).read_bytes() == (tmp_path/'got'/shard_name(k)).read_bytes()


@pytest.mark.gpu
def test_prepare_features_on_cuda_writes_the_cpus_cache(shapes_dir, tmp_path):
    "On a GPU (workers by default, pinned batches, the float16 cast on the device, the writer thread): the CPU's cache, to float16 rounding."
    from show_attend_tell.config import spare_workers
    data = read_karpathy(shapes_dir/'dataset_shapes.json')
    cpu = prepare_features(data, TinyEncoder(), tmp_path/'cpu', shard_size=10, bs=4, progress=False, device='cpu')
    gpu = prepare_features(data, TinyEncoder(), tmp_path/'gpu', shard_size=10, bs=4, progress=False, device='cuda')
    assert gpu.manifest['images'] == cpu.manifest['images']
    assert spare_workers('cuda') > 0 or len(os.sched_getaffinity(0)) < 2      # workers read the images beside the GPU
    assert torch.allclose(gpu.rows(range(len(data))), cpu.rows(range(len(data))), atol=2e-3)
