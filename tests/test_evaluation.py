"""Scoring with coco-caption (pycocoevalcap): exact agreement with the scorers called directly, perfect and wrong
captions, the no-Java path, the paper comparison and the report files. METEOR's JVM starts twice (~15 s)."""
import json
from pathlib import Path
import numpy as np
import pytest

from show_attend_tell import metrics as ev
from show_attend_tell.evaluation import evaluate_split
from show_attend_tell.report import ReportError, compare_with_paper, paper_row, write_report
from show_attend_tell.captions import read_karpathy

FIXTURES = Path(__file__).parent/"fixtures"

@pytest.fixture(scope='module')
def flickr():
    return read_karpathy(FIXTURES/'dataset_flickr_mini.json', image_root=FIXTURES, check=False)


def test_compare_with_paper():
    s = {'BLEU-1': 0.6, 'BLEU-2': 0.4, 'BLEU-3': 0.3, 'BLEU-4': 0.2, 'METEOR': 0.19, 'ROUGE-L': 0.45, 'CIDEr': 0.5}
    md = compare_with_paper(s, 'Flickr8k', 'hard')
    assert '| BLEU-4 | 20.00 | 21.30 | -1.30 |' in md
    assert '| CIDEr | 50.00 | – | – |' in md
    md = compare_with_paper(s, 'shapes', 'soft')
    assert 'paper' not in md.splitlines()[0] and 'no row for Shapes' in md and '| BLEU-4 | 20.00 |' in md
    assert paper_row('coco', 'hard')['METEOR'] == 23.04
    with pytest.raises(ReportError):
        paper_row('coco', 'medium')


def test_evaluate_split_with_attention_and_report(tmp_path, flickr):
    "Shapes-like records with objects and a captioner returning (words, alphas): scores, correctness, report."
    from show_attend_tell.captions import CaptionRecord
    recs = [CaptionRecord(f'{i}.png', 'test', [['a', 'red', 'circle']], ['a red circle'], i,
                          [{'shape': 'circle', 'color': 'red', 'size': 'small', 'box': [0.0, 0.0, 0.5, 0.5]}]) for i in range(3)]
    recs.append(CaptionRecord('x.png', 'train', [['a', 'star']], ['a star'], 9, None))
    def caption_fn(idxs):                      # uniform attention: mass = area of the box = 0.25
        return [(['a', 'red', 'circle'], np.full((3, 196), 1/196)) for _ in idxs]
    res = evaluate_split(caption_fn, recs, 'test', metrics=('bleu',), tokenizer='python', progress=False)
    assert res['n_images'] == 3 and res['scores']['BLEU-1'] == pytest.approx(1.0)
    c = res['attention_correctness']
    assert c['n_words'] == 3 and c['mass'] == pytest.approx(0.25) and c['uniform_mass'] == pytest.approx(0.25)
    paths = write_report(res, tmp_path/'out', dataset='shapes', attention='soft', meta={'beam_size': 3})
    doc = json.loads(paths['json'].read_text())
    assert doc['paper_table1'] is None and doc['meta'] == {'split': 'test', 'n_images': 3, 'beam_size': 3}
    assert doc['attention_correctness']['n_words'] == 3 and len(doc['captions']) == 3
    md = paths['md'].read_text()
    assert 'no row for Shapes' in md and 'Attention correctness' in md and '25.0%' in md
    assert sorted(p.name for p in (tmp_path/'out').iterdir()) == ['evaluation.json', 'evaluation.md']
