"""Cross-entropy vs + self-critical training on Shapes, at equal extra wall time.

It reproduces the explanation page "Results on Shapes: self-critical training" (nbs/explanations/scst_shapes.ipynb):
its table is this script's experiments/results/scst_shapes.md. It is an experiment, not a timed benchmark.

1. prepare Shapes as the demo does (2,000 / 200 / 200 images, the tiny preset's local EfficientNet grid);
2. train the tiny soft-attention model with cross-entropy for --xe_epochs epochs (`training.train`);
3. from its best.pth, SCST for --scst_epochs epochs (`scst.scst_train`, k = 5, greedy baseline, default lr);
4. from the same XE run, as many more XE epochs as took the SCST run's wall time (its last.pth, resumed);
5. score the three best.pth on the test split with `evaluation.evaluate_checkpoint` (beam 3, coco-caption:
   BLEU, METEOR, ROUGE-L, CIDEr, and attention correctness: α mass in the named object's box, pointing).

One torch thread (on a 2-core machine shared with other work, a 2-thread torch stalls whenever another process holds a core).
Usage: .venv/bin/python experiments/scst_shapes.py [--root /tmp/scst_shapes] [--xe_epochs 8] [--scst_epochs 2]
Writes experiments/results/scst_shapes.json and .md.
"""
import argparse, shutil, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # the repository root: `bench` imports when run as a script
from bench.common import machine_info, md_table, write_result
from show_attend_tell.config import preset
from show_attend_tell.features import prepare
from show_attend_tell.training import train
from show_attend_tell.scst import scst_train
from show_attend_tell.evaluation import evaluate_checkpoint

RESULTS = Path(__file__).parent / 'results'


def run(root, xe_epochs=8, scst_epochs=2, k=5):
    root = Path(root); data = root/'shapes'
    if not (data/'dataset.json').exists():
        prepare('shapes', out=data, preset='tiny', n_train=2000, n_val=200, n_test=200, seed=preset('tiny').seed, progress=False)
    t0 = time.time(); train(preset('tiny', epochs=xe_epochs), data, root/'xe', resume=True, progress=False); xe_s = time.time() - t0
    t0 = time.time(); scst = scst_train(root/'xe'/'best.pth', data, root/'scst', k=k, epochs=scst_epochs, device='cpu'); scst_s = time.time() - t0
    extra = max(1, round(scst_s / (xe_s / xe_epochs)))
    if (root/'xe_more').exists(): shutil.rmtree(root/'xe_more')
    shutil.copytree(root/'xe', root/'xe_more')
    ck = torch.load(root/'xe_more'/'last.pth', weights_only=True)
    if ck['train_state'].get('stopped'):             # stopped early: let it continue for the extra epochs
        ck['train_state'].update(stopped=False, wait=0); torch.save(ck, root/'xe_more'/'last.pth')
    t0 = time.time()
    train(preset('tiny', epochs=xe_epochs, patience=1000), data, root/'xe_more', resume=True, epochs=xe_epochs + extra, progress=False)
    more_s = time.time() - t0
    out = dict(xe_epochs=xe_epochs, xe_s=xe_s, scst_epochs=scst_epochs, scst_s=scst_s, xe_extra_epochs=extra, xe_more_s=more_s, scst=scst)
    for name in ('xe', 'xe_more', 'scst'):
        r = evaluate_checkpoint(root/name/'best.pth', data, 'test', device='cpu', progress=False)
        out[f'eval_{name}'] = {k_: r[k_] for k_ in ('scores', 'attention_correctness', 'n_images')}
    return out


def table(out):
    rows = []
    for name, what in (('xe', f"XE, {out['xe_epochs']} epochs"), ('xe_more', f"XE + {out['xe_extra_epochs']} more XE epochs ({out['xe_more_s']:.0f} s)"),
                       ('scst', f"XE + SCST, {out['scst_epochs']} epochs ({out['scst_s']:.0f} s)")):
        e = out[f'eval_{name}']; s, a = e['scores'], e['attention_correctness'] or {}
        rows.append((what, round(100 * s['BLEU-4'], 1), round(100 * s['METEOR'], 1), round(100 * s['CIDEr'], 1),
                     round(a.get('mass') or float('nan'), 3), round(a.get('pointing') or float('nan'), 3), a.get('n_words')))
    return md_table(['model (test split, beam 3)', 'BLEU-4', 'METEOR', 'CIDEr', 'α mass on object', 'pointing', 'object words'], rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--root', default='/tmp/scst_shapes'); p.add_argument('--xe_epochs', type=int, default=8)
    p.add_argument('--scst_epochs', type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(1)
    out = run(a.root, a.xe_epochs, a.scst_epochs)
    out['machine'] = machine_info('cpu')
    md = f"## XE vs XE + SCST on Shapes (equal extra wall time)\n\n{table(out)}"
    write_result(RESULTS, 'scst_shapes', out, md)
    print(md)


if __name__ == '__main__': main()
