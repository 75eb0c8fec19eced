"""An independent check of the model and its losses against the original Theano code, arctic-captions' capgen.py.

`arctic_forward` below is a NumPy transcription of `build_model` (capgen.py at commit f4565bf, kelvinxu/arctic-captions)
for features already extracted, `lstm_encoder=False`, one LSTM layer, one output layer and dropout off, written from the
Theano code (line numbers in the comments), not from our modules. Weights are copied from a small `ShowAttendTell`
configured as the original (`att_layers=2, init_layers=2, first_word='zero', penalty_norm='arctic'`, ...); the cost of the
transcription must equal our loss, and the gradient Theano gets from capgen.py's `known_grads` for hard attention must
equal the one autograd takes from our REINFORCE surrogate. The batches are length-homogeneous, as the original's
`HomogeneousData` iterator gives them (capgen.py 1218): every step of every caption is a word.
"""
import dataclasses
import numpy as np
import pytest
import torch
from show_attend_tell.config import preset
from show_attend_tell.decoder import ShowAttendTell
from show_attend_tell.losses import CaptionLoss

K, B, T, D, H, E, G = 17, 5, 6, 8, 12, 10, 3     # vocabulary, captions, steps (words + <end>), D = attention width, LSTM, embedding, grid
L = G * G
ARCTIC = dict(att_layers=2, init_layers=2, first_word='zero', init='arctic', penalty_norm='arctic', entropy_norm='arctic',
              reward='arctic', alpha_c=1.0, dropout=0.0, selector=True, deep_output=True, annotation_norm='none',
              location_embedding=False, embed_dim=E, hidden_dim=H, attn_dim=D, grid_size=G, vocab_size=K)


# ---- the transcription ---------------------------------------------------------------------------------------------
def _sigmoid(x): return 1 / (1 + np.exp(-x))

def _softmax(x):
    x = x - x.max(-1, keepdims=True); e = np.exp(x)
    return e / e.sum(-1, keepdims=True)

def arctic_forward(p, x, mask, ctx, n_layers_att=2, n_layers_init=2, alpha_c=1.0, samples=None):
    """capgen.py build_model (561-714) and the regulariser of train (1164, 1174-1178). x, mask: (T, N) as prepare_data
    gives them (words, then 0 for <eos>); ctx: (N, L, D). `samples` (T, N) fixes the stochastic model's locations."""
    n_steps, n = x.shape
    dim = p['decoder_U'].shape[0]
    # 611-614: look the words up, then shift them one step later; the first step reads a zero vector
    emb = p['Wemb'][x]
    emb = np.concatenate([np.zeros_like(emb[:1]), emb[:-1]], 0)
    # 626-634: mean annotation, n_layers_init - 1 rectified layers (dropout is off), then tanh layers for h0 and c0
    ctx_mean = ctx.mean(1)
    for l in range(1, n_layers_init):
        ctx_mean = np.maximum(0., ctx_mean @ p[f'ff_init_{l}_W'] + p[f'ff_init_{l}_b'])
    h = np.tanh(ctx_mean @ p['ff_state_W'] + p['ff_state_b'])
    c = np.tanh(ctx_mean @ p['ff_memory_W'] + p['ff_memory_b'])
    # 356-362: the annotations' side of f_att, once; every extra layer is followed by a tanh (the condition at 361 always holds)
    pctx = ctx @ p['decoder_Wc_att'] + p['decoder_b_att']
    for l in range(1, n_layers_att):
        pctx = np.tanh(pctx @ p[f'decoder_W_att_{l}'] + p[f'decoder_b_att_{l}'])
    # 367: the word's part of the gates, for all steps
    xw = emb @ p['decoder_W'] + p['decoder_b']
    hs, cs, zs, alphas, pres, h_prev = [], [], [], [], [], []
    for t in range(n_steps):
        m = mask[t][:, None]
        h_prev.append(h)
        # 392-397: e = U_att · tanh(pctx + Wd_att h) + c_tt, one score per location
        pre_att = pctx + (h @ p['decoder_Wd_att'])[:, None, :]
        pres.append(pre_att)
        e = (np.tanh(pre_att) @ p['decoder_U_att'])[..., 0] + p['decoder_c_tt']
        alpha = _softmax(e)                                            # 402 (406 with temperature 1)
        if samples is None: weights = alpha                             # 403: the expected context
        else: weights = np.eye(alpha.shape[1])[samples[t]]              # 409 with h_sampling_mask = 1: a one-hot sample
        z = (ctx * weights[:, :, None]).sum(1)                          # 403 / 417
        sel = _sigmoid(h @ p['decoder_W_sel'] + p['decoder_b_sel'])     # 419-422: the gate, a scalar per caption
        z = sel * z
        pre = h @ p['decoder_U'] + xw[t] + z @ p['decoder_Wc']          # 424-426
        i_, f_, o_ = (_sigmoid(pre[:, k * dim:(k + 1) * dim]) for k in range(3))   # 430-439 (no LSTM dropout)
        g_ = np.tanh(pre[:, 3 * dim:])                                  # 440
        c_new = f_ * c + i_ * g_                                        # 444
        c = m * c_new + (1 - m) * c                                     # 445: a masked step keeps the old memory
        h = m * (o_ * np.tanh(c)) + (1 - m) * h                         # 447-448
        hs.append(h); cs.append(c); zs.append(z); alphas.append(alpha)
    proj_h, ctxs, alphas = np.stack(hs), np.stack(zs), np.stack(alphas)   # (T, N, dim), (T, N, D), (T, N, L)
    # 679-694: the deep output layer, tanh(L_h h + E y_{t-1} + L_z z), then the word scores
    logit = proj_h @ p['ff_logit_lstm_W'] + p['ff_logit_lstm_b'] + emb + ctxs @ p['ff_logit_ctx_W'] + p['ff_logit_ctx_b']
    logit = np.tanh(logit) @ p['ff_logit_W'] + p['ff_logit_b']
    probs = _softmax(logit)                                              # 696
    cost = -np.log(np.take_along_axis(probs, x[..., None], -1)[..., 0] + 1e-8)   # 699-702
    masked_cost = cost * mask                                            # 703
    per_caption = masked_cost.sum(0)                                     # 704: summed over time
    total = per_caption.mean()                                           # 1164: averaged over the batch
    penalty = alpha_c * ((1. - alphas.sum(0)) ** 2).sum(0).mean()       # 1177: Σ over captions, mean over locations
    return total + penalty, dict(per_caption=per_caption, masked_cost=masked_cost, alphas=alphas, pre_att=pre_att,
                                  pres=np.stack(pres), h_prev=np.stack(h_prev), pctx=pctx, ctx=ctx, penalty=penalty)


