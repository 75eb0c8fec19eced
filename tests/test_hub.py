"""The Hugging Face hub (nbs/03_hub.ipynb): a model loaded by hf://USER/REPO[@REVISION] from the hub's cache with no network
(HF_HUB_OFFLINE=1, a cache the test builds in the hub's layout), and sat_prepare on a caption dataset in each shape the hub
ships (imagefolder with metadata.csv, parquet with the images, the Karpathy split in parquet), then sat_train on one."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
from show_attend_tell.config import preset
from show_attend_tell.encoder import ColourGridEncoder
from show_attend_tell.features import prepare, load_prepared, sat_prepare
from show_attend_tell.training import train, sat_train
from show_attend_tell.export import export_model
import hf_datasets  # tests/fixtures, on the path through conftest.py

BIN = Path(sys.executable).parent
COMMIT = 'a1b2c3d4' * 5


@pytest.fixture(scope='module')
def model_folder(tmp_path_factory):
    "A small model trained on the colour-grid features of Shapes, exported as a model folder, and a test image."
    root = tmp_path_factory.mktemp('hubmodel')
    data = prepare('shapes', out=root/'data', encoder=ColourGridEncoder(), n_train=16, n_val=4, n_test=4, progress=False)
    train(preset('tiny', embed_dim=16, hidden_dim=32, attn_dim=16, batch_size=8, epochs=1), data, root/'run', device='cpu', progress=False)
    return export_model(root/'run'/'best.pth', root/'model'), sorted((data/'images').glob('test_*.png'))[0]


def hub_cache(home:Path, folder:Path, repo='alice/sat-shapes')->Path:
    "The hub's cache layout, built by hand: models--USER--REPO/snapshots/<commit>/<files> and refs/main holding the commit."
    base = home/'hub'/f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, base/'snapshots'/COMMIT)
    (base/'refs').mkdir(); (base/'refs'/'main').write_text(COMMIT)
    return home


def sat_caption(*args, env=None):
    return subprocess.run([str(BIN/'sat_caption'), *map(str, args)], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def test_sat_caption_loads_a_model_by_hub_name_offline(model_folder, tmp_path):
    "hf://USER/REPO and hf://USER/REPO@COMMIT from the cache, with HF_HUB_OFFLINE=1: the folder's own caption; a repo not cached: one line."
    folder, image = model_folder
    env = {'HF_HOME': str(hub_cache(tmp_path/'hf', folder)), 'HF_HUB_OFFLINE': '1'}
    want = sat_caption(image, '--checkpoint', folder, '--max_len', 6)
    assert want.returncode == 0, want.stderr
    for name in ('hf://alice/sat-shapes', f'hf://alice/sat-shapes@{COMMIT}'):
        got = sat_caption(image, '--checkpoint', name, '--max_len', 6, env=env)
        assert got.returncode == 0 and got.stdout == want.stdout, got.stderr
    bad = sat_caption(image, '--checkpoint', 'hf://alice/other', env=env)
    assert bad.returncode == 2 and bad.stderr == "error: cannot get hf://alice/other: it is not in the hub's cache and HF_HUB_OFFLINE is set\n"


def test_sat_evaluate_takes_a_hub_name(model_folder, tmp_path):
    folder, image = model_folder
    env = {**os.environ, 'HF_HOME': str(hub_cache(tmp_path/'hf', folder)), 'HF_HUB_OFFLINE': '1'}
    data = folder.parent/'data'
    r = subprocess.run([str(BIN/'sat_evaluate'), 'hf://alice/sat-shapes', str(data), '--out', str(tmp_path/'ev'), '--no_meteor', '--quiet'],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and (tmp_path/'ev'/'evaluation.json').is_file(), r.stderr


@pytest.fixture(scope='module')
def hf_formats(tmp_path_factory):
    "The three dataset shapes, written in miniature: (name, sat_prepare arguments)."
    d = tmp_path_factory.mktemp('hfdata')
    return [('imagefolder', dict(dataset=str(hf_datasets.write_imagefolder(d/'f8k')))),
            ('parquet', dict(dataset=str(hf_datasets.write_parquet_bytes(d/'pq')))),
            ('karpathy-parquet', dict(dataset=str(hf_datasets.write_karpathy_parquet(d/'kp', d/'coco')), images=str(d/'coco'),
                                      name='coco'))]


def test_sat_prepare_reads_each_hub_format_and_trains_on_one(hf_formats, tmp_path, capsys):
    for fmt, kw in hf_formats:
        sat_prepare.__wrapped__(out=str(tmp_path/fmt), encoder='colour_grid', preset='tiny', shard_size=4, quiet=False, **kw)
        said = capsys.readouterr().out
        data, vocab, cache = load_prepared(tmp_path/fmt)
        assert data.counts == {'train': 4, 'val': 1, 'test': 1} and len(cache) == 6, fmt
        assert 'splits: ' in said and (' → val' in said), said
    assert json.loads((tmp_path/'karpathy-parquet'/'dataset.json').read_text())['dataset'] == 'coco'
    sat_train.__wrapped__(str(tmp_path/'parquet'), preset='tiny', epochs=1, out=str(tmp_path/'run'), device='cpu', quiet=True)
    assert (tmp_path/'run'/'best.pth').is_file() and 'checkpoints:' in capsys.readouterr().out


def test_hub_dataset_errors_are_one_line(hf_formats, tmp_path, capsys):
    (tmp_path/'empty').mkdir()
    for kw, says in [(dict(dataset=hf_formats[0][1]['dataset'], caption_columns='text'), "has no column 'text' (--caption_columns)"),
                     (dict(dataset=hf_formats[2][1]['dataset']), 'give the folder that holds them with --images'),
                     (dict(dataset=str(tmp_path/'empty')), 'is not a Hugging Face dataset folder')]:
        with pytest.raises(SystemExit) as e: sat_prepare.__wrapped__(out=str(tmp_path/'o'), encoder='colour_grid', quiet=True, **kw)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith('error: ') and says in err and err.count('\n') == 1, err
