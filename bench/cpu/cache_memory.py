"""Peak memory of reading the feature cache while training: 20,000 images vs 2,000, one training epoch each.

The goal: memory stays flat as the dataset grows; reading a cache of 20,000 images must not hold it in RAM.
Both caches are written by the library's own `prepare_features` (real shard writer, manifest, image reading) from
tiny PNG files, with a stand-in encoder that gives the real grid of 196 locations but a small feature size
(`--dim`, default 64, so that 20,000 images are 0.5 GB on disk rather than the 10 GB of 1280-d features). Each
epoch then goes through the code training uses: `FeatureCache` → `CaptionPairs` → `get_dls` → every bucketed
batch of the training split (one caption per image). Every measurement runs in a fresh child process, and reports
the peak resident set size (`ru_maxrss`) before and after the epoch; the difference is what reading added.
Both ways of reading are measured: the default (`os.pread` of each row) and `mmap=True` (memory-mapped shards);
and the default once more while training: every batch also goes through a training step (forward, `CaptionLoss`,
backward, Adam) of a `ShowAttendTell` at the tiny preset's size, so the peak includes the model, its gradients and
Adam's state, as in a real run.

Usage: .venv/bin/python bench/cpu/cache_memory.py [--sizes 2000 20000] [--dim 64] [--work /tmp/sat_cache_bench] [--keep]
Writes bench/results/cpu/cache_memory.json and .md.
"""
import argparse, json, os, shutil, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root: `bench` imports when run as a script
from bench.common import machine_info, peak_mb, save_and_show

WORDS = 'a red blue green circle square star to the left of and there is small large'.split()


def rss_mb():
    with open('/proc/self/statm') as f: return int(f.read().split()[1])*os.sysconf('SC_PAGE_SIZE')/2**20


class SyntheticEncoder:
    "Built on first use (torch imported inside the child): 196 locations × `dim` features from the image's colour."
    @staticmethod
    def make(dim):
        import numpy as np, torch, torch.nn as nn

        class Enc(nn.Module):
            def __init__(self):
                super().__init__()
                self.grid_size, self.feat_dim, self.name = 14, dim, f'synthetic{dim}'
                self.register_buffer('pattern', torch.randn(196, dim, generator=torch.Generator().manual_seed(0)))
            def transform(self, im):
                return torch.from_numpy(np.asarray(im, dtype=np.float32)/255).permute(2, 0, 1)
            def forward(self, x): return x.mean((1, 2, 3))[:, None, None]*self.pattern
        return Enc()


def child_write(work: Path, n: int, dim: int):
    "Write n tiny images, a Karpathy file and the cache through prepare_features."
    import numpy as np
    from PIL import Image
    from show_attend_tell.features import prepare_features
    from show_attend_tell.captions import read_karpathy
    import torch; torch.set_num_threads(1)
    img_dir = work/'images'; img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        fn = f'{i:06d}.png'
        if not (img_dir/fn).exists(): Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(img_dir/fn)
        toks = [WORDS[k] for k in rng.integers(0, len(WORDS), int(rng.integers(5, 13)))]
        images.append({'filename': fn, 'imgid': i, 'split': 'train', 'sentids': [i],
                       'sentences': [{'tokens': toks, 'raw': ' '.join(toks), 'imgid': i, 'sentid': i}]})
    (work/'dataset.json').write_text(json.dumps({'dataset': 'bench', 'images': images}))
    data = read_karpathy(work/'dataset.json', img_dir)
    base = peak_mb(); t = time.time()
    prepare_features(data, SyntheticEncoder.make(dim), work/'cache', bs=256, shard_size=1000, progress=False)
    return dict(write_s=time.time() - t, write_peak_rss_mb=peak_mb(), write_base_rss_mb=base)