def arctic_attention_grads(p, out, samples, baseline_cost, alpha_entropy_c=0.002, n_layers_att=2):
    """The gradient of the stochastic model's attention weights that capgen.py 1191-1195 (RL_sumCost=True) gives Theano
    as `known_grads` on alphas, carried back to f_att's parameters by hand (the chain rule of 392-402 and 356-362)."""
    alphas, pres, h_prev, ctx = out['alphas'], out['pres'], out['h_prev'], out['ctx']
    onehot = np.eye(alphas.shape[-1])[samples]                                        # alpha_sample, (T, N, L)
    mean_cost = out['masked_cost'].mean(0)                                            # (N,): cost averaged over the T steps
    g_alpha = ((baseline_cost - mean_cost)[None, :, None] / 10. * (-onehot / alphas)
               + alpha_entropy_c * (np.log(alphas) + 1))                              # 1194-1195
    g_e = alphas * (g_alpha - (alphas * g_alpha).sum(-1, keepdims=True))              # through the softmax (402)
    th = np.tanh(pres)                                                                # (T, N, L, A)
    grads = dict(decoder_U_att=np.einsum('tnl,tnla->a', g_e, th)[:, None], decoder_c_tt=np.array([g_e.sum()]))
    g_pre = g_e[..., None] * p['decoder_U_att'][:, 0] * (1 - th ** 2)                 # (T, N, L, A)
    grads['decoder_Wd_att'] = np.einsum('tnh,tna->ha', h_prev, g_pre.sum(2))
    g_pctx = g_pre.sum(0)                                                             # pctx is shared by all steps
    pctx0 = ctx @ p['decoder_Wc_att'] + p['decoder_b_att']
    if n_layers_att == 2:
        g_q = g_pctx * (1 - out['pctx'] ** 2)
        grads['decoder_W_att_1'] = np.einsum('nla,nlb->ab', pctx0, g_q); grads['decoder_b_att_1'] = g_q.sum((0, 1))
        g_pctx = g_q @ p['decoder_W_att_1'].T
    grads['decoder_Wc_att'] = np.einsum('nld,nla->da', ctx, g_pctx); grads['decoder_b_att'] = g_pctx.sum((0, 1))
    return grads


