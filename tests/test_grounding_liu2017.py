"""Checks of the NumPy transcription of Liu et al.'s attention correctness (tests/fixtures/liu2017_reference.py) and of
its fixture (tests/fixtures/entities_fixture.py): hand-worked values, not numbers taken from the code under test; then
the library's `grounding.liu2017_correctness` against that transcription (the golden test)."""
import sys
from fractions import Fraction
from pathlib import Path
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent/'fixtures'))
import liu2017_reference as L  # noqa: E402
from entities_fixture import write_liu2017_fixture  # noqa: E402
from show_attend_tell import grounding as gr  # noqa: E402
from show_attend_tell.annotations import read_entities_sentences, read_entities_annotation  # noqa: E402


def keys(d):
    "Keys' cubic kernel, a = -0.5, written out from the formula."
    d = abs(d)
    if d <= 1: return 1.5*d**3 - 2.5*d**2 + 1
    if d <= 2: return -0.5*d**3 + 2.5*d**2 - 4*d + 2
    return 0.0


def by_hand(a, taps):
    "One output sample from (1-based input index after mirroring, distance u - k) taps, weights normalised."
    w = [keys(d) for _, d in taps]
    return sum(wi*a[k - 1] for wi, (k, _) in zip(w, taps))/sum(w)


# 14 -> 224: s = 16, u = x/16 + 15/32. Indices 0, -1 mirror to 1, 2; 15, 16 mirror to 14, 13.
TAPS_224 = {1: [(2, 1.53125), (1, 0.53125), (1, -0.46875), (2, -1.46875)],          # u = 0.53125, k = -1, 0, 1, 2
            2: [(2, 1.59375), (1, 0.59375), (1, -0.40625), (2, -1.40625)],          # u = 0.59375
            112: [(6, 1.46875), (7, 0.46875), (8, -0.53125), (9, -1.53125)],        # u = 7.46875
            224: [(13, 1.46875), (14, 0.46875), (14, -0.53125), (13, -1.53125)]}    # u = 14.46875, k = 13..16
# 3 -> 7: s = 7/3, u = (3x + 2)/7.
TAPS_7 = {1: [(2, 12/7), (1, 5/7), (1, -2/7), (2, -9/7)],                           # u = 5/7, k = -1, 0, 1, 2
          2: [(1, 8/7), (1, 1/7), (2, -6/7), (3, -13/7)],                           # u = 8/7, k = 0, 1, 2, 3
          4: [(2, 0.0)],                                                            # u = 2: the input sample itself
          7: [(2, 9/7), (3, 2/7), (3, -5/7), (2, -12/7)]}                           # u = 23/7, k = 2, 3, 4, 5


def test_imresize_bicubic_1d_14_to_224():
    a = np.random.default_rng(1).random(14)
    out = L.matlab_imresize_bicubic(a[:, None], (224, 1))[:, 0]
    for x, taps in TAPS_224.items():
        assert out[x - 1] == pytest.approx(by_hand(a, taps), abs=1e-12)
    assert out.shape == (224,)


def test_imresize_bicubic_2d_3_to_7():
    A = np.random.default_rng(2).random((3, 3))
    out = L.matlab_imresize_bicubic(A, (7, 7))
    for r, tr in TAPS_7.items():
        for c, tc in TAPS_7.items():
            col = [by_hand(A[:, j], tr) for j in range(3)]               # separable: rows, then columns
            assert out[r - 1, c - 1] == pytest.approx(by_hand(col, tc), abs=1e-12)
    assert out[3, 3] == pytest.approx(A[1, 1], abs=1e-15)


def test_imresize_bilinear_taps():
    a = np.random.default_rng(3).random(14)
    out = L.matlab_imresize(a[:, None], (224, 1), 'bilinear')[:, 0]
    assert out[0] == pytest.approx(a[0], abs=1e-15)                      # u = 0.53125: k = 0 (-> 1) and 1
    assert out[8] == pytest.approx(0.96875*a[0] + 0.03125*a[1], abs=1e-15)   # u = 1.03125


@pytest.mark.parametrize('shape,out', [((14, 14), (224, 224)), ((3, 3), (7, 7)), ((14, 14), (5, 9))])
def test_imresize_keeps_constants(shape, out):
    assert np.allclose(L.matlab_imresize_bicubic(np.full(shape, 3.7), out), 3.7, rtol=0, atol=1e-12)


def test_sum_rule_and_uniform_attention():
    rng = np.random.default_rng(4)
    row = rng.random(196); row /= row.sum()
    mask = np.zeros((224, 224), bool); mask[30:150, 60:200] = True
    assert L.word_score(row, np.ones((224, 224), bool)) == 1.0
    assert L.word_score(row, mask) + L.word_score(row, ~mask) == pytest.approx(1.0, abs=1e-12)
    assert L.word_score(np.full(196, 1/196), mask) == pytest.approx(mask.mean(), abs=1e-12)   # uniform α: area
    one = np.zeros(196); one[14*2 + 5] = 1                               # row-major: grid row 2, column 5
    up = L.attention_map(one)
    assert np.unravel_index(up.argmax(), up.shape)[0]//16 == 2 and np.unravel_index(up.argmax(), up.shape)[1]//16 == 5


