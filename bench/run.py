"""The benchmark suite (`make bench`): each topic's results in bench/results/cpu/<topic>.json and .md (bench/results/gpu/ for
the GPU topics), and every suite's results together in one summary, bench/results/latest.json and latest.md.

Topics of the CPU suite, in bench/cpu/ (each figure that compares two things measures both in the same run, timed in turns,
as a ratio):
  train_speed     training step captions/s at the tiny, coco_modern and coco presets vs a reference decoder
  flops           achieved GFLOP/s of the training step as a fraction of torch.mm at the step's shapes
  beam_speed      batched vs per-image beam search, k = 1, 3, 5, 50 steps, identical captions checked
  encoders        feature extraction images/s of every encoder at 224×224, cache bytes per image
  cache_memory    peak RSS of training from a 20,000-image cache vs a 2,000-image one
  hard_attention  the cost of a hard-attention training step relative to soft
  cider_speed     captions/s of the SCST CIDEr-D reward vs pycocoevalcap's Cider, same scores checked
  app_latency     sat_app: seconds until its page is served, seconds to answer a 224×224 upload with beam 3
  grounding       scoring 5,000 images × 15 words against COCO instance masks: seconds and peak memory
  data_feed       captions/s the training loader delivers from a 20,000-image cache (D = 512, 1280) vs the training step
  startup         seconds from launching `sat_caption IMAGE` until its caption is printed
  prepare_speed   sat_prepare images/s: writes in turn vs a writer thread, 0 vs 2 loader workers, three encoders
That is the CPU suite (`--device cpu`, the default, whether or not the machine has a GPU). `--device cuda` runs the GPU suite
instead (what tools/gpu_check.sh and `make gpu-check` run), at the coco_modern preset: the two topics of bench/gpu/ and five
topics of bench/cpu/ on the GPU:
  amp_speed_cuda       training step captions/s in fp32, bf16 and fp16 (GradScaler) autocast, and the reference decoder on the
                       same GPU in fp32 and AMP; the time one COCO epoch would take at each speed
  beam_speed_cuda      batched vs per-image beam search images/s (fp32, as sat_caption runs), k = 1, 3, 5
  gpu_memory_cuda      torch.cuda.max_memory_allocated and captions/s per training batch size, doubling until out of memory or a cap
  data_feed_cuda       the training loader's captions/s from a 20,000-image cache, and with the cache held in GPU memory
  hard_attention_cuda  hard vs soft attention per training step, AMP
  flops_cuda           achieved TFLOP/s of the training step vs torch.mm at its shapes, AMP, and its CUDA profile
  encoders_cuda        feature extraction images/s, AMP
  prepare_speed_cuda   sat_prepare images/s on the GPU: cast to float16 on the device, workers, the writer thread
Without a CUDA device `--device cuda` fails with "error: no CUDA device ...". `--dry-run` runs those same GPU topic functions on the
CPU at tiny sizes (bf16 autocast on the CPU): a check, without a GPU, that the GPU run has no typo waiting. `--quick` runs a
suite at tiny sizes, a smoke test of every code path. Both write into a temporary folder unless --out names one.

A run replaces its own suite's part of latest.json and latest.md and keeps the other suite's: the CPU suite's and the GPU
suite's results stand in one summary, each with the machine it ran on.

Usage: .venv/bin/python bench/run.py [--device cpu|cuda] [--only train_speed,flops] [--threads 2] [--quick] [--dry-run]
                                     [--budget-s SECONDS] [--out bench/results]
(--only reruns some topics; the summary keeps the others' results from the last run. --budget-s skips the topics not yet started
once the run has taken that long, so a GPU session with a time limit still gets the first topics' results.)
"""
import argparse, importlib, json, os, re, sys, tempfile, time, traceback
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # the repository root: `bench` imports when run as a script
from bench.common import DISTURBED, RESULTS, OtherLoad, machine_info, machine_line, md_table, wait_for_quiet, write_result
from show_attend_tell.core import atomic_write

COMMAND = 'make bench'
GPU_COMMAND = 'make gpu-check'
NO_CUDA = 'no CUDA device (torch.cuda.is_available() is False): run this on a GPU machine'
SUITES = {'cpu': 'CPU suite', 'gpu': 'GPU suite', 'dry_run': 'Dry run of the GPU topics'}   # the summary's parts, in its order


