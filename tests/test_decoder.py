"The decoder (nbs/13_decoder.ipynb): float64 gradcheck, step() reproduces forward(), one-batch overfitting on Shapes features, a frozen encoder."
import pytest, torch
import torch.nn.functional as F
from show_attend_tell.config import preset
from show_attend_tell.vocab import PAD, START, END, build_vocab
from show_attend_tell.shapes import make_shapes
from show_attend_tell.captions import read_karpathy, load_image
from show_attend_tell.decoder import ShowAttendTell
from show_attend_tell.encoder import get_encoder

from small_models import K, B, D, tiny  # tests/fixtures/, on the path through conftest.py


def test_gradcheck_soft_attention_float64():
    torch.manual_seed(0)
    m = ShowAttendTell(preset('tiny', dropout=0.0), 15, 6).double()
    feats = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    caps = torch.tensor([[START, 5, 6, END], [START, 7, END, PAD]])
    # through the whole model: annotations → attention, context, LSTM, deep output → log-probabilities
    assert torch.autograd.gradcheck(lambda f: m(f, caps)['logits'].log_softmax(-1), (feats,), eps=1e-6, atol=1e-5)
    # and with respect to the weights of f_att and of the gate β
    names = ['attention.feat_proj.weight', 'attention.score.weight', 'beta.weight']
    params = tuple(dict(m.named_parameters())[n].detach().clone().requires_grad_() for n in names)
    logits = lambda *ws: torch.func.functional_call(m, dict(zip(names, ws)), (feats.detach(), caps))['logits']
    assert torch.autograd.gradcheck(logits, params, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize('attention', ['soft', 'hard'])
def test_step_reproduces_forward_and_reorder_shares_annotations(batch, attention):
    feats, caps, mask = batch
    torch.manual_seed(0)
    m = ShowAttendTell(tiny(attention), K, D).eval()
    with torch.no_grad():
        ref = m(feats, caps, feat_mask=mask)
        ref_logp = ref['logits'].log_softmax(-1)
        st = m.init_state(feats, mask)
        rows = torch.arange(B)
        for t in range(caps.shape[1] - 1):
            logp, alpha, st = m.step(caps[rows, t], st)
            real = caps[rows, t + 1] != PAD
            assert torch.allclose(logp[real], ref_logp[rows, t][real], atol=1e-5)
            assert torch.allclose(alpha[real], ref['alphas'][rows, t][real], atol=1e-6)
            if t == 0:    # beam-search-like regrouping: 3 rows per image → annotations kept once per image
                idx = torch.arange(B).repeat_interleave(3); st = m.reorder_state(st, idx); rows = idx
                assert st['width'] == 3 and st['feats'].shape[0] == B
            elif t == 1:  # drop image 1: its rows leave, the others keep their grouping
                keep = (rows != 1).nonzero().squeeze(1); st = m.reorder_state(st, keep); rows = rows[keep]
                assert st['width'] == 3 and st['feats'].shape[0] == B - 1
            elif t == 2:  # an irregular selection falls back to one grid per row
                idx = torch.tensor([0, 2, 3, 3, 8]); st = m.reorder_state(st, idx); rows = rows[idx]
                assert st['width'] == 1 and st['feats'].shape[0] == 5


def test_tiny_model_overfits_one_batch_of_shapes(tmp_path):
    "Soft attention on real Shapes images through the default encoder: the caption loss falls by more than 90%."
    data = read_karpathy(make_shapes(tmp_path, n_train=8, n_val=1, n_test=1))
    vocab = build_vocab(data)
    enc = get_encoder()
    with torch.no_grad():
        feats = enc(torch.stack([enc.transform(load_image(data.image_path(i))) for i in data.split_indices('train')]))
    ids = [[START] + vocab.encode(r.tokens[0]) + [END] for r in data.split('train')]
    T_ = max(map(len, ids))
    caps = torch.tensor([i + [PAD] * (T_ - len(i)) for i in ids])
    torch.manual_seed(0)
    net = ShowAttendTell(preset('tiny', dropout=0.0), len(vocab), enc.feat_dim)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = F.cross_entropy(net(feats, caps)['logits'].transpose(1, 2), caps[:, 1:], ignore_index=PAD)
        opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
    print(f"one Shapes batch: loss {losses[0]:.3f} -> {losses[-1]:.4f}")
    assert losses[-1] < 0.1 * losses[0]


def test_images_go_through_the_encoder_without_gradients_when_frozen():
    enc = get_encoder()
    m = ShowAttendTell(tiny(), K, enc.feat_dim, encoder=enc)
    x = torch.randn(2, 3, 224, 224)
    out = m(x, torch.tensor([[START, 5, END], [START, 6, END]]))
    assert out['alphas'].shape == (2, 2, 196)
    out['logits'].sum().backward()
    assert all(p.grad is None for p in enc.parameters()) and m.embed.weight.grad is not None
    with pytest.raises(ValueError, match="no encoder"): ShowAttendTell(tiny(), K, D).encode(x)


@pytest.mark.parametrize('attention', ['soft', 'hard'])
@pytest.mark.parametrize('arctic', [False, True])
def test_steps_weight_grad_equals_autograds_per_step_gradient_float64(batch, attention, arctic):
    """W_zh's gradient formed once for all steps (`StepsLinear`) equals autograd's per-step one: loss and every parameter's
    gradient, float64, |difference| ≤ 1e-12 (the two sum the same products in another order); hard attention with
    the same sampled locations (same seed), the REINFORCE surrogate included; with padding and a location mask."""
    from show_attend_tell.losses import CaptionLoss
    feats, caps, mask = batch
    kw = dict(att_layers=2, init_layers=2, first_word='zero', init='arctic', penalty_norm='arctic') if arctic else {}
    cfg = tiny(attention, alpha_c=1.0, **kw)
    torch.manual_seed(0)
    m = ShowAttendTell(cfg, K, D).double().train()
    feats = feats.double()
    grads = {}
    for shared in (True, False):
        m.steps_weight_grad = shared
        m.zero_grad(); torch.manual_seed(1)
        loss_fn = CaptionLoss(cfg); loss_fn.sampled = attention == 'hard'
        loss = loss_fn(m(feats, caps, feat_mask=mask), caps)
        loss.backward()
        grads[shared] = [loss.detach()] + [p.grad.clone() for p in m.parameters()]
    assert m.zh_gates.weight.grad.abs().max() > 1e-6          # a real gradient, not zeros on both sides
    worst = max((a - b).abs().max().item() for a, b in zip(grads[True], grads[False]))
    assert worst <= 1e-12, worst


def test_steps_weight_grad_is_used_only_where_gradients_are_made(batch):
    "Under no_grad (evaluation, beam search) and with W_zh frozen, the plain per-step product runs; in training, one node."
    from show_attend_tell import decoder
    feats, caps, mask = batch
    m = ShowAttendTell(tiny(), K, D)
    made = []
    real = decoder.StepsLinear
    class Spy(real):
        def __init__(self, *a): made.append(a[1:]); super().__init__(*a)
    decoder.StepsLinear = Spy
    try:
        with torch.no_grad(): m(feats, caps)
        m.zh_gates.weight.requires_grad_(False); m(feats, caps)
        assert made == []
        m.zh_gates.weight.requires_grad_(True); m(feats, caps).get('logits').sum().backward()
        assert made == [(caps.shape[1] - 1, len(caps))]
    finally: decoder.StepsLinear = real
