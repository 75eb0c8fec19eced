"""GPU memory of the training step per batch size: `torch.cuda.max_memory_allocated` over steps of `ShowAttendTell` at the
coco_modern preset (forward under autocast + `CaptionLoss` + backward + Adam, 12-word captions), the batch doubling from 16
until a step runs out of GPU memory, reaches `--max-batch` or takes longer than 2 s (`run`'s `max_step_s`); with captions/s
at each batch size and the time one COCO epoch would take at that speed (113,287 Karpathy training images × 5 captions / captions/s).

The model and its optimizer state stay on the GPU through the sweep (as in training); each batch size gets a fresh batch. The
peak is measured over steady-state steps (after the first, which allocates Adam's state), so it is weights + gradients + Adam
state + that batch's activations. On the CPU (`bench/run.py --device cpu --dry-run`) the same code runs at tiny sizes with no
memory figures.

Usage: .venv/bin/python bench/gpu/gpu_memory.py [--device cuda] [--preset coco_modern] [--max-batch 8192] [--reps 3] [--out DIR]
Writes bench/results/gpu/gpu_memory.json and .md.
"""
import argparse, gc, statistics, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root: `bench` imports when run as a script
from bench.common import GPU_RESULTS, TrainStep, feat_dim, machine_info, md_table, save_and_show, sync
from show_attend_tell.config import preset as get_preset
from show_attend_tell.decoder import ShowAttendTell
from show_attend_tell.vocab import START, END

COCO_CAPTIONS = 113_287 * 5        # one epoch of the Karpathy COCO training split (train + restval), 5 captions per image
# torch.OutOfMemoryError in recent PyTorch; torch.cuda.OutOfMemoryError is the same class
OOM = getattr(torch, 'OutOfMemoryError', torch.cuda.OutOfMemoryError)


def _cuda(device): return torch.device(device).type == 'cuda'


def release_memory(device):
    "Release what the caching allocator holds and reset the peak counter (CUDA; nothing on the CPU)."
    gc.collect()
    if _cuda(device):
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(device)


def epoch_minutes(captions_per_s):
    "Minutes one COCO epoch takes at `captions_per_s`."
    return round(COCO_CAPTIONS / captions_per_s / 60, 1) if captions_per_s else None


def sweep(make_step, start=16, max_batch=8192, device='cuda', reps=3, max_step_s=2.0, max_total_s=60.0, log=print):
    """Rows (batch, oom, step_s, captions_per_s, peak_bytes, resident_bytes, reserved_bytes, coco_epoch_min) for batch sizes
    start, 2·start, … : `make_step(B)` builds a step function for batch B (an out-of-memory error there or in a step ends the
    sweep with an `oom` row). Stops after `max_batch`, after a step slower than `max_step_s` or when the sweep took `max_total_s`."""
    rows, B, t_start = [], start, time.perf_counter()
    while B <= max_batch:
        release_memory(device)
        step = None
        try:
            step = make_step(B)
            step(); sync(device)                                   # the first step allocates the optimizer state
            if _cuda(device): torch.cuda.reset_peak_memory_stats(device)
            resident = torch.cuda.memory_allocated(device) if _cuda(device) else None
            ts = []
            for _ in range(reps):
                sync(device); t0 = time.perf_counter(); step(); sync(device)
                ts.append(time.perf_counter() - t0)
        except OOM as e:
            rows.append(dict(batch=B, oom=True, error=str(e).splitlines()[0][:200]))
            log(f"  batch {B}: out of GPU memory")
            break
        finally:
            del step
        t = statistics.median(ts)
        cps = B / t if t > 0 else float('inf')
        row = dict(batch=B, oom=False, step_s=round(t, 4), captions_per_s=round(cps, 1), coco_epoch_min=epoch_minutes(cps),
                   peak_bytes=torch.cuda.max_memory_allocated(device) if _cuda(device) else None, resident_bytes=resident,
                   reserved_bytes=torch.cuda.max_memory_reserved(device) if _cuda(device) else None)
        rows.append(row)
        log(f"  batch {B}: {row['captions_per_s']} captions/s" + (f", peak {row['peak_bytes'] / 2**30:.2f} GiB" if row['peak_bytes'] else ''))
        if t > max_step_s or time.perf_counter() - t_start > max_total_s: break
        B *= 2
    release_memory(device)
    return rows


