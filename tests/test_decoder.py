"""The decoder (nbs/13_decoder.ipynb): float64 gradcheck, step() reproduces forward(), one-batch overfitting on Shapes features, a
frozen encoder, its errors, and mixed precision (the LSTM state in float32 under autocast, casts once per pass)."""
import collections, types
import pytest, torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from show_attend_tell.attention import soft_context
from show_attend_tell.core import SATError
from show_attend_tell.config import preset
from show_attend_tell.vocab import PAD, START, END, build_vocab
from show_attend_tell.shapes import make_shapes
from show_attend_tell.captions import read_karpathy, load_image
from show_attend_tell.decoder import DecoderError, ShowAttendTell
from show_attend_tell.encoder import get_encoder

from small_models import K, B, L, D, tiny  # tests/fixtures/, on the path through conftest.py


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
    with pytest.raises(DecoderError, match="no encoder"): ShowAttendTell(tiny(), K, D).encode(x)


def test_decoder_errors_are_sat_errors_with_one_line():
    m = ShowAttendTell(tiny(), K, D)
    caps = torch.tensor([[START, 5, END]])
    for call in (lambda: m.encode(torch.randn(1, 3, 8, 8)), lambda: m(torch.randn(1, L, D), caps, attention_mode='sampled')):
        with pytest.raises(DecoderError) as e: call()
        assert isinstance(e.value, SATError) and len(str(e.value).splitlines()) == 1


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


# ---------------------------------------------------------------------------------------------------------
# mixed precision: the LSTM's state at the weights' precision, the products in autocast's


def _old_lstm(self, x_gates, state, mode='soft', zh_gates=None):
    "A test-only copy of `_lstm` as it was before the state stayed float32: gates, nonlinearities, c and h in autocast's dtype."
    h, c, feats = state['h'], state['c'], state['feats']
    log_alpha = self.attention(state['proj'], h, state['mask'])
    z = soft_context(log_alpha.exp(), feats)
    z = torch.sigmoid(self.beta(h)) * z
    i, f, o, g = (x_gates.to(h.dtype) + (zh_gates or self.zh_gates)(torch.cat([z, h], 1))).chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return dict(h=h, c=c, z=z, log_alpha=log_alpha, beta=torch.ones(len(h)))


def _teacher_forced(m, feats, caps, path, amp=torch.bfloat16):
    "(logits (B, T, K) float32, c (B, T, n) float32, the state's dtypes) of a teacher-forced pass: 'fp32', 'amp' or 'old' (autocast `amp`)."
    cs, dtypes, lstm, init = [], set(), m._lstm, m.init_state
    if path == 'old':
        lstm = types.MethodType(_old_lstm, m)
        def init16(*a): st = init(*a); return dict(st, h=st['h'].to(amp), c=st['c'].to(amp))
        m.init_state = init16
    def spy(*a, **kw):
        st = lstm(*a, **kw); cs.append(st['c'].float()); dtypes.update({st['h'].dtype, st['c'].dtype}); return st
    m._lstm = spy
    try:
        with torch.no_grad(), torch.autocast(feats.device.type, dtype=amp, enabled=path != 'fp32'):
            logits = m(feats, caps)['logits'].float()
    finally: m.__dict__.pop('_lstm'); m.__dict__.pop('init_state', None)
    return logits, torch.stack(cs, 1), dtypes


@pytest.mark.parametrize('device, amp', [('cpu', 'bfloat16'), pytest.param('cuda', 'bfloat16', marks=pytest.mark.gpu),
                                         pytest.param('cuda', 'float16', marks=pytest.mark.gpu)])
