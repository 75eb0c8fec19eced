"""Captioning (nbs/27_captioning.ipynb): `caption` on files, folders and PIL images, errors that name the file, EXIF orientation, and
`sat_caption`: one-line errors, and on a photo folder with unreadable files it captions the rest and lists what it skipped
(--no-skip_bad stops at the first)."""
import os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest, torch
from PIL import Image
from show_attend_tell.checkpoint import save_checkpoint
from show_attend_tell.config import preset
from show_attend_tell.decoder import ShowAttendTell
from show_attend_tell.decoding import beam_search
from show_attend_tell.captioning import caption, find_images, Caption, CaptionError
from show_attend_tell.captions import DataError, load_image
from show_attend_tell.vocab import END, Vocab
from show_attend_tell.encoder import get_encoder


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    "A random tiny decoder over the colour-grid encoder's 4×4×8 grid, saved as training saves it."
    d = tmp_path_factory.mktemp('ckpt')
    vocab = Vocab(['<pad>', '<start>', '<end>', '<unk>', 'a', 'red', 'blue', 'circle', 'square'])
    cfg = preset('tiny', embed_dim=16, hidden_dim=32, attn_dim=16, grid_size=4, encoder='colour_grid')
    torch.manual_seed(0)
    model = ShowAttendTell(cfg, len(vocab), feat_dim=8)
    save_checkpoint(d/'model.pth', model, cfg, vocab, feat_dim=8, encoder=cfg.encoder)
    return d/'model.pth'


@pytest.fixture
def photos(tmp_path):
    "A folder of three good images and two unreadable ones (a text file named .jpg, a JPEG cut short)."
    d = tmp_path/'photos'; d.mkdir()
    rng = np.random.default_rng(0)
    for name in ('a.jpg', 'b.png', 'd.jpg'):
        Image.fromarray((rng.random((48, 64, 3))*255).astype(np.uint8)).save(d/name)
    (d/'c_notes.jpg').write_text('this is text, not a JPEG')
    (d/'e_cut.jpg').write_bytes((d/'a.jpg').read_bytes()[:300])
    return d


def run(tmp_path, *args):
    "Run sat_caption as its console-script entry point does (a top-level call in a script)."
    script = tmp_path/'entry.py'
    script.write_text('from show_attend_tell.captioning import sat_caption\nsat_caption()\n')
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_folder_with_bad_files_captions_the_rest_and_lists_them(tmp_path, checkpoint, photos):
    r = run(tmp_path, photos, '--checkpoint', checkpoint, '--beam_size', '2', '--max_len', '6')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [Path(l.split('\t')[0]).name for l in lines] == ['a.jpg', 'b.png', 'd.jpg'], r.stdout
    err = r.stderr.strip().splitlines()
    assert err[0] == 'skipped 2 unreadable files:', r.stderr
    assert 'cannot read image' in err[1] and 'c_notes.jpg' in err[1] and 'e_cut.jpg' in err[2], r.stderr


def test_no_skip_bad_stops_at_the_first(tmp_path, checkpoint, photos):
    r = run(tmp_path, photos, '--checkpoint', checkpoint, '--no-skip_bad')
    assert r.returncode == 2 and r.stdout == ''
    assert r.stderr.startswith('error: ') and 'c_notes.jpg (cannot identify' in r.stderr and r.stderr.count('\n') == 1


def test_only_bad_files_or_a_missing_path_is_an_error(tmp_path, checkpoint, photos):
    r = run(tmp_path, photos/'c_notes.jpg', '--checkpoint', checkpoint)
    assert r.returncode == 2 and 'no readable images: ' in r.stderr and 'c_notes.jpg' in r.stderr, r.stderr
    r = run(tmp_path, photos, photos/'missing.jpg', '--checkpoint', checkpoint)
    assert r.returncode == 2 and 'missing.jpg: no such file' in r.stderr, r.stderr