CROP = [  # (box, width, height, expected), worked by hand
    # 768 × 512: r = 2, resized 384 × 256, offsets x 384/2 - 112 = 80, y 16. y1 = 32.5 - 16 = 16.5 -> 17 (half up).
    ((200, 65, 700, 511), 768, 512, (20, 17, 224, 224)),
    # a box left of the crop: x 5 - 80, 80.5 - 80 clamp to 1; y1 = 16.5 - 16 = 0.5 -> 1; y2 = 50 - 16 = 34.
    ((10, 33, 161, 100), 768, 512, (1, 1, 1, 34)),
    # portrait 512 × 1024: r = 2, offsets x 16, y 256 - 112 = 144; x1 = 20.5 - 16 = 4.5 -> 5.
    ((41, 300, 300, 700), 512, 1024, (5, 6, 134, 206)),
    # 500 × 333: r = 333/256, ox = 64000/333 - 112; x1 = 14256/333 = 42.81, y1 = 30.75 - 16 = 14.75,
    # x2 = 50096/333 = 150.44, y2 = 246.01 - 16 -> 224.
    ((160, 40, 300, 320), 500, 333, (43, 15, 150, 224))]
WHOLE = [  # x * 224 / width, y * 224 / height
    ((160, 40, 300, 320), 500, 333, (72, 27, 134, 215)),     # 71.68, 26.91, 134.4, 215.26
    ((45, 0, 447, 300), 448, 300, (23, 1, 224, 224)),        # 22.5 -> 23 (half up), 0 -> 1, 223.5 -> 224
    ((20, 60, 200, 420), 375, 500, (12, 27, 119, 188))]      # portrait: 11.95, 26.88, 119.47, 188.16


@pytest.mark.parametrize('box,w,h,expected', CROP)
def test_adjust_bbox_crop(box, w, h, expected):
    assert L.adjust_bbox(box, w, h, 'crop') == expected


@pytest.mark.parametrize('box,w,h,expected', WHOLE)
def test_adjust_bbox_whole(box, w, h, expected):
    assert L.adjust_bbox(box, w, h, 'whole') == expected


