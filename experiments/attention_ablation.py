"""What makes attention land on Shapes: train the `tiny` model with one setting changed, score the test split.

It reproduces the table of the explanation page "Results on Shapes" (nbs/explanations/shapes_results.ipynb), whose
text lists the settings of every row. It is an experiment, not a timed benchmark.

Usage: .venv/bin/python experiments/attention_ablation.py NAME [epochs=8] [feats=s5|s4|s3p] [pool=1] [zero_init=1]
       [sizes=SMALL_LO:SMALL_HI,LARGE_LO:LARGE_HI] [schedule=constant|one_cycle] [any Config field=value ...]
e.g.   ... pos8 epochs=8           (the tiny preset: layer-normalised annotations, f_att reads positions)
       ... ln8 epochs=8 location_embedding=0
       ... raw8 epochs=8 location_embedding=0 annotation_norm=none
Uses demo_out/data (run `make demo` first) unless feats/sizes ask for other features, which are prepared
under runs/ablation/. Appends one JSON line per run to runs/ablation/results.jsonl. Run it from the repository root.
"""
import json, sys, time, shutil
from pathlib import Path
import torch, torch.nn as nn, torch.nn.functional as F
from show_attend_tell.config import preset
from show_attend_tell.features import prepare
from show_attend_tell.shapes import SHAPE_SIZES
from show_attend_tell.efficientnet import LITE0_MEAN, LITE0_STD, efficientnet_lite0_imagenet
from show_attend_tell.encoder import Encoder
from show_attend_tell.training import train
from show_attend_tell.evaluation import evaluate_checkpoint
import show_attend_tell.decoder as dec

ROOT = Path('runs/ablation')


def lite0_stage(kind:str)->Encoder:
    "EfficientNet-Lite0 cut earlier than the tiny preset's stage 5: 's4' (80-d) or 's3p' (40-d, 2×2 pooled)."
    m = efficientnet_lite0_imagenet(True, output_stride=16)
    if kind == 's4': return Encoder('lite0_s4', nn.Sequential(m.conv_stem, m.bn1, *m.blocks[:4]), 80, 14, 224, LITE0_MEAN, LITE0_STD)
    if kind == 's3p': return Encoder('lite0_s3p', nn.Sequential(m.conv_stem, m.bn1, *m.blocks[:3], nn.AvgPool2d(2)), 40, 14, 224, LITE0_MEAN, LITE0_STD)
    raise SystemExit(f"feats={kind}: use s5, s4 or s3p")


def patch_init_state(pool:bool, zero_init:bool):
    "Average each annotation with its 3×3 neighbours, and/or start the LSTM from zeros instead of the mean annotation."
    orig = dec.ShowAttendTell.init_state
    def init_state(self, feats, feat_mask=None):
        if pool:
            B, L, D = feats.shape; g = int(L ** .5)
            x = F.avg_pool2d(feats.float().transpose(1, 2).reshape(B, D, g, g), 3, 1, 1, count_include_pad=False)
            feats = x.flatten(2).transpose(1, 2)
        s = orig(self, feats, feat_mask)
        if zero_init: s['h'], s['c'] = torch.zeros_like(s['h']), torch.zeros_like(s['c'])
        return s
    dec.ShowAttendTell.init_state = init_state


def main(name, *kv):
    opts = dict(a.split('=', 1) for a in kv)
    feats, epochs, sizes = opts.pop('feats', 's5'), int(opts.pop('epochs', 8)), opts.pop('sizes', '')
    pool, zero_init, sched = opts.pop('pool', '0') == '1', opts.pop('zero_init', '0') == '1', opts.pop('schedule', 'constant')
    base = preset('tiny')
    cast = lambda k, v: (v == '1') if isinstance(getattr(base, k), bool) else type(getattr(base, k))(v)
    cfg = preset('tiny', **{k: cast(k, v) for k, v in opts.items()})
    if sizes:
        lo, hi = sizes.split(',')
        SHAPE_SIZES.update(small=tuple(map(float, lo.split(':'))), large=tuple(map(float, hi.split(':'))))
    if feats == 's5' and not sizes: data = Path('demo_out/data')
    else:
        data = ROOT/f"data_{feats}_{sizes.replace(':', '-').replace(',', '_')}"
        if not (data/'vocab.json').exists():
            prepare('shapes', out=data, preset='tiny', encoder=None if feats == 's5' else lite0_stage(feats), progress=False)
    if not (data/'vocab.json').exists(): raise SystemExit(f"{data} is missing: run `make demo` first")
    if pool or zero_init: patch_init_state(pool, zero_init)
    run = ROOT/f'run_{name}'; shutil.rmtree(run, ignore_errors=True)
    t = time.time()
    train(cfg, data, run, epochs=epochs, progress=False, schedule=sched)
    r = evaluate_checkpoint(run/'best.pth', data, 'test', metrics=('bleu',), tokenizer='python', progress=False)
    a = r['attention_correctness']
    line = dict(name=name, feats=feats, sizes=sizes, pool=pool, zero_init=zero_init, schedule=sched, epochs=epochs, config=opts,
                train_s=round(time.time() - t), bleu4=round(r['scores']['BLEU-4'], 4), mass=round(a['mass'], 4), pointing=round(a['pointing'], 4))
    print(json.dumps(line))
    with open(ROOT/'results.jsonl', 'a') as f: f.write(json.dumps(line) + '\n')


if __name__ == '__main__':
    torch.set_num_threads(2)
    if len(sys.argv) < 2: raise SystemExit(__doc__)
    main(*sys.argv[1:])
