"""CIDEr-D (`show_attend_tell.cider`) against pycocoevalcap's Cider and a loop-by-loop transcription of its scorer,
on a synthetic COCO-like corpus: the notebook checks small cases, these the corpus-sized ones."""
import json, math
from collections import Counter
import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider
from show_attend_tell import cider


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
    scorer = cider.CiderD(refs)
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
    scorer = cider.CiderD(corpus)
    want = _cider_d_loops(corpus, other, res)
    np.testing.assert_allclose(scorer.compute_score(other, res)[1], want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(scorer.score(keys, [res[k][0] for k in keys], refs=other), want, rtol=0, atol=1e-6)
    assert want[0] > 0                                       # 'zebra violin' is in no corpus reference, yet matches its own
    with pytest.raises(cider.CiderError, match='no references'): scorer.score([10**6], ['a'])
    with pytest.raises(cider.CiderError, match='refs has no references for image'): scorer.score([keys[0]], ['a'], refs={})


def test_cider_d_compute_score_is_never_stale():
    "compute_score against a reference set that changed since the last call (the same dict) scores the new references."
    refs = _synthetic_corpus(60)
    res = _candidates_for(refs)
    gts = {k: list(v) for k, v in refs.items()}
    scorer = cider.CiderD(gts)
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
    scorer = cider.CiderD(refs)
    back = cider.CiderD.load(scorer.save(tmp_path/'refs'))
    assert isinstance(back.stats.ids, np.memmap) and not back.stats.norms.flags.writeable
    np.testing.assert_array_equal(back.score(keys, [res[k][0] for k in keys]), scorer.score(keys, [res[k][0] for k in keys]))
    assert scorer.stats.nbytes / len(refs) < 4000, scorer.stats
    named = cider.CiderD({f"img{k}": v for k, v in list(refs.items())[:20]})
    again = cider.CiderD.load(named.save(tmp_path/'named'))
    np.testing.assert_array_equal(again.score(['img3', 'img5'], ['a w1', 'the']), named.score(['img3', 'img5'], ['a w1', 'the']))
    with pytest.raises(cider.CiderError, match='integers or all strings'): cider.CiderD({(1, 2): ['a b']}).save(tmp_path/'t')
    with pytest.raises(cider.CiderError, match='meta.json is missing'): cider.CiderD.load(tmp_path)
    assert json.loads((tmp_path/'refs'/'meta.json').read_text())['n'] == 4


def test_cider_d_edge_cases():
    "Empty candidates and references, candidates sharing no n-gram, a corpus of empty captions, bad arguments."
    scorer = cider.CiderD({1: ['a dog', ''], 2: ['a cat on a mat']})
    np.testing.assert_array_equal(scorer.score([1, 2, 2], ['', 'zebra', 'violin zebra']), [0., 0., 0.])
    assert scorer.score([], []).shape == (0,)
    assert cider.CiderD({1: [''], 2: ['']}).score([1], ['a dog']).tolist() == [0.]
    with pytest.raises(cider.CiderError, match='2 keys for 1 captions'): scorer.score([1, 2], ['a'])
    with pytest.raises(cider.CiderError, match='non-empty corpus'): cider.CiderD({})
    with pytest.raises(cider.CiderError, match='non-empty list'): cider.CiderD({1: 'a dog'})