@pytest.fixture(scope='module')
def captioner():
    torch.manual_seed(0)
    enc = get_encoder('efficientnet_lite0')
    model = ShowAttendTell(preset('tiny', hidden_dim=64, embed_dim=32, attn_dim=32), vocab_size=50, feat_dim=enc.feat_dim).eval()
    with torch.no_grad(): model.out.bias[END] = -6.0            # random weights: keep <end> unlikely, so captions have words
    return dict(model=model, vocab=Vocab(['<pad>', '<start>', '<end>', '<unk>'] + [f'w{i}' for i in range(46)]), encoder=enc)


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    from PIL import Image
    import skimage.data
    d = tmp_path_factory.mktemp('imgs')
    Image.fromarray(skimage.data.chelsea()).save(d/'chelsea.jpg')
    Image.fromarray(skimage.data.coffee()).resize((200, 150)).save(d/'coffee.png')
    Image.fromarray(skimage.data.astronaut()).resize((120, 120)).save(d/'Astronaut.JPEG')
    (d/'notes.txt').write_text('not an image')
    return d


def test_caption_folder_files_and_pil_agree(captioner, image_dir):
    from PIL import Image
    caps = caption(image_dir, **captioner, beam_size=3, max_len=12)
    assert len(caps) == 3, "a folder gives its JPEG/PNG files (any case), not other files"
    files = sorted(image_dir.glob('*.[jJpP]*[gG]'))
    assert find_images(image_dir) == files
    for c in caps:
        assert isinstance(c, Caption) and c.text == ' '.join(c.words) and len(c.words) > 0
        assert c.alphas.shape == (len(c.words), captioner['encoder'].grid_size ** 2)
    by_path = caption([str(f) for f in files], **captioner, beam_size=3, max_len=12, batch_size=2)
    by_pil = caption([Image.open(f) for f in files], **captioner, beam_size=3, max_len=12)
    assert [c.text for c in by_path] == [c.text for c in caps] == [c.text for c in by_pil]
    # the same as beam search on the encoder's features
    enc = captioner['encoder']
    feats = enc(torch.stack([enc.transform(load_image(f)) for f in files]))
    ref = beam_search(captioner['model'], feats, beam_size=3, max_len=12)
    assert [c.words for c in caps] == [captioner['vocab'].decode(r['ids']) for r in ref]


def test_caption_errors_name_the_file(captioner, image_dir, tmp_path):
    with pytest.raises(CaptionError, match='missing.jpg: no such file'): caption(tmp_path/'missing.jpg', **captioner)
    (tmp_path/'fake.jpg').write_text('hello')
    with pytest.raises(DataError, match='fake.jpg'): caption(tmp_path/'fake.jpg', **captioner)
    (tmp_path/'empty').mkdir()
    with pytest.raises(CaptionError, match='empty: folder has no JPEG or PNG'): caption(tmp_path/'empty', **captioner)
    with pytest.raises(CaptionError, match='missing.pth does not exist'): caption(image_dir, tmp_path/'missing.pth')
    with pytest.raises(CaptionError, match='encoder'): caption(image_dir, model=captioner['model'], vocab=captioner['vocab'])
    bad = ShowAttendTell(preset('tiny'), vocab_size=50, feat_dim=7).eval()
    with pytest.raises(CaptionError, match=f"{captioner['encoder'].feat_dim}-d annotations but the model expects 7-d"):
        caption(image_dir, model=bad, vocab=captioner['vocab'], encoder=captioner['encoder'])


def test_cli_one_line_errors(tmp_path, image_dir):
    (tmp_path/'fake.png').write_bytes(b'\x89PNG not really')
    (tmp_path/'ckpt.pth').write_bytes(b'')
    cases = [((tmp_path/'nope.jpg', '--checkpoint', tmp_path/'ckpt.pth'), 'nope.jpg: no such file or folder'),
             ((image_dir, tmp_path/'fake.png', '--checkpoint', tmp_path/'ckpt.pth', '--no-skip_bad'), 'fake.png (cannot identify'),
             ((image_dir,), '--checkpoint is required'),
             ((image_dir, '--checkpoint', tmp_path/'missing.pth'), 'missing.pth does not exist'),
             ((image_dir, '--checkpoint', tmp_path/'ckpt.pth'), 'ckpt.pth is not a readable checkpoint'),
             ((image_dir, '--checkpoint', tmp_path/'ckpt.pth', '--beam_size', '0'), '--beam_size must be at least 1')]
    for args, msg in cases:
        r = run(tmp_path, *args)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith('error: ') and msg in r.stderr and r.stderr.count('\n') == 1, r.stderr
        assert r.stdout == ''
    r = run(tmp_path, '--help')
    assert r.returncode == 0 and '--beam_size' in r.stdout and '--attention_dir' in r.stdout


