"""Data: the Karpathy and COCO-caption fixtures (real photos, captions written for the tests), the vocabulary,
length-bucketed batches, the feature cache (kill and rerun), the Shapes dataset, and every bad input's message."""
import json, os, shutil, signal, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

from show_attend_tell.captions import DataError, DataWarning, CaptionData, load_image, tokenize, read_karpathy, read_coco, read_captions, merge_data
from show_attend_tell.loaders import CaptionPairs, ImageSet, bucket_batches, get_dls, get_eval_dl
from show_attend_tell.features import FeatureCache, prepare_features, load_prepared, sat_prepare, prepare
from show_attend_tell.vocab import Vocab, PAD, START, END, UNK, build_vocab
from show_attend_tell.shapes import make_shapes, shapes_captions, shapes_object_box, shapes_relation, SHAPE_NAMES, SHAPE_COLORS, SHAPE_SIZES

FIX = Path(__file__).parent/'fixtures'
sys.path.insert(0, str(FIX))
import fixture_photos, standin_encoder  # noqa: E402
from standin_encoder import TinyEncoder  # noqa: E402
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _reset_standin():
    standin_encoder.SEEN.clear(); standin_encoder.STOP_AFTER = None; standin_encoder.DELAY = 0.0
    yield
    standin_encoder.SEEN.clear(); standin_encoder.STOP_AFTER = None; standin_encoder.DELAY = 0.0


@pytest.fixture(scope='module')
def flickr(tmp_path_factory):
    "The miniature Flickr-style Karpathy fixture: (json path, image folder)."
    d = tmp_path_factory.mktemp('flickr')
    shutil.copy(FIX/'dataset_flickr_mini.json', d/'dataset_flickr_mini.json')
    return d/'dataset_flickr_mini.json', fixture_photos.write_flickr_images(d/'Flicker8k_Dataset')


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    "The miniature COCO fixture: (Karpathy dataset_coco json, captions_val2014 json, image root with train2014/ val2014/)."
    d = tmp_path_factory.mktemp('coco')
    for f in ('dataset_coco_mini.json', 'captions_val2014_mini.json'): shutil.copy(FIX/f, d/f)
    return d/'dataset_coco_mini.json', d/'captions_val2014_mini.json', fixture_photos.write_coco_images(d/'images')


@pytest.fixture(scope='module')
def shapes_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('shapes')
    make_shapes(d, n_train=30, n_val=6, n_test=6, seed=3)
    return d


def copy_tree(src, dst):
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- fixtures load, split, tokenize

def test_karpathy_fixture(flickr):
    js, root = flickr
    data = read_karpathy(js, root)
    raw = json.loads(js.read_text())
    assert data.name == 'flickr8k' and len(data) == len(raw['images']) == 10
    assert data.counts == {'train': 6, 'val': 2, 'test': 2}
    for rec, img in zip(data, raw['images']):
        assert rec.path == img['filename'] and rec.split == img['split']
        assert rec.tokens == [s['tokens'] for s in img['sentences']]
        assert rec.raw == [s['raw'] for s in img['sentences']]
        # the documented tokenizer reproduces the file's (hand-written, Karpathy-style) tokens
        assert [tokenize(s['raw']) for s in img['sentences']] == rec.tokens
    assert data.references('val') == [r.tokens for r in data.split('val')]
    # tokens are optional: without them the raw captions are tokenized
    for img in raw['images']:
        for s in img['sentences']: del s['tokens']
    (js.parent/'raw_only.json').write_text(json.dumps(raw))
    assert [r.tokens for r in read_karpathy(js.parent/'raw_only.json', root)] == [r.tokens for r in data]


def test_coco_karpathy_fixture_restval_is_train(coco):
    js, _, root = coco
    data = read_karpathy(js, root)
    assert data.counts == {'train': 3, 'val': 1, 'test': 1}          # restval folded into train
    restval = data[2]
    assert restval.path == 'val2014/COCO_val2014_000000000042.jpg' and restval.split == 'train' and restval.image_id == 42
    assert all(data.image_path(i).is_file() for i in range(len(data)))
    assert build_vocab(data, 1000).stoi.get('saucer') is not None       # restval captions count as training text


