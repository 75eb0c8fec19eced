"Decoding: greedy, sampling and batched beam search against the per-image reference; `caption` and `sat_caption`."
import math
import pytest, torch
from show_attend_tell.decoding import greedy_decode, sample_decode, beam_search, beam_search_single
from show_attend_tell.vocab import PAD, START, END

from show_attend_tell.config import preset
from show_attend_tell.decoder import ShowAttendTell

from small_models import Peaked  # tests/fixtures/, on the path through conftest.py


# ---------------------------------------------------------------------------------------------------------
# models

class Spy(torch.nn.Module):
    "Record every batch of previous words a step-API model is fed."
    def __init__(self, model):
        super().__init__()
        self.model, self.fed = model, []
    def init_state(self, feats, feat_mask=None): return self.model.init_state(feats, feat_mask)
    def reorder_state(self, state, index): return self.model.reorder_state(state, index)
    def step(self, prev, state):
        self.fed.append(prev.tolist())
        return self.model.step(prev, state)


class Bigram(torch.nn.Module):
    "p(y_t | y_{t-1}) from a table (exact scores by hand); alpha depends on the annotations and the previous word."
    def __init__(self, probs):
        super().__init__()
        self.register_buffer('logp', torch.tensor(probs, dtype=torch.float64).log())
    def init_state(self, feats, feat_mask=None): return {'feats': feats.double()}
    def reorder_state(self, state, index): return {k: v.index_select(0, index) for k, v in state.items()}
    def step(self, prev, state):
        return self.logp[prev], (state['feats'][..., 0] * (1 + prev[:, None])).softmax(-1), state


def real_model(seed, V=50, D=24, attention='soft', sharpness=8.0, end_bias=-4.0, end_slope=1.0, double=True):
    "A random ShowAttendTell, sharpened, in float64 so that batch size cannot flip a choice."
    torch.manual_seed(seed)
    m = ShowAttendTell(preset('tiny', attention=attention, hidden_dim=64, embed_dim=32, attn_dim=32), vocab_size=V, feat_dim=D)
    if double: m = m.double()
    return Peaked(m, sharpness, end_bias, end_slope).eval()


def random_feats(B, L=16, D=24, seed=0, double=True):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(B, L, D, generator=g)
    return f.double() if double else f


def table_score(probs, ids, finished):
    "log p of a caption under a bigram table, <end> included when the caption finished."
    seq = [START] + ids + ([END] if finished else [])
    return sum(math.log(probs[a][b]) for a, b in zip(seq, seq[1:]))


#          pad start end  unk   a    b    c    d
CHAIN = [[0,   0,    1,   0,   0,   0,   0,   0],     # <pad>
         [0,   0,    0,   0,   .7,  .3,  0,   0],     # <start> → a | b
         [0,   0,    1,   0,   0,   0,   0,   0],     # <end>
         [0,   0,    1,   0,   0,   0,   0,   0],     # <unk>
         [0,   0,    .5,  0,   0,   0,   .3,  .2],    # a → <end> | c | d
         [0,   0,    .2,  0,   0,   0,   .8,  0],     # b → <end> | c
         [0,   0,    .2,  0,   0,   0,   0,   .8],    # c → <end> | d
         [0,   0,    .8,  0,   0,   0,   .2,  0]]     # d → <end> | c
A, B_, C, D_ = 4, 5, 6, 7


# ---------------------------------------------------------------------------------------------------------
# greedy, sampling, beam 1

@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_beam_1_is_greedy(seed):
    model, feats = real_model(seed), random_feats(7, seed=seed)
    g = greedy_decode(model, feats, max_len=15)
    b = beam_search(model, feats, beam_size=1, max_len=15)
    assert [r['ids'] for r in b] == [r['ids'] for r in g]
    assert [r['finished'] for r in b] == [r['finished'] for r in g]
    for x, y in zip(b, g):
        assert x['score'] == pytest.approx(y['score'], abs=1e-9)
        assert torch.allclose(x['alphas'], y['alphas'])
    assert len({len(r['ids']) for r in g}) > 1, "the fixture should give captions of several lengths"
    assert any(r['finished'] for r in g)


