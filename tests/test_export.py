"""Model folders: export → folder → load gives the .pth's weights and captions; a pickle posing as
model.safetensors is refused without running; missing files and a foreign vocabulary fail in one line; sat_export
and sat_caption on a folder; the model card's front matter and evaluation table; no half folder after a crash."""
import json, os, pickle, subprocess, sys
from pathlib import Path
import pytest, torch, yaml

FIX = Path(__file__).parent/'fixtures'
REPO = Path(__file__).parent.parent
sys.path.insert(0, str(FIX))
from show_attend_tell import checkpoint as C, export as X  # noqa: E402
from show_attend_tell.captioning import caption, caption_features  # noqa: E402
from show_attend_tell.checkpoint import CheckpointError, MODEL_FILES, load_checkpoint, read_checkpoint  # noqa: E402
from show_attend_tell.config import preset  # noqa: E402
from show_attend_tell.evaluation import evaluate_checkpoint  # noqa: E402
from show_attend_tell.export import ExportError, export_model, find_report  # noqa: E402
from show_attend_tell.features import load_prepared, prepare  # noqa: E402
from show_attend_tell.loaders import input_of  # noqa: E402
from show_attend_tell.training import train  # noqa: E402
from show_attend_tell.vocab import Vocab  # noqa: E402

