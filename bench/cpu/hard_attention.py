"""The cost of hard (stochastic) attention relative to soft, per training step: same preset, same batch.

Training with hard attention (section 4.1) runs, per batch, either a sampled pass (one location per step drawn from
α, the REINFORCE surrogate loss with the moving-average baseline and the entropy bonus) or, with probability 0.5,
the expected context (which costs what soft attention costs). Three steps are timed in turns on the same batch with
the library's `CaptionLoss`: soft, expected and sampled; the hard run's average step is the mean of the last two.

Usage: .venv/bin/python bench/cpu/hard_attention.py [--presets tiny,coco_modern] [--length 12] [--reps 5]
Writes bench/results/cpu/hard_attention.json and .md.
"""
import sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root: `bench` imports when run as a script
from bench.common import TrainStep, load_avg, machine_info, md_table, preset_batch, step_bench_main, time_interleaved
from show_attend_tell.config import preset
from show_attend_tell.decoder import ShowAttendTell


def bench_preset(name, T, reps, device='cpu', amp_dtype=None):
    cfg, D, B, feats, caps = preset_batch(name, T, device)
    V = cfg.vocab_size
    steps = {}
    for mode in ('soft', 'expected', 'hard'):
        torch.manual_seed(0)
        steps[mode] = TrainStep(ShowAttendTell(preset(name, attention='soft' if mode == 'soft' else 'hard'), V, D).to(device),
                                feats, caps, mode, amp_dtype)
    t = time_interleaved(steps, reps, device=device)
    avg = (t['expected'] + t['hard']) / 2
    return dict(preset=name, batch=B, length=T, soft_s=round(t['soft'], 4), expected_s=round(t['expected'], 4),
                sampled_s=round(t['hard'], 4), sampled_over_soft=round(t['hard'] / t['soft'], 2),
                hard_training_over_soft=round(avg / t['soft'], 2), load_avg_1min=load_avg())


def run(presets=('tiny', 'coco_modern'), length=12, reps=5, device='cpu', amp_dtype=None, log=print):
    "Time soft, expected and sampled steps at every preset; returns dict(name, data, md)."
    rows = []
    for name in presets:
        r = bench_preset(name, length, reps, device, amp_dtype); rows.append(r)
        log(f"  hard attention {name}: sampled step {r['sampled_over_soft']}x soft, hard training (half sampled) {r['hard_training_over_soft']}x")
    info = machine_info(device)
    table = md_table(['preset', 'batch × words', 'soft step s', 'expected step s', 'sampled step s', 'sampled / soft',
                      'hard training step / soft (½ expected + ½ sampled)'],
                     [(r['preset'], f"{r['batch']} × {r['length']}", r['soft_s'], r['expected_s'], r['sampled_s'],
                       f"{r['sampled_over_soft']}x", f"{r['hard_training_over_soft']}x") for r in rows])
    md = (f"## Hard attention vs soft: cost per training step\n\n"
          f"Forward + `CaptionLoss` + backward + Adam on the same batch (the preset's batch size, {length}-word captions), "
          f"{info['device']}, {info['torch_threads']} threads, timed in turns, median of {reps}. *Sampled*: one location per "
          f"step drawn from α (eq. 8–9) and the REINFORCE surrogate with baseline and entropy bonus (eq. 10–12); "
          f"*expected*: the expected context, which hard-attention training uses for half of its batches (section 4.1).\n\n{table}")
    return dict(name='hard_attention', data=dict(machine=info, length=length, reps=reps, rows=rows), md=md)


if __name__ == '__main__':
    step_bench_main(run, __doc__, 'tiny,coco_modern', 5)
