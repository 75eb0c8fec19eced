"""fp32 vs mixed precision (AMP) on one device: captions/s of the training step of `ShowAttendTell` at the coco_modern preset in
fp32, under bf16 autocast and under fp16 autocast with a GradScaler, and of the reference decoder of bench/cpu/train_speed.py in fp32 and
under the library's AMP dtype for the device, all timed in turns on the same length-bucketed batch (forward + loss + backward +
Adam, 12-word captions), with the time one COCO epoch would take at each speed (113,287 Karpathy training images × 5 captions
/ captions/s) and each step's loss after the timing (finite: fp16 did not overflow for good).

fp32 matrix products run in full fp32 (PyTorch's default: TF32 off for matmuls). On the CPU this is the dry run of the GPU
topic (`bench/run.py --device cpu --dry-run`), at the tiny preset.

Usage: .venv/bin/python bench/gpu/amp_speed.py [--device cuda] [--preset coco_modern] [--batch 64] [--reps 5] [--out DIR]
Writes bench/results/gpu/amp_speed.json and .md.
"""
import argparse, math, sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root: `bench` imports when run as a script
from bench.common import GPU_RESULTS, TrainStep, load_avg, machine_info, md_table, preset_batch, save_and_show, time_interleaved
from bench.cpu.train_speed import ReferenceDecoder, ReferenceStep
from bench.gpu.gpu_memory import COCO_CAPTIONS, epoch_minutes
from show_attend_tell.decoder import ShowAttendTell

NAMES = {None: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}


def precisions(device):
    "(name, autocast dtype) to time on `device`: fp32, bf16 where the device has it, fp16."
    dev = torch.device(device)
    bf16 = dev.type != 'cuda' or torch.cuda.is_bf16_supported()
    return [(None, 'fp32')] + ([(torch.bfloat16, 'bf16')] if bf16 else []) + [(torch.float16, 'fp16')]


def run(preset='coco_modern', batch=None, length=12, reps=5, device='cuda', amp_dtype=None, log=print):
    """Time ours at every precision and the reference in fp32 and under `amp_dtype` (default: bf16 where supported, else fp16);
    returns dict(name, data, md)."""
    cfg, D, B, feats, caps = preset_batch(preset, length, device, batch)
    V, L = cfg.vocab_size, cfg.num_locations
    precs = precisions(device)
    amp = amp_dtype or precs[1][0]
    fns = {}
    for dt, name in precs:
        torch.manual_seed(0)
        fns[f'ours {name}'] = TrainStep(ShowAttendTell(cfg, V, D).to(device), feats, caps, 'soft', dt)
    for dt in (None, amp):
        torch.manual_seed(0)
        ref = ReferenceDecoder(cfg.embed_dim, cfg.hidden_dim, cfg.attn_dim, D, V, cfg.dropout).to(device)
        fns[f'reference {NAMES[dt]}'] = ReferenceStep(ref, feats, caps, cfg.alpha_c, dt)
    t = time_interleaved(fns, reps, device=device)
    losses = {k: float(f().detach()) for k, f in fns.items() if k.startswith('ours')}     # ReferenceStep returns nothing
    base = t['ours fp32']
    rows = []
    for k, s in t.items():
        cps = B / s
        rows.append(dict(step=k, precision=k.split()[-1], step_s=round(s, 5), captions_per_s=round(cps, 1),
                         speedup_over_ours_fp32=round(base / s, 2), coco_epoch_min=epoch_minutes(cps),
                         loss=round(losses[k], 3) if k in losses else None))
        log(f"  {k}: {cps:.1f} captions/s, a COCO epoch in {epoch_minutes(cps)} min")
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    amp_name = NAMES[amp]
    ours_amp, ref_amp = t[f'ours {amp_name}'], t[f'reference {amp_name}']
    summary = dict(amp=amp_name, amp_over_fp32=round(base / ours_amp, 2), ours_over_reference_fp32=round(t['reference fp32'] / base, 2),
                   ours_over_reference_amp=round(ref_amp / ours_amp, 2), coco_epoch_min_amp=epoch_minutes(B / ours_amp),
                   coco_epoch_min_fp32=epoch_minutes(B / base), non_finite_losses=bad)
    info = machine_info(device)
    table = md_table(['step', 'step ms', 'captions/s', '× ours fp32', 'COCO epoch (min)', 'loss after timing'],
                     [(r['step'], round(r['step_s'] * 1e3, 2), r['captions_per_s'], f"{r['speedup_over_ours_fp32']}x",
                       r['coco_epoch_min'], '–' if r['loss'] is None else r['loss']) for r in rows])
    md = (f"## Training step: fp32 vs mixed precision, and the reference decoder\n\n"
          f"`ShowAttendTell` at the {preset} preset (LSTM {cfg.hidden_dim}, embedding {cfg.embed_dim}, attention {cfg.attn_dim}, "
          f"vocabulary {V}, L = {L}, D = {D}), batch {B} of {length}-word captions, forward + loss + backward + Adam, "
          f"{info['device']}: fp32, bf16 autocast and fp16 autocast with a GradScaler; the reference decoder of "
          f"`bench/cpu/train_speed.py` (per-step loop over a shrinking batch) in fp32 and under {amp_name}, at the same dimensions. "
          f"All timed in turns, median of ≥ {reps}. COCO epoch = {COCO_CAPTIONS:,} captions / captions/s.\n\n"
          f"**{amp_name} autocast: {summary['amp_over_fp32']}× fp32 captions/s (a COCO epoch in {summary['coco_epoch_min_amp']} min vs "
          f"{summary['coco_epoch_min_fp32']}); ours vs the reference: {summary['ours_over_reference_fp32']}× in fp32, "
          f"{summary['ours_over_reference_amp']}× under {amp_name}.**"
          + (f" Non-finite loss after timing: {', '.join(bad)}." if bad else '') + f"\n\n{table}")
    return dict(name='amp_speed', data=dict(machine=info, preset=preset, batch=B, length=length, reps=reps, coco_captions=COCO_CAPTIONS,
                                           summary=summary, rows=rows, load_avg_1min=load_avg()), md=md)


def main():
    from show_attend_tell.config import get_device
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda'); p.add_argument('--preset', default='coco_modern')
    p.add_argument('--batch', type=int, default=None); p.add_argument('--reps', type=int, default=5)
    p.add_argument('--out', default=str(GPU_RESULTS))
    a = p.parse_args()
    save_and_show(run(a.preset, a.batch, reps=a.reps, device=get_device(a.device)), a.out)


if __name__ == '__main__':
    main()
