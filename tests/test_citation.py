"Release metadata: CITATION.cff names the paper and agrees with settings.ini, and CHANGELOG.md has an entry for the current version."
import configparser, re
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER_TITLE = 'Show, Attend and Tell: Neural Image Caption Generation with Visual Attention'
PAPER_AUTHORS = ['Xu', 'Ba', 'Kiros', 'Cho', 'Courville', 'Salakhutdinov', 'Zemel', 'Bengio']


def settings():
    cp = configparser.ConfigParser(delimiters=['='])
    cp.read(ROOT/'settings.ini', encoding='utf-8')
    return cp['DEFAULT']


def citation():
    return yaml.safe_load((ROOT/'CITATION.cff').read_text(encoding='utf-8'))


def version_key(v): return tuple(int(p) for p in v.split('.'))


def test_citation_describes_this_project():
    cff, cfg = citation(), settings()
    assert str(cff['cff-version']) == '1.2.0'
    assert cff['message'] and cff['type'] == 'software'
    assert cff['title'].startswith(cfg['title'])
    assert str(cff['version']) == cfg['version'], "bump CITATION.cff's version with settings.ini (see CONTRIBUTING.md)"
    assert cff['license'] == {'apache2': 'Apache-2.0'}[cfg['license']]
    assert cff['repository-code'] == cfg['git_url']
    assert cff['authors'] == [{'name': cfg['author']}]
    assert re.fullmatch(r'\d{4}-\d{2}-\d{2}', str(cff['date-released']))


def test_citation_names_the_paper():
    paper = citation()['preferred-citation']
    assert paper['type'] == 'conference-paper' and paper['title'] == PAPER_TITLE
    assert [a['family-names'] for a in paper['authors']] == PAPER_AUTHORS
    assert all(a.get('given-names') for a in paper['authors'])
    assert (paper['year'], paper['volume'], paper['start'], paper['end']) == (2015, 37, 2048, 2057)
    assert 'International Conference on Machine Learning' in paper['collection-title']
    assert 'arXiv:1502.03044' in [i['value'] for i in paper['identifiers']]


def test_changelog_has_an_entry_for_this_version():
    text = (ROOT/'CHANGELOG.md').read_text(encoding='utf-8')
    entries = re.findall(r'^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$', text, flags=re.M)
    versions = [v for v, _ in entries]
    version = settings()['version']
    assert version in versions, f"CHANGELOG.md has no '## [{version}] - YYYY-MM-DD' entry (see CONTRIBUTING.md, Releasing)"
    assert versions == sorted(versions, key=version_key, reverse=True), "entries go newest first"
    assert len(set(versions)) == len(versions)
    for v in versions: assert f'[{v}]: ' in text, f"CHANGELOG.md lacks the link for [{v}]"
    dates = dict(entries)
    assert str(citation()['date-released']) == dates[version], "CITATION.cff's date-released is the release date of this version"
