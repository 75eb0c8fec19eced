"""Helpers shared by the benchmark topics (bench/cpu/, bench/gpu/) and bench/run.py: what machine ran them, timing that
survives a busy shared machine, training steps and batches of the real model, markdown tables, and writing each topic's
JSON + markdown."""
import functools, json, os, platform, statistics, time
from contextlib import nullcontext
from pathlib import Path

import torch
from show_attend_tell.config import preset
from show_attend_tell.core import atomic_write

RESULTS = Path(__file__).parent / 'results'           # latest.json and latest.md: the summary of every suite
CPU_RESULTS, GPU_RESULTS = RESULTS / 'cpu', RESULTS / 'gpu'   # each topic's <name>.json and .md


@functools.cache
def feat_dim(encoder: str) -> int:
    "D of the annotation vectors of the library's encoder `encoder` (built once with random weights, to read its size)."
    from show_attend_tell.encoder import get_encoder
    return get_encoder(encoder, pretrained=False).feat_dim


def preset_batch(name, length, device='cpu', batch=None, seed=0):
    """(config, D, B, features, captions) of a training-step benchmark at preset `name`: a length-bucketed batch of the
    preset's size (or `batch`) with `length` words per caption over the preset's encoder grid."""
    cfg = preset(name)
    D, B = feat_dim(cfg.encoder), batch or cfg.batch_size
    feats, caps = caption_batch(cfg.vocab_size, B, length, cfg.num_locations, D, seed=seed, device=device)
    return cfg, D, B, feats, caps


REPO = Path(__file__).resolve().parent.parent
SHAPES_CACHE = Path(__file__).parent / '.cache' / 'shapes'


def shapes_model(log=print):
    """(checkpoint, prepared folder, where it came from) of a trained Shapes model: the demo's (`make demo`) when it
    exists, else one trained here once (tiny preset, 1,000 images, 4 epochs, about a minute on 2 cores) under
    bench/.cache/shapes, resumable, reused by later runs."""
    demo = REPO / 'demo_out'
    if (demo / 'run_soft' / 'best.pth').is_file() and (demo / 'data' / 'dataset.json').is_file():
        return demo / 'run_soft' / 'best.pth', demo / 'data', 'the demo (demo_out/run_soft/best.pth)'
    from show_attend_tell.features import prepare
    from show_attend_tell.training import train
    data, run = SHAPES_CACHE / 'data', SHAPES_CACHE / 'run'
    if not (run / 'best.pth').is_file():
        log(f"  (no demo_out: training a Shapes model once under {SHAPES_CACHE})")
        if not (data / 'dataset.json').is_file():
            prepare('shapes', out=data, preset='tiny', n_train=1000, n_val=100, n_test=100, device='cpu', progress=False)
        train('tiny', data, run, resume=True, device='cpu', epochs=4, progress=False)
    return run / 'best.pth', data, f'trained for the benchmark ({SHAPES_CACHE.relative_to(REPO)}/run/best.pth: 1,000 images, 4 epochs)'


def machine_info(device='cpu'):
    "What the numbers were measured on; `device` is 'cpu only' when no GPU was used."
    dev = torch.device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else None
    return dict(date=time.strftime('%Y-%m-%d %H:%M'), python=platform.python_version(), torch=torch.__version__,
                cpu=_cpu_name(), cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                cuda_available=torch.cuda.is_available(), device=gpu or 'cpu only')


def _cpu_name():
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def machine_line(info: dict) -> str:
    "One line naming the machine, for the markdown."
    return (f"{info['device']}; {info['cpu']}, {info['cores']} cores, {info['torch_threads']} torch threads; "
            f"torch {info['torch']}, Python {info['python']}; {info['date']}")


def load_avg() -> float:
    "The 1-minute load average (other processes on this shared machine show up here)."
    return round(os.getloadavg()[0], 2)


def sync(device):
    "Wait for queued GPU work, so a timer sees it."
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()


# timing rounds dropped because other processes were busy (run.py reports them per topic), and the seconds that
# dropping and waiting may still cost in this process (run.py sets a budget for the whole suite)
DISTURBED = dict(rounds=0, budget_s=float('inf'))