def test_an_encoder_given_as_module_function_is_rebuilt_by_sat_caption_when_trusted(tmp_path):
    "sat_prepare --encoder module:function records the name; the checkpoint keeps it; sat_caption --trust_code rebuilds the encoder from it."
    from show_attend_tell.features import prepare
    from show_attend_tell.training import train
    fixtures = Path(__file__).parent/'fixtures'
    sys.path.insert(0, str(fixtures))
    try:
        data = prepare('shapes', out=tmp_path/'data', encoder='standin_encoder:make', n_train=24, n_val=4, n_test=2, progress=False)
        cfg = preset('tiny', embed_dim=16, hidden_dim=32, attn_dim=16, batch_size=16, epochs=1)
        train(cfg, data, tmp_path/'run', device='cpu', progress=False)
    finally: sys.path.remove(str(fixtures))
    images = sorted((tmp_path/'data'/'images').glob('test_*.png'))
    script = tmp_path/'entry.py'
    script.write_text('from show_attend_tell.captioning import sat_caption\nsat_caption()\n')
    call = lambda *a, **env: subprocess.run([sys.executable, str(script), *map(str, a)], capture_output=True, text=True, timeout=300,
                                            env={**os.environ, **env})
    r = call(*images, '--checkpoint', tmp_path/'run'/'best.pth', '--max_len', 5, '--trust_code', PYTHONPATH=str(fixtures))
    assert r.returncode == 0, r.stderr
    assert [l.split('\t')[0] for l in r.stdout.splitlines()] == [str(p) for p in images]
    r = call(images[0], '--checkpoint', tmp_path/'run'/'best.pth', PYTHONPATH=str(fixtures))     # not trusted: refused, one line
    assert r.returncode == 2 and "'standin_encoder:make'" in r.stderr and '--trust_code' in r.stderr and r.stderr.count('\n') == 1, r.stderr
    r = call(images[0], '--checkpoint', tmp_path/'run'/'best.pth', '--trust_code')              # trusted, but not on the path
    assert r.returncode == 2 and "cannot load encoder 'standin_encoder:make'" in r.stderr and r.stderr.count('\n') == 1, r.stderr


# ---- a model file is data: a module it names is imported only with the user's opt-in --------------------------------
CODE = "from pathlib import Path\nPath('MARKER').write_text('ran')\nfrom show_attend_tell.encoder import ColourGridEncoder\ndef make(): return ColourGridEncoder()\n"


@pytest.fixture(scope='module')
def shared(tmp_path_factory):
    """A model trained on features named 'mymodel.encoder_code:make', exported as the folder mymodel/ that ships encoder_code.py
    (importable from the folder's parent directory), and the same model's training checkpoint; the module writes MARKER when run."""
    from show_attend_tell.encoder import ColourGridEncoder
    from show_attend_tell.features import prepare
    from show_attend_tell.training import train
    from show_attend_tell.export import export_model
    root = tmp_path_factory.mktemp('shared')
    data = prepare('shapes', out=root/'data', encoder=ColourGridEncoder(name='mymodel.encoder_code:make'), n_train=16, n_val=4, n_test=4, progress=False)
    train(preset('tiny', embed_dim=16, hidden_dim=32, attn_dim=16, batch_size=8, epochs=1), data, root/'run', device='cpu', progress=False)
    export_model(root/'run'/'best.pth', root/'mymodel')
    (root/'mymodel'/'encoder_code.py').write_text(CODE)
    (root/'run'/'mymodel').symlink_to(root/'mymodel')        # importable from the checkpoint's folder too
    return root, data, sorted((data/'images').glob('test_*.png'))[0]


