"""Data feed: captions/s the training DataLoader delivers from a 20,000-image feature cache, against the training step.

Can the loader keep the training step busy? A synthetic prepared folder of 20,000 images with 5 captions each (as COCO
has; 8-14 words) is written at D = 512 (VGG-19, the paper's encoder) and D = 1280 (EfficientNet-Lite0, ours): 196 × D
float16 rows in shards of 1,000 images with the library's manifest (`cache_signature` of cache_memory's stand-in
encoder), 4 GB and 10 GB, one D at a time, deleted after. The shards are written straight as .npy files (random rows,
each stamped with its row number), not through an encoder: 20,000 encoder passes and their images would take minutes.
The batches come from the library's own loader, built as `sat_train` builds it (`load_prepared` → `get_dls`: batch 64,
length-bucketed, shuffled, `max_caption_len` of the preset), moved to the training device, and are counted after the
first one (the start-up, worker processes included, is reported apart). A batch travels as the cache stores it, float16,
and `BucketDL.feed` copies it to the device without blocking and casts it there to the loader's `dtype`: float32 (what
`sat_train` asks for; the model casts it to autocast's dtype once per batch under AMP) or float16 (left as it came); on
CUDA from pinned (page-locked) memory or not (`pin_memory`, on by default there):

  files, warm    rows read from the shard files (`os.pread`) with every page already in the page cache (the shards
                 are read once after writing), num_workers 0 and 2, each dtype (and on CUDA pinned or not)
  files, cold    sat_train's feed (float32, pinned on CUDA) with the shards' pages dropped from the page cache first (`posix_fadvise(DONTNEED)` on each
                 shard: it needs no root and touches no other file's cache); on a virtual machine the host may still
                 cache the disk, so "cold" is cold for this system, not necessarily for the hardware
  memory         the cache held as one float16 tensor in the device's memory (`FeatureCache.hold`, `sat_train
                 --features_in_memory`) and every batch gathered there by index; RAM on the CPU, the GPU's on CUDA;
                 float32 and float16

The training step is timed in the same run on the same device (bench/common.TrainStep: forward, loss, backward, Adam;
soft attention, batch 64, 12-word captions): the `coco` preset (the original's configuration, D = 512) and
`coco_modern` (ours, D = 1280). With num_workers 0 the loader and the step take turns in one process, so an epoch
costs captions/feed + captions/step; with workers the two overlap and the slower sets the pace. The verdict uses the feed
sat_train chooses by default (`default_num_workers`: none on the CPU, the spare cores on a GPU; float32; pinned on CUDA).

Usage: .venv/bin/python bench/cpu/data_feed.py [--images 20000] [--dims 512 1280] [--batches 25] [--device cpu|cuda]
Writes bench/results/cpu/data_feed.json and .md (bench/results/gpu/data_feed_cuda.* with --device cuda).
"""
import argparse, inspect, json, os, shutil, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root: `bench` imports when run as a script
from bench.common import CPU_RESULTS, DISTURBED, GPU_RESULTS, OtherLoad, TrainStep, caption_batch, feat_dim, load_avg, \
    machine_info, md_table, save_and_show, sync, time_interleaved, wait_for_quiet
from bench.cpu.cache_memory import WORDS, SyntheticEncoder

STEP_PRESETS = {512: 'coco', 1280: 'coco_modern'}   # the preset whose encoder gives each D
PER_IMAGE, SHARD, BS = 5, 1000, 64
COCO_CAPTIONS = 113_287 * 5        # one epoch of the Karpathy COCO training split (train + restval), 5 captions per image


