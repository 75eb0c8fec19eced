"sat_reproduce end to end on Shapes: killed twice at random moments, the same command resumes to the report an uninterrupted run writes."
import json, random, signal, subprocess, sys, time
from pathlib import Path

SCRIPT = Path(sys.executable).parent/'sat_reproduce'
ARGS = ['shapes', '--encoder', 'colour_grid', '--n_train', '32', '--n_val', '8', '--n_test', '8', '--epochs', '2',
        '--device', 'cpu', '--quiet']
STAGES = ['prepare', 'train_soft', 'evaluate_soft', 'train_hard', 'evaluate_hard']


def stage_log(out) -> dict:
    try: return json.loads((Path(out)/'stages.json').read_text())
    except (OSError, ValueError): return {}


def reproduce(out, kill_in=None, rng=None):
    """Run sat_reproduce into `out`. With `kill_in` (a stage name), SIGKILL it at a random moment of that stage: once the
    stage log says the stage started (or
    finished, when an earlier kill landed after it), after a random 0–1.5 s. Returns the exit code, or None when it was killed."""
    p = subprocess.Popen([str(SCRIPT), *ARGS, '--out', str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_in is None: return p.wait(timeout=600)
    deadline = time.monotonic() + 600
    while p.poll() is None and time.monotonic() < deadline:
        rec = stage_log(out).get(kill_in, {})
        if rec.get('attempts'): break                                    # started (or already done: then a later stage)
        time.sleep(0.05)
    time.sleep(rng.uniform(0, 1.5))
    if p.poll() is not None: return p.returncode
    p.send_signal(signal.SIGKILL); p.wait()
    return None


def results(out):
    "What the report says of the models (its stage timings differ from run to run)."
    doc = json.loads((Path(out)/'report.json').read_text())
    return doc['results'], sorted(doc['stages']), doc['meta']


def test_killed_twice_resumes_to_the_same_report(tmp_path):
    assert reproduce(tmp_path/'whole') == 0
    rng, killed = random.Random(2015), tmp_path/'killed'
    first = rng.choice(STAGES[:3])
    second = rng.choice([s for s in STAGES[STAGES.index(first):-1]])     # a stage the first kill left to do
    for stage in (first, second):
        assert reproduce(killed, kill_in=stage, rng=rng) is None, f"the run ended before the kill in {stage}"
        assert not all(s.get('done') for s in stage_log(killed).values())   # the kill left work to do
    assert reproduce(killed) == 0
    assert results(killed) == results(tmp_path/'whole')
    stages = stage_log(killed)
    assert sum(s['attempts'] for s in stages.values()) > len(stages)   # some stage was cut and run again