def run(preset='coco_modern', length=12, start=16, max_batch=8192, reps=3, device='cuda', amp_dtype=None, max_step_s=2.0,
        max_total_s=60.0, log=print):
    "The sweep at `preset` on `device` under autocast `amp_dtype`; returns dict(name, data, md)."
    cfg = get_preset(preset)
    V, L, D = cfg.vocab_size, cfg.num_locations, feat_dim(cfg.encoder)
    torch.manual_seed(0)
    model = ShowAttendTell(cfg, V, D).to(device)
    n_params = sum(p.numel() for p in model.parameters())

    def make_step(B):
        # the batch made on the device: at B = 8192 the features alone are 8 GB, slow to draw on the CPU and copy over
        g = torch.Generator(device).manual_seed(B)
        feats = torch.randn(B, L, D, device=device, generator=g)
        caps = torch.randint(4, V, (B, length + 1), device=device, generator=g)
        caps[:, 0], caps[:, -1] = START, END
        return TrainStep(model, feats, caps, 'soft', amp_dtype)

    rows = sweep(make_step, start, max_batch, device, reps, max_step_s, max_total_s, log)
    del model
    release_memory(device)
    info = machine_info(device)
    cuda = _cuda(device)
    total = torch.cuda.get_device_properties(device).total_memory if cuda else None
    ok = [r for r in rows if not r['oom']]
    best = max(ok, key=lambda r: r['captions_per_s']) if ok else None
    ended = ('out of GPU memory at batch ' + str(rows[-1]['batch']) if rows and rows[-1]['oom'] else
             f"stopped at batch {ok[-1]['batch']} (cap {max_batch}, or a step over {max_step_s} s)" if ok else 'no rows')
    gib = lambda b: '–' if b is None else f'{b / 2**30:.2f}'
    amp = str(amp_dtype).replace('torch.', '') if amp_dtype else 'fp32'
    table = md_table(['batch', 'step s', 'captions/s', 'COCO epoch (min)', 'peak allocated GiB', 'of which resident between steps (weights, gradients, Adam state, the batch) GiB',
                      'peak reserved GiB'],
                     [(r['batch'], 'OOM', '–', '–', '–', '–', '–') if r['oom'] else
                      (r['batch'], r['step_s'], r['captions_per_s'], r['coco_epoch_min'], gib(r['peak_bytes']), gib(r['resident_bytes']),
                       gib(r['reserved_bytes'])) for r in rows])
    md = (f"## GPU memory per training batch size\n\n"
          f"`ShowAttendTell` at the {preset} preset ({n_params / 1e6:.1f} M parameters; LSTM {cfg.hidden_dim}, vocabulary {V}, "
          f"L = {L}, D = {D}), {length}-word captions, forward under autocast ({amp}) + `CaptionLoss` + backward + Adam, "
          f"{info['device']}" + (f" ({total / 2**30:.0f} GiB)" if total else '') + f"; median of {reps} steady-state steps per "
          f"batch size; peak = `torch.cuda.max_memory_allocated` over those steps. The batch doubles from {start}: {ended}. "
          f"COCO epoch = {COCO_CAPTIONS:,} captions / captions/s."
          + (f" Fastest: batch {best['batch']}, {best['captions_per_s']} captions/s, a COCO epoch in {best['coco_epoch_min']} min."
             if best else '') + (" (CPU dry run: no memory figures.)" if not cuda else '') + f"\n\n{table}")
    data = dict(machine=info, preset=preset, length=length, amp=amp, parameters=n_params, total_bytes=total, start=start,
                max_batch=max_batch, reps=reps, coco_captions=COCO_CAPTIONS, rows=rows, ended=ended,
                fastest=best and dict(batch=best['batch'], captions_per_s=best['captions_per_s'], coco_epoch_min=best['coco_epoch_min']))
    return dict(name='gpu_memory', data=data, md=md)


def main():
    from show_attend_tell.config import amp_dtype, get_device
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda'); p.add_argument('--preset', default='coco_modern')
    p.add_argument('--max-batch', type=int, default=8192); p.add_argument('--reps', type=int, default=3)
    p.add_argument('--fp32', action='store_true', help='no autocast')
    p.add_argument('--out', default=str(GPU_RESULTS))
    a = p.parse_args()
    dev = get_device(a.device)
    save_and_show(run(a.preset, max_batch=a.max_batch, reps=a.reps, device=dev, amp_dtype=None if a.fp32 else amp_dtype(dev)), a.out)


if __name__ == '__main__':
    main()