def time_interleaved(fns: dict, reps: int = 3, warmup: int = 1, device='cpu', min_total: float = 3.0, max_reps: int = 40,
                     max_load: float = 0.5, max_redo_s: float = 90.0) -> dict:
    """Median seconds of each function in `fns`, run in turns (a, b, a, b, ...) so that a burst of load from
    other processes hits all of them alike; their ratio is the figure to trust. At least `reps` rounds, more (up to
    `max_reps`) until the rounds have taken `min_total` seconds, so that fast functions get enough samples.
    A round of 0.2 s or more during which other processes kept more than `max_load` cores busy is dropped and run
    again after a quieter moment (for at most `max_redo_s` seconds in all): on a 2-core machine one busy core
    stalls every parallel region of a 2-thread torch."""
    for _ in range(warmup):
        for f in fns.values(): f(); sync(device)
    ts = {k: [] for k in fns}
    t_start, redo_s = time.perf_counter(), 0.0
    while True:
        load, rnd = OtherLoad().start(), {}
        for k, f in fns.items():
            sync(device); t0 = time.perf_counter(); f(); sync(device)
            rnd[k] = time.perf_counter() - t0
        if sum(rnd.values()) >= 0.2 and load.stop() > max_load and redo_s < max_redo_s and DISTURBED['budget_s'] > 0:
            t0 = time.perf_counter()
            wait_for_quiet(min(30.0, max_redo_s - redo_s, DISTURBED['budget_s']), log=lambda *_: None)
            cost = time.perf_counter() - t0 + sum(rnd.values())
            redo_s += cost; DISTURBED['budget_s'] -= cost
            DISTURBED['rounds'] += 1
            continue
        for k, v in rnd.items(): ts[k].append(v)
        n = len(ts[k])
        if n >= max_reps or (n >= reps and time.perf_counter() - t_start >= min_total): break
    return {k: statistics.median(v) for k, v in ts.items()}


def autocast(device, dtype):
    "Autocast context for `dtype` on `device` (no-op for None)."
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None else nullcontext()


def caption_batch(vocab_size, B, T, L, D, seed=0, device='cpu'):
    """A length-bucketed batch: B captions of exactly T words (<start> w_1 … w_{T-1} <end>, no padding) and random
    annotation vectors (B, L, D)."""
    from show_attend_tell.vocab import START, END
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, L, D, generator=g)
    caps = torch.randint(4, vocab_size, (B, T + 1), generator=g)
    caps[:, 0], caps[:, -1] = START, END
    return feats.to(device), caps.to(device)


class TrainStep:
    """One training step of a `ShowAttendTell` as training runs it: teacher-forced forward, the library's
    `CaptionLoss` (NLL + doubly stochastic penalty, or the REINFORCE surrogate for a sampled hard pass), backward,
    Adam. `mode`: 'soft', 'expected' or 'hard' (a sampled pass)."""
    def __init__(self, model, feats, caps, mode='soft', amp_dtype=None, lr=1e-4):
        from show_attend_tell.losses import CaptionLoss
        self.model, self.feats, self.caps, self.mode, self.amp_dtype = model.train(), feats, caps, mode, amp_dtype
        self.loss = CaptionLoss(model.cfg)
        self.loss.sampled = mode == 'hard'
        self.opt = torch.optim.Adam(model.parameters(), lr)
        self.scaler = torch.amp.GradScaler('cuda') if amp_dtype == torch.float16 else None

    def __call__(self):
        with autocast(self.feats.device, self.amp_dtype):
            out = self.model(self.feats, self.caps, attention_mode=self.mode)
            loss = self.loss(out, self.caps)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward(); self.opt.step()
        else:
            self.scaler.scale(loss).backward(); self.scaler.step(self.opt); self.scaler.update()
        return loss


def md_table(headers, rows) -> str:
    "A markdown table; numbers right-aligned."
    def align(i): return '---:' if rows and all(isinstance(r[i], (int, float)) for r in rows) else '---'
    out = ['| ' + ' | '.join(headers) + ' |', '|' + '|'.join(align(i) for i in range(len(headers))) + '|']
    out += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
    return '\n'.join(out)


