"""sat_prepare's throughput: images/s of `prepare_features` (JPEG decode, resize, encoder, float16 shards on disk) with and
without DataLoader workers reading the images and the background thread writing the shards (`ShardQueue`).

The images are real photos (scikit-image's sample photographs as 640×480 JPEGs, COCO's usual size; bench/cpu/encoders.py's
`photo_dataset`). Three encoders, so that each cost shows:
  colour_grid 4×4×8          the stand-in encoder at its own size: a free network, a tiny cache, so the time is reading images
  colour_grid 14×14×1280     the same stand-in at the default encoder's grid and D: a free network, a real-size cache
                             (196 × 1280 float16 = 502 KB per image), so the time is reading images and writing shards
  efficientnet_lite0         the default encoder (ImageNet weights from PyPI)
and four ways to run each: `num_workers` 0 or 2 (processes decoding images) × `write_ahead` 0 (shards written between
batches, the way prepare_features ran before its writer thread) or 4 (written by the thread while the next batches are
encoded; the default). Shards of 32 images (so a run has several shard commits, each with its fsync, to overlap), batches
of 16. The four ways are timed in turns, each a whole `prepare_features` into a fresh folder (worker start-up included),
median of `--reps`.

On a 2-core CPU the encoder needs both cores, so workers compete with it (the default there is no workers); on a GPU the
default is the spare cores, at most 4 (`config.spare_workers`), with pinned batches and the float16 cast on the device.

Usage: .venv/bin/python bench/cpu/prepare_speed.py [--images 320] [--net-images 64] [--reps 2] [--device cpu|cuda]
Writes bench/results/cpu/prepare_speed.json and .md (bench/results/gpu/prepare_speed_cuda.* with --device cuda).
"""
import argparse, shutil, sys, tempfile
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root: `bench` imports when run as a script
from bench.common import CPU_RESULTS, GPU_RESULTS, load_avg, machine_info, md_table, save_and_show, time_interleaved
from bench.cpu.encoders import has_pypi_weights, photo_dataset

BS, SHARD, AHEAD = 16, 32, 4


def encoders(names=('colour_grid', 'colour_grid_1280', 'efficientnet_lite0')):
    "(row name, encoder, what it shows) of each encoder to time."
    from show_attend_tell.encoder import ColourGridEncoder, get_encoder
    out = []
    for n in names:
        if n == 'colour_grid': out.append(('colour_grid 4×4×8', ColourGridEncoder(), 'reading images'))
        elif n == 'colour_grid_1280':
            out.append(('colour_grid 14×14×1280', ColourGridEncoder(grid_size=14, feat_dim=1280, image_size=224, name='colour_grid_1280'),
                        'reading images + writing a real-size cache'))
        else: out.append((n, get_encoder(n, pretrained=has_pypi_weights(n)), 'the default encoder'))
    return out


def bench_encoder(label, enc, data, work: Path, workers, reps, device, log) -> list:
    "Time `prepare_features` with every (workers, write_ahead); one row each."
    from show_attend_tell.features import prepare_features
    enc = enc.to(device)
    ways = [(w, a) for w in workers for a in (0, AHEAD)]

    def make(w, a):
        def f():
            out = work / f'{enc.name}_{w}_{a}'
            shutil.rmtree(out, ignore_errors=True)
            prepare_features(data, enc, out, bs=BS, shard_size=SHARD, device=device, num_workers=w, write_ahead=a, progress=False)
        return f

    t = time_interleaved({way: make(*way) for way in ways}, reps, warmup=1, device=device, min_total=0, max_redo_s=30)
    cache = work / f'{enc.name}_{ways[0][0]}_{ways[0][1]}'
    mb = sum(p.stat().st_size for p in cache.glob('shard_*.npy')) / 1e6
    base = t[(0, 0)]
    rows = []
    for (w, a), s in t.items():
        r = dict(encoder=label, L=enc.grid_size ** 2, D=enc.feat_dim, images=len(data), cache_mb=round(mb, 1), num_workers=w,
                 write_ahead=a, seconds=round(s, 3), images_per_s=round(len(data) / s, 1), speedup=round(base / s, 2))
        rows.append(r)
        log(f"  {label}: workers {w}, write_ahead {a}: {r['images_per_s']} images/s ({r['speedup']}x in turn)")
    for w, a in ways: shutil.rmtree(work / f'{enc.name}_{w}_{a}', ignore_errors=True)
    return rows


