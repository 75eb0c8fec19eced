"""Achieved GFLOP/s of the teacher-forced training step, as a fraction of this machine's dense fp32 matmul
throughput at the step's own big matmul shapes (`torch.mm`, measured in the same run).

FLOPs are counted analytically from the model's equations, per matrix product, forward and backward (2 FLOPs per
multiply-add): LSTM gates (eq. 1), f_att (W_a a once per image, W_h h, w·tanh(…), eq. 4), the context Σ α_i a_i
(eq. 13), the gate β, the init MLPs, and the deep output layer (eq. 7). Backward counts the weight gradient of
every product and the input gradient where the input needs one (the annotation vectors do not: the encoder is
fixed). Element-wise work (tanh, sigmoid, softmax, Adam) is not counted, so the achieved figure is a lower bound.

The denominator is the matmul throughput of this machine at the shapes the step spends its FLOPs in: each forward
product of the step (gates per step, E y for all steps, W_a a, W_h h, init, L_h, L_z, L_o) run with `torch.mm` at
its shape as often as the step runs it, Σ FLOPs / Σ time, timed in turns with the step (so both see the same load).
A large square product is shown too, as the machine's best case. The same turns also time the step with autograd's
per-step weight gradient for W_zh (`ShowAttendTell.steps_weight_grad = False`, the library's path before `decoder.StepsLinear`
formed it once for all steps), and the profile of one step shows where the time goes.

Usage: .venv/bin/python bench/cpu/flops.py [--presets tiny,coco_modern] [--length 12] [--reps 3]
Writes bench/results/cpu/flops.json and .md.
"""
import sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root: `bench` imports when run as a script
from bench.common import Profile, TrainStep, load_avg, machine_info, md_table, preset_batch, step_bench_main, time_interleaved
from show_attend_tell.config import preset
from show_attend_tell.decoder import ShowAttendTell
GOAL = 0.75   # at least 75% of torch.mm's throughput at the coco_modern preset, on CPU


def step_products(cfg, D, L, V, B, T):
    """The matrix products of one teacher-forced step of B captions of T words, as rows
    (name, M, K, N, count, input_needs_grad, big): an (M, K) @ (K, N) product run `count` times per step;
    `big` marks the ones whose shape the matmul throughput is measured at."""
    E, H, A = cfg.embed_dim, cfg.hidden_dim, cfg.attn_dim
    rows = [('gates [ẑ; h] → 4n (per step)', B, D + H, 4 * H, T, True, True),
            ('gates E y → 4n (all steps)', B * T, E, 4 * H, 1, True, True),
            ('f_att W_a a (once per image)', B * L, D, A, 1, False, True),
            ('f_att W_h h (per step)', B, H, A, T, True, True),
            ('f_att w·tanh(…) (per step)', B * L, A, 1, T, True, False),
            ('context Σ α_i a_i (per step)', B, L, D, T, True, False),   # a bmm: B × (1, L) @ (L, D); α needs grad, a not
            ('init h0, c0 MLPs', B, D, H, 2, False, True)]
    if cfg.selector: rows.append(('gate β (per step)', B, H, 1, T, True, False))
    rows.append(('deep output L_h h', B * T, H, E, 1, True, True))
    if cfg.deep_output: rows.append(('deep output L_z ẑ', B * T, D, E, 1, True, True))
    rows.append(('output L_o', B * T, E, V, 1, True, True))
    return rows


def step_flops(products, train=True):
    "FLOPs of the products: forward, and for a training step the weight gradients and the needed input gradients."
    total = 0
    for name, M, K, N, count, needs_grad, _ in products:
        mac = M * K * N * count
        if name.startswith('context'):            # bmm with no weights: backward is the α gradient only
            total += 2 * mac * (2 if train else 1)
        else:
            total += 2 * mac * ((2 + needs_grad) if train else 1)
    return total


