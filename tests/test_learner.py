"The Learner (nbs/24_learner.ipynb): a tiny model learns one batch by heart with hard attention; the compiled training step equals eager."
import math
import pytest, torch
from fastai.callback.core import Callback, CancelFitException

from show_attend_tell.checkpoint import build_model
from show_attend_tell.learner import LearnerError, make_learner
from show_attend_tell.features import load_prepared
from show_attend_tell.loaders import get_dls

from small_models import tiny_cfg  # tests/fixtures/, on the path through conftest.py

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------------
# the estimator


def _one_batch_learner(shapes, cfg):
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader as FDL
    data, vocab, cache = load_prepared(shapes)
    dls = get_dls(data, vocab, cache=cache, bs=cfg.batch_size, seed=0)
    feats, caps = next(iter(dls.train))
    ds = torch.utils.data.TensorDataset(feats, caps)
    one = DataLoaders(FDL(ds, bs=len(caps)), FDL(ds, bs=len(caps)), device='cpu')
    torch.manual_seed(0)
    model = build_model(cfg, len(vocab), cache.feat_dim)
    return make_learner(one, model, cfg, vocab, bleu=False, progress=False)


def _valid_nll(learn):
    "Validation negative log-likelihood per word (the `nll` metric)."
    return learn.validate()[1]


def test_one_batch_overfit_hard(shapes):
    learn = _one_batch_learner(shapes, tiny_cfg('hard', lr=1e-2, dropout=0.0))
    before = _valid_nll(learn)
    learn.fit(80)
    rows = [dict(zip(learn.recorder.metric_names[1:-1], v)) for v in learn.recorder.values]
    after = _valid_nll(learn)
    print(f"hard, one batch: NLL/word {before:.3f} -> {after:.4f} ({1 - after/before:.1%} lower); "
          f"baseline {rows[-1]['baseline']:.2f}, adv_msq first/last sampled epochs "
          f"{next(r['adv_msq'] for r in rows if not math.isnan(r['adv_msq'])):.2f} / "
          f"{next(r['adv_msq'] for r in rows[::-1] if not math.isnan(r['adv_msq'])):.3f}")
    assert after < 0.3 * before
    sampled = [r for r in rows if not math.isnan(r['adv_msq'])]
    assert 0.2 * len(rows) < len(sampled) < 0.8 * len(rows)          # about half the passes sample (p = 0.5)
    assert rows[-1]['baseline'] < 0 and learn.loss_func.baseline == pytest.approx(rows[-1]['baseline'])


# ---------------------------------------------------------------------------------------------------------
# the compiled training step


class _Steps(Callback):
    "The caption length, loss and gradients of the first `n` training steps; then the fit stops."
    def __init__(self, n): self.n = n
    def before_fit(self): self.steps = []
    def after_backward(self):
        self.steps.append((self.yb[0].shape[1], float(self.loss.detach()), [p.grad.clone() for p in self.model.parameters()]))
    def after_step(self):
        if len(self.steps) == self.n: raise CancelFitException()


def _steps(shapes, cfg, compile, n=5):
    data, vocab, cache = load_prepared(shapes)
    dls = get_dls(data, vocab, cache=cache, bs=cfg.batch_size, seed=0, device='cpu')
    torch.manual_seed(0)
    rec = _Steps(n)
    learn = make_learner(dls, build_model(cfg, len(vocab), cache.feat_dim), cfg, vocab, bleu=False, progress=False,
                         compile=compile, cbs=[rec])
    learn.fit(1)
    return rec.steps, learn


@pytest.mark.parametrize('attention', ['soft', 'hard'])
def test_compiled_step_equals_eager(shapes, attention):
    """`compile=` runs the training forward and backward through torch.compile, a graph per caption length: the losses and
    gradients of five steps of several lengths equal eager's within float rounding. The backend is 'aot_eager' (the graph and
    its autograd as inductor gets them, run by PyTorch's kernels): inductor works here too, but compiles a length in over a
    minute on 2 cores."""
    from torch._dynamo.utils import counters
    cfg = tiny_cfg(attention, dropout=0.0, batch_size=16)
    graphs = counters['stats']['unique_graphs']
    eager, _ = _steps(shapes, cfg, False)
    compiled, learn = _steps(shapes, cfg, 'aot_eager')
    graphs_after = counters['stats']['unique_graphs']
    assert counters['stats']['unique_graphs'] - graphs >= len({n for n, _, _ in compiled}) > 1   # a graph per length (at least)
    assert [n for n, _, _ in eager] == [n for n, _, _ in compiled]
    worst = 0.
    for (_, le, ge), (_, lc, gc) in zip(eager, compiled):
        assert lc == pytest.approx(le, rel=1e-5, abs=1e-5)
        for a, b in zip(ge, gc):
            worst = max(worst, float((a - b).abs().max() / a.abs().max().clamp_min(1.)))
    assert worst < (1e-6 if attention == 'soft' else 1e-4)          # hard: REINFORCE's large terms, summed in another order
    print(f"{attention}: compiled vs eager over {len(eager)} steps: largest gradient difference {worst:.1e} (of the largest entry)")
    assert learn.validate()[0] > 0 and counters['stats']['unique_graphs'] == graphs_after   # validation runs eager: no new graph


def test_learner_errors_are_one_line_sat_errors(shapes):
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader as FDL
    data, vocab, cache = load_prepared(shapes)
    cfg = tiny_cfg()
    model = build_model(cfg, len(vocab), cache.feat_dim)
    ds = torch.utils.data.TensorDataset(torch.zeros(2, 16, 8), torch.zeros(2, 4, dtype=torch.long))
    bare = DataLoaders(FDL(ds, bs=2), FDL(ds, bs=2))
    with pytest.raises(LearnerError, match=r'BLEU-4 needs eval_dl='): make_learner(bare, model, cfg, vocab)
    with pytest.raises(LearnerError, match=r'checkpoints needs the vocabulary'): make_learner(bare, model, cfg, bleu=False, out_dir='x')
