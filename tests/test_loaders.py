"""Loaders: length-bucketed batches as the original code plans them, and the per-image evaluation loader."""
import pytest, torch

from show_attend_tell.captions import read_karpathy
from show_attend_tell.loaders import bucket_batches, get_dls, get_eval_dl
from show_attend_tell.features import prepare_features
from show_attend_tell.vocab import PAD, START, END, build_vocab


from standin_encoder import TinyEncoder  # noqa: E402


def check_bucketed(dl, n_examples, L, D):
    seen = []
    for x, y in dl:
        assert x.dtype == torch.float32 and x.shape[1:] == (L, D) and y.dtype == torch.long
        assert (y[:, 0] == START).all() and (y[:, -1] == END).all() and not (y == PAD).any()   # one length per batch
        seen.append(len(y))
    assert sum(seen) == n_examples
    return seen


def test_batches_have_uniform_length(flickr, tmp_path):
    data = read_karpathy(*flickr)
    vocab = build_vocab(data, 200)
    n_train = sum(len(r.tokens) for r in data.split('train'))
    dls = get_dls(data, vocab, encoder=TinyEncoder(), bs=4, seed=1)      # images encoded on the fly
    assert len(dls.train.dataset) == n_train and len(dls.valid.dataset) == 10
    check_bucketed(dls.train, n_train, 16, 8)
    plans = [dls.train.plan(e) for e in range(3)]
    assert plans[0] != plans[1] and dls.train.plan(0) == plans[0]      # reshuffled per epoch, seeded
    assert dls.valid.plan(0) == dls.valid.plan(5)                        # validation order is fixed
    for p in plans: assert sorted(i for b in p for i in b) == list(range(n_train))
    lengths = dls.train.dataset.lengths
    for b in plans[0]: assert len({int(lengths[i]) for i in b}) == 1
    images = get_dls(data, vocab, encoder=TinyEncoder(), encode=False, bs=4)   # fine-tuning: batches of images
    x, y = images.train.one_batch()
    assert x.shape[1:] == (3, 32, 32) and (y[:, 0] == START).all()
    cache = prepare_features(data, TinyEncoder(), tmp_path/'cache', shard_size=4, progress=False)
    dls = get_dls(data, vocab, cache=cache, bs=4, max_len=8)
    kept = sum(len(t) <= 8 for r in data.split('train') for t in r.tokens)
    assert len(dls.train.dataset) == kept < n_train
    check_bucketed(dls.train, kept, 16, 8)
    # the loader delivers the epoch's plan batch by batch, also with worker processes
    for workers in (0, 2):
        dl = get_dls(data, vocab, cache=cache, bs=3, seed=5, num_workers=workers).train
        for epoch in range(2):
            plan = dl.plan(dl.epoch)
            want = sorted((len(b), int(dl.dataset.lengths[b[0]]) + 2) for b in plan)
            got = sorted((len(y), y.shape[1]) for _, y in dl)
            assert got == want and len(dl) == len(plan)
        if workers == 0: assert [(len(b), int(dl.dataset.lengths[b[0]]) + 2) for b in dl.plan(dl.epoch)] == [tuple(y.shape) for _, y in dl]


def test_bucket_plan_matches_original_order():
    lengths = [4, 4, 4, 9, 9, 2, 4, 9, 2, 4]
    plan = bucket_batches(lengths, bs=2, seed=0)
    # the original code visits the (shuffled) lengths in turn, one batch each, until all are used
    firsts = [lengths[b[0]] for b in plan]
    k = len(set(lengths))
    assert len(set(firsts[:k])) == k
    assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
    assert bucket_batches(lengths, 2, drop_last=True, shuffle=False) == [[5, 8], [0, 1], [2, 6], [3, 4]]


def test_eval_iteration(flickr, tmp_path):
    data = read_karpathy(*flickr)
    cache = prepare_features(data, TinyEncoder(), tmp_path/'cache', shard_size=3, progress=False)
    dl = get_eval_dl(data, 'test', cache=cache, bs=3)
    idx = torch.cat([i for _, i in dl]).tolist()
    assert idx == data.split_indices('test')
    assert dl.dataset.references == data.references('test')
    enc = get_eval_dl(data, 'test', encoder=TinyEncoder(), bs=3)        # on the fly gives the cached values
    x_enc, _ = enc.one_batch(); x_c, _ = dl.one_batch()
    assert torch.allclose(x_enc, x_c, atol=1e-2)


# ---------------------------------------------------------------- the feature cache


