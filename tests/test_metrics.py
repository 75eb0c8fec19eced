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


# ---------------------------------------------------------------------------------------------------------
# CIDEr-D with the training references' statistics in arrays (the reward of self-critical training)

import json, math
from collections import Counter
import numpy as np


def _synthetic_corpus(n_images=300, vocab=400, seed=0):
    "COCO-like references: function words, a few topic words per image, Zipf-distributed others; 4 to 7 captions of 1 to 20 words."
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(vocab)]
    function = ['a', 'on', 'of', 'the', 'in', 'with']
    p = 1.0 / np.arange(1, vocab + 1); p /= p.sum()
    refs = {}
    for i in range(n_images):
        topic = rng.choice(vocab, 4, p=p)
        refs[i] = [' '.join(function[rng.integers(6)] if u < 0.4 else words[topic[rng.integers(4)]] if u < 0.75
                            else words[rng.choice(vocab, p=p)] for u in rng.random(rng.integers(1, 21)))
                   for _ in range(rng.integers(4, 8))]
    return refs


def _candidates_for(refs, seed=1):
    "Per image: a reference with words dropped and repeated, another image's reference, unseen words, '' and one word."
    rng, keys = np.random.default_rng(seed), sorted(refs)
    out = {}
    for j, k in enumerate(keys):
        r = refs[k][rng.integers(len(refs[k]))].split()
        out[k] = [[' '.join([w for w in r if rng.random() > 0.3] + r[:2]), refs[keys[(j + 7) % len(keys)]][0],
                   'zebra ' + ' '.join(r[:3]) + ' violin violin', '', r[0]][j % 5]]
    return out


def _cider_d_loops(corpus, refs, res, n=4, sigma=6.0):
    "CIDEr-D as pycocoevalcap's CiderScorer computes it, loop by loop, with df and N from `corpus` (pycocoevalcap takes them from `refs`)."
    grams = lambda s: Counter(tuple(s.split()[i:i + k]) for k in range(1, n + 1) for i in range(len(s.split()) - k + 1))
    df = Counter(g for rs in corpus.values() for g in set().union(*(grams(r) for r in rs)))
    log_n = math.log(float(len(corpus)))
    def vec(s):
        v, norm = [{} for _ in range(n)], [0.0] * n
        for g, tf in grams(s).items():
            v[len(g) - 1][g] = tf * (log_n - math.log(max(1.0, df[g]))); norm[len(g) - 1] += v[len(g) - 1][g] ** 2
        return v, [math.sqrt(x) for x in norm], max(len(s.split()) - 1, 0)
    out = []
    for k in refs:
        vc, nc, lc = vec(res[k][0])
        total = 0.0
        for r in refs[k]:
            vr, nr, lr = vec(r)
            for m in range(n):
                val = sum(min(w, vr[m].get(g, 0.0)) * vr[m].get(g, 0.0) for g, w in vc[m].items())
                if nc[m] != 0 and nr[m] != 0: val /= nc[m] * nr[m]
                total += val * math.exp(-float(lc - lr) ** 2 / (2 * sigma ** 2))
        out.append(total / n / len(refs[k]) * 10.0)
    return np.array(out)