def test_greedy_is_argmax_of_the_model_and_scores_add_up():
    model, feats = real_model(5), random_feats(3, seed=5)
    for i, r in enumerate(greedy_decode(model, feats, max_len=12)):
        state = model.init_state(feats[i:i+1])
        prev, total = torch.tensor([START]), 0.0
        for t, w in enumerate(r['ids'] + ([END] if r['finished'] else [])):
            logp, alpha, state = model.step(prev, state)
            logp[:, [PAD, START]] = float('-inf')
            assert logp.argmax(-1).item() == w
            if t < len(r['ids']): assert torch.allclose(alpha[0].float(), r['alphas'][t])
            total += logp[0, w].item(); prev = torch.tensor([w])
        assert r['score'] == pytest.approx(total, abs=1e-9)


def test_sampling_reproducible_and_temperature():
    model, feats = real_model(6, sharpness=1.0, end_bias=0.0, end_slope=0.0), random_feats(5, seed=6)
    gen = lambda s: torch.Generator().manual_seed(s)
    a = sample_decode(model, feats, max_len=10, generator=gen(0))
    assert [r['ids'] for r in a] == [r['ids'] for r in sample_decode(model, feats, max_len=10, generator=gen(0))]
    assert [r['ids'] for r in a] != [r['ids'] for r in sample_decode(model, feats, max_len=10, generator=gen(1))]
    cold = sample_decode(model, feats, temperature=1e-6, max_len=10, generator=gen(2))
    assert [r['ids'] for r in cold] == [r['ids'] for r in greedy_decode(model, feats, max_len=10)]
    for r in a:
        assert r['alphas'].shape == (len(r['ids']), feats.shape[1])
        assert not {PAD, START, END} & set(r['ids'])
    with pytest.raises(ValueError, match='temperature'): sample_decode(model, feats, temperature=0)


# ---------------------------------------------------------------------------------------------------------
# batched beam == per-image beam

@pytest.mark.parametrize('k', [3, 5])
@pytest.mark.parametrize('seed', [0, 1])
def test_batched_beam_equals_per_image(k, seed):
    model, feats = real_model(10 + seed), random_feats(9, seed=seed)
    mask = torch.ones(feats.shape[:2], dtype=torch.bool)
    for i in range(0, 9, 3): mask[i, 16 - 2 * i:] = False        # some images have fewer real locations
    spy = Spy(model)
    batched = beam_search(spy, feats, mask, beam_size=k, max_len=20, n_best=k)
    lengths = {len(r['ids']) for r in batched}
    assert len(lengths) > 1, "images should stop at different steps"
    n_rows = [len(f) for f in spy.fed]
    assert n_rows[0] == 9 and max(n_rows) <= 9 * k and n_rows[-1] < n_rows[1], "one step for all images × beams, shrinking"
    for i, r in enumerate(batched):
        ref = beam_search_single(model, feats[i], mask[i], beam_size=k, max_len=20, n_best=k)
        assert r['ids'] == ref['ids'], f"image {i}"
        assert r['score'] == pytest.approx(ref['score'], abs=1e-9)
        assert [h['ids'] for h in r['n_best']] == [h['ids'] for h in ref['n_best']]
        assert torch.allclose(r['alphas'], ref['alphas'])
        if len(r['ids']) and (~mask[i]).any(): assert r['alphas'][:, ~mask[i]].abs().max() == 0, "masked locations get no attention"


def test_hard_attention_model_decodes_deterministically():
    "In eval mode a hard-attention model uses its expected context: decoding is repeatable, batched == per image."
    model, feats = real_model(50, attention='hard'), random_feats(5, seed=50)
    a = beam_search(model, feats, beam_size=3, max_len=12)
    assert [r['ids'] for r in a] == [r['ids'] for r in beam_search(model, feats, beam_size=3, max_len=12)]
    assert [r['ids'] for r in a] == [beam_search_single(model, f, beam_size=3, max_len=12)['ids'] for f in feats]
    assert [r['ids'] for r in beam_search(model, feats, beam_size=1, max_len=12)] == [r['ids'] for r in greedy_decode(model, feats, max_len=12)]


def test_beam_beats_or_matches_greedy_in_model_score():
    model, feats = real_model(20, sharpness=3.0), random_feats(8, seed=20)
    g = greedy_decode(model, feats, max_len=15)
    b = beam_search(model, feats, beam_size=5, max_len=15)
    assert sum(x['score'] >= y['score'] - 1e-9 for x, y in zip(b, g)) >= 7
    assert sum(x['score'] > y['score'] + 1e-6 for x, y in zip(b, g)) >= 1, "a wider beam should find better captions somewhere"


# ---------------------------------------------------------------------------------------------------------
# <end>, max_len, length normalisation, alphas: on a model whose scores we know