def write_prepared(folder: Path, n: int, dim: int, per_image=PER_IMAGE, shard=SHARD, n_val=200, seed=0) -> float:
    "A prepared folder (dataset.json, vocab.json, features/) of n images × 196 × dim float16, written straight; returns seconds."
    from show_attend_tell.captions import read_karpathy
    from show_attend_tell.features import cache_signature
    from show_attend_tell.cache import CacheWriter
    from show_attend_tell.vocab import build_vocab
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    feats = folder/'features'; feats.mkdir(parents=True)
    lens = rng.integers(8, 15, (n, per_image))
    words = np.array(WORDS)[rng.integers(0, len(WORDS), int(lens.sum()))].tolist()
    images, w = [], 0
    for i in range(n):
        sents = []
        for j, k in enumerate(lens[i]):
            toks = words[w:w + k]; w += k
            sents.append({'tokens': toks, 'raw': ' '.join(toks), 'imgid': i, 'sentid': i*per_image + j})
        images.append({'filename': f'{i:06d}.jpg', 'imgid': i, 'split': 'val' if i >= n - n_val else 'train',
                       'sentids': [s['sentid'] for s in sents], 'sentences': sents})
    (folder/'dataset.json').write_text(json.dumps({'dataset': 'feedbench', 'image_root': 'images', 'images': images}))
    data = read_karpathy(folder/'dataset.json', check=False)
    vocab = build_vocab(data, 10000); vocab.save(folder/'vocab.json')
    block = rng.standard_normal((shard, 196, dim), dtype=np.float32).astype(np.float16)
    cw = CacheWriter(feats, cache_signature(data, SyntheticEncoder.make(dim), shard_size=shard))
    for k in cw.todo:
        rows = cw.rows(k)
        ids = np.arange(k*shard, k*shard + rows)
        block[:rows, 0, 0], block[:rows, 0, 1] = ids % 2048, ids // 2048        # every row tells which it is
        w = cw.open_shard(k); w.write(block[:rows]); cw.commit(k, w)           # fsync'd: clean pages can be dropped (cold)
    cw.finish()
    return time.perf_counter() - t0


def page_cache(folder: Path, warm: bool):
    "Read every shard once (warm) or drop their pages from the page cache (cold)."
    buf = bytearray(64 << 20) if warm else None
    for p in sorted((folder/'features').glob('shard_*.npy')):
        with open(p, 'rb', buffering=0) as f:
            if warm:
                while f.readinto(buf): pass
            else: os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def feed_rate(dl, batches: int, device, passes=2, before=None, dtype=torch.float32) -> dict:
    "The best of `passes` passes (this machine is shared) of `one_pass`, each after `before()`."
    runs = []
    for _ in range(passes):
        if before is not None: before()
        runs.append(one_pass(dl, batches, device, dtype))
    best = max(runs, key=lambda r: r['captions_s'])
    return dict(best, passes=[r['captions_s'] for r in runs])


def one_pass(dl, batches: int, device, dtype=torch.float32) -> dict:
    "Captions/s of `batches` batches of `dl` after its first (whose start-up, workers included, is timed apart)."
    load, t_start = OtherLoad().start(), time.perf_counter()
    it = iter(dl)
    x, y = next(it); sync(device)
    t0, n, k = time.perf_counter(), 0, 0
    for x, y in it:
        n += len(y); k += 1
        if k == batches: break
    sync(device)
    dt = time.perf_counter() - t0
    assert x.device.type == torch.device(device).type and x.dtype == dtype, (x.device, x.dtype)
    it.close()                                                                  # stops the worker processes
    return dict(captions_s=round(n/dt, 1), startup_s=round(t0 - t_start, 2), batches=k, captions=n, other_cores=load.stop())


def step_rates(dims, device, amp_dtype, reps=2, length=12, presets=None) -> dict:
    "Training-step captions/s at each D's preset (`presets`: D -> preset name, default STEP_PRESETS), timed in turns."
    from show_attend_tell.config import preset
    from show_attend_tell.decoder import ShowAttendTell
    steps, out = {}, {}
    for D in dims:
        name = (presets or STEP_PRESETS).get(D, 'coco_modern')
        cfg = preset(name)
        feats, caps = caption_batch(cfg.vocab_size, BS, length, cfg.num_locations, D, device=device)
        torch.manual_seed(0)
        steps[D] = TrainStep(ShowAttendTell(cfg, cfg.vocab_size, D).to(device), feats, caps, 'soft', amp_dtype)
        out[D] = dict(preset=name, encoder=cfg.encoder if feat_dim(cfg.encoder) == D else f'D = {D}', hidden=cfg.hidden_dim)
    t = time_interleaved(steps, reps=reps, warmup=1, device=device, min_total=0, max_redo_s=20)
    for D in dims: out[D].update(step_s=round(t[D], 4), captions_s=round(BS/t[D], 1))
    del steps
    return out


