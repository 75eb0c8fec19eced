"Grounding (nbs/20_grounding.ipynb) from the outside: the fixtures against pycocotools, the Shapes/COCO equivalence, Entities teacher-forced."
import json
from pathlib import Path
import numpy as np
import pytest
import torch
from show_attend_tell import grounding as gr
from show_attend_tell import annotations as an
from show_attend_tell.alphamaps import box_mask
from show_attend_tell.captions import read_karpathy
from show_attend_tell.shapes import make_shapes
from show_attend_tell.attention import AttentionError
from show_attend_tell.grounding import attention_correctness, dataset_attention_correctness

FX = Path(__file__).parent/'fixtures'
INST, ENT = FX/'instances_photos_mini.json', FX/'flickr30k_entities_mini'
G = 14


@pytest.mark.parametrize('upsample', ['cell', 'bilinear', 'smooth'])
def test_inside_uniform_other(upsample):
    ci = an.CocoInstances(INST)
    M = ci.region(42, 'cup')['mask']
    cell = np.zeros(G*G); cell[4*G + 7] = 1                     # (y=4, x=7): the middle of the cup
    spoonish = np.zeros(G*G); spoonish[13*G + 0] = 1             # bottom-left corner: table, not cup
    r = gr.region_scores(np.stack([cell, np.full(G*G, 1/(G*G)), spoonish]), {'mask': M}, upsample=upsample)
    assert r['mass'][1] == pytest.approx(M.mean(), abs=1e-6)     # uniform α: the area fraction (float32 projection)
    assert r['mass'][2] == pytest.approx(0, abs=1e-6) and r['pointing'][2] == 0
    assert r['pointing'][0] == 1 and r['mass'][0] > (0.999 if upsample == 'cell' else 0.9)


def test_union_of_instances_and_hallucination():
    insts = [{'category': 'dog', 'box': [0, 0, 0.25, 0.25]}, {'category': 'dog', 'box': [0.75, 0.75, 1, 1]}]
    a = np.zeros((3, G*G)); a[0, 0] = 1; a[1, G*G - 1] = 1; a[2] = 1/(G*G)
    r = gr.ground_caption(['dogs', 'dog', 'cat'], a, insts, an.category_table())
    assert [round(p['mass'], 9) for p in r['per_word']] == [1, 1] and r['per_word'][0]['area'] == pytest.approx(0.125)
    assert [h['word'] for h in r['hallucinated']] == ['cat']
    m = {'category': 'dog', 'mask': lambda: box_mask([[0, 0, 0.25, 0.25]], (100, 100))}
    m2 = {'category': 'dog', 'mask': box_mask([[0.75, 0.75, 1, 1]], (100, 100))}
    r2 = gr.ground_caption(['dog', 'dog'], a[:2], [m, m2], {'dog': 'dog'})
    assert [round(p['mass'], 6) for p in r2['per_word']] == [1, 1]


def _shapes_as_coco(data, path):
    "Shapes' boxes as a COCO instances file (bbox and a rectangle polygon per object), one image id per record."
    S = 224
    cats = {s: k + 1 for k, s in enumerate(sorted({o['shape'] for r in data for o in r.objects}))}
    images, anns = [], []
    for i, r in enumerate(data):
        images.append({'id': i + 1, 'file_name': Path(r.path).name, 'height': S, 'width': S})
        for o in r.objects:
            x0, y0, x1, y1 = (v*S for v in o['box'])
            anns.append({'id': len(anns) + 1, 'image_id': i + 1, 'category_id': cats[o['shape']], 'iscrowd': 0, 'area': (x1 - x0)*(y1 - y0),
                         'bbox': [x0, y0, x1 - x0, y1 - y0], 'segmentation': [[x0, y0, x1, y0, x1, y1, x0, y1]]})
    path.write_text(json.dumps({'images': images, 'annotations': anns, 'categories': [{'id': v, 'name': k} for k, v in cats.items()]}))
    return {s: [s] for s in cats}


