"""Encoding into the feature cache (the format's own tests are in tests/test_cache.py): kill and rerun (in process and as a subprocess), sat_prepare on the fixtures, unreadable images, caches of another encoder, one-line CLI errors."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch

from show_attend_tell.captions import DataError, CaptionData, load_image, read_karpathy
from show_attend_tell.loaders import CaptionPairs, ImageSet
from show_attend_tell.cache import CacheError, FeatureCache
from show_attend_tell.features import prepare_features, load_prepared, sat_prepare
from show_attend_tell.vocab import build_vocab


from standin_encoder import TinyEncoder  # noqa: E402
import standin_encoder  # tests/fixtures/, on the path through conftest.py
FIX = Path(__file__).parent/'fixtures'
REPO = Path(__file__).resolve().parents[1]


def copy_tree(src, dst):
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- fixtures load, split, tokenize


def shard_mtimes(d): return {p.name: p.stat().st_mtime_ns for p in sorted(Path(d).glob('shard_*.npy'))}


def test_kill_and_rerun_in_process(shapes_dir, tmp_path):
    "An interruption after shard 1: the rerun computes only shards 2.., and leaves 0 and 1 as they were."
    data = read_karpathy(shapes_dir/'dataset_shapes.json')
    out = tmp_path/'c'

    def stop_after_1(k):
        if k == 1: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        prepare_features(data, TinyEncoder(), out, shard_size=8, bs=4, progress=False, on_shard=stop_after_1)
    assert set(shard_mtimes(out)) == {'shard_00000.npy', 'shard_00001.npy'} and not list(out.glob('*.tmp'))
    with pytest.raises(CacheError, match='incomplete .2 of 6 shards'): FeatureCache(out)
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
    assert len(cache) == len(data) == 48


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
    with pytest.raises(CacheError, match=r"made with other settings: field 'encoder' differs \(cache: 'tiny', this run: 'vgg19'\)"):
        prepare_features(data, TinyEncoder(), out, encoder_name='vgg19', shard_size=10, progress=False)
    with pytest.raises(CacheError, match="field 'feat_dim' differs"):
        prepare_features(data, TinyEncoder(feat_dim=4), out, shard_size=10, progress=False)
    with pytest.raises(CacheError, match="field 'input_size' differs"):
        prepare_features(data, TinyEncoder(image_size=48), out, shard_size=10, progress=False)
    with pytest.raises(CacheError, match="field 'shard_size' differs"):
        prepare_features(data, TinyEncoder(), out, shard_size=5, progress=False)
    other = TinyEncoder()
    with torch.no_grad(): other.proj.bias.fill_(1)
    with pytest.raises(CacheError, match="field 'weights_sha1' differs .the encoder's weights"):
        prepare_features(data, other, out, shard_size=10, progress=False)
    fewer = CaptionData(data.records[:-1], data.image_root, data.name)
    with pytest.raises(CacheError, match=r"field 'images' differs \(42 vs 41 images"):
        prepare_features(fewer, TinyEncoder(), out, shard_size=10, progress=False)
    assert shard_mtimes(out) == before                                   # nothing was touched
    with pytest.raises(DataError, match='lacks 1 of the 7 test images'):
        CaptionPairs(CaptionData(data.records + [data.records[-1].__class__('new.png', 'test', [['a']], ['a'])], data.image_root),
                     'test', build_vocab(data, 100), cache=FeatureCache(out))


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
    with pytest.raises(CacheError, match='not a feature cache'): FeatureCache(tmp_path/'o3'/'features')
    with pytest.raises(DataError, match='not a prepared data folder: dataset.json is missing'): load_prepared(tmp_path/'o3')