class _Topic:
    "A topic module, imported when a topic first runs (so `--device cuda` without a GPU fails before the heavy imports)."
    def __init__(self, name): self.name = name
    def __getattr__(self, attr): return getattr(importlib.import_module(self.name), attr)


(app_latency, beam_speed, cache_memory, cider_speed, data_feed, encoders, flops, grounding, hard_attention, prepare_speed, startup,
 train_speed) = (_Topic(f'bench.cpu.{n}') for n in ('app_latency', 'beam_speed', 'cache_memory', 'cider_speed', 'data_feed',
                                                     'encoders', 'flops', 'grounding', 'hard_attention', 'prepare_speed', 'startup',
                                                     'train_speed'))
amp_speed, gpu_memory = _Topic('bench.gpu.amp_speed'), _Topic('bench.gpu.gpu_memory')


def cpu_topics(quick=False):
    "(name, what it measures, function(log) -> dict(name, data, md)) of the CPU suite."
    if quick:   # a smoke test of every code path, a minute or two
        return [('train_speed', 'training step vs the reference decoder', lambda log: train_speed.run(('tiny',), reps=2, log=log)),
                ('flops', 'achieved GFLOP/s of the training step', lambda log: flops.run(('tiny',), reps=2, profile_preset='tiny', log=log)),
                ('beam_speed', 'batched vs per-image beam search', lambda log: beam_speed.run(('tiny',), images=8, per_turn=1, reps=1, max_len=10, log=log)),
                ('encoders', 'feature extraction', lambda log: encoders.run(batch=2, images=4, reps=1, names=['efficientnet_lite0_local'], log=log)),
                ('cache_memory', 'peak memory while training from the cache', lambda log: cache_memory.run((200, 400), log=log)),
                ('hard_attention', 'hard vs soft attention per training step', lambda log: hard_attention.run(('tiny',), reps=2, log=log)),
                ('app_latency', 'sat_app start-up and response time', lambda log: app_latency.run(reps=2, log=log)),
                ('grounding', 'grounding against COCO masks', lambda log: grounding.run(images=100, modes=('cell',), log=log)),
                ('cider_speed', 'CIDEr-D reward vs pycocoevalcap', lambda log: cider_speed.run(200, (20,), reps=1, log=log)),
                ('data_feed', 'data feed vs training step', lambda log: data_feed.run(images=1000, dims=(512,), batches=5, step_presets={512: 'tiny'}, log=log)),
                ('prepare_speed', 'sat_prepare images/s', lambda log: prepare_speed.run(images=64, net_images=8, reps=1, names=('colour_grid',), log=log)),
                ('startup', 'sat_caption start-up', lambda log: startup.run(reps=2, log=log))]
    return [('train_speed', 'training step vs the reference decoder (tiny, coco_modern, coco)', lambda log: train_speed.run(log=log)),
            ('flops', 'achieved GFLOP/s of the training step vs torch.mm', lambda log: flops.run(log=log)),
            ('beam_speed', 'batched vs per-image beam search, k = 1, 3, 5', lambda log: beam_speed.run(log=log)),
            ('encoders', 'feature extraction images/s, cache bytes per image', lambda log: encoders.run(log=log)),
            ('cache_memory', 'peak memory while training from a 20,000 vs 2,000-image cache', lambda log: cache_memory.run(log=log)),
            ('hard_attention', 'hard vs soft attention per training step', lambda log: hard_attention.run(log=log)),
            ('app_latency', 'sat_app start-up and response time (224×224, beam 3)', lambda log: app_latency.run(log=log)),
            ('grounding', 'grounding 5,000 images × 15 words against COCO masks: seconds, peak memory', lambda log: grounding.run(log=log)),
            ('cider_speed', 'CIDEr-D reward (SCST) captions/s vs pycocoevalcap', lambda log: cider_speed.run(log=log)),
            ('data_feed', 'training loader captions/s from a 20,000-image cache (D = 512, 1280; files warm/cold, in memory) vs the step',
             lambda log: data_feed.run(log=log)),
            ('prepare_speed', 'sat_prepare images/s: writer thread and loader workers, three encoders', lambda log: prepare_speed.run(log=log)),
            ('startup', 'sat_caption: seconds from launch until its caption is printed', lambda log: startup.run(log=log))]


