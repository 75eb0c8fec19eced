"Losses (nbs/14_losses.ipynb): the REINFORCE estimator is unbiased, the baseline lowers its variance, the loss value and its masking."
import math
import pytest, torch

from show_attend_tell.attention import doubly_stochastic_penalty
from show_attend_tell.checkpoint import build_model
from show_attend_tell.losses import CaptionLoss, reinforce_loss, update_baseline

from small_models import tiny_cfg  # tests/fixtures/, on the path through conftest.py

torch.set_num_threads(1)


def _single_sample_grads(theta, reward_fn, baseline, n, gen):
    "n single-sample gradient estimates of ∇_θ E_{s~softmax(θ)}[r_θ(s)], each from `reinforce_loss` by autograd."
    th = theta.repeat(n, 1).requires_grad_()                       # one copy of θ per sample: per-sample gradients
    s = torch.multinomial(theta.softmax(0), n, replacement=True, generator=gen)
    logp_s = th.log_softmax(1).gather(1, s[:, None]).squeeze(1)
    (-reinforce_loss(reward_fn(th, s), logp_s, baseline=baseline)).sum().backward()
    return th.grad.double()


@pytest.mark.parametrize('reward', ['table', 'depends_on_theta'])
@pytest.mark.parametrize('baseline', ['none', 'mean', 'off'])
def test_reinforce_gradient_is_unbiased(reward, baseline):
    "The mean of many single-sample estimates equals the exact gradient within 4 standard errors (every component)."
    gen = torch.Generator().manual_seed(1)
    K, n = 6, 40000
    theta = torch.randn(K, generator=gen, dtype=torch.float64)
    table = torch.randn(K, generator=gen, dtype=torch.float64) * 2
    if reward == 'table':                      # a fixed reward r(s): only the score-function term
        r_fn = lambda th, s: table[s]
        exact_fn = lambda t: (t.softmax(0) * table).sum()
    else:                                      # r_θ(s) = log q_θ(s): the log-likelihood term of eq. 11 as well
        r_fn = lambda th, s: (th * 0.7 + table).log_softmax(1).gather(1, s[:, None]).squeeze(1)
        exact_fn = lambda t: (t.softmax(0) * (t * 0.7 + table).log_softmax(0)).sum()
    b = {'none': 0., 'mean': float(exact_fn(theta)), 'off': 5.}[baseline]
    exact = torch.autograd.functional.jacobian(exact_fn, theta)
    est = _single_sample_grads(theta, r_fn, b, n, gen)
    se = est.std(0) / math.sqrt(n)
    z = ((est.mean(0) - exact) / se).abs()
    assert (z < 4).all(), f"estimate {est.mean(0)} vs exact {exact} (z = {z})"
    assert (se < 0.05).all()                   # the check has teeth: the standard errors are small


def test_baseline_reduces_variance_and_update_rule():
    gen = torch.Generator().manual_seed(0)
    theta, table = torch.randn(5, generator=gen), torch.randn(5, generator=gen) + 3.
    v = {}
    for b in (0., float((theta.softmax(0) * table).sum())):
        v[b] = _single_sample_grads(theta, lambda th, s: table[s], b, 20000, gen).var(0).sum()
    assert v[max(v)] < 0.5 * v[0.]
    r = torch.tensor([-10., -12.])
    assert update_baseline(-5., r, 0.9) == pytest.approx(0.9 * -5 + 0.1 * -11)


def test_loss_value_and_masking():
    "Padding does not count: a caption padded with PAD has the loss of the same caption unpadded."
    cfg = tiny_cfg(alpha_c=1.0)
    V, L, D = 10, 9, 8
    torch.manual_seed(0)
    model = build_model(cfg, V, D).eval()
    feats = torch.randn(1, L, D)
    cap = torch.tensor([[1, 5, 6, 7, 2]])
    padded = torch.tensor([[1, 5, 6, 7, 2, 0, 0]])
    loss = CaptionLoss(cfg)
    with torch.no_grad():
        a, b = loss(model(feats, cap), cap), loss(model(feats, padded), padded)
    assert torch.allclose(a, b, atol=1e-5)
    assert doubly_stochastic_penalty(torch.full((1, 3, 4), 0.25), torch.tensor([[True, True, False]])).item() == pytest.approx(4 * 0.25)


# ---------------------------------------------------------------------------------------------------------
# one-batch overfitting