def test_crop_example_by_fractions():
    "The 500 × 333 crop case once more, in exact arithmetic with MATLAB's round (half away from zero)."
    r = Fraction(333, 256); ox, oy = Fraction(500)/r/2 - 112, Fraction(333)/r/2 - 112
    rnd = lambda v: int((min(max(v, 1), 224) + Fraction(1, 2))//1)
    assert L.adjust_bbox((160, 40, 300, 320), 500, 333) == (rnd(160/r - ox), rnd(40/r - oy), rnd(300/r - ox),
                                                              rnd(320/r - oy))


def test_region_mask_is_inclusive_union():
    m = L.region_mask([(200, 65, 700, 511)], 768, 512, 'crop')            # -> (20, 17, 224, 224)
    assert m.sum() == (224 - 20 + 1)*(224 - 17 + 1) and m[16, 19] and not m[15, 19] and not m[16, 18]
    two = L.region_mask([(200, 65, 700, 511), (10, 33, 161, 100)], 768, 512, 'crop')
    assert two.sum() == m.sum() + 34                                 # the strip x = 1, y 1..34 lies outside m


def test_parse_entities_line():
    tokens, phrases = L.parse_entities_line("[/EN#12/people/other A Man's] hat , near [/EN#0/notvisual T-shirts].")
    assert tokens == ['a', 'mans', 'hat', 'near', 'tshirts']
    assert phrases == [('12', ['people', 'other'], ['a', 'mans']), ('0', ['notvisual'], ['tshirts'])]


def _sent(*phrases):
    return (None, [(eid, ['other'], words.split()) for eid, words in phrases])


def test_align_first_match_first_occurrence_and_notvisual():
    gen = 'a woman in a red shirt sits next to a woman near something'.split()
    sentences = [_sent(('0', 'something'), ('401', 'a woman')),
                 _sent(('405', 'a woman'), ('7', 'something'), ('9', 'a dog')),
                 _sent(('402', 'a woman in a red shirt'), ('403', 'a red shirt'), ('404', 'A Woman'))]
    rows = L.align(gen, sentences)
    assert rows == [{'start': 0, 'length': 6, 'entity': '402'}, {'start': 0, 'length': 2, 'entity': '401'},
                    {'start': 3, 'length': 3, 'entity': '403'}]


@pytest.fixture(scope='module')
def fixture_items(tmp_path_factory):
    return write_liu2017_fixture(tmp_path_factory.mktemp('entities'))


def test_read_annotation(fixture_items):
    w, h, boxes, boxless = L.read_annotation(fixture_items[0]['annotation_path'])
    assert (w, h) == (500, 333) and len(boxes['305']) == 2 and boxes['307'] == [(20.0, 230.0, 120.0, 320.0)]
    assert boxless == {'304', '306'} and boxes['304'] == []
    w, h, boxes, boxless = L.read_annotation(fixture_items[1]['annotation_path'])
    assert (w, h) == (375, 500) and len(boxes['406']) == 1 and '406' in boxless and len(boxes['404']) == 2


def test_fixture_alignments(fixture_items):
    out = L.liu2017(fixture_items)
    got = {(r['image'], r['start'], r['length']): r for r in out['rows']}
    assert [(r['image'], r['entity']) for r in out['rows'] if r['skipped']] == [('4100001', '304'), ('4100002', '406')]
    assert got['4100002', 0, 2]['entity'] == '401'                       # 'a woman': first match, first occurrence
    assert got['4100003', 0, 2]['score'] == 1.0 and got['4100003', 12, 2]['score'] == 0.0
    assert not any(r['entity'] in ('0', '306', '408') for r in out['rows'])   # notvisual, unmatched phrases
    kept = [r for r in out['rows'] if not r['skipped']]
    assert out['n_alignments'] == len(kept) - 2 == 8
    assert out['correctness'] == pytest.approx(np.mean([r['score'] for r in kept if 0 < r['score'] < 1]), abs=1e-15)
    assert out['baseline'] == pytest.approx(np.mean([r['baseline'] for r in kept]), abs=1e-15)


def test_fixture_rules_matter(fixture_items):
    "Second occurrence, later match, or any single word would each score differently; max != mean per phrase."
    it = fixture_items[1]
    w, h, boxes, _ = L.read_annotation(it['annotation_path'])
    m401, m405 = (L.region_mask(boxes[e], w, h) for e in ('401', '405'))
    first = max(L.word_score(it['alphas'][t], m401) for t in (0, 1))
    assert abs(first - max(L.word_score(it['alphas'][t], m401) for t in (9, 10))) > 1e-3
    assert abs(first - max(L.word_score(it['alphas'][t], m405) for t in (0, 1))) > 1e-3
    for item in fixture_items:
        w, h, boxes, _ = L.read_annotation(item['annotation_path'])
        for r in L.liu2017([item])['rows']:
            if r['skipped']: continue
            s = [L.word_score(item['alphas'][t], L.region_mask(boxes[r['entity']], w, h))
                 for t in range(r['start'], r['start'] + r['length'])]
            assert r['score'] == max(s) and (max(s) - min(s) > 1e-6 or max(s) == 0)


@pytest.mark.parametrize('switch', [dict(phrase_reduce='mean'), dict(open_filter=False), dict(frame='whole'),
                                    dict(upsample='bilinear')])
def test_every_switch_changes_correctness(fixture_items, switch):
    assert abs(L.liu2017(fixture_items, **switch)['correctness'] - L.liu2017(fixture_items)['correctness']) > 1e-6


# --- Liu et al. 2017: the library's protocol against an independent transcription of the authors' MATLAB ------------


@pytest.fixture(scope='module')
def liu_fixture(tmp_path_factory):
    "The miniature Entities folder (non-square images, several boxes, a box-less label, a repeated and a two-type phrase)."
    items = write_liu2017_fixture(tmp_path_factory.mktemp('entities'))
    ours = [(it['image'], it['tokens'], it['alphas'], read_entities_annotation(it['annotation_path']),
             read_entities_sentences(it['sentences_path'])) for it in items]
    return items, ours


def _rows(rows):
    return [(r['image'], r['start'], r['length'], r['entity']) for r in rows if not r['skipped']]


@pytest.mark.parametrize('frame', ['crop', 'whole'])
def test_liu2017_equals_the_transcription_of_the_authors_code(liu_fixture, frame):
    "Correctness, baseline, alignments and every phrase score equal the reference's to 1e-6, in both frames."
    items, ours = liu_fixture
    ref, got = L.liu2017(items, frame=frame), gr.liu2017_correctness(ours, frame)
    assert got['n_alignments'] == ref['n_alignments'] and got['n_baseline'] == ref['n_baseline']
    assert abs(got['correctness'] - ref['correctness']) < 1e-6 and abs(got['baseline'] - ref['baseline']) < 1e-6
    assert _rows(got['rows']) == _rows(ref['rows']) and got['n_skipped'] == sum(r['skipped'] for r in ref['rows']) > 0
    for a, b in zip([r for r in got['rows'] if not r['skipped']], [r for r in ref['rows'] if not r['skipped']]):
        assert abs(a['score'] - b['score']) < 1e-6 and abs(a['baseline'] - b['baseline']) < 1e-6


@pytest.mark.parametrize('switch', [dict(phrase_reduce='mean'), dict(open_filter=False), dict(frame='whole'), dict(upsample='bilinear')])
def test_each_rule_matters_on_the_fixture(liu_fixture, switch):
    """With any one rule switched (max → mean, no (0, 1) filter, crop ↔ whole image, bicubic → bilinear) the reference gives
    another number than ours, by far more than the test's 1e-6: the golden test above fails if the library breaks that rule."""
    items, ours = liu_fixture
    got = gr.liu2017_correctness(ours, 'crop')['correctness']
    assert abs(L.liu2017(items, **switch)['correctness'] - got) > 1e-3, switch