def run(images=320, net_images=64, reps=2, device='cpu', workers=None, names=('colour_grid', 'colour_grid_1280', 'efficientnet_lite0'),
        log=print):
    "Every encoder × (workers, write_ahead); returns dict(name, data, md)."
    from show_attend_tell.config import spare_workers
    dev = torch.device(device)
    workers = tuple(workers or ((0, 2) if dev.type == 'cpu' else (0, max(1, spare_workers(dev)))))
    work = Path(tempfile.mkdtemp(prefix='sat_bench_prepare_'))
    rows = []
    try:
        many, few = photo_dataset(work / 'photos', images), None
        for label, enc, what in encoders(names):
            net = label.startswith('efficientnet')
            if net and few is None: few = photo_dataset(work / 'few', net_images)
            rows += [dict(r, shows=what) for r in bench_encoder(label, enc, few if net else many, work, workers, reps, dev, log)]
    finally: shutil.rmtree(work, ignore_errors=True)
    info = machine_info(dev)
    default = (spare_workers(dev), AHEAD)
    table = md_table(['encoder', 'shows', 'images', 'cache MB', 'num_workers', 'shards written', 'images/s', '× in turn, no workers'],
                     [(r['encoder'], r['shows'], r['images'], r['cache_mb'], r['num_workers'],
                       'by the thread' if r['write_ahead'] else 'between batches',
                       f"**{r['images_per_s']}**" if (r['num_workers'], r['write_ahead']) == default else r['images_per_s'],
                       f"{r['speedup']}x") for r in rows])
    md = (f"## Preparing features: images/s of sat_prepare's loop\n\n"
          f"`prepare_features` over 640×480 JPEG photos ({images} for the stand-in encoders, {net_images} for EfficientNet-Lite0), "
          f"batches of {BS}, shards of {SHARD} images (each committed with an fsync), {info['device']}, {info['torch_threads']} torch "
          f"threads: DataLoader workers decoding the images ({' or '.join(map(str, workers))}) × shards written between batches or "
          f"by the writer thread while the next batches are encoded (`write_ahead` {AHEAD}). Each is a whole run into a fresh "
          f"folder (worker start-up included), timed in turns, median of {reps}. In bold: this device's default "
          f"(num_workers {default[0]}, the writer thread). colour_grid is the stand-in encoder (a free network): at 4×4×8 the "
          f"time is reading the images, at 14×14×1280 (the default encoder's grid and D) reading them and writing a real-size "
          f"cache. Load average at the end: {load_avg()}.\n\n{table}")
    return dict(name='prepare_speed' if dev.type == 'cpu' else 'prepare_speed_cuda',
                data=dict(machine=info, batch=BS, shard_size=SHARD, write_ahead=AHEAD, workers=list(workers), reps=reps,
                          default=dict(num_workers=default[0], write_ahead=AHEAD), rows=rows), md=md)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--images', type=int, default=320); p.add_argument('--net-images', type=int, default=64)
    p.add_argument('--reps', type=int, default=2); p.add_argument('--threads', type=int, default=2)
    p.add_argument('--device', default='cpu')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    res = run(a.images, a.net_images, a.reps, a.device)
    save_and_show(res, GPU_RESULTS if res['name'].endswith('_cuda') else CPU_RESULTS)


if __name__ == '__main__':
    main()
