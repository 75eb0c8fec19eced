"""The benchmark suite (`make bench`): every measurement of issue 8, each topic's results in bench/results/<topic>.json
and .md, and all of them together in bench/results/latest.json and latest.md.

Topics (each figure that compares two things measures both in the same run, timed in turns, as a ratio):
  train_speed     training step captions/s at the tiny, flickr8k and coco presets vs a reference decoder
  flops           achieved GFLOP/s of the training step as a fraction of torch.mm at the step's shapes
  beam_speed      batched vs per-image beam search, k = 1, 3, 5, 50 steps, identical captions checked
  encoders        feature extraction images/s of every encoder at 224×224, cache bytes per image
  cache_memory    peak RSS of training from a 20,000-image cache vs a 2,000-image one
  hard_attention  the cost of a hard-attention training step relative to soft
  cider_speed     captions/s of the SCST CIDEr-D reward vs pycocoevalcap's Cider, same scores checked
  app_latency     sat_app: seconds until its page is served, seconds to answer a 224×224 upload with beam 3
  grounding       scoring 5,000 images × 15 words against COCO instance masks: seconds and peak memory
With a CUDA GPU the training, FLOP/s, hard-attention, beam and encoder topics run again on it under autocast (AMP);
without one the results say "cpu only".

Usage: .venv/bin/python bench/run.py [--only train_speed,flops] [--threads 2] [--quick] [--out bench/results]
(--only reruns some topics; latest.md keeps the others' results from the last run.)
"""
import argparse, json, sys, time, traceback
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
import app_latency, beam_speed, cache_memory, cider_speed, encoders, flops, grounding, hard_attention, train_speed
from common import DISTURBED, RESULTS, OtherLoad, machine_info, machine_line, md_table, wait_for_quiet, write_result, _atomic_write

COMMAND = 'make bench'


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
                ('cider_speed', 'CIDEr-D reward vs pycocoevalcap', lambda log: cider_speed.run(200, (20,), reps=1, log=log))]
    return [('train_speed', 'training step vs the reference decoder (tiny, flickr8k, coco)', lambda log: train_speed.run(log=log)),
            ('flops', 'achieved GFLOP/s of the training step vs torch.mm', lambda log: flops.run(log=log)),
            ('beam_speed', 'batched vs per-image beam search, k = 1, 3, 5', lambda log: beam_speed.run(log=log)),
            ('encoders', 'feature extraction images/s, cache bytes per image', lambda log: encoders.run(log=log)),
            ('cache_memory', 'peak memory while training from a 20,000 vs 2,000-image cache', lambda log: cache_memory.run(log=log)),
            ('hard_attention', 'hard vs soft attention per training step', lambda log: hard_attention.run(log=log)),
            ('app_latency', 'sat_app start-up and response time (224×224, beam 3)', lambda log: app_latency.run(log=log)),
            ('grounding', 'grounding 5,000 images × 15 words against COCO masks: seconds, peak memory', lambda log: grounding.run(log=log)),
            ('cider_speed', 'CIDEr-D reward (SCST) captions/s vs pycocoevalcap', lambda log: cider_speed.run(log=log))]


def gpu_topics(quick=False):
    "The same measurements on the GPU under autocast (AMP); names end in _cuda."
    from show_attend_tell.config import amp_dtype
    dev = torch.device('cuda')
    amp = amp_dtype(dev)
    presets = ('tiny',) if quick else ('tiny', 'coco')
    return [('train_speed_cuda', 'training step vs the reference decoder, GPU + AMP',
             lambda log: train_speed.run(presets, reps=5, device=dev, amp_dtype=amp, log=log)),
            ('flops_cuda', 'achieved TFLOP/s of the training step vs torch.mm, GPU + AMP',
             lambda log: flops.run(presets, reps=5, device=dev, amp_dtype=amp, profile_preset=presets[-1], log=log)),
            ('hard_attention_cuda', 'hard vs soft attention per training step, GPU + AMP',
             lambda log: hard_attention.run(presets, reps=5, device=dev, amp_dtype=amp, log=log)),
            ('beam_speed_cuda', 'batched vs per-image beam search, GPU + AMP',
             lambda log: beam_speed.run(('tiny',) if quick else ('flickr8k',), images=8 if quick else 100, per_turn=2,
                                        reps=2, device=dev, amp_dtype=amp, log=log)),
            ('encoders_cuda', 'feature extraction, GPU + AMP',
             lambda log: encoders.run(batch=32, images=64, reps=3, device=dev, amp_dtype=amp, log=log))]