def py(cwd, code, timeout=300):
    "Run Python code in `cwd` as a user would (`python -c`: the current directory is on the import path)."
    return subprocess.run([sys.executable, '-c', code], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('model', ['mymodel', 'run/best.pth'])
def test_loading_a_shared_model_runs_none_of_its_code_without_the_opt_in(shared, model):
    """From the folder's parent directory, captioning with the model imports nothing it names: the error names the module and the
    opt-in; with trust_code=True it loads (and its module runs)."""
    root, _, image = shared
    (root/'MARKER').unlink(missing_ok=True)
    r = py(root, f"from show_attend_tell.captioning import caption\ncaption({str(image)!r}, {model!r})")
    assert r.returncode != 0 and not (root/'MARKER').exists(), r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "'mymodel.encoder_code:make'" in last and "module 'mymodel.encoder_code'" in last and 'trust_code=True' in last, last
    r = py(root, f"from show_attend_tell.captioning import caption\nprint(caption({str(image)!r}, {model!r}, trust_code=True)[0].text)")
    assert r.returncode == 0 and (root/'MARKER').read_text() == 'ran', r.stderr


def test_scripts_that_never_build_the_encoder_never_import_it(shared, tmp_path):
    "sat_evaluate, sat_scst, sat_export and sat_train --resume read the encoder's name but never build the encoder: the module never runs."
    root, data, image = shared
    (root/'MARKER').unlink(missing_ok=True)
    bin = Path(sys.executable).parent
    for args in ([bin/'sat_evaluate', 'mymodel', data, '--out', tmp_path/'ev', '--no_meteor', '--quiet'],
                 [bin/'sat_scst', 'run/best.pth', data, '--out', tmp_path/'scst', '--epochs', '1', '--val_images', '2', '--quiet'],
                 [bin/'sat_export', 'run/best.pth', tmp_path/'exported'],
                 [bin/'sat_train', data, '--config', 'run/config.json', '--out', 'run', '--resume', '--epochs', '2', '--quiet']):
        r = subprocess.run(list(map(str, args)), cwd=root, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (args[0], r.stderr)
        assert not (root/'MARKER').exists(), args[0]


# ---- start-up: the sat_caption path imports no heavy library it does not use ---------------------------
ROOT = Path(__file__).resolve().parents[1]
HEAVY = ('fastai', 'timm', 'torchvision', 'matplotlib', 'ipywidgets', 'IPython')
REPORT = ("import sys\nprint('loaded:', ' '.join(sorted({m.split('.')[0] for m in sys.modules} & " + repr(set(HEAVY)) + ")),"
          " file=sys.stderr)\n")


def test_importing_captioning_imports_no_heavy_library():
    "`sat_caption` starts in about a second less than torch + torchvision + timm + fastai + matplotlib would take."
    code = 'import show_attend_tell.captioning\n' + REPORT
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == 'loaded:', f"importing show_attend_tell.captioning imports {r.stderr.strip()[8:]}"


@pytest.fixture(scope='module')
def lite0_checkpoint(tmp_path_factory):
    "A random tiny decoder over the real efficientnet_lite0_local encoder (14×14×112), saved as training saves it."
    d = tmp_path_factory.mktemp('lite0')
    vocab = Vocab(['<pad>', '<start>', '<end>', '<unk>', 'a', 'red', 'blue', 'circle', 'square'])
    cfg = preset('tiny', embed_dim=16, hidden_dim=32, attn_dim=16, encoder='efficientnet_lite0_local')
    torch.manual_seed(0)
    model = ShowAttendTell(cfg, len(vocab), feat_dim=112)
    with torch.no_grad(): model.out.bias[END] = -6.0                   # captions with words, so the figure has panels
    save_checkpoint(d/'model.pth', model, cfg, vocab, feat_dim=112, encoder=cfg.encoder)
    return d/'model.pth'


def test_sat_caption_with_the_real_encoder_loads_matplotlib_only_for_figures(tmp_path, lite0_checkpoint, photos):
    "Captioning with EfficientNet-Lite0 loads none of them; --attention_dir loads matplotlib, and writes the figures."
    script = tmp_path/'entry.py'
    script.write_text('from show_attend_tell.captioning import sat_caption\nsat_caption()\n' + REPORT)
    args = [sys.executable, str(script), str(photos/'a.jpg'), str(photos/'b.png'), '--checkpoint', str(lite0_checkpoint), '--max_len', '4']
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [Path(l.split('\t')[0]).name for l in r.stdout.splitlines()] == ['a.jpg', 'b.png'], r.stdout
    assert r.stderr.strip() == 'loaded:', r.stderr
    r = subprocess.run(args + ['--attention_dir', str(tmp_path/'att')], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == 'loaded: matplotlib', r.stderr
    assert sorted(p.name for p in (tmp_path/'att').iterdir()) == ['a.png', 'b.png']
    assert Image.open(tmp_path/'att'/'a.png').format == 'PNG'