def test_finished_hypothesis_is_not_extended():
    spy, feats = Spy(Bigram(CHAIN)), torch.randn(2, 5, 3)
    for batched in (True, False):
        spy.fed = []
        if batched: res = beam_search(spy, feats, beam_size=3, max_len=8, n_best=3)
        else: res = [beam_search_single(spy, f, beam_size=3, max_len=8, n_best=3) for f in feats]
        assert END not in sum(spy.fed, []), "<end> must never be fed back: finished hypotheses leave the beam"
        # only 2 first words are possible, so the batched grid has one empty slot (fed <pad>) on the second step only
        assert [PAD in f for f in spy.fed] == [False, batched] + [False] * (len(spy.fed) - 2)
        for r in res:
            assert r['ids'] == [A] and r['finished']
            # 'a <end>' finished at step 2: its score is exactly what it was then, log(.7 × .5)
            assert r['score'] == pytest.approx(math.log(.7 * .5), abs=1e-12)
            assert len(r['n_best']) == 3
            for h in r['n_best']:
                assert END not in h['ids'] and PAD not in h['ids']
                assert h['score'] == pytest.approx(table_score(CHAIN, h['ids'], h['finished']), abs=1e-12)
                assert h['alphas'].shape == (len(h['ids']), 5)


def test_search_stops_when_no_live_hypothesis_can_win():
    "With k finished and the live ones below them, the search ends early (steps < max_len)."
    spy = Spy(Bigram(CHAIN))
    beam_search(spy, torch.randn(1, 5, 3), beam_size=2, max_len=30)
    assert len(spy.fed) < 10


@pytest.mark.parametrize('k', [1, 3])
def test_max_len_without_end_still_returns_a_caption(k):
    never_end = [row[:] for row in CHAIN]
    for row in never_end[1:]: row[END] = 0.0                        # <end> impossible after any word
    never_end[A] = [0, 0, 0, 0, 0, 0, .6, .4]
    never_end[B_] = [0, 0, 0, 0, 0, 0, 1., 0]
    never_end[C] = [0, 0, 0, 0, .1, 0, 0, .9]
    never_end[D_] = [0, 0, 0, 0, .5, 0, .5, 0]
    model, feats = Bigram(never_end), torch.randn(3, 5, 3)
    for r in beam_search(model, feats, beam_size=k, max_len=6, n_best=2) + greedy_decode(model, feats, max_len=6):
        assert len(r['ids']) == 6 and not r['finished']
        assert r['alphas'].shape == (6, 5)
        assert r['score'] == pytest.approx(table_score(never_end, r['ids'], False), abs=1e-12)


def test_length_normalisation_changes_the_ranking():
    model, feats = Bigram(CHAIN), torch.randn(1, 5, 3)
    raw = beam_search(model, feats, beam_size=3, max_len=8)[0]
    normed = beam_search(model, feats, beam_size=3, max_len=8, length_norm=1.0)[0]
    assert raw['ids'] == [A]                                          # p = .35, the most likely caption
    assert normed['ids'] == [B_, C, D_]                                # .3·.8·.8·.8 over 4 tokens beats .35 over 2
    assert normed['norm_score'] == pytest.approx(math.log(.3 * .8 ** 3) / 4, abs=1e-12)
    assert normed['score'] < raw['score'] and normed['norm_score'] > raw['score'] / 2
    single = beam_search_single(model, feats[0], beam_size=3, max_len=8, length_norm=1.0)
    assert single['ids'] == normed['ids']


def test_alphas_one_row_per_word_and_rows_sum_to_one():
    model, feats = real_model(30), random_feats(6, seed=30)
    for rs in (beam_search(model, feats, beam_size=4, max_len=12, n_best=4), greedy_decode(model, feats, max_len=12)):
        for r in rs:
            for h in r.get('n_best', [r]):
                assert h['alphas'].shape == (len(h['ids']), feats.shape[1])
                if len(h['ids']): assert torch.allclose(h['alphas'].sum(-1), torch.ones(len(h['ids'])), atol=1e-5)


def test_decoding_restores_training_mode_and_checks_args():
    model = real_model(0)
    model.train()
    beam_search(model, random_feats(2), beam_size=2, max_len=3)
    assert model.training
    with pytest.raises(ValueError, match='beam_size'): beam_search(model, random_feats(2), beam_size=0)
    with pytest.raises(ValueError, match='max_len'): greedy_decode(model, random_feats(2), max_len=0)
    with pytest.raises(ValueError, match=r'\(B, L, D\)'): beam_search(model, random_feats(2)[0])


# ---------------------------------------------------------------------------------------------------------
# caption() and sat_caption