def rename(res, name):
    "A topic's result under another name (the GPU copies), with its headings marked."
    md = res['md'].replace('\n', ' (GPU, AMP)\n', 1) if name.endswith('_cuda') else res['md']
    return dict(name=name, data=res['data'], md=md)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--only', default='', help='comma-separated topic names (default: all)')
    p.add_argument('--threads', type=int, default=2, help='torch threads (the machine has 2 cores)')
    p.add_argument('--quick', action='store_true', help='tiny sizes: a smoke test of every code path')
    p.add_argument('--out', default=str(RESULTS), help='results folder')
    p.add_argument('--max-wait', type=float, default=60, help='seconds in all to wait, before topics, for other processes to leave the CPU')
    p.add_argument('--max-redo', type=float, default=150, help='seconds in all to spend rerunning timing rounds that other processes disturbed')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    DISTURBED['budget_s'] = a.max_redo
    out = Path(a.out)
    only = set(filter(None, a.only.split(',')))
    topics = cpu_topics(a.quick)
    cuda = torch.cuda.is_available()
    if cuda: topics += gpu_topics(a.quick)
    if only: topics = [t for t in topics if t[0] in only]
    t_all, waited_all, results = time.perf_counter(), 0.0, {}
    for i, (name, what, fn) in enumerate(topics, 1):
        waited = wait_for_quiet(max(0.0, a.max_wait - waited_all)) if a.max_wait > waited_all else 0.0
        waited_all += waited
        print(f"[{i}/{len(topics)}] {name}: {what} ...", flush=True)
        load, t0 = OtherLoad().start(), time.perf_counter()
        DISTURBED['rounds'] = 0
        try:
            res = rename(fn(lambda s: print(s, flush=True)), name)
            write_result(out, name, res['data'], res['md'])
            status = 'ok'
        except Exception as e:   # one broken topic must not lose the others' numbers
            tb = traceback.format_exc()
            print(tb, file=sys.stderr)
            res = dict(name=name, data=dict(error=f'{type(e).__name__}: {e}', traceback=tb),
                       md=f"## {name}\n\n**Failed:** `{type(e).__name__}: {e}`")
            status = 'failed'
        secs, others = round(time.perf_counter() - t0, 1), load.stop()
        dropped = DISTURBED['rounds']
        results[name] = dict(what=what, status=status, seconds=secs, other_processes_cores=others, waited_s=waited,
                             dropped_rounds=dropped, date=time.strftime('%Y-%m-%d %H:%M'), **res)
        print(f"[{i}/{len(topics)}] {name}: {status} in {secs:.0f} s (other processes used {others} cores meanwhile; "
              f"{dropped} disturbed timing rounds dropped and rerun)", flush=True)
    wall, n_run = round(time.perf_counter() - t_all, 1), len(results)
    if only:   # a partial run: the other topics keep their results from the last run
        earlier = out / 'latest.json'
        old = json.loads(earlier.read_text()).get('topics', {}) if earlier.exists() else {}
        order = [t[0] for t in cpu_topics() + (gpu_topics() if cuda else [])]
        old = {n: r for n, r in old.items() if 'md' in r and 'data' in r}
        merged = {n: results[n] if n in results else dict(dict(date='?', seconds=None, waited_s=0, other_processes_cores=None,
                                                               dropped_rounds=None), **old[n], name=n, rerun=False)
                  for n in order if n in results or n in old}
        results = merged
    write_latest(out, results, wall, cuda, a)
    print(f"bench: {n_run} topics in {wall:.0f} s; results in {out}/latest.md", flush=True)
    if any(r['status'] != 'ok' for r in results.values()): sys.exit(1)


def write_latest(out: Path, results: dict, wall: float, cuda: bool, args):
    "latest.json (every topic's data) and latest.md (one document: machine, goals, every table)."
    info = machine_info('cuda' if cuda else 'cpu')
    goals = [(name, r['data']['goal']) for name, r in results.items() if isinstance(r['data'], dict) and 'goal' in r['data']]
    data = dict(command=COMMAND, machine=info, gpu=info['device'] if cuda else 'cpu only', wall_s=wall, quick=args.quick,
                threads=args.threads, goals={n: g for n, g in goals},
                topics={n: dict(what=r['what'], status=r['status'], date=r['date'], seconds=r['seconds'], waited_s=r['waited_s'],
                                other_processes_cores=r['other_processes_cores'], dropped_rounds=r['dropped_rounds'],
                                data=r['data'], md=r['md']) for n, r in results.items()})
    _atomic_write(out / 'latest.json', json.dumps(data, indent=2, default=str))

    md = ["# Benchmark results", "",
          f"Command: `{COMMAND}` (`.venv/bin/python bench/run.py{' --quick' if args.quick else ''}`), whole run {wall / 60:.1f} min"
          + (f" (this time only {', '.join(n for n, r in results.items() if r.get('rerun', True))}; the other topics are "
             f"from earlier runs, dated in the table below)" if args.only else '') + ". "
          f"Machine: {machine_line(info)}.", "",
          ("GPU: " + info['device'] + " — the GPU topics (names ending in _cuda) ran under autocast (AMP).") if cuda else
          "GPU: **cpu only** (`torch.cuda.is_available()` is False on this machine), so there are no GPU figures.", "",
          "This machine is shared with other work. Each comparison is a ratio of two things timed in turns in the same run; "
          "a round of turns during which other processes kept more than half a core busy is dropped and run again after a "
          "quieter moment (within limits). Below: how busy other processes kept the CPU during each topic, and how many "
          "rounds were dropped.", "",
          "## Goals", "",
          md_table(['topic', 'goal', 'measured', 'met'],
                   [(n, g['goal'], g['shown'], 'yes' if g['met'] else '**no**') for n, g in goals]), "",
          md_table(['topic', 'measures', 'status', 'run', 'seconds', 'other processes (cores)', 'rounds dropped'],
                   [(n, r['what'], r['status'], r['date'], r['seconds'], r['other_processes_cores'], r['dropped_rounds'])
                    for n, r in results.items()]), ""]
    for r in results.values(): md += [r['md'], ""]
    _atomic_write(out / 'latest.md', '\n'.join(md))


if __name__ == '__main__':
    main()