class Profile:
    """torch.profiler's operators of one call of `fn`, grouped by input shape: `.md(n)` is the top-n table (operator,
    input shapes, calls, self time, share of the total), `.share(op, match)` the share of the rows of operator `op`
    (None: any) whose input shapes satisfy `match`."""
    def __init__(self, fn, device='cpu'):
        from torch.profiler import profile, ProfilerActivity
        gpu = torch.device(device).type == 'cuda'
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
        with profile(activities=acts, record_shapes=True) as prof: fn()
        key = 'self_device_time_total' if gpu else 'self_cpu_time_total'
        ev = prof.key_averages(group_by_input_shape=True)
        self.rows = sorted(([e.key, [s for s in e.input_shapes if s], e.count, getattr(e, key) / 1e3] for e in ev), key=lambda r: -r[3])
        self.total_ms = sum(r[3] for r in self.rows) or 1.0

    def share(self, op, match=lambda shapes: True) -> float:
        def ok(shapes):
            try: return bool(match(shapes))
            except (IndexError, TypeError): return False
        return sum(r[3] for r in self.rows if (op is None or r[0] == op) and ok(r[1])) / self.total_ms

    def md(self, n=12) -> str:
        return md_table(['operator', 'input shapes', 'calls', 'self ms', 'share'],
                        [(r[0], '`' + str(r[1]).replace('], [', '],[') + '`', r[2], f'{r[3]:.1f}', f'{r[3] / self.total_ms:.0%}')
                         for r in self.rows[:n]])


def write_result(out_dir, name, data: dict, table_md: str, notes: str = ''):
    "Write `<name>.json` and `<name>.md` (notes, then the tables) into `out_dir`."
    out = Path(out_dir); out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f'{name}.json', json.dumps(data, indent=2, default=str))
    atomic_write(out / f'{name}.md', (f'{notes}\n\n' if notes else '') + table_md + '\n')


def save_and_show(res: dict, out_dir=CPU_RESULTS):
    "What a topic run as a script does with its result `dict(name, data, md)`: write it into `out_dir`, print its markdown."
    write_result(out_dir, res['name'], res['data'], res['md'])
    print(res['md'])


def peak_mb() -> float:
    """Peak resident memory of this process, MB: VmHWM, the high-water mark of its own address space (ru_maxrss would
    also carry the RSS of the parent it was forked from)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'): return int(line.split()[1]) / 1024
    except OSError: pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024          # Linux: KiB


def _cpu_ticks():
    "(busy ticks of the whole machine, ticks of this process) from /proc; None where /proc is missing."
    try:
        with open('/proc/stat') as f: v = [int(x) for x in f.readline().split()[1:9]]
        with open('/proc/self/stat') as f: st = f.read().rsplit(')', 1)[1].split()
    except OSError: return None
    return sum(v) - v[3] - v[4], sum(int(x) for x in st[11:15])  # all but idle and iowait; this process's and its reaped children's


class OtherLoad:
    """How many cores other processes kept busy between `start()` and `stop()` (this machine is shared: a busy
    core stalls every parallel region of a 2-thread torch, so the numbers of a busy moment are slower)."""
    def start(self):
        self.t0, self.c0 = time.monotonic(), _cpu_ticks(); return self
    def stop(self) -> float:
        c1, dt = _cpu_ticks(), time.monotonic() - self.t0
        if c1 is None or self.c0 is None or dt <= 0: return float('nan')
        hz = os.sysconf('SC_CLK_TCK')
        return round(max(0.0, ((c1[0] - self.c0[0]) - (c1[1] - self.c0[1])) / hz / dt), 2)


def wait_for_quiet(max_wait=60.0, threshold=0.3, window=2.0, log=print) -> float:
    "Wait (at most `max_wait` s) until other processes use less than `threshold` cores; returns the seconds waited."
    t0, said = time.monotonic(), False
    while time.monotonic() - t0 < max_wait:
        w = OtherLoad().start(); time.sleep(window)
        if w.stop() < threshold: break
        if not said: log("  (other processes are using the CPU: waiting for a quieter moment)"); said = True
    waited = round(time.monotonic() - t0, 1)
    if said: log(f"  (waited {waited:.0f} s)")
    return waited


def step_bench_main(run, doc: str, presets: str, reps: int):
    "Command line of a training-step topic (train_speed, flops, hard_attention): --presets --length --reps --threads."
    import argparse
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument('--presets', default=presets); p.add_argument('--length', type=int, default=12)
    p.add_argument('--reps', type=int, default=reps); p.add_argument('--threads', type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    save_and_show(run(a.presets.split(','), a.length, a.reps))
