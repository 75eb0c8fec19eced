"The GitHub Actions workflows: CI runs exactly `make test` (as .ci/run does); deploy builds the docs with nbdev and Quarto and publishes Pages."
import configparser, shlex
from pathlib import Path
import pytest, yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT/'.github'/'workflows'


def settings():
    cp = configparser.ConfigParser(delimiters=['='])
    cp.read(ROOT/'settings.ini', encoding='utf-8')
    return cp['DEFAULT']


def load_workflow(name):
    path = WORKFLOWS/name
    assert path.exists(), f"{path} is missing"
    wf = yaml.safe_load(path.read_text(encoding='utf-8'))
    assert isinstance(wf, dict), f"{name} is not a YAML mapping"
    return wf


def triggers(wf):
    "The workflow's `on:` block, which YAML 1.1 reads as the key True."
    on = wf['on'] if 'on' in wf else wf.get(True)
    assert on is not None, "workflow has no `on:` triggers"
    if isinstance(on, str): on = [on]
    if isinstance(on, list): on = {k: None for k in on}
    return on


def steps(wf):
    "Every step of every job, in order."
    jobs = wf.get('jobs') or {}
    assert jobs, "workflow has no jobs"
    return [s for job in jobs.values() for s in job.get('steps') or []]


def action(step):
    "`owner/repo[/path]` of a `uses:` step without its @ref, or None for a `run:` step."
    return step['uses'].split('@')[0] if 'uses' in step else None


def uses(wf, name):
    "The steps that use the action `name`."
    return [s for s in steps(wf) if action(s) == name]


def run_commands(wf):
    "The non-empty, non-comment lines of every `run:` step."
    return [ln.strip() for s in steps(wf) if 'run' in s
            for ln in str(s['run']).splitlines() if ln.strip() and not ln.strip().startswith('#')]


# --- the helpers themselves: a workflow that does something else must not pass ---

def test_triggers_reads_on_key_both_ways():
    assert set(triggers(yaml.safe_load('on: [push, pull_request]'))) == {'push', 'pull_request'}
    assert set(triggers({'on': 'push'})) == {'push'}
    with pytest.raises(AssertionError): triggers({'jobs': {}})


def test_a_workflow_running_pytest_is_caught():
    wf = yaml.safe_load("on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n"
                        "      - uses: actions/checkout@v4\n      - run: python -m pytest tests\n")
    assert run_commands(wf) != ['make test']


# --- test.yaml ---

def test_ci_runs_on_push_and_pull_request():
    on = triggers(load_workflow('test.yaml'))
    assert {'push', 'pull_request'} <= set(on)


def test_ci_environment():
    wf = load_workflow('test.yaml')
    assert all(job.get('runs-on') == 'ubuntu-latest' for job in wf['jobs'].values())
    assert uses(wf, 'actions/checkout'), "the job must check out the repository"
    py = uses(wf, 'actions/setup-python')
    assert py and str(py[0].get('with', {}).get('python-version')) == '3.11', "CI tests the pinned Python 3.11"
    assert isinstance(py[0]['with']['python-version'], str), "quote python-version (YAML reads 3.10 as 3.1)"
    java = uses(wf, 'actions/setup-java')
    assert java, "METEOR (coco-caption) needs a Java runtime"
    assert java[0]['with']['distribution'] == 'temurin' and str(java[0]['with']['java-version']) == '17'


def test_ci_runs_make_test_and_nothing_else():
    wf = load_workflow('test.yaml')
    assert run_commands(wf) == ['make test'], "CI must run the project's single test command, `make test`"
    order = [action(s) or 'run' for s in steps(wf)]
    assert order.index('run') > max(order.index(a) for a in ('actions/checkout', 'actions/setup-python', 'actions/setup-java'))


def test_ci_script_runs_make_test():
    script = (ROOT/'.ci'/'run').read_text(encoding='utf-8')
    lines = [ln.strip() for ln in script.splitlines() if ln.strip() and not ln.strip().startswith('#')]
    assert 'set -euo pipefail' in lines, ".ci/run must stop at the first failure"
    assert lines[-1] == 'make test'
    assert not [ln for ln in lines if shlex.split(ln)[0] in ('pytest', 'nbdev_test', 'python', 'python3')]


def test_make_test_is_a_target():
    makefile = (ROOT/'Makefile').read_text(encoding='utf-8')
    assert any(ln.startswith('test:') for ln in makefile.splitlines())


# --- deploy.yaml ---

def test_deploy_runs_on_the_default_branch():
    on = triggers(load_workflow('deploy.yaml'))
    assert 'push' in on and 'pull_request' not in on, "deploy publishes from pushes only, never from a PR"
    assert settings()['branch'] in (on['push'] or {}).get('branches', [])


def test_deploy_builds_with_quarto_and_nbdev_docs():
    wf = load_workflow('deploy.yaml')
    if uses(wf, 'fastai/workflows/quarto-ghp'): return  # nbdev's packaged action does all of the below
    py = uses(wf, 'actions/setup-python')
    assert py and str(py[0]['with']['python-version']) == '3.11'
    cmds = run_commands(wf)
    assert any(shlex.split(c)[:3] in (['pip', 'install', '-e'], ['python', '-m', 'pip']) and '.[dev]' in c
               for c in cmds), "deploy installs the project with its [dev] extra (nbdev)"
    assert 'nbdev_docs' in [shlex.split(c)[0] for c in cmds]
    order = [action(s) or s['run'].strip() for s in steps(wf)]
    quarto = order.index('quarto-dev/quarto-actions/setup')
    build = next(i for i, o in enumerate(order) if o.startswith('nbdev_docs'))
    assert quarto < build, "the real Quarto must be installed before nbdev_docs runs"


def test_deploy_publishes_the_docs_folder_to_pages():
    wf = load_workflow('deploy.yaml')
    if uses(wf, 'fastai/workflows/quarto-ghp'): return
    doc_path = settings()['doc_path']
    perms = wf.get('permissions') or {}
    for job in wf['jobs'].values(): perms = {**perms, **(job.get('permissions') or {})}
    ghp, art = uses(wf, 'peaceiris/actions-gh-pages'), uses(wf, 'actions/upload-pages-artifact')
    if ghp:
        assert Path(ghp[0]['with']['publish_dir']) == Path(doc_path)
        token = ghp[0]['with']['github_token']
        assert token in ('${{ secrets.GITHUB_TOKEN }}', '${{ github.token }}'), "publish with the workflow's own token"
        assert perms.get('contents') == 'write', "pushing gh-pages needs contents: write"
    else:
        assert art and uses(wf, 'actions/deploy-pages'), "deploy must publish to GitHub Pages"
        assert Path(art[0]['with']['path']) == Path(doc_path)
        assert perms.get('pages') == 'write' and perms.get('id-token') == 'write'
