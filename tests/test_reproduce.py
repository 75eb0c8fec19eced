"sat_reproduce end to end on Shapes: killed twice at random moments, the same command resumes to the report an uninterrupted run writes."
import json, random, signal, subprocess, sys, time
from pathlib import Path
import pytest

SCRIPT = Path(sys.executable).parent/'sat_reproduce'
ARGS = ['shapes', '--encoder', 'colour_grid', '--n_train', '32', '--n_val', '8', '--n_test', '8', '--epochs', '2',
        '--device', 'cpu', '--quiet']


def reproduce(out, kill_after=None):
    "Run sat_reproduce into `out`; with `kill_after` seconds, SIGKILL it then (if still running). Its return code."
    p = subprocess.Popen([str(SCRIPT), *ARGS, '--out', str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try: return p.wait(timeout=kill_after or 600)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL); p.wait(); return None


def results(out):
    "What the report says of the models (its stage timings differ from run to run)."
    doc = json.loads((Path(out)/'report.json').read_text())
    return doc['results'], sorted(doc['stages']), doc['meta']


def test_killed_twice_resumes_to_the_same_report(tmp_path):
    t0 = time.perf_counter()
    assert reproduce(tmp_path/'whole') == 0
    whole = time.perf_counter() - t0
    rng = random.Random(2015)
    killed = tmp_path/'killed'
    kills = [rng.uniform(0.1, 0.6)*whole for _ in range(2)]
    for t in kills: assert reproduce(killed, kill_after=t) is None, f"the run finished before the kill at {t:.1f} s"
    stages = json.loads((killed/'stages.json').read_text())
    assert not all(s.get('done') for s in stages.values())            # the kills left work to do
    assert reproduce(killed) == 0
    assert results(killed) == results(tmp_path/'whole')
    stages = json.loads((killed/'stages.json').read_text())
    assert sum(s['attempts'] for s in stages.values()) > len(stages)   # some stage was cut and run again