class MatmulSet:
    "Every big forward product of the step, each run as often as the step runs it, with `torch.mm` (timed in turns with the step)."
    def __init__(self, products, device='cpu', dtype=torch.float32):
        big = [p for p in products if p[6]]
        self.ops = [(torch.randn(M, K, device=device, dtype=dtype), torch.randn(K, N, device=device, dtype=dtype), count)
                    for _, M, K, N, count, _, _ in big]
        self.flops = sum(2 * M * K * N * count for _, M, K, N, count, _, _ in big)
        self.products, self.device = big, device

    def __call__(self):
        for a, b, count in self.ops:
            for _ in range(count): torch.mm(a, b)

    def per_shape(self, reps=3):
        "torch.mm GFLOP/s at each shape (for the table; not what the fraction uses)."
        out = []
        for (name, M, K, N, count, _, _), (a, b, _) in zip(self.products, self.ops):
            t = time_interleaved(dict(mm=lambda: torch.mm(a, b)), reps, device=self.device, min_total=0.3)['mm']
            out.append(dict(product=name, shape=f'{M}×{K} @ {K}×{N}', count=count, gflops=round(2 * M * K * N / t / 1e9, 1)))
        return out


def square_peak(device='cpu', dtype=torch.float32, n=2048, reps=5):
    "GFLOP/s of a large square `torch.mm` (the machine's best case)."
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    t = time_interleaved(dict(mm=lambda: torch.mm(a, b)), reps, device=device, min_total=0.5)['mm']
    return 2 * n ** 3 / t / 1e9


class PerStepGrad:
    "A training step with autograd's per-step weight gradient for W_zh (`steps_weight_grad = False`), for comparison."
    def __init__(self, step): self.step = step
    def __call__(self):
        m = self.step.model
        m.steps_weight_grad = False
        try: return self.step()
        finally: m.steps_weight_grad = True


def bench_preset(name, T, reps, device='cpu', amp_dtype=None, batch=None, per_step=True):
    """Time the library's step, the step with autograd's per-step W_zh gradient and the matmul set in turns."""
    cfg, D, B, feats, caps = preset_batch(name, T, device, batch)
    V, L = cfg.vocab_size, cfg.num_locations
    torch.manual_seed(0)
    step = TrainStep(ShowAttendTell(cfg, V, D).to(device), feats, caps, 'soft', amp_dtype)
    prods = step_products(cfg, D, L, V, B, T)
    flops = step_flops(prods)
    mms = MatmulSet(prods, device, amp_dtype or torch.float32)
    fns = dict(step=step, mm=mms)
    if per_step:
        torch.manual_seed(0)
        fns['per_step'] = PerStepGrad(TrainStep(ShowAttendTell(cfg, V, D).to(device), feats, caps, 'soft', amp_dtype))
    t = time_interleaved(fns, reps, device=device)
    achieved, mm = flops / t['step'] / 1e9, mms.flops / t['mm'] / 1e9
    r = dict(preset=name, batch=B, length=T, D=D, step_s=round(t['step'], 4), captions_per_s=round(B / t['step'], 1),
             gflop_per_step=round(flops / 1e9, 2), achieved_gflops=round(achieved, 1), mm_gflops=round(mm, 1),
             fraction_of_mm=round(achieved / mm, 3), mm_per_shape=mms.per_shape(), load_avg_1min=load_avg())
    if per_step:
        p = flops / t['per_step'] / 1e9
        r.update(per_step_step_s=round(t['per_step'], 4), per_step_captions_per_s=round(B / t['per_step'], 1),
                 per_step_achieved_gflops=round(p, 1), per_step_fraction_of_mm=round(p / mm, 3),
                 speedup_over_per_step=round(t['per_step'] / t['step'], 2))
    return r, step