def gpu_topics(quick=False, device='cuda'):
    """The GPU topics on `device` (names end in _cuda); with `quick` at tiny sizes. On the CPU (the dry run) they run at tiny
    sizes under bf16 autocast, named _dryrun."""
    from show_attend_tell.config import amp_dtype
    dev = torch.device(device)
    amp = amp_dtype(dev) or torch.bfloat16        # the library's AMP dtype on a GPU; bf16 for the dry run on the CPU
    sfx = '_cuda' if dev.type == 'cuda' else '_dryrun'
    if quick:   # every code path of the GPU topics in seconds
        topics = [('amp_speed', 'training step fp32 vs AMP vs the reference decoder', lambda log: amp_speed.run('tiny', reps=1, device=dev, log=log)),
                  ('beam_speed', 'batched vs per-image beam search', lambda log: beam_speed.run(('tiny',), images=4, per_turn=1, reps=1, beams=(1, 3),
                                                                                               max_len=8, device=dev, log=log)),
                  ('gpu_memory', 'memory and captions/s per training batch size', lambda log: gpu_memory.run('tiny', start=2, max_batch=8, reps=1, device=dev,
                                                                                                             amp_dtype=amp, max_step_s=60, log=log)),
                  ('data_feed', 'data feed vs training step, cache in device memory', lambda log: data_feed.run(images=1000, dims=(512,), batches=5,
                                                                   step_presets={512: 'tiny'}, device=dev, amp_dtype=amp, log=log)),
                  ('hard_attention', 'hard vs soft attention per training step', lambda log: hard_attention.run(('tiny',), reps=1, device=dev,
                                                                                                                amp_dtype=amp, log=log)),
                  ('flops', 'achieved FLOP/s of the training step', lambda log: flops.run(('tiny',), reps=1, device=dev, amp_dtype=amp,
                                                                                          profile_preset='tiny', log=log)),
                  ('encoders', 'feature extraction', lambda log: encoders.run(batch=2, images=4, reps=1, device=dev, amp_dtype=amp,
                                                                              names=['efficientnet_lite0_local'], log=log)),
                  ('prepare_speed', 'sat_prepare images/s', lambda log: prepare_speed.run(images=32, net_images=8, reps=1, device=dev,
                                                                                        names=('colour_grid',), log=log))]
    else:       # the coco_modern preset, most telling first (--budget-s drops from the end)
        topics = [('amp_speed', 'training step captions/s: fp32 vs bf16 vs fp16 autocast, and the reference decoder, coco_modern preset',
                   lambda log: amp_speed.run('coco_modern', reps=5, device=dev, log=log)),
                  ('beam_speed', 'batched vs per-image beam search images/s, coco_modern preset, fp32, k = 1, 3, 5',
                   lambda log: beam_speed.run(('coco_modern',), images=100, per_turn=2, reps=2, device=dev, log=log)),
                  ('gpu_memory', 'GPU memory and captions/s per training batch size, doubling until out of memory (AMP)',
                   lambda log: gpu_memory.run('coco_modern', device=dev, amp_dtype=amp, log=log)),
                  ('data_feed', 'training loader captions/s vs the step, and the feature cache held in GPU memory (--features_in_memory)',
                   lambda log: data_feed.run(dims=(512,), device=dev, amp_dtype=amp, log=log)),
                  ('hard_attention', 'hard vs soft attention per training step, coco_modern preset, AMP',
                   lambda log: hard_attention.run(('coco_modern',), reps=5, device=dev, amp_dtype=amp, log=log)),
                  ('flops', 'achieved TFLOP/s of the training step vs torch.mm, coco_modern preset, AMP',
                   lambda log: flops.run(('coco_modern',), reps=5, device=dev, amp_dtype=amp, profile_preset='coco_modern', log=log)),
                  ('encoders', 'feature extraction images/s, AMP',
                   lambda log: encoders.run(batch=32, images=64, reps=2, device=dev, amp_dtype=amp, log=log)),
                  ('prepare_speed', 'sat_prepare images/s on the GPU: float16 cast on the device, workers, writer thread',
                   lambda log: prepare_speed.run(device=dev, log=log))]
    return [(name + sfx, what, fn) for name, what, fn in topics]


