"Attention (nbs/12_attention.ipynb): α is a distribution over real locations, β a gate, the soft context is the α-weighted sum, hard samples are never masked, eq. 14."
import pytest, torch
import torch.nn.functional as F
from show_attend_tell.vocab import PAD
from show_attend_tell.attention import Attention, soft_context, hard_context, doubly_stochastic_penalty
from show_attend_tell.decoder import ShowAttendTell

from small_models import K, B, L, D, tiny  # tests/fixtures/, on the path through conftest.py


def test_alpha_is_a_distribution_over_real_locations_and_beta_a_gate(batch):
    feats, caps, mask = batch
    torch.manual_seed(0)
    out = ShowAttendTell(tiny(), K, D)(feats, caps, feat_mask=mask)
    real = caps[:, 1:] != PAD
    assert out['logits'].shape == (B, 5, K) and out['alphas'].shape == (B, 5, L) and out['betas'].shape == (B, 5)
    assert torch.allclose(out['alphas'].sum(-1), real.float(), atol=1e-6)          # rows sum to 1; padded steps are 0
    assert (out['alphas'] * ~mask[:, None]).abs().max() == 0                       # masked locations get nothing
    assert ((out['betas'] > 0) & (out['betas'] < 1)).all()
    assert torch.equal(ShowAttendTell(tiny(selector=False), K, D)(feats, caps)['betas'], torch.ones(B, 5))


def test_soft_context_is_the_alpha_weighted_sum_times_beta(batch):
    feats, caps, mask = batch
    torch.manual_seed(0)
    m = ShowAttendTell(tiny(), K, D)
    st = m.init_state(feats, mask)
    x = m.x_gates(m.embed(caps[:, 0]))
    out = m._lstm(x, st, 'soft')
    alpha = out['log_alpha'].exp()
    a = st['feats']                                    # what the decoder reads: the tiny preset layer-normalises a_i
    assert torch.allclose(a, F.layer_norm(feats, (D,)), atol=1e-6)
    naive = torch.stack([sum(alpha[b, i] * a[b, i] for i in range(L)) for b in range(B)])
    assert torch.allclose(out['z'], out['beta'][:, None] * naive, atol=1e-6)
    # grouped rows (w per image) read the image's annotations: the same as repeating them per row
    a2 = torch.rand(B * 3, L).softmax(-1)
    assert torch.allclose(soft_context(a2, feats), torch.einsum('rl,rld->rd', a2, feats.repeat_interleave(3, 0)), atol=1e-6)


def test_hard_sample_logp_is_log_alpha_at_the_sample_and_never_masked(batch):
    feats, caps, mask = batch
    torch.manual_seed(0)
    m = ShowAttendTell(tiny('hard'), K, D).train()
    out = m(feats, caps, feat_mask=mask)
    real = caps[:, 1:] != PAD
    s, logp = out['samples'], out['sample_logp']
    assert torch.allclose(logp[real], out['alphas'].gather(2, s[..., None]).squeeze(-1)[real].log(), atol=1e-5)
    assert mask.gather(1, s).all()                                                  # never a masked location
    a = out['alphas'][real]
    assert torch.allclose(out['entropy'][real], -(a * a.clamp_min(1e-30).log()).sum(-1), atol=1e-5)
    assert logp.requires_grad                                                       # REINFORCE needs ∂ log α
    # the context is the annotation at the sample, for every row
    att = Attention(D, 24, 12)
    la = att(att.project(feats), torch.randn(B, 24), mask)
    z, s1, lp1, _ = hard_context(la, feats)
    assert torch.equal(z, feats[torch.arange(B), s1]) and torch.equal(lp1, la[torch.arange(B), s1])
    # evaluation (and attention_mode='expected') uses the expected context: deterministic, no samples
    m.eval()
    assert set(m(feats, caps)) == {'logits', 'alphas', 'betas'}
    assert torch.equal(m(feats, caps)['logits'], m(feats, caps, attention_mode='soft')['logits'])
    with pytest.raises(ValueError, match="attention_mode"): m(feats, caps, attention_mode='sampled')


def test_doubly_stochastic_penalty_is_zero_when_every_location_sums_to_one():
    alphas = torch.eye(L)[torch.randperm(L)][None]                    # each location exactly once over L steps
    assert doubly_stochastic_penalty(alphas).item() == 0
    uniform = torch.full((1, 2 * L, L), 1 / L)                        # 2L steps of α = 1/L: Σ_t α_ti = 2 everywhere
    assert doubly_stochastic_penalty(uniform).item() == pytest.approx(L * (1 - 2) ** 2)
    first_half = torch.arange(2 * L)[None] < L                        # only L real steps: Σ_t α_ti = 1 again
    assert doubly_stochastic_penalty(uniform, mask=first_half).item() == pytest.approx(0, abs=1e-9)
    assert doubly_stochastic_penalty(uniform, feat_mask=torch.arange(L)[None] < 3).item() == pytest.approx(3.0)
