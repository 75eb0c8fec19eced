"The whole pipeline in miniature: run_demo (sat_reproduce on Shapes: features → train → caption + figures → scores → report), rerun resumes, sat_evaluate."
import json, subprocess, sys
from pathlib import Path
import pytest
from show_attend_tell.demo import run_demo
from show_attend_tell.evaluation import evaluate_checkpoint
from show_attend_tell.evaluation import EvaluationError


SMALL = dict(n_train=60, n_val=8, n_test=6, epochs=4, n_figures=2, progress=False)


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo')
    res = run_demo('soft', device='cpu', out=str(out), **SMALL)
    return out, res


def test_demo_writes_report_figures_and_checkpoint(demo):
    out, res = demo
    soft = res['results']['soft']
    assert {'BLEU-1', 'BLEU-4', 'ROUGE-L', 'CIDEr'} <= set(soft['scores'])
    c = soft['attention_correctness']
    assert c['n_words'] > 0 and 0 <= c['mass'] <= 1 and 0 <= c['pointing'] <= 1
    figures = sorted((out/'attention_soft').glob('*.png'))
    assert [f.name for f in figures] == ['test_00000.png', 'test_00001.png']
    assert all(f.stat().st_size > 5000 for f in figures)
    assert 'Attention correctness' in (out/'report.md').read_text()
    md = (out/'report_soft.md').read_text()
    assert 'BLEU-4' in md and 'Attention correctness' in md
    doc = json.loads((out/'report_soft.json').read_text())
    assert doc['meta']['encoder'] == 'efficientnet_lite0_local' and doc['meta']['checkpoint'].endswith('best.pth')
    assert (out/'run_soft'/'best.pth').is_file() and (out/'run_soft'/'curves.png').is_file()


def test_demo_rerun_reuses_everything(demo):
    out, res = demo
    files = [out/'data'/'features'/'manifest.json', out/'run_soft'/'best.pth', out/'run_soft'/'last.pth', out/'report_soft.json']
    before = [f.stat().st_mtime_ns for f in files]
    again = run_demo('soft', device='cpu', out=str(out), **SMALL)
    assert [f.stat().st_mtime_ns for f in files] == before              # no re-encoding, no retraining, no re-evaluation
    assert again['results'] == res['results']


def test_sat_evaluate_cli(demo, tmp_path):
    out, _ = demo
    r = subprocess.run([str(Path(sys.executable).parent/'sat_evaluate'), str(out/'run_soft'/'best.pth'), str(out/'data'),
                        '--split', 'val', '--beam_size', '2', '--out', str(tmp_path), '--quiet', '--no_meteor'],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'BLEU-4' in r.stdout and (tmp_path/'evaluation.json').is_file()
    doc = json.loads((tmp_path/'evaluation.json').read_text())
    assert doc['meta']['split'] == 'val' and doc['meta']['beam_size'] == 2 and doc['meta']['n_images'] == 8
    bad = subprocess.run([str(Path(sys.executable).parent/'sat_evaluate'), str(tmp_path/'nope.pth'), str(out/'data')],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count('\n') == 1 and 'does not exist' in bad.stderr


def test_evaluate_checkpoint_refuses_other_features(demo, tmp_path):
    "A checkpoint trained on one encoder's features cannot be scored on another's: one clear message."
    out, _ = demo
    sys.path.insert(0, str(Path(__file__).parent/'fixtures'))
    from standin_encoder import TinyEncoder
    from show_attend_tell.features import prepare
    other = prepare('shapes', out=tmp_path/'other', encoder=TinyEncoder(), n_train=60, n_val=8, n_test=6, progress=False)
    with pytest.raises(EvaluationError, match="efficientnet_lite0_local features .* holds tiny features"):
        evaluate_checkpoint(out/'run_soft'/'best.pth', other, progress=False)
