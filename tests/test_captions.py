"""Caption files and images: the Karpathy and COCO-caption fixtures (real photos, captions written for the tests), upright RGB images, and every bad input's message."""
import json, shutil
from pathlib import Path
import numpy as np
import pytest

from show_attend_tell.captions import DataError, DataWarning, load_image, tokenize, read_karpathy, read_coco, read_captions, merge_data
from show_attend_tell.vocab import build_vocab
import fixture_photos  # tests/fixtures/, on the path through conftest.py
FIX = Path(__file__).parent/'fixtures'


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