def shapes_vs_coco(tmp_path, n=60, seed=0):
    data = read_karpathy(make_shapes(tmp_path/'shapes', n, 1, 1, seed=seed, progress=False))
    recs = [r for r in data if r.split == 'train'][:n]
    syn = _shapes_as_coco(recs, tmp_path/'inst.json')
    rng = np.random.default_rng(seed)
    items = []
    for i, r in enumerate(recs):
        words = r.tokens[0]
        A = rng.dirichlet(np.full(G*G, 0.05), len(words))        # peaky made-up attention
        items.append((i + 1, words, A, r.objects))
    shapes = gr.dataset_attention_correctness([(w, a, o) for _, w, a, o in items])
    boxes = gr.coco_grounding([(i, w, a) for i, w, a, _ in items], an.CocoInstances(tmp_path/'inst.json', syn, use='boxes'))
    masks = gr.coco_grounding([(i, w, a) for i, w, a, _ in items], an.CocoInstances(tmp_path/'inst.json', syn, use='masks'))
    return shapes, boxes, masks


def test_coco_path_reproduces_shapes_score(tmp_path):
    shapes, boxes, masks = shapes_vs_coco(tmp_path)
    assert shapes['n_words'] == boxes['n_words'] == masks['n_words'] > 50
    assert boxes['mass'] == pytest.approx(shapes['mass'], abs=1e-6) and boxes['pointing'] == pytest.approx(shapes['pointing'], abs=1e-9)
    assert boxes['uniform'] == pytest.approx(shapes['uniform'], abs=1e-6)
    assert masks['mass'] == pytest.approx(shapes['mass'], abs=0.02)   # polygons rasterised by pycocotools: pixel edges


def test_entities_teacher_forced_on_fixture():
    from show_attend_tell.config import Config
    from show_attend_tell.decoder import ShowAttendTell
    from show_attend_tell.vocab import build_vocab
    from show_attend_tell.evaluation import evaluate_entities, teacher_forced_alphas
    data = read_karpathy(FX/'dataset_flickr_mini.json', image_root='.', check=False)
    vocab = build_vocab(data, 1000, 1)
    torch.manual_seed(0)
    model = ShowAttendTell(Config(embed_dim=8, hidden_dim=16, attn_dim=8), len(vocab), 16)
    D = 16
    feats = {i: torch.randn(G*G, D) for i in range(len(data))}
    a = teacher_forced_alphas(model, feats[0], [['a', 'cat'], ['a', 'woman', 'in', 'a', 'suit']], vocab)
    assert [x.shape for x in a] == [(2, G*G), (5, G*G)] and np.allclose(a[1].sum(1), 1, atol=1e-5)
    res = evaluate_entities(model, vocab, data, feats.__getitem__, ENT, split=None)
    assert res['n_images'] == 3 and res['n_skipped'] == 7
    assert set(res['per_type']) == {'people', 'clothing', 'bodyparts', 'animals', 'other'}
    assert 0 <= res['mass'] <= 1 and abs(res['mass'] - res['uniform']) < 0.5


def test_evaluate_split_with_instances_report_and_figure(tmp_path):
    import sys
    sys.path.insert(0, str(FX))
    from fixture_photos import write_coco_images
    from show_attend_tell.evaluation import evaluate_split, write_report, save_grounding_figure
    write_coco_images(tmp_path/'img')
    data = read_karpathy(FX/'dataset_coco_mini.json', image_root=tmp_path/'img', check=False)
    caps = {9: 'a woman in a suit', 25: 'a cat on a bed', 42: 'a cup and a spoon on a table', 73: 'a rocket', 74: 'a flower'}
    def fn(idxs):
        return [(caps[data[i].image_id].split(), np.full((len(caps[data[i].image_id].split()), G*G), 1/(G*G))) for i in idxs]
    res = evaluate_split(fn, data, split=None, metrics=('bleu',), tokenizer='python', progress=False, instances=INST)
    g = res['grounding']['coco']
    assert (g['n_words'], g['n_hallucinated'], g['n_not_in_file'], g['n_unannotated']) == (5, 1, 1, 1)   # 'bed' is not in the cat's image
    assert g['mass'] == pytest.approx(g['uniform'], abs=1e-6)
    p = write_report(res, tmp_path/'out', dataset='coco', attention='soft')
    doc = json.loads(p['json'].read_text())
    assert 'per_word' not in doc['grounding']['coco'] and doc['grounding']['coco']['per_category']['cat']['n_words'] == 1
    assert '| COCO instances (generated words) | 5 |' in p['md'].read_text()
    f = save_grounding_figure(res, data, tmp_path/'new'/'g.png', an.CocoInstances(INST))   # a folder not made yet (sat_evaluate --out)
    assert f.stat().st_size > 10_000


# ---- the Shapes score, built in (moved from test_visualization) --------------------------------------------
def one_hot(loc, L=G*G):
    a = np.zeros(L); a[loc] = 1.0
    return a