def test_coco_caption_file(coco):
    _, caps, root = coco
    data = read_coco(caps, root/'val2014')
    raw = json.loads(caps.read_text())
    assert data.counts == {'train': 0, 'val': 3, 'test': 0}             # split from the file name
    assert [r.image_id for r in data] == [im['id'] for im in raw['images']]
    for r in data:
        anns = sorted((a for a in raw['annotations'] if a['image_id'] == r.image_id), key=lambda a: a['id'])
        assert r.raw == [a['caption'].strip() for a in anns]
        assert r.tokens == [tokenize(a['caption']) for a in anns]
    assert read_captions(caps, root/'val2014', split='test').counts['test'] == 3   # the format is detected
    # a captions file that carries an empty 'categories' list still loads (pycocotools would look up category_id)
    (caps.parent/'with_cats_val.json').write_text(json.dumps({**raw, 'categories': []}))
    assert len(read_coco(caps.parent/'with_cats_val.json', root/'val2014')) == 3
    train = read_karpathy(coco[0], root)
    both = merge_data(train, data)
    assert len(both) == len(train) + len(data) and all(Path(both.image_path(i)).is_file() for i in range(len(both)))


def test_images_become_upright_rgb(flickr):
    _, root = flickr
    for fn, (name, how) in fixture_photos.FLICKR.items():
        im = load_image(root/fn)
        ref = fixture_photos.upright(name)
        assert im.mode == 'RGB' and im.size == ref.size, (fn, im.size, ref.size)
        diff = np.abs(np.asarray(im, float) - np.asarray(ref.convert('L').convert('RGB') if how.startswith('gray') else ref, float))
        if how == 'alpha':
            assert (np.asarray(im)[:10] == 255).all()                    # the transparent frame is white
            diff = diff[10:-10, 10:-10]
        assert diff.mean() < 6, (fn, diff.mean())                     # the sideways one is turned back, etc.


# ---------------------------------------------------------------- vocabulary

def test_vocab_from_training_split_only(flickr):
    data = read_karpathy(*flickr)
    v = build_vocab(data, vocab_size=10000)
    train_words = {w for r in data.split('train') for t in r.tokens for w in t}
    other_words = {w for s in ('val', 'test') for r in data.split(s) for t in r.tokens for w in t} - train_words
    assert {'rocket', 'galaxies', 'petals'} <= other_words
    assert set(v.itos[4:]) == train_words and not other_words & set(v.itos)
    assert v.itos[:4] == ['<pad>', '<start>', '<end>', '<unk>'] and (PAD, START, END, UNK) == (0, 1, 2, 3)
    assert v.encode(['a', 'rocket']) == [v.stoi['a'], UNK]
    small = build_vocab(data, vocab_size=12)
    assert len(small) == 12 and small.itos[4] == 'a'
    twice = build_vocab(data, min_word_count=2)
    counts = {w: sum(t.count(w) for r in data.split('train') for t in r.tokens) for w in train_words}
    assert set(twice.itos[4:]) == {w for w, c in counts.items() if c >= 2}
    saved = v.save(flickr[0].parent/'vocab.json')
    assert Vocab.load(saved) == v and Vocab.load(saved).hash() == v.hash() != small.hash()


# ---------------------------------------------------------------- batches

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


