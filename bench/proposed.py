"""A change to the library that the benchmarks measure next to the library as it is, in the same run. It is a prototype
applied only inside `proposed()` (the library's files are not changed); once the library adopts it, the "proposed"
figures measure the same code twice (≈ 1.0×) and this file can go. (A first proposal, f_att's tanh through the
identity w·tanh(u) + c = 2w·σ(2u) + c − Σw, was measured here and is now `Attention.scores` in the library.)

`ShowAttendTell.forward` (nbs/04_decoder.ipynb): the per-step product [ẑ_t; h_{t−1}] @ W_zhᵀ makes autograd compute
W_zh's gradient once per time step: T products of shape (4n × B) @ (B × (D+n)), with an inner size of only B, each
writing a whole 4n × (D+n) gradient (89 MB at the paper's size) that is then added to the others. Instead, the
per-step product uses the detached weight, and one autograd node receives every step's output gradient and forms
W_zh's gradient as a single (4n × TB) @ (TB × (D+n)) product. Values and gradients are the library's (`check()`).
"""
from contextlib import contextmanager
import torch, torch.nn as nn
from show_attend_tell.decoder import ShowAttendTell


class _WeightGradOnce(torch.autograd.Function):
    "T zero tensors (B, N): their gradients dY_t arrive together, and W's gradient is Σ_t dY_tᵀ X_t in one product."
    @staticmethod
    def forward(ctx, weight, inputs, T, B):
        ctx.inputs = inputs                         # filled with the X_t by `_StepwiseLinear` after this call
        return tuple(weight.new_zeros(B, weight.shape[0]) for _ in range(T))

    @staticmethod
    def backward(ctx, *grads):
        gy, x = torch.cat(grads), torch.cat(ctx.inputs)
        ctx.inputs = None
        return gy.t().mm(x.to(gy.dtype)), None, None, None


class _StepwiseLinear(nn.Module):
    "Stands in for `zh_gates` during one teacher-forced pass of T steps: X_t @ W.detach()ᵀ + (a zero tap of W)."
    def __init__(self, linear, T):
        super().__init__()
        self.linear, self.T, self.t, self.inputs, self.taps = linear, T, 0, [], None

    def forward(self, x):
        W = self.linear.weight
        if self.taps is None: self.taps = _WeightGradOnce.apply(W, self.inputs, self.T, x.shape[0])
        self.inputs.append(x.detach())
        y = torch.addmm(self.taps[self.t], x, W.detach().t())
        self.t += 1
        return y if self.linear.bias is None else y + self.linear.bias


_library_forward = ShowAttendTell.forward


def decoder_forward(self, feats, captions, feat_mask=None, attention_mode=None):
    "`ShowAttendTell.forward`, with W_zh's gradient formed once for all steps."
    lin = self.zh_gates
    if not (torch.is_grad_enabled() and lin.weight.requires_grad): return _library_forward(self, feats, captions, feat_mask, attention_mode)
    self.zh_gates = _StepwiseLinear(lin, captions.shape[1] - 1)
    try: return _library_forward(self, feats, captions, feat_mask, attention_mode)
    finally: self.zh_gates = lin


@contextmanager
def proposed():
    "The library with the proposed change, inside this context only."
    ShowAttendTell.forward = decoder_forward
    try: yield
    finally: ShowAttendTell.forward = _library_forward


class Proposed:
    "Call `fn` with the proposed change applied (for timing in turns with the library as it is)."
    def __init__(self, fn): self.fn = fn
    def __call__(self):
        with proposed(): return self.fn()


def check(atol=1e-9):
    "Loss and every gradient equal the library's (float64; soft, and a sampled hard pass); returns the largest difference."
    from show_attend_tell.config import preset
    from show_attend_tell.losses import CaptionLoss
    cfg = preset('tiny', dropout=0.0, alpha_c=1.0)
    torch.manual_seed(0)
    m = ShowAttendTell(cfg, 50, 24).double()
    feats, caps = torch.randn(4, 196, 24, dtype=torch.double), torch.randint(4, 50, (4, 8))
    worst = 0.0
    for mode in ('soft', 'hard'):
        out = {}
        for use in (False, True):
            torch.manual_seed(1); m.zero_grad()
            loss_fn = CaptionLoss(cfg); loss_fn.sampled = mode == 'hard'
            if use:
                with proposed(): loss = loss_fn(m(feats, caps, attention_mode=mode), caps)
            else: loss = loss_fn(m(feats, caps, attention_mode=mode), caps)
            loss.backward()
            out[use] = [loss.detach()] + [p.grad.clone() for p in m.parameters()]
        worst = max(worst, max((a - b).abs().max().item() for a, b in zip(out[False], out[True])))
    return dict(max_abs_diff=worst, equal=worst < atol)


if __name__ == '__main__':
    print(check())
