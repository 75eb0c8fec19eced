"""Fixtures shared by the test files: the miniature Karpathy/COCO fixtures written with real photos, a small Shapes
folder (raw, and prepared with the stand-in encoder), a batch for the model tests, and the stand-in encoder's counters reset around every test. `tests/fixtures/` is put on the import path,
so tests import its helpers (`standin_encoder`, `fixture_photos`, `servers`) by name."""
import os, shutil, sys
from pathlib import Path
import pytest

FIX = Path(__file__).parent/'fixtures'
sys.path.insert(0, str(FIX))
import fixture_photos, standin_encoder  # noqa: E402
from small_models import B, L, D  # noqa: E402
import torch  # noqa: E402
from show_attend_tell.shapes import make_shapes  # noqa: E402
from show_attend_tell.features import prepare  # noqa: E402
from show_attend_tell.vocab import PAD, START, END  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_standin():
    standin_encoder.SEEN.clear(); standin_encoder.STOP_AFTER = None; standin_encoder.DELAY = 0.0
    yield
    standin_encoder.SEEN.clear(); standin_encoder.STOP_AFTER = None; standin_encoder.DELAY = 0.0


@pytest.fixture(scope='module')
def flickr(tmp_path_factory):
    "The miniature Flickr-style Karpathy fixture: (json path, image folder)."
    d = tmp_path_factory.mktemp('flickr')
    shutil.copy(FIX/'dataset_flickr_mini.json', d/'dataset_flickr_mini.json')
    return d/'dataset_flickr_mini.json', fixture_photos.write_flickr_images(d/'Flicker8k_Dataset')


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    "The miniature COCO fixture: (Karpathy dataset_coco json, captions_val2014 json, image root with train2014/ val2014/)."
    d = tmp_path_factory.mktemp('coco')
    for f in ('dataset_coco_mini.json', 'captions_val2014_mini.json'): shutil.copy(FIX/f, d/f)
    return d/'dataset_coco_mini.json', d/'captions_val2014_mini.json', fixture_photos.write_coco_images(d/'images')


@pytest.fixture(scope='module')
def shapes_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('shapes')
    make_shapes(d, n_train=30, n_val=6, n_test=6, seed=3)
    return d


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    "A prepared Shapes folder: 40 training, 8 validation images, 4×4×8 features from the stand-in encoder."
    out = tmp_path_factory.mktemp('shapes')/'data'
    return prepare('shapes', out=out, encoder=standin_encoder.TinyEncoder(), n_train=40, n_val=8, n_test=4, progress=False)


@pytest.fixture
def batch():
    "(features (B, L, D), captions with padding, a feature mask with some locations off) for the model tests."
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(B, L, D, generator=g)
    caps = torch.tensor([[START, 5, 6, 7, 8, END], [START, 9, 10, END, PAD, PAD],
                         [START, 4, 4, 4, 11, END], [START, 12, END, PAD, PAD, PAD]])
    mask = torch.ones(B, L, dtype=torch.bool); mask[1, -5:] = False; mask[3, :3] = False
    return feats, caps, mask


# the `gpu` mark (tests/test_gpu.py; tools/gpu_check.sh runs `pytest -m gpu` with SAT_REQUIRE_GPU=1)
def pytest_configure(config):
    config.addinivalue_line('markers', 'gpu: needs a CUDA GPU: skipped ("no CUDA device") without one, an error instead '
                                       'when SAT_REQUIRE_GPU=1 (tools/gpu_check.sh), so a GPU check never passes vacuously')


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    "A `gpu` test on a machine without CUDA: skip it, or fail it when SAT_REQUIRE_GPU=1 (before its fixtures are built)."
    if item.get_closest_marker('gpu') is None or torch.cuda.is_available(): return
    if os.environ.get('SAT_REQUIRE_GPU') == '1':
        pytest.fail('no CUDA device (torch.cuda.is_available() is False), and SAT_REQUIRE_GPU=1 asks for one: '
                    'run the GPU checks on a GPU machine', pytrace=False)
    pytest.skip('no CUDA device')