# ---- our model, and its weights under the original's names ---------------------------------------------------------
def arctic_params(m:ShowAttendTell)->dict:
    "Our weights as capgen.py's parameter dict (init_params, 520-558): matrices are (in, out) there."
    t = lambda w: w.detach().double().numpy().T.copy()
    v = lambda b: b.detach().double().numpy().copy()
    Dm = m.feat_dim
    p = dict(Wemb=m.embed.weight.detach().double().numpy(), ff_state_W=t(m.init_h.weight), ff_state_b=v(m.init_h.bias),
             ff_memory_W=t(m.init_c.weight), ff_memory_b=v(m.init_c.bias),
             decoder_W=t(m.x_gates.weight), decoder_b=v(m.x_gates.bias),
             decoder_U=t(m.zh_gates.weight[:, Dm:]), decoder_Wc=t(m.zh_gates.weight[:, :Dm]),
             decoder_Wc_att=t(m.attention.feat_proj.weight), decoder_b_att=v(m.attention.feat_proj.bias),
             decoder_Wd_att=t(m.attention.hidden_proj.weight), decoder_U_att=t(m.attention.score.weight),
             decoder_c_tt=v(m.attention.score.bias), decoder_W_sel=t(m.beta.weight), decoder_b_sel=v(m.beta.bias),
             ff_logit_lstm_W=t(m.out_h.weight), ff_logit_lstm_b=v(m.out_h.bias), ff_logit_ctx_W=t(m.out_z.weight),
             ff_logit_ctx_b=np.zeros(m.out_z.weight.shape[0]), ff_logit_W=t(m.out.weight), ff_logit_b=v(m.out.bias))
    if m.init_mlp is not None: p.update(ff_init_1_W=t(m.init_mlp.weight), ff_init_1_b=v(m.init_mlp.bias))
    if m.attention.feat_deep is not None:
        p.update(decoder_W_att_1=t(m.attention.feat_deep.weight), decoder_b_att_1=v(m.attention.feat_deep.bias))
    return p

OUR_NAMES = {'decoder_U_att': ('attention.score.weight', True), 'decoder_c_tt': ('attention.score.bias', False),
             'decoder_Wd_att': ('attention.hidden_proj.weight', True), 'decoder_W_att_1': ('attention.feat_deep.weight', True),
             'decoder_b_att_1': ('attention.feat_deep.bias', False), 'decoder_Wc_att': ('attention.feat_proj.weight', True),
             'decoder_b_att': ('attention.feat_proj.bias', False)}


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.rand(B, L, D, generator=g, dtype=torch.float64)
    words = torch.randint(4, K, (B, T - 1), generator=g)
    caps = torch.cat([torch.full((B, 1), 1), words, torch.full((B, 1), 2)], 1)   # <start> w1..w5 <end>: every caption T steps
    return feats, caps

def model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = preset('tiny', **{**ARCTIC, **kw})
    m = ShowAttendTell(cfg, K, D).double().eval()
    with torch.no_grad():            # move the biases off arctic's zeros, and enlarge the 0.01-scale word vectors, so both count
        for name, q in m.named_parameters():
            if name.endswith('bias'): q.add_(0.1 * torch.randn_like(q))
        m.embed.weight.mul_(30.)
        m.attention.score.weight.mul_(300.)      # α far from uniform, so that the entropy term is visible in the gradient
    return cfg, m

def arctic_inputs(feats, caps):
    x = caps[:, 1:].T.numpy()                          # (T, N): the words then <end> (arctic's 0 = <eos>)
    return x, np.ones(x.shape), feats.numpy()


def soft_check(**flip):
    "Our soft-attention loss and the transcription's cost, for the arctic configuration changed by `flip` on our side only."
    cfg, m = model(**flip)
    feats, caps = batch()
    with torch.no_grad(): ours = float(CaptionLoss(cfg)(m(feats, caps), caps))
    x, mask, ctx = arctic_inputs(feats, caps)
    ref, _ = arctic_forward(arctic_params(model()[1]) if flip else arctic_params(m), x, mask, ctx)
    return ours, float(ref)


def test_soft_loss_equals_capgen_cost():
    ours, ref = soft_check()
    assert abs(ours - ref) <= 1e-5 * abs(ref), (ours, ref)


