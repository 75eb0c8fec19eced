"""The Shapes dataset: generation is a function of the seed, every caption follows the grammar and names its objects."""
import json
import numpy as np
from PIL import Image

from show_attend_tell.captions import tokenize, read_karpathy
from show_attend_tell.shapes import make_shapes, shapes_captions, shapes_object_box, shapes_relation, SHAPE_NAMES, SHAPE_COLORS, SHAPE_SIZES


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