def rename(res, name):
    "A topic's result under another name (the GPU copies), with its headings marked."
    mark = ' (GPU)' if name.endswith('_cuda') else ' (CPU dry run of the GPU topic)' if name.endswith('_dryrun') else ''
    md = res['md'].replace('\n', mark + '\n', 1) if mark else res['md']
    return dict(name=name, data=res['data'], md=md)


def suite(device: torch.device, quick=False, dry_run=False):
    "The topics of a run: the CPU suite, the GPU topics on the GPU, or (dry run) the GPU topics on the CPU."
    return gpu_topics(quick or dry_run, device) if device.type == 'cuda' or dry_run else cpu_topics(quick)


def suite_key(device: torch.device, dry_run=False) -> str:
    "The run's part of the summary (a key of SUITES)."
    return 'gpu' if device.type == 'cuda' else 'dry_run' if dry_run else 'cpu'


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu', help="cpu (the CPU suite, `make bench`) or cuda / cuda:N (the GPU topics)")
    p.add_argument('--only', default='', help='comma-separated topic names (default: all)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: 2 on the CPU; with --device cuda, up to 8 '
                                                             'of the machine\'s cores)')
    p.add_argument('--quick', action='store_true', help='tiny sizes: a smoke test of every code path, into a temporary folder unless --out')
    p.add_argument('--dry-run', action='store_true', help='the GPU topics on the CPU at tiny sizes, into a temporary folder unless --out')
    p.add_argument('--budget-s', type=float, default=float('inf'), help='start no topic after the run has taken this many seconds')
    p.add_argument('--out', default=None, help='results folder: the summary latest.json and latest.md, each topic\'s files in its '
                                               'cpu/ or gpu/ (default: bench/results)')
    p.add_argument('--max-wait', type=float, default=None, help='seconds in all to wait, before topics, for other processes to '
                                                                'leave the CPU (default 60; 0 with --device cuda or --dry-run)')
    p.add_argument('--max-redo', type=float, default=None, help='seconds in all to spend rerunning timing rounds that other processes '
                                                                'disturbed (default 150; 20 with --device cuda, 0 with --dry-run)')
    a = p.parse_args()
    try: dev = torch.device(a.device)
    except RuntimeError: fail(f"--device {a.device!r} is not a device: use cpu, cuda or cuda:N", 2)
    if dev.type not in ('cpu', 'cuda'): fail(f"--device {a.device!r}: use cpu, cuda or cuda:N", 2)
    cuda = dev.type == 'cuda'
    if cuda and not torch.cuda.is_available(): fail(NO_CUDA)
    if cuda and a.dry_run: fail("--dry-run runs the GPU topics on the CPU: leave out --device cuda", 2)
    if cuda and (dev.index or 0) >= torch.cuda.device_count():
        fail(f"--device {a.device}: this machine has {torch.cuda.device_count()} CUDA device(s)", 2)
    if cuda and dev.index is not None: torch.cuda.set_device(dev)    # (set_device refuses a device without an index)
    a.threads = a.threads or (min(8, os.cpu_count() or 2) if cuda else 2)
    # a GPU's timings hardly feel the CPU's load; a dry run's numbers mean nothing: neither waits for a quiet CPU
    max_wait = a.max_wait if a.max_wait is not None else 0.0 if cuda or a.dry_run else 60.0
    DISTURBED['budget_s'] = a.max_redo if a.max_redo is not None else 20.0 if cuda else 0.0 if a.dry_run else 150.0
    torch.set_num_threads(a.threads)
    # the numbers of a quick run or a dry run mean nothing: they go to a temporary folder, never over the real results
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix='sat_bench_')) if a.quick or a.dry_run else RESULTS
    topic_dir = out / ('gpu' if cuda or a.dry_run else 'cpu')
    only = set(filter(None, a.only.split(',')))
    topics = suite(dev, a.quick, a.dry_run)
    if only:
        unknown = only - {t[0] for t in suite(dev, False, a.dry_run)}
        if unknown: fail(f"--only: no topic {', '.join(sorted(unknown))} in this suite; choose from {', '.join(t[0] for t in topics)}", 2)
        topics = [t for t in topics if t[0] in only]
    t_all, waited_all, results = time.perf_counter(), 0.0, {}
    for i, (name, what, fn) in enumerate(topics, 1):
        if time.perf_counter() - t_all > a.budget_s:
            print(f"[{i}/{len(topics)}] {name}: skipped (the run has taken its --budget-s of {a.budget_s:.0f} s)", flush=True)
            results[name] = dict(what=what, status='skipped', seconds=0.0, other_processes_cores=None, waited_s=0.0, dropped_rounds=0,
                                 date=time.strftime('%Y-%m-%d %H:%M'), name=name, data=dict(skipped=f'--budget-s {a.budget_s:g}'),
                                 md=f"## {name}\n\n**Skipped:** the run had used its time budget (`--budget-s {a.budget_s:g}`).")
            continue
        waited = wait_for_quiet(max(0.0, max_wait - waited_all)) if max_wait > waited_all else 0.0
        waited_all += waited
        print(f"[{i}/{len(topics)}] {name}: {what} ...", flush=True)
        load, t0 = OtherLoad().start(), time.perf_counter()
        DISTURBED['rounds'] = 0
        try:
            res = rename(fn(lambda s: print(s, flush=True)), name)
            write_result(topic_dir, name, res['data'], res['md'])
            status = 'ok'
        except Exception as e:   # one broken topic must not lose the others' numbers
            tb = traceback.format_exc()
            print(tb, file=sys.stderr)
            res = dict(name=name, data=dict(error=f'{type(e).__name__}: {e}', traceback=tb),
                       md=f"## {name}\n\n**Failed:** `{type(e).__name__}: {e}`")
            status = 'failed'
        finally:
            if cuda: torch.cuda.empty_cache()      # the next topic starts with the GPU's memory free
        secs, others = round(time.perf_counter() - t0, 1), load.stop()
        dropped = DISTURBED['rounds']
        results[name] = dict(what=what, status=status, seconds=secs, other_processes_cores=others, waited_s=waited,
                             dropped_rounds=dropped, date=time.strftime('%Y-%m-%d %H:%M'), **res)
        print(f"[{i}/{len(topics)}] {name}: {status} in {secs:.0f} s (other processes used {others} cores meanwhile; "
              f"{dropped} disturbed timing rounds dropped and rerun)", flush=True)
    wall, n_run = round(time.perf_counter() - t_all, 1), sum(r['status'] != 'skipped' for r in results.values())
    key = suite_key(dev, a.dry_run)
    summary = json.loads((out / 'latest.json').read_text()) if (out / 'latest.json').exists() else {}
    if only:   # a partial run: the other topics keep their results from the last run
        old = {n: r for n, r in summary.get(key, {}).get('topics', {}).items() if 'md' in r and 'data' in r}
        order = [t[0] for t in suite(dev, False, a.dry_run)]
        results = {n: results[n] if n in results else dict(dict(date='?', seconds=None, waited_s=0, other_processes_cores=None,
                                                                dropped_rounds=None), **old[n], name=n, rerun=False)
                   for n in order if n in results or n in old}
    summary[key] = suite_summary(results, wall, dev, a)
    write_latest(out, summary)
    print(f"bench: {n_run} topics in {wall:.0f} s; results in {out}/latest.md, each topic's in {topic_dir}/", flush=True)
    if any(r['status'] == 'failed' for r in results.values()): sys.exit(1)