def child_read(work: Path, mmap: bool, train: bool = False):
    "One training epoch over the cache (with a training step per batch if `train`); peak RSS before and after."
    from show_attend_tell.cache import FeatureCache
    from show_attend_tell.captions import read_karpathy
    from show_attend_tell.vocab import build_vocab
    from show_attend_tell.loaders import get_dls
    import torch; torch.set_num_threads(1)
    data = read_karpathy(work/'dataset.json', work/'images', check=False)
    vocab = build_vocab(data, 100)
    cache = FeatureCache(work/'cache', mmap=mmap)
    dls = get_dls(data, vocab, cache=cache, bs=64, seed=0)
    step = None
    if train:
        from show_attend_tell.config import preset
        from show_attend_tell.decoder import ShowAttendTell
        from show_attend_tell.losses import CaptionLoss
        torch.manual_seed(0)
        cfg = preset('tiny')
        model = ShowAttendTell(cfg, len(vocab), cache.feat_dim).train()
        opt, loss_fn = torch.optim.Adam(model.parameters(), cfg.lr), CaptionLoss(cfg)
        def step(x, y):
            loss = loss_fn(model(x, y), y); opt.zero_grad(); loss.backward(); opt.step()
        x, y = dls.train.one_batch(); step(x, y)        # the model's memory is there before the epoch, as in training
    before, t, n, checksum = peak_mb(), time.time(), 0, 0.0
    for x, y in dls.train:
        n += len(x); checksum += float(x[:, 0, 0].sum())
        if step is not None: step(x, y)
    secs = time.time() - t
    return dict(examples=n, read_s=secs, rows_per_s=n/secs, peak_rss_before_mb=before, peak_rss_after_mb=peak_mb(),
                rss_end_mb=rss_mb(), cache_mb=sum(p.stat().st_size for p in (work/'cache').glob('*.npy'))/2**20)


def run_child(dim, *args):
    out = subprocess.run([sys.executable, __file__, '--dim', str(dim), '--child', *map(str, args)], capture_output=True, text=True)
    if out.returncode: raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


MODES = (('pread (default)', False, False), ('mmap', True, False), ('pread, training', False, True))