torch.set_num_threads(1)
ENV = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(FIX), str(REPO), os.environ.get('PYTHONPATH', '')])}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A tiny soft-attention model trained for 2 epochs on Shapes features of the stand-in encoder (named so that the
    captioner can rebuild it: 'standin_encoder:make'), and its best.pth."""
    root = tmp_path_factory.mktemp('export')
    data = prepare('shapes', out=root/'data', encoder='standin_encoder:make', n_train=40, n_val=8, n_test=6, progress=False)
    cfg = preset('tiny', embed_dim=16, hidden_dim=48, attn_dim=16, batch_size=16, epochs=2, dropout=0.1)
    train(cfg, data, root/'run', device='cpu', progress=False)
    return dict(root=root, data=data, ckpt=root/'run'/'best.pth')


@pytest.fixture(scope='module')
def folder(run):
    return export_model(run['ckpt'], run['root']/'shapes-tiny')


def one_line(e): return str(e).count('\n') == 0 and len(str(e)) < 400


def entry_point(tmp_path, module, fn, *args):
    "Run a console script as its entry point does: a script that calls it at top level (call_parse reads sys.argv)."
    script = tmp_path/f'{fn}_entry.py'
    script.write_text(f'from show_attend_tell.{module} import {fn}\n{fn}()\n')
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=300, env=ENV)


# ---------------------------------------------------------------------------------------------------------
# the round trip

def test_folder_has_the_hub_layout(folder):
    assert sorted(p.name for p in folder.iterdir()) == sorted([*MODEL_FILES, 'README.md'])
    with open(folder/'model.safetensors', 'rb') as f:                  # an 8-byte header length, then a JSON header
        n = int.from_bytes(f.read(8), 'little'); header = json.loads(f.read(n))
    assert header['__metadata__'] == {'format': 'pt'} and all('dtype' in v for k, v in header.items() if k != '__metadata__')
    cfg = json.loads((folder/'config.json').read_text())               # strict JSON (no NaN) that hubs can parse
    assert cfg['format'] == 'show_attend_tell' and cfg['model_type'] == 'show_attend_tell' and cfg['encoder'] == 'standin_encoder:make'
    assert Vocab.from_dict(json.loads((folder/'vocab.json').read_text())).hash() == cfg['vocab_hash']
    assert not list(folder.parent.glob('*.tmp-*')), "no temporary folder is left behind"


def test_export_then_load_gives_identical_weights_and_captions(run, folder):
    m1, c1, v1, e1 = load_checkpoint(run['ckpt'])
    m2, c2, v2, e2 = load_checkpoint(folder)
    assert c1 == c2 and v1 == v2
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert list(s1) == list(s2) and all(torch.equal(s1[k], s2[k]) and s1[k].dtype == s2[k].dtype for k in s1)
    for k in ('epoch', 'encoder', 'feat_dim', 'log', 'baseline', 'train_state'): assert e1[k] == e2[k], k
    assert e2['optimizer'] is None and e2['rng'] is None              # a folder is for using the model, not resuming
    # beam search on the cached features of the test split: the same words and the same attention
    data, vocab, cache = load_prepared(run['data'])
    idx = [i for i, r in enumerate(data.records) if r.split == 'test']
    feats = torch.stack([input_of(data, i, cache, None) for i in idx])
    a, b = caption_features(m1, v1, feats, beam_size=3, max_len=12), caption_features(m2, v2, feats, beam_size=3, max_len=12)
    assert [x.words for x in a] == [y.words for y in b] and all(torch.equal(x.alphas, y.alphas) for x, y in zip(a, b))
    assert any(x.words for x in a)
    # from image files, with the encoder rebuilt from its recorded name
    images = [data.image_path(i) for i in idx]
    assert [c.text for c in caption(images, run['ckpt'], beam_size=3, max_len=12, trust_code=True)] == \
           [c.text for c in caption(images, folder, beam_size=3, max_len=12, trust_code=True)]
    # a folder exported again from the folder holds the same tensors
    again = export_model(folder, run['root']/'again')
    m3 = load_checkpoint(again)[0]
    assert all(torch.equal(s1[k], v) for k, v in m3.state_dict().items())


def test_sat_caption_and_evaluate_take_a_folder(run, folder, tmp_path):
    data, _, _ = load_prepared(run['data'])
    imgs = [str(data.image_path(i)) for i, r in enumerate(data.records) if r.split == 'test'][:2]
    r = entry_point(tmp_path, 'captioning', 'sat_caption', *imgs, '--checkpoint', folder, '--device', 'cpu', '--max_len', '12',
                    '--attention_dir', tmp_path/'att', '--trust_code')
    assert r.returncode == 0, r.stderr
    want = caption(imgs, run['ckpt'], beam_size=3, max_len=12, trust_code=True)
    assert r.stdout.splitlines() == [f"{p}\t{c.text}" for p, c in zip(imgs, want)]
    assert len(list((tmp_path/'att').glob('*.png'))) == 2
    a = evaluate_checkpoint(run['ckpt'], run['data'], metrics=('bleu',), tokenizer='python', progress=False)
    b = evaluate_checkpoint(folder, run['data'], metrics=('bleu',), tokenizer='python', progress=False)
    assert a['scores'] == b['scores'] and [c['caption'] for c in a['captions']] == [c['caption'] for c in b['captions']]


# ---------------------------------------------------------------------------------------------------------
# refusing bad folders

class Evil:
    "Unpickling this creates the marker file: the proof that code ran."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize('how', ['torch.save', 'pickle', 'pickle protocol 0'])
def test_pickle_posing_as_safetensors_is_refused_without_running(folder, tmp_path, how):
    bad = tmp_path/'bad'; bad.mkdir()
    for f in ('config.json', 'vocab.json'): (bad/f).write_bytes((folder/f).read_bytes())
    marker = tmp_path/'pwned'
    payload = {'model': Evil(str(marker))}
    if how == 'torch.save': torch.save(payload, bad/'model.safetensors')
    else:
        with open(bad/'model.safetensors', 'wb') as f: pickle.dump(payload, f, protocol=0 if how.endswith('0') else None)
    pickle.loads(pickle.dumps(Evil(str(tmp_path/'control'))))         # the payload does run when unpickled …
    assert (tmp_path/'control').exists()
    with pytest.raises(CheckpointError) as e: load_checkpoint(bad)     # … but loading the folder unpickles nothing
    assert 'model.safetensors' in str(e.value) and 'safetensors file' in str(e.value) and one_line(e.value)
    assert not marker.exists()


@pytest.mark.parametrize('missing', MODEL_FILES)
def test_folder_missing_a_file_names_it(folder, tmp_path, missing):
    bad = tmp_path/'bad'; bad.mkdir()
    for f in MODEL_FILES:
        if f != missing: (bad/f).write_bytes((folder/f).read_bytes())
    with pytest.raises(CheckpointError) as e: load_checkpoint(bad)
    assert f"has no {missing}" in str(e.value) and one_line(e.value)


def test_foreign_vocabulary_is_refused(folder, tmp_path):
    bad = tmp_path/'bad'; bad.mkdir()
    for f in MODEL_FILES: (bad/f).write_bytes((folder/f).read_bytes())
    v = Vocab.from_dict(json.loads((folder/'vocab.json').read_text()))
    Vocab(v.itos[:-1] + ['zebra']).save(bad/'vocab.json')              # same size, one word different
    with pytest.raises(CheckpointError) as e: load_checkpoint(bad)
    assert 'vocab.json is not the vocabulary the model was trained with' in str(e.value) and one_line(e.value)
    (bad/'vocab.json').write_text('{"itos": ')
    with pytest.raises(CheckpointError, match='vocab.json is not valid JSON'): load_checkpoint(bad)
    (bad/'vocab.json').write_bytes((folder/'vocab.json').read_bytes())
    assert load_checkpoint(bad)[2] == v                                 # the check has teeth: the right one loads
    other = Vocab(v.itos[:-1] + ['zebra'])
    with pytest.raises(CheckpointError, match='another vocabulary'): load_checkpoint(bad, vocab=other)


def test_a_write_cut_short_leaves_no_folder_that_loads(run, tmp_path, monkeypatch):
    # inside save_model_folder: config.json is written last, so a folder without it is refused
    real = C.atomic_write
    def dies_at_config(path, *a, **kw):
        if Path(path).name == 'config.json': raise KeyboardInterrupt
        return real(path, *a, **kw)
    monkeypatch.setattr(C, 'atomic_write', dies_at_config)
    half = tmp_path/'half'; half.mkdir()
    with pytest.raises(KeyboardInterrupt): C.save_model_folder(half, read_checkpoint(run['ckpt']))
    assert (half/'model.safetensors').exists()
    with pytest.raises(CheckpointError, match='has no config.json'): load_checkpoint(half)
    # export_model: interrupted anywhere, the destination does not appear and no temporary folder is left
    with pytest.raises(KeyboardInterrupt): export_model(run['ckpt'], tmp_path/'out')
    assert not (tmp_path/'out').exists() and not list(tmp_path.glob('out.tmp-*'))
    monkeypatch.setattr(C, 'atomic_write', real)
    def card_dies(*a, **kw): raise KeyboardInterrupt
    monkeypatch.setattr(X, 'model_card', card_dies)
    with pytest.raises(KeyboardInterrupt): export_model(run['ckpt'], tmp_path/'out')
    assert not (tmp_path/'out').exists() and not list(tmp_path.glob('out.tmp-*'))


def test_export_refuses_to_clobber(run, folder, tmp_path):
    (tmp_path/'stuff').mkdir(); (tmp_path/'stuff'/'mine.txt').write_text('keep me')
    with pytest.raises(ExportError, match='already exists'): export_model(run['ckpt'], tmp_path/'stuff')
    with pytest.raises(ExportError, match='not a model folder'): export_model(run['ckpt'], tmp_path/'stuff', overwrite=True)
    assert (tmp_path/'stuff'/'mine.txt').read_text() == 'keep me'
    with pytest.raises(ExportError, match='holds the checkpoint'): export_model(run['ckpt'], run['ckpt'].parent, overwrite=True)
    with pytest.raises(ExportError, match='holds the checkpoint'): export_model(folder, folder, overwrite=True)


# ---------------------------------------------------------------------------------------------------------
# sat_export

def sat_export(tmp_path, *args): return entry_point(tmp_path, 'export', 'sat_export', *args)


def test_sat_export_one_line_errors(run, folder, tmp_path):
    cases = [((tmp_path/'missing.pth', tmp_path/'o'), 'missing.pth does not exist'),
             ((run['ckpt'], folder), 'already exists'),
             ((run['ckpt'], tmp_path/'o', '--report', tmp_path/'none.json'), 'none.json does not exist')]
    (tmp_path/'garbage.pth').write_bytes(b'not a checkpoint')
    cases.append(((tmp_path/'garbage.pth', tmp_path/'o'), 'garbage.pth'))
    for args, msg in cases:
        r = sat_export(tmp_path, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith('error: ') and msg in r.stderr and r.stderr.count('\n') == 1, r.stderr
        assert r.stdout == '' and not (tmp_path/'o').exists()
    r = sat_export(tmp_path, run['ckpt'], tmp_path/'o', '--license', 'cc-by-4.0', '--name', 'tiny-shapes')
    assert r.returncode == 0, r.stderr
    assert 'huggingface-cli upload' in r.stdout and load_checkpoint(tmp_path/'o')[1] == load_checkpoint(run['ckpt'])[1]
    assert (tmp_path/'o'/'README.md').read_text().startswith('---\nlicense: cc-by-4.0\n')


# ---------------------------------------------------------------------------------------------------------
# the model card

def front_matter(card):
    assert card.startswith('---\n')
    head, _, body = card[4:].partition('\n---\n')
    return yaml.safe_load(head), body


def test_card_without_a_report(folder):
    meta, body = front_matter((folder/'README.md').read_text())
    assert meta['license'] == 'apache-2.0' and meta['library_name'] == 'show_attend_tell' and meta['datasets'] == ['shapes']
    assert {'image-captioning', 'soft-attention', 'safetensors'} <= set(meta['tags']) and 'model-index' not in meta
    assert 'No evaluation report was found' in body and '| BLEU-4 |' not in body
    for needle in ('standin_encoder:make', '**soft** (deterministic)', 'reconstructed', 'sat_train data/shapes --preset tiny',
                   '--attention soft --epochs 2 --seed 0', 'sat_caption --checkpoint FOLDER', "load_checkpoint('FOLDER')",
                   'huggingface-cli upload USER/NAME FOLDER', 'not tested against the hub', 'Loading runs no code from the folder', '@inproceedings{xu2015show',
                   '2048--2057', 'generated by show_attend_tell'):
        assert needle in body, needle


def test_card_has_the_evaluation_table_when_a_report_is_there(run, tmp_path):
    res = evaluate_checkpoint(run['ckpt'], run['data'], metrics=('bleu', 'rouge'), tokenizer='python', progress=False,
                              out_dir=run['ckpt'].parent)
    assert find_report(run['ckpt']) == run['ckpt'].parent/'evaluation.json'
    body = (export_model(run['ckpt'], tmp_path/'m')/'README.md').read_text()
    meta, body = front_matter(body)
    sc = res['scores']
    assert f"| BLEU-4 | {100*sc['BLEU-4']:.2f} |" in body and f"| ROUGE-L | {100*sc['ROUGE-L']:.2f} |" in body
    assert 'from `evaluation.json`' in body and f"n_images {res['n_images']}" in body
    c = res['attention_correctness']
    if c and c.get('n_words'): assert f"{100*c['mass']:.1f}%" in body and '**Attention correctness**' in body
    else: assert 'Attention correctness: not measured' in body
    mi = meta['model-index'][0]['results'][0]
    assert mi['dataset']['split'] == 'test' and {m['name']: m['value'] for m in mi['metrics']}['BLEU-4'] == round(100*sc['BLEU-4'], 2)
    assert set(meta['metrics']) == {'bleu', 'rouge'}
    # a report that evaluated another checkpoint is not this model's table
    doc = json.loads((run['ckpt'].parent/'evaluation.json').read_text())
    doc['meta']['checkpoint'] = str(tmp_path/'elsewhere'/'last.pth')
    (run['ckpt'].parent/'evaluation.json').write_text(json.dumps(doc))
    assert find_report(run['ckpt']) is None
    assert 'No evaluation report was found' in (export_model(run['ckpt'], tmp_path/'m2')/'README.md').read_text()
    # … unless it is named explicitly; the attention correctness of a Shapes report is shown
    doc['attention_correctness'] = {'mass': 0.4321, 'pointing': 0.5, 'uniform_mass': 0.0625, 'n_words': 12, 'n_images': 6}
    (tmp_path/'r.json').write_text(json.dumps(doc))
    body = (export_model(run['ckpt'], tmp_path/'m3', report=tmp_path/'r.json')/'README.md').read_text()
    assert '| Shapes boxes (generated words) | 12 | 43.2% | 6.2% | 50.0% | – | 6 (0) |' in body
    doc['grounding'] = {'coco': {'n_words': 30, 'mass': 0.25, 'uniform': 0.05, 'pointing': 0.4, 'n_images': 9}}
    (tmp_path/'r2.json').write_text(json.dumps(doc))                    # a report with a grounding table per source of annotations
    body = (export_model(run['ckpt'], tmp_path/'m5', report=tmp_path/'r2.json')/'README.md').read_text()
    assert '| COCO instances (generated words) | 30 | 25.0% | 5.0% | 40.0% |' in body
    (tmp_path/'bad.json').write_text('{"meta": {}}')
    with pytest.raises(ExportError, match="bad.json has no 'scores'"): export_model(run['ckpt'], tmp_path/'m4', report=tmp_path/'bad.json')
    (run['ckpt'].parent/'evaluation.json').unlink(); (run['ckpt'].parent/'evaluation.md').unlink()