def test_amp_keeps_the_state_float32_and_50_steps_close_to_fp32(device, amp):
    """Autocast (bf16 on the CPU; bf16 and fp16 on a GPU), the paper's LSTM width (1800), 50 teacher-forced steps, a decoder that keeps memory (the forget
    gates' bias raised by 5, σ = 0.993, so c integrates over the steps as a trained LSTM's long-memory cells do; with PyTorch's
    init f ≈ 0.5 forgets in a few steps and no state precision shows). Errors over the last 10 steps, relative to the fp32
    pass: the logits' mean |difference| / their standard deviation, and c's mean |difference| / its mean |c|.
    Measured here: logits 0.0066 (state float32) vs 0.0135 (the old path: state, gates and nonlinearities in bf16), c 0.0040
    vs 0.0164; at width 512 and other seeds the same ratios (2.1× on the logits, 4–5× on c). The bounds leave room: the
    float32-state error under 0.02, the old path's larger by at least 1.5× (logits) and 2.5× (c). bf16 rounds the same
    way on a GPU; fp16 (11 significant bits, not 8) is held to the same bound, and its old path is only printed."""
    H, T, B_, L_, D_, K_ = 1800, 50, 8, 196, 512, 1000
    dt = getattr(torch, amp)
    torch.manual_seed(0)
    m = ShowAttendTell(preset('coco_modern', hidden_dim=H, embed_dim=256, attn_dim=256, dropout=0.0, vocab_size=K_), K_, D_).eval()
    with torch.no_grad(): m.x_gates.bias[H:2 * H] += 5.0                      # the forget gates' block of eq. 1 (i, f, o, g)
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(B_, L_, D_, generator=g)
    caps = torch.randint(4, K_, (B_, T + 1), generator=g); caps[:, 0], caps[:, -1] = START, END
    m, feats, caps = m.to(device), feats.to(device), caps.to(device)
    ref, c_ref, ref_dtypes = _teacher_forced(m, feats, caps, 'fp32', dt)
    amp, c_amp, amp_dtypes = _teacher_forced(m, feats, caps, 'amp', dt)
    old, c_old, old_dtypes = _teacher_forced(m, feats, caps, 'old', dt)
    assert ref_dtypes == amp_dtypes == {torch.float32} and old_dtypes == {dt}
    last = slice(T - 10, T)
    err = lambda x: float((x - ref)[:, last].abs().mean() / ref.std())
    c_err = lambda c: float((c - c_ref)[:, last].abs().mean() / c_ref[:, last].abs().mean())
    print(f"logits: amp {err(amp):.4f}, old {err(old):.4f}; c: amp {c_err(c_amp):.4f}, old {c_err(c_old):.4f}; "
          f"mean |c| {float(c_ref[:, last].abs().mean()):.2f}")
    assert float(c_ref[:, last].abs().mean()) > 1.0                              # the cells did integrate
    assert 0 < err(amp) < 0.02 and 0 < c_err(c_amp) < 0.02
    if dt == torch.bfloat16: assert err(old) > 1.5 * err(amp) and c_err(c_old) > 2.5 * c_err(c_amp)


class _Casts(TorchDispatchMode):
    "Counts the casts to bfloat16 (`aten._to_copy`) by the number of elements of the tensor cast."
    def __init__(self): super().__init__(); self.n = collections.Counter()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default and (kwargs or {}).get('dtype') == torch.bfloat16: self.n[args[0].numel()] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('norm', ['none', 'layer'])
def test_amp_casts_annotations_and_w_zh_once_per_pass(norm):
    """A training pass (forward + backward) of T = 7 steps under bf16 autocast casts the annotations (and their layer norm) and
    W_zh to bf16 once, not once per step; h and c stay float32 and the model still learns through every weight."""
    B_, L_, D_, T = 3, L, 26, 7
    m = ShowAttendTell(tiny(annotation_norm=norm, hidden_dim=44), K, D_).train()
    feats, caps = torch.randn(B_, L_, D_), torch.randint(4, K, (B_, T + 1)); caps[:, 0] = START
    with torch.autocast('cpu', dtype=torch.bfloat16), _Casts() as casts:
        state = m.init_state(feats)
        out = m(feats, caps)
        out['logits'].float().sum().backward()
    assert state['feats'].dtype == state['proj'].dtype == torch.bfloat16 and state['h'].dtype == state['c'].dtype == torch.float32
    assert casts.n[feats.numel()] == 2 and casts.n[m.zh_gates.weight.numel()] == 1, casts.n    # init_state above, then the pass
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for n, p in m.named_parameters() if 'where' not in n)


def test_steps_weight_grad_under_autocast_matches_autograds():
    "Under bf16 autocast W_zh's one-product gradient (bf16 taps and a bf16 Wᵀ made once) equals the per-step one to bf16 rounding."
    feats, caps = torch.randn(B, L, D), torch.randint(4, K, (B, 9)); caps[:, 0] = START
    torch.manual_seed(0)
    m = ShowAttendTell(tiny(), K, D).train()
    grads = {}
    for shared in (True, False):
        m.steps_weight_grad = shared; m.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16): loss = m(feats, caps)['logits'].float().logsumexp(-1).mean()
        loss.backward(); grads[shared] = m.zh_gates.weight.grad.clone()
    scale = grads[False].abs().max()
    assert scale > 0 and (grads[True] - grads[False]).abs().max() <= 0.02 * scale


@pytest.mark.parametrize('norm', ['none', 'layer'])
def test_float16_annotations_as_the_cache_stores_them_give_the_float32_pass(batch, norm):
    "Features fed in float16 (the cache's dtype, as the loaders may leave them) are cast once by the model: the same pass, bit for bit."
    feats, caps, mask = batch
    torch.manual_seed(0)
    m = ShowAttendTell(tiny(annotation_norm=norm), K, D)
    half = feats.half()
    a, b = m(half, caps, feat_mask=mask), m(half.float(), caps, feat_mask=mask)
    assert all(torch.equal(a[k], b[k]) for k in ('logits', 'alphas', 'betas')) and a['logits'].dtype == torch.float32
    a['logits'].sum().backward()
    assert m.zh_gates.weight.grad is not None
