"""Fixtures shared by the test files: the miniature Karpathy/COCO fixtures written with real photos, a small Shapes
folder, and the stand-in encoder's counters reset around every test. `tests/fixtures/` is put on the import path,
so tests import its helpers (`standin_encoder`, `fixture_photos`, `servers`) by name."""
import shutil, sys
from pathlib import Path
import pytest

FIX = Path(__file__).parent/'fixtures'
sys.path.insert(0, str(FIX))
import fixture_photos, standin_encoder  # noqa: E402
from show_attend_tell.shapes import make_shapes  # noqa: E402


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