def test_held_cache_gives_the_same_batches(flickr, tmp_path):
    "A cache held in memory: every batch (features and captions) of two training epochs and of validation equals the one read from the shards;\n    the features travel in float16 and become float32 on the loader's device."
    import pickle
    from show_attend_tell.cache import FeatureCache
    from show_attend_tell.loaders import CaptionPairs, collate_pairs
    data = read_karpathy(*flickr)
    vocab = build_vocab(data, 200)
    prepare_features(data, TinyEncoder(), tmp_path/'cache', shard_size=3, progress=False)   # several shards, the last one short
    plain = get_dls(data, vocab, cache=FeatureCache(tmp_path/'cache'), bs=3, seed=2)
    held_cache = FeatureCache(tmp_path/'cache').hold('cpu')
    held = get_dls(data, vocab, cache=held_cache, bs=3, seed=2)
    want = [[b for b in dl] for dl in (plain.train, plain.train, plain.valid)]
    for p in (tmp_path/'cache').glob('shard_*.npy'): p.unlink()         # the held loader must not read the files
    got = [[b for b in dl] for dl in (held.train, held.train, held.valid)]
    assert [len(g) for g in got] == [len(w) for w in want] and len(want[0]) > 3
    for w, g in zip(want, got):
        for (xa, ya), (xb, yb) in zip(w, g):
            assert xa.dtype == xb.dtype == torch.float32 and torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(want[0][0][0], want[1][0][0])                 # the two epochs differ: the comparison has teeth
    # captions of different lengths are padded as collate_pairs pads them; the eval loader reads the held rows
    pairs = held.train.dataset
    ix = [int(pairs.lengths.argmin()), int(pairs.lengths.argmax()), 0]
    assert len({int(pairs.lengths[i]) for i in ix}) > 1
    xa, ya = pairs.batch(ix); xb, yb = collate_pairs([pairs[i] for i in ix])
    assert xa.dtype == torch.float16 and torch.equal(xa.float(), xb) and torch.equal(ya, yb) and (ya == PAD).any()
    x, idx = get_eval_dl(data, 'test', cache=held_cache, bs=3).one_batch()
    assert torch.equal(x[0], held_cache[held_cache.row(data[int(idx[0])].path)])
    # workers get the cache without its table (they read the files); out-of-range rows are refused
    assert pickle.loads(pickle.dumps(held_cache)).table is None and held_cache.table is not None
    with pytest.raises(IndexError): held_cache.rows([0, len(held_cache)])


def test_hold_refuses_a_cache_that_does_not_fit(flickr, tmp_path, monkeypatch):
    from show_attend_tell import cache as cache_mod
    from show_attend_tell.cache import CacheError
    data = read_karpathy(*flickr)
    cache = prepare_features(data, TinyEncoder(), tmp_path/'cache', shard_size=3, progress=False)
    assert cache.nbytes == len(data)*16*8*2
    free = cache_mod.free_memory('cpu')
    assert free is None or free > 2**20                                   # this machine's available RAM
    with pytest.raises(CacheError, match=r'is \d\.\d KB in float16 and does not fit in cpu memory \(1\.0 KB free.*without --features_in_memory'):
        cache.hold('cpu', free=1000)
    monkeypatch.setattr(cache_mod, 'free_memory', lambda dev: cache.nbytes)  # fits, but not within 90% of it
    with pytest.raises(CacheError, match='does not fit'): cache.hold('cpu')
    assert cache.table is None
    assert cache.hold('cpu', free=10*cache.nbytes).table.shape == (len(data), 16, 8)


def test_loader_errors_are_one_line_sat_errors(flickr, tmp_path):
    from show_attend_tell.core import SATError
    from show_attend_tell.loaders import CaptionPairs, ImageSet, LoaderError
    data = read_karpathy(*flickr)
    vocab = build_vocab(data, 200)
    cache = prepare_features(data, TinyEncoder(), tmp_path/'cache', shard_size=4, progress=False)
    for make in (lambda: CaptionPairs(data, 'train', vocab), lambda: ImageSet(data, 'test', cache=cache, encoder=TinyEncoder())):
        with pytest.raises(LoaderError, match='give exactly one of `cache` and `encoder`') as e: make()
        assert isinstance(e.value, SATError) and '\n' not in str(e.value)


def test_float16_feed_with_workers_and_other_dtypes(flickr, tmp_path):
    "Batches read by worker processes arrive as the in-process ones do; `dtype` sets what the features become."
    from show_attend_tell.loaders import default_num_workers
    data = read_karpathy(*flickr)
    vocab = build_vocab(data, 200)
    cache = prepare_features(data, TinyEncoder(), tmp_path/'cache', shard_size=4, progress=False)
    one = [b for b in get_dls(data, vocab, cache=cache, bs=3, seed=4, device='cpu').train]
    two = [b for b in get_dls(data, vocab, cache=cache, bs=3, seed=4, device='cpu', num_workers=2).train]
    assert sorted((tuple(y.flatten().tolist()), float(x.sum())) for x, y in one) == \
           sorted((tuple(y.flatten().tolist()), float(x.sum())) for x, y in two)
    assert {x.dtype for x, _ in two} == {torch.float32}
    bf = get_dls(data, vocab, cache=cache, bs=3, seed=4, dtype=torch.bfloat16).train
    assert {x.dtype for x, _ in bf} == {torch.bfloat16} and not bf.pin_memory
    assert default_num_workers('cpu') == 0