def fail(msg, code=1):
    "A one-line error on stderr and the exit status (1: no CUDA device; 2: a wrong argument)."
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def suite_summary(results: dict, wall: float, device: torch.device, args) -> dict:
    "One suite's part of latest.json: the command, the machine, the goals met or not, and every topic's data and markdown."
    cuda = device.type == 'cuda'
    info = machine_info(device if cuda else 'cpu')
    flags = (f' --device {args.device}' if cuda else '') + (' --quick' if args.quick else '') + (' --dry-run' if args.dry_run else '')
    # the topics' goals are set for the CPU: a GPU run (or its dry run) reports its numbers without them
    goals = [] if cuda or args.dry_run else [(name, r['data']['goal']) for name, r in results.items()
                                            if isinstance(r['data'], dict) and isinstance(r['data'].get('goal'), dict)
                                            and {'goal', 'shown', 'met'} <= set(r['data']['goal'])]   # (grounding's 'goal' holds figures)
    invocation = f'.venv/bin/python bench/run.py{flags}'
    return dict(command=GPU_COMMAND if cuda else invocation if args.quick or args.dry_run else COMMAND, invocation=invocation, machine=info, gpu=info['device'] if cuda else 'cpu only',
                wall_s=wall, quick=args.quick, dry_run=args.dry_run, device=str(device), threads=args.threads,
                rerun_only=sorted(n for n, r in results.items() if r.get('rerun', True)) if args.only else None,
                goals={n: g for n, g in goals},
                topics={n: dict(what=r['what'], status=r['status'], date=r['date'], seconds=r['seconds'], waited_s=r['waited_s'],
                                other_processes_cores=r['other_processes_cores'], dropped_rounds=r['dropped_rounds'],
                                data=r['data'], md=r['md']) for n, r in results.items()})