def run(sizes=(2000, 20000), dim=64, work='/tmp/sat_cache_bench', keep=False, log=print):
    "Write each cache, then one epoch per reading mode, each in a fresh process; returns dict(name, data, md)."
    rows = []
    for n in sizes:
        wdir = Path(work)/f'n{n}_d{dim}'
        if wdir.exists(): shutil.rmtree(wdir)
        w = run_child(dim, 'write', wdir, n)
        for mode, mmap, train in MODES:
            r = run_child(dim, 'read', wdir, f'{int(mmap)}{int(train)}')
            rows.append(dict(images=n, feat_dim=dim, mode=mode, **w, **r,
                             added_by_epoch_mb=r['peak_rss_after_mb'] - r['peak_rss_before_mb']))
            log(f"  cache {n:>6} images  {mode:<16} cache {r['cache_mb']:.0f} MB  peak RSS {r['peak_rss_before_mb']:.0f}"
                f" → {r['peak_rss_after_mb']:.0f} MB (+{rows[-1]['added_by_epoch_mb']:.0f})  {r['rows_per_s']:.0f} rows/s")
        if not keep: shutil.rmtree(wdir)
    info = machine_info()
    small, large = min(sizes), max(sizes)
    get = lambda n, m, k: next(r[k] for r in rows if r['images'] == n and r['mode'] == m)
    # what reading adds (peak after the epoch − peak before it), and the whole peak, each from the small cache to the large
    epoch_growth = {m: get(large, m, 'added_by_epoch_mb') - get(small, m, 'added_by_epoch_mb') for m, _, _ in MODES}
    peak_growth = {m: get(large, m, 'peak_rss_after_mb') - get(small, m, 'peak_rss_after_mb') for m, _, _ in MODES}
    setup_growth = get(large, 'pread (default)', 'peak_rss_before_mb') - get(small, 'pread (default)', 'peak_rss_before_mb')
    cache_growth = get(large, 'pread (default)', 'cache_mb') - get(small, 'pread (default)', 'cache_mb')
    limit = max(16.0, 0.05 * cache_growth)         # flat: reading adds under a twentieth of what the cache grows (or 16 MB)
    flat = epoch_growth['pread (default)'] < limit and epoch_growth['pread, training'] < limit
    md = ["## Feature cache: peak memory while training", "",
          f"Stand-in encoder: 196 locations × {dim} float16 features per image, shards of 1,000 images, one caption per image,",
          "batches of 64 through `get_dls`. Peak RSS of a fresh process before the epoch (library, dataset and loaders",
          "set up; when training, the model after one step) and after it; each run in its own process, 1 thread. "
          "*pread, training*: each batch also takes a training step of a tiny-preset `ShowAttendTell`.", "",
          "With the default reader (`os.pread` of each row) what an epoch adds does not grow with the cache. With",
          "`mmap=True` every page read stays mapped, so resident memory grows by the size of the cache (file-backed",
          "pages the kernel may reclaim, but counted in RSS): that is why the default reads rows instead of mapping.",
          f"The peak before the epoch grows by {setup_growth:.0f} MB from {small:,} to {large:,} images "
          f"({setup_growth * 2**20 / (large - small) / 1024:.1f} KB per image): the dataset's captions, paths and the cache's "
          f"index, which do not depend on the feature size (the cache itself, at EfficientNet-Lite0's 1280-d features, "
          f"is 490 KB per image).", "",
          f"**Goal: memory flat from {small:,} to {large:,} images: what an epoch adds changes by "
          f"{epoch_growth['pread (default)']:+.0f} MB reading and {epoch_growth['pread, training']:+.0f} MB training, while the "
          f"cache grows by {cache_growth:.0f} MB (mmap: {epoch_growth['mmap']:+.0f} MB) — {'met' if flat else 'not met'}** "
          f"(flat: under {limit:.0f} MB, a twentieth of the cache's growth or 16 MB). The whole peak grows by "
          f"{peak_growth['pread (default)']:+.0f} MB reading, {peak_growth['pread, training']:+.0f} MB training.", "",
          "| images | cache on disk | reading | peak RSS before | peak RSS after | added by the epoch | rows/s | write: s / peak RSS |",
          "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['images']:,} | {r['cache_mb']:.0f} MB | {r['mode']} | {r['peak_rss_before_mb']:.0f} MB | "
                  f"{r['peak_rss_after_mb']:.0f} MB | {r['added_by_epoch_mb']:.0f} MB | {r['rows_per_s']:,.0f} | "
                  f"{r['write_s']:.1f} s / {r['write_peak_rss_mb']:.0f} MB |")
    goal = dict(goal=f'memory an epoch adds flat from {small:,} to {large:,} images (default reader; reading, training)',
                value=dict(epoch={k: round(v) for k, v in epoch_growth.items()}, peak={k: round(v) for k, v in peak_growth.items()}),
                met=flat, shown=f"{epoch_growth['pread (default)']:+.0f} MB reading, {epoch_growth['pread, training']:+.0f} MB "
                                f"training (cache +{cache_growth:.0f} MB; mmap {epoch_growth['mmap']:+.0f} MB)")
    return dict(name='cache_memory', data=dict(benchmark='cache_memory', machine=info, locations=196, goal=goal, rows=rows),
                md='\n'.join(md))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[2000, 20000])
    p.add_argument('--dim', type=int, default=64)
    p.add_argument('--work', default='/tmp/sat_cache_bench')
    p.add_argument('--keep', action='store_true', help='keep the caches in --work')
    p.add_argument('--child', nargs='+', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        kind, work, arg = a.child[0], Path(a.child[1]), a.child[2]
        res = child_write(work, int(arg), a.dim) if kind == 'write' else child_read(work, arg[0] == '1', arg[1:] == '1')
        print(json.dumps(res)); return
    save_and_show(run(a.sizes, a.dim, a.work, a.keep))


if __name__ == '__main__':
    main()
