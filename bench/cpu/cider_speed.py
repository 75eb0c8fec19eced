"""CIDEr-D for self-critical training: captions/s of `cider.CiderD` (document frequencies computed once) vs
pycocoevalcap's `Cider` (which recomputes them from the references it is given at every call), on SCST-sized batches.

The corpus is synthetic but caption-like: 5 references per image of 8-14 words drawn from a Zipf-distributed
vocabulary of 3,000 words (a COCO-like long tail), and candidates that share most of their words with the image's
references (as a trained model's samples do). A batch is what one SCST step scores: B images × k = 5 samples.
`CiderD` builds the df and the reference statistics of every image once, as arrays (`init`, reported separately);
each step then only interns and weighs the candidates' n-grams. pycocoevalcap scores the same captions, one entry per candidate. Both are
timed in turns, and the scores are checked against each other where they must agree (same df corpus).

Usage: .venv/bin/python bench/cpu/cider_speed.py [--images 2000] [--batches 50,200] [--reps 3]
Writes bench/results/cpu/cider_speed.json and .md.
"""
import argparse, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root: `bench` imports when run as a script
from bench.common import load_avg, machine_info, md_table, save_and_show, time_interleaved
from pycocoevalcap.cider.cider import Cider
from show_attend_tell.cider import CiderD


def corpus(n_images=2000, n_refs=5, vocab=3000, seed=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(vocab)]
    p = 1.0 / np.arange(1, vocab + 1); p /= p.sum()
    refs = {}
    for i in range(n_images):
        topic = rng.choice(vocab, 6, p=p)                      # words this image's captions share
        refs[i] = [' '.join(words[j] if rng.random() > 0.5 else words[topic[rng.integers(6)]]
                            for j in rng.choice(vocab, rng.integers(8, 15), p=p)) for _ in range(n_refs)]
    return refs


def candidates(refs, keys, k=5, seed=1):
    "k candidates per image: a reference with some words dropped or repeated."
    rng = np.random.default_rng(seed)
    out = []
    for key in keys:
        for _ in range(k):
            w = refs[key][rng.integers(len(refs[key]))].split()
            w = [x for x in w if rng.random() > 0.2] + ([w[0]] if rng.random() > 0.5 else [])
            out.append(' '.join(w))
    return out


def run(n_images=2000, batches=(50, 200), k=5, reps=3, log=print):
    "Captions/s of CiderD and pycocoevalcap's Cider per SCST batch; returns dict(name, data, md)."
    refs = corpus(n_images)
    t0 = time.perf_counter(); scorer = CiderD(refs); init_df = time.perf_counter() - t0
    t0 = time.perf_counter(); scorer.score(list(refs), [r[0] for r in refs.values()]); init_refs = time.perf_counter() - t0
    rows, load0 = [], load_avg()
    for B in batches:
        keys = list(range(B))
        rk = [i for i in keys for _ in range(k)]
        caps = candidates(refs, keys, k)
        gts = {j: refs[i] for j, i in enumerate(rk)}
        res = {j: [c] for j, c in enumerate(caps)}
        # agreement where it must hold: df from the same corpus (the batch's references)
        local = CiderD(gts).compute_score(gts, res)[1]
        diff = float(np.abs(local - Cider().compute_score(gts, res)[1]).max())
        t = time_interleaved({'ours': lambda: scorer.score(rk, caps), 'coco': lambda: Cider().compute_score(gts, res)}, reps=reps)
        rows.append(dict(images=B, captions=len(caps), ours_caps_per_s=round(len(caps) / t['ours']),
                         pycocoevalcap_caps_per_s=round(len(caps) / t['coco']), speedup=round(t['coco'] / t['ours'], 1),
                         max_abs_diff_same_df=diff))
        log(f"  CIDEr-D, {B} images × {k}: ours {rows[-1]['ours_caps_per_s']} captions/s, pycocoevalcap "
            f"{rows[-1]['pycocoevalcap_caps_per_s']} captions/s ({rows[-1]['speedup']}x), |Δ| ≤ {diff:.1e} on the same df")
    info = machine_info('cpu')
    table = md_table(['images × k', 'captions', 'CiderD captions/s', 'pycocoevalcap Cider captions/s', 'speed-up', 'max |Δ| (same df)'],
                     [(f"{r['images']} × {k}", r['captions'], r['ours_caps_per_s'], r['pycocoevalcap_caps_per_s'],
                       f"{r['speedup']}x", f"{r['max_abs_diff_same_df']:.1e}") for r in rows])
    md = (f"## CIDEr-D reward speed (self-critical training)\n\n"
          f"`cider.CiderD` with document frequencies from {n_images} images × 5 references computed once "
          f"({init_df:.2f} s to build; one candidate for each of the {n_images} images then scores in {init_refs:.2f} s), vs pycocoevalcap's `Cider` "
          f"recomputing df per call, on the captions of one SCST step (B images × k = {k} samples); one CPU process, "
          f"NumPy (pycocoevalcap: Python loops), timed in turns, median of ≥ {reps}. {info['cpu']}; load average {load0} at the start (other processes share this machine: the ratio is the figure to trust).\n\n{table}")
    return dict(name='cider_speed', data=dict(machine=info, n_images=n_images, k=k, init_df_s=init_df,
                                              one_pass_s=init_refs, load_avg=load0, rows=rows), md=md)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--images', type=int, default=2000); p.add_argument('--batches', default='50,200')
    p.add_argument('--reps', type=int, default=3)
    a = p.parse_args()
    save_and_show(run(a.images, tuple(int(b) for b in a.batches.split(',')), reps=a.reps))


if __name__ == '__main__': main()
