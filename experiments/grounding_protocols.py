"""Attention correctness of the `make demo` model under each protocol, with the uniform-attention baselines.

The Shapes test split is written out in two annotation formats a user would bring: Flickr30k Entities (every object
phrase of every reference caption marked, each object's box in its XML) and a COCO instances file with Shapes'
own categories (circle, square, ...; no synonyms table). `evaluate_checkpoint` then scores the demo model on each:
Entities under Liu et al.'s protocol and under ours (teacher-forced, per word), COCO instances on the generated
words; the built-in Shapes score (boxes from the generator) comes with every run and is the reference the COCO-format
path should come close to. It writes experiments/results/grounding_protocols.json and .md, which the grounding page
(nbs/20_grounding.ipynb) shows. It is an experiment, not a timed benchmark.

Usage: .venv/bin/python experiments/grounding_protocols.py [DEMO_FOLDER [OUT_FOLDER]]   (from the repository root; about two minutes after
`make demo`, which it runs first through `run_demo` when demo_out/ has no soft-attention model)
"""
import json, sys
from pathlib import Path
from show_attend_tell.core import atomic_write
from show_attend_tell.features import load_prepared
from show_attend_tell.annotations import write_shapes_entities, write_shapes_instances
from show_attend_tell.metrics import find_java
from show_attend_tell.evaluation import evaluate_checkpoint
from show_attend_tell.report import grounding_md
from show_attend_tell.demo import run_demo

DEMO, OUT = Path('demo_out'), Path('experiments/results')


def main(DEMO=DEMO, OUT=OUT):
    if not (DEMO/'run_soft'/'best.pth').is_file(): run_demo('soft', out=DEMO)     # resumable; what `make demo` trains first
    data, _, _ = load_prepared(DEMO/'data')
    ann = DEMO/'annotations'
    ents, inst = write_shapes_entities(data, ann/'entities'), write_shapes_instances(data, ann/'instances_test.json')
    java = find_java() is not None
    common = dict(split='test', metrics=('bleu',), tokenizer='ptb' if java else 'python', device='cpu', progress=False)
    by_entities = evaluate_checkpoint(DEMO/'run_soft'/'best.pth', DEMO/'data', entities=ents, protocol='both', **common)
    by_instances = evaluate_checkpoint(DEMO/'run_soft'/'best.pth', DEMO/'data', instances=inst, **common)
    g = {**by_entities['grounding'], 'coco': by_instances['grounding']['coco']}
    liu = g['entities_liu2017']
    keep = lambda r: {k: v for k, v in r.items() if isinstance(v, (int, float, str, type(None)))}   # the summary numbers
    doc = {'checkpoint': str(DEMO/'run_soft'/'best.pth'), 'split': 'test', 'n_images': by_entities['n_images'],
           'grounding': {k: keep(v) for k, v in g.items()}, 'liu2017_rows': [keep(r) for r in liu['rows']]}
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write(OUT/'grounding_protocols.json', json.dumps(doc, indent=1))
    md = ["# Attention correctness of the demo model, by protocol", "",
          f"`make demo`'s soft-attention model on the {doc['n_images']} Shapes test images; written by "
          "experiments/grounding_protocols.py.", ""] + grounding_md(g, n_rows=0, title=None)
    atomic_write(OUT/'grounding_protocols.md', '\n'.join(md) + '\n')
    print('\n'.join(md))


if __name__ == '__main__': main(*map(Path, sys.argv[1:3]))