# ---- attention correctness ---------------------------------------------------------------------------------
@pytest.mark.parametrize('box', [[0.1, 0.2, 0.6, 0.5], [0.0, 0.0, 1.0, 1.0], [0.33, 0.41, 0.52, 0.97], [0.9, 0.05, 0.93, 0.07]])
@pytest.mark.parametrize('g', [7, 14])
def test_uniform_attention_scores_box_area_exactly(box, g):
    objs = [{'shape': 'diamond', 'box': box}]
    r = attention_correctness(['a', 'diamond'], np.full((2, g*g), 1/(g*g)), objs, g)
    area = (box[2] - box[0]) * (box[3] - box[1])
    assert r['n_words'] == 1
    assert r['mass'] == pytest.approx(area, abs=1e-12)
    assert r['uniform_mass'] == pytest.approx(area, abs=1e-12)


def test_attention_inside_box_scores_one_and_points():
    objs = [{'shape': 'cross', 'box': [0.5, 0.1, 0.8, 0.4]}]
    # cells wholly inside the box: x in [0.5, 0.8] -> columns 7..10 (x1 = 11/14 = 0.786), y in [0.1, 0.4] -> rows 2..4
    a = np.zeros(G*G)
    for y in (2, 3, 4):
        for x in (7, 8, 9, 10): a[y*G + x] = 1
    a /= a.sum()
    r = attention_correctness(['cross'], a[None], objs)
    assert r['mass'] == pytest.approx(1.0, abs=1e-12) and r['pointing'] == 1.0


def test_attention_outside_box_scores_zero():
    objs = [{'shape': 'cross', 'box': [0.5, 0.1, 0.8, 0.4]}]
    r = attention_correctness(['cross'], one_hot(12*G + 1)[None], objs)
    assert r['mass'] == 0.0 and r['pointing'] == 0.0


def test_grid_is_row_major_y_then_x():
    "A box in the top-right corner: the cell (y=0, x=13) is inside it; (y=13, x=0), the transpose, is not."
    objs = [{'shape': 'star', 'box': [13/14, 0.0, 1.0, 1/14]}]
    assert attention_correctness(['star'], one_hot(0*G + 13)[None], objs)['mass'] == pytest.approx(1.0)
    assert attention_correctness(['star'], one_hot(13*G + 0)[None], objs)['mass'] == 0.0


def test_only_words_naming_objects_of_this_image_count():
    objs = [{'shape': 'circle', 'box': [0, 0, 0.5, 0.5]}, {'shape': 'square', 'box': [0.5, 0.5, 1, 1]}]
    words = ['a', 'red', 'circle', 'and', 'a', 'triangle', 'square']
    r = attention_correctness(words, np.full((7, G*G), 1/(G*G)), objs)
    assert [p['word'] for p in r['per_word']] == ['circle', 'square'] and r['n_words'] == 2
    none = attention_correctness(['a', 'dog'], np.full((2, G*G), 1/(G*G)), objs)
    assert none['n_words'] == 0 and none['mass'] is None and none['pointing'] is None


def test_partial_overlap_is_exact():
    "Attention on one cell half covered by the box: mass 0.5 (exact overlap, not a pixel count)."
    objs = [{'shape': 'circle', 'box': [0.0, 0.0, 1.5/14, 1.0]}]     # covers column 0 and half of column 1
    assert attention_correctness(['circle'], one_hot(5*G + 1)[None], objs)['mass'] == pytest.approx(0.5, abs=1e-12)


def test_dataset_aggregate_is_micro_average():
    objs = [{'shape': 'circle', 'box': [0, 0, 0.5, 0.5]}]
    inside = one_hot(2*G + 2)[None]
    items = [(['circle'], inside, objs), {'words': ['circle', 'circle'], 'alphas': np.stack([inside[0], one_hot(G*G - 1)]), 'objects': objs},
             (['a', 'dog'], np.full((2, G*G), 1/(G*G)), objs)]
    r = dataset_attention_correctness(items)
    assert r['n_words'] == 3 and r['n_images'] == 3
    assert r['mass'] == pytest.approx(2/3) and r['pointing'] == pytest.approx(2/3) and r['uniform_mass'] == pytest.approx(0.25)


def test_words_and_rows_must_match():
    with pytest.raises(AttentionError, match='3 rows but there are 2 words'):
        attention_correctness(['a', 'b'], np.ones((3, G*G))/(G*G), [])

