"""Scoring with coco-caption (pycocoevalcap): exact agreement with the scorers called directly, perfect and wrong
captions, the no-Java path, the paper comparison and the report files. METEOR's JVM starts twice (~15 s)."""
from pathlib import Path
import pytest
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.cider.cider import Cider

from show_attend_tell import metrics as ev
from show_attend_tell.captions import read_karpathy

FIXTURES = Path(__file__).parent/"fixtures"

ALL = ('bleu', 'meteor', 'rouge', 'cider')


@pytest.fixture(scope='module')
def flickr():
    return read_karpathy(FIXTURES/'dataset_flickr_mini.json', image_root=FIXTURES, check=False)


@pytest.fixture(scope='module')
def refs(flickr):
    return {r.image_id: list(r.raw) for r in flickr}


@pytest.fixture(scope='module')
def model_like(flickr):
    "Plausible but imperfect captions: the second reference of each image with its last two words cut."
    return {r.image_id: ' '.join(r.raw[1].split()[:-2]) for r in flickr}


@pytest.fixture(scope='module')
def ours(model_like, refs):
    return ev.score_captions(model_like, refs, ALL)


def test_keys_and_ranges(ours):
    assert list(ours) == ['BLEU-1', 'BLEU-2', 'BLEU-3', 'BLEU-4', 'METEOR', 'ROUGE-L', 'CIDEr']
    for k, v in ours.items():
        assert isinstance(v, float) and 0 < v, k
        if k != 'CIDEr': assert v < 1, k


def test_equals_pycocoevalcap_called_directly(model_like, refs, ours):
    "The same numbers as COCOEvalCap.evaluate()'s recipe: PTBTokenizer on gts and res, then each scorer."
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{'caption': c} for c in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{'caption': model_like[k]}] for k in refs})
    direct = dict(zip(('BLEU-1', 'BLEU-2', 'BLEU-3', 'BLEU-4'), Bleu(4).compute_score(gts, res, verbose=0)[0]))
    m = Meteor()
    direct['METEOR'] = m.compute_score(gts, res)[0]
    del m
    direct['ROUGE-L'] = Rouge().compute_score(gts, res)[0]
    direct['CIDEr'] = Cider().compute_score(gts, res)[0]
    assert ours == pytest.approx(direct, rel=0, abs=0)


def test_perfect_prediction(refs):
    perfect = {k: v[0] for k, v in refs.items()}
    s = ev.score_captions(perfect, refs, ALL)
    for n in (1, 2, 3, 4): assert s[f'BLEU-{n}'] == pytest.approx(1.0, abs=1e-6)
    assert s['METEOR'] > 0.9
    assert s['ROUGE-L'] == pytest.approx(1.0)


def test_wrong_captions_score_lower(refs, ours):
    keys = list(refs)
    wrong = {k: refs[keys[(i + 3) % len(keys)]][0] for i, k in enumerate(keys)}   # another image's caption
    s = ev.score_captions(wrong, refs, ('bleu', 'rouge', 'cider'))
    for k in s: assert s[k] < ours[k], k


def test_ptb_tokenize_is_pycocoevalcaps_and_prints_nothing(capfd, refs):
    got = ev.ptb_tokenize(refs)
    out, err = capfd.readouterr()
    assert 'PTBTokenizer' not in out + err, "the JVM's 'PTBTokenizer tokenized ...' line leaked"
    want = PTBTokenizer().tokenize({k: [{'caption': c} for c in v] for k, v in refs.items()})
    assert got == want


def test_python_tokenizer_matches_ptb_on_fixture_captions(flickr):
    coco = read_karpathy(FIXTURES/'dataset_coco_mini.json', image_root=FIXTURES, check=False)
    caps = [c for d in (flickr, coco) for r in d for c in r.raw]
    caps += ["It isn't the dogs' ball: 1,000 balls... 'no'!", 'A "big" (brown) dog; the man cannot see it.']
    assert [ev.simple_tokenize(c) for c in caps] == ev.ptb_tokenize({0: caps})[0]


def test_java_missing_is_one_clear_line(monkeypatch, refs):
    perfect = {k: v[0] for k, v in refs.items()}
    monkeypatch.setattr(ev, 'find_java', lambda: None)
    with pytest.raises(ev.JavaMissingError) as e:
        ev.score_captions(perfect, refs)
    msg = str(e.value)
    assert 'METEOR needs Java' in msg and 'apt-get install default-jre-headless' in msg and '\n' not in msg
    with pytest.raises(ev.JavaMissingError, match='PTB tokenizer'):
        ev.score_captions(perfect, refs, ('bleu',))
    s = ev.score_captions(perfect, refs, ('bleu', 'rouge', 'cider'), tokenizer='python')   # no Java needed
    assert s['BLEU-4'] == pytest.approx(1.0, abs=1e-6)


def test_bad_inputs(refs):
    with pytest.raises(ev.MetricsError, match='no prediction'):
        ev.score_captions({}, refs)
    some = dict(list(refs.items())[:2])
    with pytest.raises(ev.MetricsError, match='have no prediction'):
        ev.score_captions({k: 'a' for k in list(some)[:1]}, some)
    with pytest.raises(ev.MetricsError, match="unknown tokenizer 'nltk'"):
        ev.score_captions({k: 'a' for k in some}, some, ('bleu',), tokenizer='nltk')


def test_spice_skipped_with_warning_when_unavailable(refs):
    if ev.spice_available(): pytest.skip('SPICE can run here')
    some = dict(list(refs.items())[:2])
    with pytest.warns(UserWarning, match='SPICE skipped'):
        s = ev.score_captions({k: v[0] for k, v in some.items()}, some, ('bleu', 'spice'), tokenizer='python')
    assert 'SPICE' not in s and 'BLEU-4' in s