@pytest.mark.parametrize('flip', [dict(penalty_norm='caption'), dict(first_word='start')])
def test_each_arctic_option_matters(flip):
    "With one option back at our default the loss no longer matches: the golden test can fail."
    ours, ref = soft_check(**flip)
    assert abs(ours - ref) > 1e-4 * abs(ref), (flip, ours, ref)     # ten times the golden test's tolerance


@pytest.mark.parametrize('att_layers,init_layers', [(1, 2), (2, 1)])
def test_layers_match_capgen(att_layers, init_layers):
    "n_layers_att and n_layers_init of the transcription against att_layers, init_layers."
    cfg, m = model(att_layers=att_layers, init_layers=init_layers)
    feats, caps = batch(1)
    with torch.no_grad(): ours = float(CaptionLoss(cfg)(m(feats, caps), caps))
    ref, _ = arctic_forward(arctic_params(m), *arctic_inputs(feats, caps), n_layers_att=att_layers, n_layers_init=init_layers)
    assert abs(ours - ref) <= 1e-5 * abs(ref), (ours, ref)
    ref_other, _ = arctic_forward(arctic_params(model()[1]), *arctic_inputs(feats, caps))
    assert abs(ours - ref_other) > 1e-3 * abs(ref)


def test_hard_reinforce_gradient_equals_known_grads():
    cfg, m = model(attention='hard')
    feats, caps = batch(2)
    torch.manual_seed(3)
    out = m(feats, caps, attention_mode='hard')
    samples = out['samples'].T.numpy()                                  # (T, N): the fixed sample
    loss = CaptionLoss(cfg); loss.sampled, loss.baseline = True, -2.5   # b in reward units (per-step log-likelihood)
    m.zero_grad(); loss(out, caps).backward(retain_graph=True)
    x, mask, ctx = arctic_inputs(feats, caps)
    _, ref = arctic_forward(arctic_params(m), x, mask, ctx, samples=samples)
    # the sampled pass's NLL is the transcription's too, with the same sample
    ours_nll = float(loss.last['nll_sum']) / B
    assert abs(ours_nll - ref['per_caption'].mean()) <= 1e-5 * ours_nll
    known = arctic_attention_grads(arctic_params(m), ref, samples, baseline_cost=2.5, alpha_entropy_c=cfg.entropy_weight)
    params = dict(m.named_parameters())
    for name, g in known.items():
        ours_name, transpose = OUR_NAMES[name]
        gt = params[ours_name].grad.double().numpy()
        gt = gt.T if transpose else gt
        np.testing.assert_allclose(gt.reshape(g.shape), g, rtol=1e-5, atol=1e-7, err_msg=name)
    # the bonus averaged over the batch (our default) gives another gradient
    loss1 = CaptionLoss(dataclasses.replace(cfg, entropy_norm='caption')); loss1.sampled, loss1.baseline = True, -2.5
    m.zero_grad(); loss1(out, caps).backward(retain_graph=True)
    g1 = m.attention.score.weight.grad.double().numpy().T
    assert not np.allclose(g1, known['decoder_U_att'], rtol=1e-3), 'entropy_norm makes no difference'
    # our default reward (the caption's log-likelihood, no ×N/10) gives another gradient
    loss2 = CaptionLoss(dataclasses.replace(cfg, reward='caption', entropy_norm='caption', alpha_c=0.))
    loss2.sampled, loss2.baseline = True, -2.5 * T
    m.zero_grad(); loss2(out, caps).backward()
    g2 = m.attention.score.weight.grad.double().numpy().T
    assert not np.allclose(g2, known['decoder_U_att'], rtol=1e-2)


def test_a_run_saved_before_the_keys_resumes(tmp_path):
    "A checkpoint's config without the new keys had their defaults: resuming it with them is the same run."
    from show_attend_tell.training import TrainError, _check_same_run
    new = ('att_layers', 'init_layers', 'optimizer', 'penalty_norm', 'entropy_norm', 'reward', 'early_stop', 'first_word', 'init')
    old = {k: v for k, v in preset('tiny').to_dict().items() if k not in new}
    _check_same_run({**old, 'fine_tune_encoder': False}, preset('tiny'), tmp_path/'last.pth')
    with pytest.raises(TrainError, match="att_layers = 1, this run asks for 2"):
        _check_same_run(old, preset('tiny', att_layers=2), tmp_path/'last.pth')