def test_cider_d_equals_pycocoevalcap_on_a_synthetic_corpus():
    "Same corpus for df: CiderD equals pycocoevalcap's Cider to 1e-6 per image; score() and compute_score() agree."
    refs = _synthetic_corpus()
    res = _candidates_for(refs)
    want = Cider().compute_score(refs, res)[1]
    scorer = ev.CiderD(refs)
    np.testing.assert_allclose(scorer.compute_score(refs, res)[1], want, rtol=0, atol=1e-6)
    keys = list(refs)
    np.testing.assert_allclose(scorer.score(keys, [res[k][0] for k in keys]), want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(_cider_d_loops(refs, refs, res), want, rtol=0, atol=1e-9)   # the loop version is the same scorer


def test_cider_d_df_from_the_corpus_against_other_references():
    "References outside the df corpus (refs=, compute_score): the loops' values with the corpus's df; unseen n-grams still match."
    corpus = _synthetic_corpus()
    keys = sorted(corpus)[:40]
    other = {k: [' '.join(r.split()[::-1]) for r in corpus[k][:3]] + ['zebra violin zebra violin'] for k in keys}
    res = {k: ['a zebra violin zebra violin'] if j % 3 == 0 else _candidates_for(corpus)[k] for j, k in enumerate(keys)}
    scorer = ev.CiderD(corpus)
    want = _cider_d_loops(corpus, other, res)
    np.testing.assert_allclose(scorer.compute_score(other, res)[1], want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(scorer.score(keys, [res[k][0] for k in keys], refs=other), want, rtol=0, atol=1e-6)
    assert want[0] > 0                                       # 'zebra violin' is in no corpus reference, yet matches its own
    with pytest.raises(ev.MetricsError, match='no references'): scorer.score([10**6], ['a'])
    with pytest.raises(ev.MetricsError, match='refs has no references for image'): scorer.score([keys[0]], ['a'], refs={})


def test_cider_d_compute_score_is_never_stale():
    "compute_score against a reference set that changed since the last call (the same dict) scores the new references."
    refs = _synthetic_corpus(60)
    res = _candidates_for(refs)
    gts = {k: list(v) for k, v in refs.items()}
    scorer = ev.CiderD(gts)
    first = scorer.compute_score(gts, res)[1]
    k0 = next(iter(gts))
    gts[k0] = ['nothing alike here']
    second = scorer.compute_score(gts, res)[1]
    assert second[0] == 0 and first[0] > 0
    np.testing.assert_allclose(second[1:], first[1:], rtol=0, atol=1e-12)
    np.testing.assert_allclose(second, _cider_d_loops(refs, gts, res), rtol=0, atol=1e-6)


def test_cider_d_saved_statistics_are_memory_mapped_and_small(tmp_path):
    "save/load: the same scores from read-only memory-mapped arrays, a few kB per image; string keys work, tuple keys are refused."
    refs = _synthetic_corpus(500)
    res = _candidates_for(refs)
    keys = list(refs)
    scorer = ev.CiderD(refs)
    back = ev.CiderD.load(scorer.save(tmp_path/'refs'))
    assert isinstance(back.stats.ids, np.memmap) and not back.stats.norms.flags.writeable
    np.testing.assert_array_equal(back.score(keys, [res[k][0] for k in keys]), scorer.score(keys, [res[k][0] for k in keys]))
    assert scorer.stats.nbytes / len(refs) < 4000, scorer.stats
    named = ev.CiderD({f"img{k}": v for k, v in list(refs.items())[:20]})
    again = ev.CiderD.load(named.save(tmp_path/'named'))
    np.testing.assert_array_equal(again.score(['img3', 'img5'], ['a w1', 'the']), named.score(['img3', 'img5'], ['a w1', 'the']))
    with pytest.raises(ev.MetricsError, match='integers or all strings'): ev.CiderD({(1, 2): ['a b']}).save(tmp_path/'t')
    with pytest.raises(ev.MetricsError, match='meta.json is missing'): ev.CiderD.load(tmp_path)
    assert json.loads((tmp_path/'refs'/'meta.json').read_text())['n'] == 4


def test_cider_d_edge_cases():
    "Empty candidates and references, candidates sharing no n-gram, a corpus of empty captions, bad arguments."
    scorer = ev.CiderD({1: ['a dog', ''], 2: ['a cat on a mat']})
    np.testing.assert_array_equal(scorer.score([1, 2, 2], ['', 'zebra', 'violin zebra']), [0., 0., 0.])
    assert scorer.score([], []).shape == (0,)
    assert ev.CiderD({1: [''], 2: ['']}).score([1], ['a dog']).tolist() == [0.]
    with pytest.raises(ev.MetricsError, match='2 keys for 1 captions'): scorer.score([1, 2], ['a'])
    with pytest.raises(ev.MetricsError, match='non-empty corpus'): ev.CiderD({})
    with pytest.raises(ev.MetricsError, match='non-empty list'): ev.CiderD({1: 'a dog'})