def feed_api() -> bool:
    "Whether the library's loaders take `dtype` and `pin_memory` (float16 batches fed to the device); older ones give float32 only."
    from show_attend_tell.loaders import get_dls
    return {'dtype', 'pin_memory'} <= set(inspect.signature(get_dls).parameters)


def default_workers(device) -> int:
    "The num_workers sat_train uses on `device` by default (`loaders.default_num_workers`; 0 where the library has none)."
    from show_attend_tell import loaders
    return loaders.default_num_workers(device) if hasattr(loaders, 'default_num_workers') else 0


def bench_dim(dim, images, workers, batches, device, work: Path, log) -> dict:
    "Write the cache of one D, then every feed of it; returns its rows."
    from show_attend_tell.config import preset
    from show_attend_tell.features import load_prepared
    from show_attend_tell.cache import FeatureCache
    from show_attend_tell.loaders import get_dls
    from show_attend_tell.captions import DataError
    need = images*196*dim*2
    free_disk = shutil.disk_usage(work).free
    if free_disk < need*1.05 + 2**31:
        log(f"  D = {dim}: skipped, {need/1e9:.1f} GB cache but {free_disk/1e9:.1f} GB free on {work}")
        return dict(D=dim, skipped=f'{need/1e9:.1f} GB cache, {free_disk/1e9:.1f} GB free disk', feeds=[])
    folder = work/f'd{dim}'
    cuda, api = device.type == 'cuda', feed_api()
    dtypes = (torch.float32, torch.float16) if api else (torch.float32,)
    pins = (True, False) if cuda and api else (None,) if cuda else (False,)      # None: the loader's own choice
    try:
        write_s = write_prepared(folder, images, dim)
        log(f"  D = {dim}: wrote {need/1e9:.1f} GB in {write_s:.0f} s")
        data, vocab, cache = load_prepared(folder)
        cfg = preset(STEP_PRESETS.get(dim, 'coco_modern'))
        dls = get_dls(data, vocab, cache=cache, bs=cfg.batch_size, max_len=cfg.max_caption_len, seed=cfg.seed, device=device)
        def loader(w, dt=torch.float32, pin=None):
            return dls.train.new(num_workers=w, **(dict(dtype=dt, pin_memory=cuda if pin is None else pin) if api else {}))
        feeds = []
        def one(source, w, state, dt, pin, before=None):
            r = dict(source=source, workers=w, page_cache=state, dtype=str(dt).replace('torch.', ''), pinned=pin,
                     **feed_rate(loader(w, dt, pin), batches, device, before=before, dtype=dt)); feeds.append(r)
            log(f"  D = {dim}: {source:<6} workers {w}  {r['dtype']:<7} {'pinned' if pin else '':<6} {state:<5} {r['captions_s']:>8,.0f} "
                f"captions/s (passes {r['passes']}, start-up {r['startup_s']} s, other processes {r['other_cores']} cores)")
        page_cache(folder, warm=True)
        wait_for_quiet(min(10.0, max(0.0, DISTURBED['budget_s'])), log=log)
        for w in workers:
            for dt in dtypes:
                for pin in pins: one('files', w, 'warm', dt, pin)
        try:
            t0 = time.perf_counter(); cache.hold(device); sync(device); hold_s = time.perf_counter() - t0
            some = dls.train.dataset.cache_rows[::997]                           # the held rows are the files' rows
            assert torch.equal(cache.rows(some).cpu(), FeatureCache(folder/'features').rows(some))
            for dt in dtypes:
                one('memory', 0, '-', dt, False if api else None)
                feeds[-1]['hold_s'] = round(hold_s, 1)
        except DataError as e:                                                   # does not fit: say so, measure the rest
            feeds.append(dict(source='memory', workers=0, page_cache='-', dtype='-', pinned=None, captions_s=None, refused=str(e)))
            log(f"  D = {dim}: memory refused: {e}")
        cache.table = None
        for w in workers: one('files', w, 'cold', torch.float32, pins[0], before=lambda: page_cache(folder, warm=False))
        cache.close()
        return dict(D=dim, cache_gb=round(need/1e9, 2), write_s=round(write_s, 1), train_captions=len(dls.train.dataset),
                    feeds=feeds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(images=20000, dims=(512, 1280), workers=(0, 2), batches=25, device='cpu', amp_dtype=None, work=None,
        step_presets=None, log=print):
    "Every feed at every D, and the training step (`step_presets`: D -> preset, for smoke tests); returns dict(name, data, md)."
    note = ''
    dev = torch.device(device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        note, dev = f'{device} was asked for but CUDA is not available here: measured on the CPU. ', torch.device('cpu')
        log(f"  {note}")
    if dev.type == 'cuda' and amp_dtype is None:
        from show_attend_tell.config import amp_dtype as default_amp
        amp_dtype = default_amp(dev)
    steps = step_rates(dims, dev, amp_dtype, presets=step_presets)
    for D, s in steps.items(): log(f"  training step {s['preset']} (D = {D}): {s['captions_s']} captions/s")
    dw = default_workers(dev)
    workers = tuple(sorted(set(workers) | {dw}))
    tmp = Path(tempfile.mkdtemp(prefix='sat_data_feed_', dir=work))
    try: per_dim = [bench_dim(D, images, workers, batches, dev, tmp, log) for D in dims]
    finally: shutil.rmtree(tmp, ignore_errors=True)
    info = machine_info(dev)
    cuda = dev.type == 'cuda'
    rows, verdicts, ratios = [], [], []
    def rate(feeds, **kw):
        got = [f['captions_s'] for f in feeds if f['captions_s'] and all(f.get(k) == v for k, v in kw.items())]
        return min(got) if got else None
    for r in per_dim:
        D, step = r['D'], steps[r['D']]['captions_s']
        for f in r['feeds']:
            f['vs_step'] = round(f['captions_s']/step, 1) if f['captions_s'] else None
            rows.append((f"{D:,}", f['source'], f['workers'], f.get('dtype', '-'), {True: 'yes', False: 'no'}.get(f.get('pinned'), '-'),
                         f['page_cache'], f"{f['captions_s']:,.0f}" if f['captions_s'] else 'refused',
                         ' / '.join(f"{x:,.0f}" for x in f.get('passes', [])) or '-', f.get('startup_s', '-'),
                         f.get('other_cores', '-'), f"{f['vs_step']}×" if f['vs_step'] else '-'))
        pin = True if cuda and feed_api() else None if cuda else False
        feed = rate(r['feeds'], source='files', workers=dw, dtype='float32', pinned=pin)   # sat_train's feed, slower page-cache state
        if not feed: continue
        ratios.append(feed/step)
        N = r['train_captions']
        t_feed, t_step = N/feed, N/step
        t_epoch = max(t_feed, t_step) if dw else t_feed + t_step                # workers overlap the two; none takes turns
        mem = rate(r['feeds'], source='memory', dtype='float32')
        half = rate(r['feeds'], source='files', workers=dw, page_cache='warm', dtype='float16', pinned=pin)
        full = rate(r['feeds'], source='files', workers=dw, page_cache='warm', dtype='float32', pinned=pin)
        unpinned = rate(r['feeds'], source='files', workers=dw, page_cache='warm', dtype='float32', pinned=False) if cuda else None
        verdicts.append(f"- D = {D:,}: the step takes {step:,.0f} captions/s, sat_train's feed (files, num_workers {dw}, float32"
                        f"{', pinned' if pin else ''}) delivers {feed:,.0f} at its slower (cold or warm): an epoch of these {N:,} captions "
                        f"costs {t_step:,.0f} s of steps and {t_feed:,.0f} s of loading "
                        f"({'overlapped by the workers' if dw else 'num_workers 0 runs them in turn'}): **the "
                        f"{'training step' if t_step >= t_feed else 'data feed'} limits the epoch** ({max(t_step, t_feed)/t_epoch:.0%} of it)."
                        + (f" Warm, float16 batches: {half/full:.2f}× the float32 ones." if half and full else '')
                        + (f" Pinned: {full/unpinned:.2f}× unpinned." if unpinned and full else '')
                        + (f" From memory: {mem:,.0f} captions/s." if mem else '')
                        + f" At this pace one COCO epoch ({COCO_CAPTIONS:,} captions) takes {COCO_CAPTIONS/N*t_epoch/60:,.1f} min.")
    met = bool(ratios) and len(ratios) == len(dims) and min(ratios) > 1
    shown = f"feed/step ≥ {min(ratios):.1f}× at every D" if ratios else 'n/a'
    goal = dict(goal="the data feed (sat_train's default loader, cold or warm) is faster than the training step at both D",
                value=round(min(ratios), 2) if ratios else None, shown=shown, met=met)
    step_table = md_table(['preset', 'D', 'LSTM', 'step s (batch 64)', 'step captions/s'],
                          [(s['preset'], f"{D:,}", s['hidden'], s['step_s'], s['captions_s']) for D, s in steps.items()])
    feed_table = md_table(['D', 'source', 'num_workers', 'dtype on the device', 'pinned', 'page cache', 'captions/s (best)', 'each pass',
                           'start-up s', 'other processes (cores)', 'vs step'], rows)
    amp = f", autocast {str(amp_dtype).replace('torch.', '')}" if amp_dtype else ''
    sizes = ', '.join(f"D = {r['D']:,}: {r['cache_gb']} GB written in {r['write_s']} s" for r in per_dim if 'cache_gb' in r)
    holds = ', '.join(sorted({f"D = {r['D']:,}: {f['hold_s']} s" for r in per_dim for f in r['feeds'] if 'hold_s' in f}))
    md = (f"## Data feed: captions/s of the training loader vs the training step\n\n"
          f"{note}{images:,} synthetic images × {PER_IMAGE} captions (8–14 words) in a float16 cache of 196 × D ({sizes}); "
          f"batches of {BS} from `get_dls` as `sat_train` builds it, on {info['device']}{amp}, {info['torch_threads']} torch threads, "
          f"{batches} batches timed after the first (start-up apart), best of two passes. Batches travel in float16, as the cache "
          f"stores them, and are cast on the device to the *dtype* shown (float32 is what sat_train asks for"
          + ('; *pinned*: from page-locked memory, copied without blocking' if cuda else '') + "). "
          f"*files*: rows read from the shard files, pages in the page "
          f"cache (*warm*) or dropped from it with `posix_fadvise(DONTNEED)` (*cold*; this is a VM, whose host may still cache "
          f"the disk). *memory*: the cache held in the device's memory and gathered by index (`sat_train --features_in_memory`; "
          f"holding it took {holds or 'n/a'}). The step: forward + loss + backward + Adam, soft attention, batch {BS}, 12 words, "
          f"the preset at that D, timed in the same run. Load average at the end: {load_avg()}.\n\n"
          f"**Goal: the data feed is faster than the training step at both D: {shown} — {'met' if met else 'not met'}.**\n\n"
          + '\n'.join(verdicts) + f"\n\n{step_table}\n\n{feed_table}")
    return dict(name='data_feed' if dev.type == 'cpu' else 'data_feed_cuda',
                data=dict(benchmark='data_feed', machine=info, images=images, captions_per_image=PER_IMAGE, batch=BS,
                          batches=batches, default_workers=dw, feed_api=feed_api(), goal=goal, steps={str(D): s for D, s in steps.items()},
                          dims=per_dim, note=note), md=md)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--images', type=int, default=20000)
    p.add_argument('--dims', type=int, nargs='+', default=[512, 1280])
    p.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    p.add_argument('--batches', type=int, default=25)
    p.add_argument('--device', default='cpu')
    p.add_argument('--work', default=None, help='folder for the temporary caches (default: the system temp folder)')
    p.add_argument('--threads', type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    res = run(a.images, tuple(a.dims), tuple(a.workers), a.batches, a.device, work=a.work)
    save_and_show(res, GPU_RESULTS if res['name'].endswith('_cuda') else CPU_RESULTS)


if __name__ == '__main__':
    main()
