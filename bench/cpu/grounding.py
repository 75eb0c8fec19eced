"""Time and peak memory of grounding 5,000 images × 15 words against COCO instance masks.

The goal: scoring 5,000 images × 15 words with masks stays under a minute on 2 CPU cores and does not
hold all masks in memory at once. A synthetic instances file in the exact COCO format (640 × 480 images, 6 polygon
instances of 3 categories each, like a val2014 image) is read with pycocotools (`annotations.CocoInstances`); each
image gets a 15-word caption in which `--named` words name a category (two of them present, one hallucinated) and
made-up α (196 locations). `coco_grounding` scores them all: one `annToMask` per instance of a named category, one
g × g projection per region, dropped before the next. Measured in a fresh child process: seconds, and the peak
resident memory (VmHWM) before and after scoring; the difference is what scoring added (against the 1.5 GB
that 5,000 masks of 640 × 480 bytes would take together). Both the default upsampling ('cell') and 'smooth'
(the soft-attention figures' maps, which needs the full map of every word for pointing; on the first 500 images) are measured.

Usage: .venv/bin/python bench/cpu/grounding.py [--images 5000] [--words 15] [--named 5]
Writes bench/results/cpu/grounding.json and .md.
"""
import argparse, json, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root: `bench` imports when run as a script
from bench.common import machine_info, machine_line, md_table, peak_mb, save_and_show

CATS = ['person', 'dog', 'car', 'cup', 'chair', 'bicycle']
FILLER = 'a on the with of and in near is two'.split()


def write_instances(path, n, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, n + 1):
        images.append({'id': i, 'file_name': f'COCO_val2014_{i:012d}.jpg', 'height': 480, 'width': 640})
        for c in rng.choice(len(CATS), 3, replace=False):
            for _ in range(2):
                cx, cy, r = rng.uniform(80, 560), rng.uniform(80, 400), rng.uniform(20, 120)
                ang = np.sort(rng.uniform(0, 2*np.pi, 12))
                poly = np.c_[np.clip(cx + r*np.cos(ang), 0, 639), np.clip(cy + r*np.sin(ang), 0, 479)]
                x0, y0 = poly.min(0); x1, y1 = poly.max(0)
                anns.append({'id': len(anns) + 1, 'image_id': i, 'category_id': int(c) + 1, 'iscrowd': 0, 'area': float((x1 - x0)*(y1 - y0)),
                             'bbox': [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], 'segmentation': [poly.reshape(-1).round(1).tolist()]})
    Path(path).write_text(json.dumps({'images': images, 'annotations': anns,
                                      'categories': [{'id': k + 1, 'name': c} for k, c in enumerate(CATS)]}))



def child(path, n, words, named, upsample):
    import numpy as np
    from show_attend_tell.annotations import CocoInstances
    from show_attend_tell.grounding import coco_grounding
    t = time.time()
    ci = CocoInstances(path)
    load_s, base = time.time() - t, peak_mb()
    rng = np.random.default_rng(1)
    def items():                                      # generated lazily, as captions would come from the decoder
        for i in range(1, n + 1):
            present = sorted({ci.cat_names[a['category_id']] for a in ci.coco.imgToAnns[i]})
            absent = [c for c in CATS if c not in present]
            w = list(rng.choice(FILLER, words))
            for k, pos in enumerate(rng.choice(words, named, replace=False)):
                w[pos] = present[k % 2] if k < named - 1 else absent[0]
            yield i, w, rng.dirichlet(np.full(196, 0.1), words)
    t = time.time()
    r = coco_grounding(items(), ci, upsample=upsample)
    secs = time.time() - t
    return dict(upsample=upsample, images=n, words=n*words, scored_words=r['n_words'], hallucinated=r['n_hallucinated'],
                load_s=round(load_s, 2), score_s=round(secs, 2), ms_per_image=round(1000*secs/n, 2),
                peak_rss_before_mb=round(base, 1), peak_rss_after_mb=round(peak_mb(), 1), added_mb=round(peak_mb() - base, 1))


def run(images=5000, words=15, named=5, modes=('cell', 'smooth'), smooth_images=500, log=print):
    "Write the instances file, score it once per upsampling mode in a fresh process; returns dict(name, data, md)."
    info = machine_info()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)/'instances.json'
        write_instances(path, images)
        mb = path.stat().st_size / 2**20
        rows = []
        for m in modes:
            n = images if m == 'cell' else min(images, smooth_images)     # 'smooth' computes every word's full map: slower
            out = subprocess.run([sys.executable, __file__, '--child', str(path), str(n), str(words), str(named), m],
                                 capture_output=True, text=True)
            if out.returncode: raise SystemExit(f"child {m} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1])); log(rows[-1])
    all_masks_mb = images * 480 * 640 / 2**20
    goal = dict(seconds=60, cores=2, all_masks_mb=round(all_masks_mb))
    md = '\n'.join([
        f"## Grounding: {images:,} images × {words} words against COCO instance masks", "",
        f"Machine: {machine_line(info)}. Instances file: {mb:.0f} MB, 640 × 480 images, 6 polygons of 3 categories each; "
        f"{named} of the {words} words name a category (one of them absent: hallucinated). Goal: under 60 s on 2 cores, "
        f"without holding all masks at once ({all_masks_mb:.0f} MB as uint8).", "",
        md_table(['upsample', 'images', 'scored words', 'hallucinated', 'load s', 'score s', 'ms / image', 'peak RSS before MB', 'peak RSS after MB', 'added MB'],
                 [[r['upsample'], r['images'], r['scored_words'], r['hallucinated'], r['load_s'], r['score_s'], r['ms_per_image'],
                   r['peak_rss_before_mb'], r['peak_rss_after_mb'], r['added_mb']] for r in rows]),
        "", "Command: `.venv/bin/python bench/cpu/grounding.py` (or `bench/run.py --only grounding`)."])
    return dict(name='grounding', data=dict(benchmark='grounding', machine=info, goal=goal, instances_mb=round(mb, 1), rows=rows), md=md)


if __name__ == '__main__':
    if sys.argv[1:2] == ['--child']:
        p, n, w, k, m = sys.argv[2:7]
        print(json.dumps(child(p, int(n), int(w), int(k), m))); sys.exit()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--images', type=int, default=5000); ap.add_argument('--words', type=int, default=15)
    ap.add_argument('--named', type=int, default=5)
    a = ap.parse_args()
    save_and_show(run(a.images, a.words, a.named))
