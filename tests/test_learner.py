"The Learner (nbs/23_learner.ipynb): a tiny model learns one batch by heart, with soft and with hard attention."
import math
import pytest, torch

from show_attend_tell.checkpoint import build_model
from show_attend_tell.learner import make_learner
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


def test_one_batch_overfit_soft(shapes):
    learn = _one_batch_learner(shapes, tiny_cfg('soft', lr=1e-2, dropout=0.0))
    before = _valid_nll(learn)
    learn.fit(150)
    after = _valid_nll(learn)
    print(f"soft, one batch: NLL/word {before:.3f} -> {after:.4f} ({1 - after/before:.1%} lower)")
    assert after < 0.1 * before


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
# checkpoints