def write_latest(out: Path, summary: dict):
    "latest.json (every suite's data) and latest.md (one document: each suite's machine, goals and tables)."
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: summary[k] for k in SUITES if k in summary}
    atomic_write(out / 'latest.json', json.dumps(summary, indent=2, default=str))
    atomic_write(out / 'latest.md', render(summary))


def render(summary: dict) -> str:
    "The markdown of the summary: an overview, then each suite with its topics' sections one heading level down."
    parts = [f"{SUITES[k]} (`{s['command']}`, {s['machine']['date']})" for k, s in summary.items()]
    md = ["# Benchmark results", "",
          "Each comparison is a ratio of two things timed in turns in the same run; a round of turns during which other "
          "processes kept more than half a core busy is dropped and run again after a quieter moment (within limits). Each "
          "suite's table shows how busy other processes kept the CPU during each topic, and how many rounds were dropped.", "",
          f"Suites here: {', '.join(parts)}."
          + ("" if 'gpu' in summary else " No GPU results yet: `make gpu-check` on a machine with CUDA adds them."), ""]
    for key, s in summary.items():
        md += [f"## {SUITES[key]}", ""] + suite_md(key, s)
    return '\n'.join(md)


def suite_md(key: str, s: dict) -> list:
    "The lines of one suite's part of latest.md."
    gpu_line = {'gpu': f"GPU: {s['gpu']}. Every topic ran on it (names ending in _cuda), in the precision its heading says; "
                       f"the timings are of the GPU (synchronised), the CPU only launches the work.",
                'dry_run': "**Dry run**: the GPU topics' code on the CPU at tiny sizes, under bf16 autocast where they use AMP. "
                           "The numbers mean nothing; the run shows that `--device cuda` has no error waiting in its code.",
                'cpu': "GPU: none (the CPU suite runs on the CPU whether or not the machine has a GPU; `make gpu-check`, or "
                       "`bench/run.py --device cuda`, runs the GPU suite on a machine with one)."}[key]
    only = s.get('rerun_only')
    how = f"`{s['command']}`" + (f" (`{s['invocation']}`)" if s['invocation'] != s['command'] else '')
    md = [f"Command: {how}, whole run {s['wall_s'] / 60:.1f} min"
          + (f" (this time only {', '.join(only)}; the other topics are from earlier runs, dated in the table below)" if only else '')
          + f". Machine: {machine_line(s['machine'])}.", "", gpu_line, ""]
    if s['goals']:
        md += ["### Goals", "",
               md_table(['topic', 'goal', 'measured', 'met'],
                        [(n, g['goal'], g['shown'], 'yes' if g['met'] else '**no**') for n, g in s['goals'].items()]), ""]
    md += [md_table(['topic', 'measures', 'status', 'run', 'seconds', 'other processes (cores)', 'rounds dropped'],
                    [(n, r['what'], r['status'], r['date'], r['seconds'], r['other_processes_cores'], r['dropped_rounds'])
                     for n, r in s['topics'].items()]), ""]
    for r in s['topics'].values(): md += [re.sub(r'^(#+) ', r'#\1 ', r['md'], flags=re.M), ""]
    return md


if __name__ == '__main__':
    main()