def test_kill_and_rerun_in_process(shapes_dir, tmp_path):
    "An interruption after shard 1: the rerun computes only shards 2.., and leaves 0 and 1 as they were."
    data = read_karpathy(shapes_dir/'dataset_shapes.json')
    out = tmp_path/'c'

    def stop_after_1(k):
        if k == 1: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        prepare_features(data, TinyEncoder(), out, shard_size=8, bs=4, progress=False, on_shard=stop_after_1)
    assert set(shard_mtimes(out)) == {'shard_00000.npy', 'shard_00001.npy'} and not list(out.glob('*.tmp'))
    with pytest.raises(DataError, match='incomplete .2 of 6 shards'): FeatureCache(out)
    before = shard_mtimes(out)
    standin_encoder.SEEN.clear()
    written = []
    cache = prepare_features(data, TinyEncoder(), out, shard_size=8, bs=4, progress=False, on_shard=written.append)
    assert written == [2, 3, 4, 5] and sum(standin_encoder.SEEN) == len(data) - 16
    after = shard_mtimes(out)
    assert {k: after[k] for k in before} == before and len(after) == 6
    full = prepare_features(data, TinyEncoder(), tmp_path/'ref', shard_size=8, progress=False)
    assert all(torch.equal(cache[i], full[i]) for i in range(len(data)))
    standin_encoder.SEEN.clear()
    prepare_features(data, TinyEncoder(), out, shard_size=8, bs=4, progress=False)   # complete: nothing to do
    assert standin_encoder.SEEN == []