def run(presets=('tiny', 'coco_modern'), length=12, reps=3, device='cpu', amp_dtype=None, profile_preset='coco_modern', log=print):
    "Achieved GFLOP/s vs torch.mm at every preset, and the profile of one step at `profile_preset`; dict(name, data, md)."
    rows, prof, shares = [], None, None
    dtype = amp_dtype or torch.float32
    peak = square_peak(device, dtype)
    for name in presets:
        r, step = bench_preset(name, length, reps, device, amp_dtype); rows.append(r)
        log(f"  GFLOP/s {name}: {r['achieved_gflops']} achieved, torch.mm {r['mm_gflops']} at the step's shapes: "
            f"{r['fraction_of_mm']:.0%}; with the per-step W_zh gradient {r['per_step_fraction_of_mm']:.0%}")
        if name == profile_preset:
            cfg = preset(name)
            B, H, D = r['batch'], cfg.hidden_dim, r['D']
            prof = Profile(step, device)
            four_d = lambda sh: len(sh[0]) == 4
            shares = dict(forward=prof.share('aten::addmm', lambda sh: sh[1:] == [[B, D + H], [D + H, 4 * H]]),
                          input_grad=prof.share('aten::mm', lambda sh: sh == [[B, 4 * H], [4 * H, D + H]]),
                          weight_grad=prof.share('aten::mm', lambda sh: sh == [[4 * H, B * length], [B * length, D + H]]),
                          per_step_weight_grad=prof.share('aten::mm', lambda sh: sh == [[4 * H, B], [B, D + H]]),
                          f_att=prof.share(None, four_d))
        del step
    info = machine_info(device)
    main = next((r for r in rows if r['preset'] == 'coco_modern'), rows[-1])
    met = main['preset'] == 'coco_modern' and main['fraction_of_mm'] >= GOAL
    goal = dict(goal=f'≥ {GOAL:.0%} of torch.mm at the coco_modern preset', value=main['fraction_of_mm'],
                shown=f"{main['fraction_of_mm']:.0%} (per-step W_zh gradient: {main['per_step_fraction_of_mm']:.0%})", met=met)
    prec = str(dtype).replace('torch.', '')
    head = ['preset', 'batch × words', 'step s', 'captions/s', 'GFLOP/step', 'achieved GFLOP/s', "torch.mm GFLOP/s at the step's shapes", 'fraction']
    cells = lambda r: [r['preset'], f"{r['batch']} × {r['length']}", r['step_s'], r['captions_per_s'], r['gflop_per_step'],
                       r['achieved_gflops'], r['mm_gflops'], f"{r['fraction_of_mm']:.0%}"]
    head += ['per-step W_zh gradient: captions/s', 'fraction', 'speed-up of the library']
    cells0 = cells
    cells = lambda r: cells0(r) + [r['per_step_captions_per_s'], f"{r['per_step_fraction_of_mm']:.0%}", f"{r['speedup_over_per_step']}x"]
    table = md_table(head, [cells(r) for r in rows])
    shapes = md_table(['product', 'shape', 'times per step', 'torch.mm GFLOP/s'],
                      [(p['product'], p['shape'], p['count'], p['gflops']) for p in main['mm_per_shape']])
    md = (f"## Achieved GFLOP/s of the training step\n\n"
          f"FLOPs counted analytically per matrix product (LSTM gates, f_att, context, β, init MLPs, deep output), forward "
          f"and backward (weight gradients, and input gradients where needed; the annotation vectors need none); element-wise "
          f"work is not counted, so the achieved figure is a lower bound. The denominator is `torch.mm` ({prec}) at the step's "
          f"big forward shapes, each run as often as the step runs it (Σ FLOPs / Σ time), timed in turns with the step. "
          f"{info['device']}, {info['torch_threads']} threads; a large square product (2048³) runs at {peak:.0f} GFLOP/s here. "
          f"Step: forward + `CaptionLoss` + backward + Adam on the preset's batch of {length}-word captions, median of {reps}.\n\n"
          f"**Goal: ≥ {GOAL:.0%} of torch.mm at the coco_modern preset: {main['fraction_of_mm']:.0%} — {'met' if met else 'not met'}.**")
    md += (f" The library forms W_zh's gradient once for all steps (`decoder.StepsLinear`); with autograd's per-step weight "
           f"gradient instead (`steps_weight_grad = False`), timed in the same turns: "
           f"{main['per_step_fraction_of_mm']:.0%} (the library's step is {main['speedup_over_per_step']}× that).")
    md += f"\n\n{table}\n\ntorch.mm at the {main['preset']} step's shapes:\n\n{shapes}"
    if prof:
        sh = shares
        md += (f"\n\nWhere the time of one {profile_preset} training step of the library goes (torch.profiler, top operators by "
               f"self time). The LSTM's per-step product [ẑ; h] @ W_zhᵀ takes {sh['forward']:.0%} of it forward and {sh['input_grad']:.0%} "
               f"for its input gradient (both per step: the recurrence needs them in order); W_zh's weight gradient, one "
               f"[4n, TB] @ [TB, D+n] product for all steps, takes {sh['weight_grad']:.0%} (per-step weight-gradient products "
               f"left: {sh['per_step_weight_grad']:.0%}). f_att's element-wise work over (B, L, A), forward and backward, takes "
               f"{sh['f_att']:.0%}.\n\n{prof.md(14)}")
    return dict(name='flops', data=dict(machine=info, square_mm_gflops=round(peak, 1), goal=goal, rows=rows,
                                      profile_md=prof and prof.md(14), profile_shares=prof and shares), md=md)


if __name__ == '__main__':
    step_bench_main(run, __doc__, 'tiny,coco_modern', 3)