def test_sat_prepare_killed_subprocess_resumes(tmp_path):
    "sat_prepare on Shapes killed with SIGKILL after two shards; running it again only computes the rest."
    out = tmp_path/'prep'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(FIX), str(REPO), os.environ.get('PYTHONPATH', '')]),
           'STANDIN_DELAY': '0.4'}
    args = ['shapes', '--out', str(out), '--encoder', 'standin_encoder:make', '--n_train', '32', '--n_val', '8',
            '--n_test', '8', '--shard_size', '8', '--bs', '4', '--quiet']
    script = tmp_path/'sat_prepare_script.py'   # what the console-script entry point runs (call_parse parses argv in a script)
    script.write_text('from show_attend_tell.features import sat_prepare\nsat_prepare()\n')
    p = subprocess.Popen([sys.executable, str(script), *args],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    try:
        while not (out/'features'/'shard_00001.npy').exists():
            assert p.poll() is None, p.communicate()
            assert time.time() - t0 < 90
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
    feats = out/'features'
    before = shard_mtimes(feats)
    assert 2 <= len(before) < 6 and not (out/'vocab.json').exists()
    m = json.loads((feats/'manifest.json').read_text())
    assert m['complete'] is False
    sat_prepare(dataset='shapes', out=str(out), encoder='standin_encoder:make', n_train=32, n_val=8, n_test=8,
                shard_size=8, bs=4, quiet=True)
    assert sum(standin_encoder.SEEN) == 48 - 8*len(before)              # finished shards were not recomputed
    after = shard_mtimes(feats)
    assert {k: after[k] for k in before} == before and len(after) == 6
    data, vocab, cache = load_prepared(out)
    assert len(cache) == len(data) == 48 and cache.manifest['vocab_hash'] == vocab.hash()


def test_sat_prepare_on_fixtures_resumes(flickr, coco, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(FIX))
    js, root = flickr
    out = tmp_path/'flickr'
    standin_encoder.STOP_AFTER = 2                                       # Ctrl-C during the second shard
    with pytest.raises(SystemExit) as e:
        sat_prepare(dataset=str(js), images=str(root), out=str(out), encoder='standin_encoder:make', shard_size=3, bs=2, quiet=True)
    assert e.value.code == 130 and 'rerun the same command' in capsys.readouterr().err
    before = shard_mtimes(out/'features')
    assert list(before) == ['shard_00000.npy']
    standin_encoder.STOP_AFTER = None; standin_encoder.SEEN.clear()
    sat_prepare(dataset=str(js), images=str(root), out=str(out), encoder='standin_encoder:make', shard_size=3, bs=2, quiet=True)
    assert sum(standin_encoder.SEEN) == 10 - 3
    assert shard_mtimes(out/'features')['shard_00000.npy'] == before['shard_00000.npy']
    data, vocab, cache = load_prepared(out)
    assert data.counts == {'train': 6, 'val': 2, 'test': 2} and len(vocab) > 4 and cache.manifest['encoder'] == 'standin_encoder:make'
    assert read_karpathy(out/'dataset.json').records == read_karpathy(js, root).records
    # the COCO Karpathy file and a COCO caption file go through the same command
    cjs, caps, croot = coco
    sat_prepare(dataset=str(cjs), images=str(croot), out=str(tmp_path/'coco'), encoder='standin_encoder:make', quiet=True)
    assert len(load_prepared(tmp_path/'coco')[2]) == 5
    sat_prepare(dataset=str(caps), images=str(croot/'val2014'), out=str(tmp_path/'cococap'), encoder='standin_encoder:make',
                split='train', quiet=True)
    assert load_prepared(tmp_path/'cococap')[0].counts['train'] == 3


# ---------------------------------------------------------------- Shapes

def test_shapes_dataset(shapes_dir, tmp_path):
    js = shapes_dir/'dataset_shapes.json'
    raw = json.loads(js.read_text())
    data = read_karpathy(js)
    assert data.counts == {'train': 30, 'val': 6, 'test': 6}
    again = make_shapes(tmp_path/'again', n_train=30, n_val=6, n_test=6, seed=3)
    assert again.read_text() == js.read_text()
    assert all((tmp_path/'again'/'images'/im['filename']).read_bytes() == (shapes_dir/'images'/im['filename']).read_bytes()
               for im in raw['images'][:5])
    other = json.loads(make_shapes(tmp_path/'other', n_train=30, n_val=6, n_test=6, seed=4).read_text())
    assert [im['objects'] for im in other['images']] != [im['objects'] for im in raw['images']]
    n_objects = set()
    for img, rec in zip(raw['images'], data):
        assert set(img) >= {'filename', 'imgid', 'split', 'sentences', 'sentids'}
        assert all(set(s) >= {'tokens', 'raw', 'imgid', 'sentid'} for s in img['sentences'])
        objs = img['objects']; n_objects.add(len(objs))
        assert 1 <= len(objs) <= 3 and len({o['shape'] for o in objs}) == len(objs)
        assert len(rec.tokens) == 5 and rec.raw == shapes_captions(objs)
        for r, t in zip(rec.raw, rec.tokens): assert r == r.lower() and t == tokenize(r)
        for o in objs:
            assert o['shape'] in SHAPE_NAMES and o['color'] in SHAPE_COLORS and o['size'] in SHAPE_SIZES
            x0, y0, x1, y1 = o['box']
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            lo, hi = SHAPE_SIZES[o['size']]
            assert lo*0.85 <= max(x1 - x0, y1 - y0) <= hi + 1e-6
            assert any(o['shape'] in t and o['color'] in t for t in rec.tokens)     # named, with its colour
            assert shapes_object_box(objs, o['shape']) == o['box']
        for t in rec.tokens:                                               # every shape word names one of its boxes
            for w in t:
                if w in SHAPE_NAMES: assert shapes_object_box(objs, w) is not None
        for a in objs:                                                     # boxes do not overlap
            for b in objs:
                if a is not b:
                    assert a['box'][2] <= b['box'][0] or b['box'][2] <= a['box'][0] or a['box'][3] <= b['box'][1] or b['box'][3] <= a['box'][1]
        # the pixel at a box's centre has the object's colour (drawing and metadata agree)
        im = np.asarray(Image.open(shapes_dir/'images'/img['filename']).convert('RGB'), dtype=int)
        assert im.shape == (224, 224, 3)
        for o in objs:
            x0, y0, x1, y1 = o['box']
            px = im[int((y0 + y1)/2*224), int((x0 + x1)/2*224)]
            assert np.abs(px - np.array(SHAPE_COLORS[o['color']])).max() <= 30, (img['filename'], o, px)
        if len(objs) == 2:                                                 # the stated relation matches the boxes
            a, b = objs
            assert f" {shapes_relation(a, b)} " in rec.raw[0] or f" {shapes_relation(b, a)} " in rec.raw[0]
    assert n_objects == {1, 2, 3}


def test_shapes_captions_grammar():
    left = {'shape': 'circle', 'color': 'red', 'size': 'small', 'box': [0.05, 0.4, 0.2, 0.55]}
    right = {'shape': 'square', 'color': 'blue', 'size': 'large', 'box': [0.6, 0.35, 0.85, 0.6]}
    below = {'shape': 'star', 'color': 'green', 'size': 'small', 'box': [0.35, 0.8, 0.5, 0.95]}
    assert shapes_captions([right, left]) == [
        'a red circle to the left of a blue square', 'a blue square to the right of a red circle',
        'a red circle and a blue square', 'a small red circle to the left of a large blue square',
        'there is a small red circle and a large blue square']
    middle = {'shape': 'star', 'color': 'green', 'size': 'small', 'box': [0.35, 0.55, 0.5, 0.7]}
    three = shapes_captions([middle, right, left])
    assert three[0] == 'a red circle, a green star and a blue square'
    assert three[3] == 'a red circle to the left of a green star, and a blue square to the right of it'
    assert shapes_captions([below])[3] == 'a green star at the bottom'


# ---------------------------------------------------------------- bad input: every message

def test_missing_images_named(flickr, tmp_path):
    js, root = flickr
    part = copy_tree(root, tmp_path/'imgs')
    for fn in ('1002_coffee.jpg', '1005_china.jpg', '1007_rocket.jpg', '1009_hubble.jpg'): (part/fn).unlink()
    with pytest.raises(DataError, match=r'4 of 10 images listed in dataset_flickr_mini.json are missing from .*imgs: '
                                        r'1002_coffee.jpg, 1005_china.jpg, 1007_rocket.jpg …'):
        read_karpathy(js, part)


def test_image_folder_not_matching(flickr, coco, tmp_path):
    js, root = flickr
    with pytest.raises(DataError, match=r'does not match dataset_flickr_mini.json: none of its 10 images are there .*'
                                        r'looks like the images are under .*Flicker8k_Dataset'):
        read_karpathy(js, root.parent)
    with pytest.raises(DataError, match='none of its 10 images'): read_karpathy(js, coco[2]/'val2014')
    with pytest.raises(DataError, match=r'image folder .*nowhere does not exist'): read_karpathy(js, tmp_path/'nowhere')
    cjs, _, croot = coco                                                 # COCO: the folder above train2014/ is wanted
    with pytest.raises(DataError, match='none of its 5 images'): read_karpathy(cjs, croot/'train2014')


def test_not_karpathy_or_coco_names_the_key(flickr, coco, tmp_path):
    js, root = flickr
    raw = json.loads(js.read_text())
    cases = {
        'list.json': ([1, 2], "missing key 'images'"),
        'nokeys.json': ({'dataset': 'x'}, "missing key 'images'"),
        'nosent.json': ({'images': [{'filename': 'a.jpg', 'split': 'train'}]}, r"images\[0\] has no key 'sentences'"),
        'nosplit.json': ({'images': [{'filename': 'a.jpg', 'sentences': []}]}, r"images\[0\] has no key 'split'"),
        'nofile.json': ({'images': [{'split': 'train', 'sentences': []}]}, r"images\[0\] has no key 'filename'"),
        'badsent.json': ({'images': [{'filename': 'a.jpg', 'split': 'train', 'sentences': [{'imgid': 0}]}]},
                         r"images\[0\].sentences\[0\] has no key 'tokens'"),
        'badsplit.json': ({'images': [{**raw['images'][0], 'split': 'dev'}]}, "split 'dev'; expected train, val, test or restval"),
        'instances_val.json': ({'images': [{'id': 1, 'file_name': 'a.jpg'}], 'annotations': [{'id': 1, 'image_id': 1, 'bbox': [0, 0, 1, 1]}]},
                               r"not a COCO caption file: annotations\[0\] has no key 'caption' \(an instances_"),
        'noimg_val.json': ({'annotations': []}, "not a COCO caption file: missing key 'images'"),
    }
    for name, (obj, msg) in cases.items():
        (tmp_path/name).write_text(json.dumps(obj))
        with pytest.raises(DataError, match=msg): read_captions(tmp_path/name, root)
    with pytest.raises(DataError, match="is not a Karpathy split file: missing key 'images'"):
        read_karpathy(tmp_path/'list.json', root)
    (tmp_path/'broken.json').write_text('{"images": [')
    with pytest.raises(DataError, match='broken.json is not valid JSON'): read_captions(tmp_path/'broken.json', root)
    with pytest.raises(DataError, match='does not exist'): read_captions(tmp_path/'absent.json', root)
    (tmp_path/'captions_mystery.json').write_text(coco[1].read_text())
    with pytest.raises(DataError, match="cannot tell the split of captions_mystery.json.*pass split="):
        read_coco(tmp_path/'captions_mystery.json', coco[2]/'val2014')


def test_empty_captions_skipped_with_count(flickr, tmp_path):
    js, root = flickr
    raw = json.loads(js.read_text())
    raw['images'][0]['sentences'][1] = {'tokens': [], 'raw': '', 'imgid': 0, 'sentid': 1}
    raw['images'][1]['sentences'][0] = {'tokens': [], 'raw': ' . ', 'imgid': 1, 'sentid': 5}
    for s in raw['images'][9]['sentences']: s['tokens'], s['raw'] = [], ''
    (tmp_path/'empty.json').write_text(json.dumps(raw))
    with pytest.warns(DataWarning, match='skipped 5 empty captions; 1 images left without captions were dropped'):
        data = read_karpathy(tmp_path/'empty.json', root)
    assert len(data) == 9 and len(data[0].tokens) == 4 and data.skipped_empty == 5
    c = json.loads((FIX/'captions_val2014_mini.json').read_text()); c['annotations'][0]['caption'] = '  '
    (tmp_path/'captions_val_empty.json').write_text(json.dumps(c))
    with pytest.warns(DataWarning, match='skipped 1 empty captions'):
        read_coco(tmp_path/'captions_val_empty.json', tmp_path, check=False)
    clean = json.loads(js.read_text())
    clean['images'][9]['sentences'] = []                                 # no sentences at all: dropped, and said so
    (tmp_path/'nosents.json').write_text(json.dumps(clean))
    with pytest.warns(DataWarning, match=r'nosents.json: 1 images left without captions were dropped$'):
        assert len(read_karpathy(tmp_path/'nosents.json', root)) == 9


def test_unreadable_images_fail_or_are_skipped(flickr, tmp_path, capsys, monkeypatch):
    js, root = flickr
    imgs = copy_tree(root, tmp_path/'imgs')
    (imgs/'1004_camera.jpg').write_bytes((imgs/'1004_camera.jpg').read_bytes()[:400])   # truncated JPEG
    (imgs/'1008_flower.jpg').write_text('not an image')
    with pytest.raises(DataError, match=r'cannot read image .*1004_camera.jpg .*--skip_bad'): load_image(imgs/'1004_camera.jpg')
    data = read_karpathy(js, imgs)
    with pytest.raises(DataError, match=r'cannot read image .*1004_camera.jpg'):
        prepare_features(data, TinyEncoder(), tmp_path/'c', shard_size=4, progress=False)
    assert not list((tmp_path/'c').glob('*.tmp')) and not (tmp_path/'c'/'shard_00000.npy').exists()   # nothing half-written
    cache = prepare_features(data, TinyEncoder(), tmp_path/'c', shard_size=4, skip_bad=True, progress=True)
    out = capsys.readouterr().out
    assert 'skipped 2 unreadable images' in out and '1004_camera.jpg' in out and '1008_flower.jpg' in out
    assert cache.bad == {'1004_camera.jpg', '1008_flower.jpg'}
    assert json.loads((tmp_path/'c'/'manifest.json').read_text())['bad_images'] == ['1004_camera.jpg', '1008_flower.jpg']
    vocab = build_vocab(data, 100)
    pairs = CaptionPairs(data, 'train', vocab, cache=cache)
    assert 3 not in set(pairs.image_idx.tolist()) and len(ImageSet(data, 'val', cache=cache)) == 1
    # the console script: one line on stderr, exit status 2
    monkeypatch.syspath_prepend(str(FIX))
    with pytest.raises(SystemExit) as e:
        sat_prepare(dataset=str(js), images=str(imgs), out=str(tmp_path/'cli'), encoder='standin_encoder:make', quiet=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith('error: cannot read image') and '1004_camera.jpg' in err[0]
    sat_prepare(dataset=str(js), images=str(imgs), out=str(tmp_path/'cli'), encoder='standin_encoder:make', quiet=True, skip_bad=True)
    assert FeatureCache(tmp_path/'cli'/'features').bad == {'1004_camera.jpg', '1008_flower.jpg'}


def test_cache_of_other_encoder_refused(shapes_dir, tmp_path):
    data = read_karpathy(shapes_dir/'dataset_shapes.json')
    out = tmp_path/'c'
    prepare_features(data, TinyEncoder(), out, shard_size=10, progress=False)
    before = shard_mtimes(out)
    with pytest.raises(DataError, match=r"made with other settings: field 'encoder' differs \(cache: 'tiny', this run: 'vgg19'\)"):
        prepare_features(data, TinyEncoder(), out, encoder_name='vgg19', shard_size=10, progress=False)
    with pytest.raises(DataError, match="field 'feat_dim' differs"):
        prepare_features(data, TinyEncoder(feat_dim=4), out, shard_size=10, progress=False)
    with pytest.raises(DataError, match="field 'input_size' differs"):
        prepare_features(data, TinyEncoder(image_size=48), out, shard_size=10, progress=False)
    with pytest.raises(DataError, match="field 'shard_size' differs"):
        prepare_features(data, TinyEncoder(), out, shard_size=5, progress=False)
    other = TinyEncoder()
    with torch.no_grad(): other.proj.bias.fill_(1)
    with pytest.raises(DataError, match="field 'weights_sha1' differs .the encoder's weights"):
        prepare_features(data, other, out, shard_size=10, progress=False)
    fewer = CaptionData(data.records[:-1], data.image_root, data.name)
    with pytest.raises(DataError, match=r"field 'images' differs \(42 vs 41 images"):
        prepare_features(fewer, TinyEncoder(), out, shard_size=10, progress=False)
    v = build_vocab(data, 100)
    with pytest.raises(DataError, match="field 'vocab_hash' differs"):
        prepare_features(data, TinyEncoder(), out, vocab=v, shard_size=10, progress=False)
    assert shard_mtimes(out) == before                                   # nothing was touched
    with pytest.raises(DataError, match='lacks 1 of the 7 test images'):
        CaptionPairs(CaptionData(data.records + [data.records[-1].__class__('new.png', 'test', [['a']], ['a'])], data.image_root),
                     'test', v, cache=FeatureCache(out))


def test_cli_errors_are_one_line(flickr, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(FIX))
    js, root = flickr

    def run(**kw):
        with pytest.raises(SystemExit) as e:
            sat_prepare(**{'encoder': 'standin_encoder:make', 'quiet': True, 'out': str(tmp_path/'o'), **kw})
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith('error: '), err
        return err[0]
    assert 'does not exist' in run(dataset=str(tmp_path/'nope.json'), images=str(root))
    assert 'does not match' in run(dataset=str(js), images=str(tmp_path))
    assert "unknown preset 'huge'" in run(dataset=str(js), images=str(root), preset='huge')
    assert "cannot load encoder 'standin_encoder:nothing'" in run(dataset=str(js), images=str(root), encoder='standin_encoder:nothing')
    assert 'leave out --images' in run(dataset='shapes', images=str(root))
    prep = tmp_path/'o2'
    sat_prepare(dataset=str(js), images=str(root), out=str(prep), encoder='standin_encoder:make', quiet=True)
    assert "field 'encoder' differs" in run(dataset=str(js), images=str(root), out=str(prep), encoder='standin_encoder:wide')
    (tmp_path/'o3'/'features').mkdir(parents=True)
    with pytest.raises(DataError, match='not a feature cache'): FeatureCache(tmp_path/'o3'/'features')
    with pytest.raises(DataError, match='not a prepared data folder: dataset.json is missing'): load_prepared(tmp_path/'o3')
