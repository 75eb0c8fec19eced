"The annotation readers on fixtures in the exact formats: COCO instances (against pycocotools itself), synonyms, errors."
from pathlib import Path
import numpy as np
import pytest
from pycocotools.coco import COCO
from show_attend_tell import annotations as an

FX = Path(__file__).parent/'fixtures'
INST = FX/'instances_photos_mini.json'


def test_fixture_masks_are_pycocotools_own():
    coco = COCO(str(INST)); ci = an.CocoInstances(INST)
    cat = coco.getCatIds(catNms=['cat'])
    assert cat == [17]
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[25], catIds=cat))
    assert len(ann) == 1
    reg = ci.region(25, 'cat')
    assert np.array_equal(reg['mask'] > 0.5, coco.annToMask(ann[0]) > 0)
    assert 0.6 < reg['mask'].mean() < 0.95                      # the cat fills most of chelsea
    assert len(coco.getAnnIds(imgIds=[42], iscrowd=None)) == 3 and len(coco.getAnnIds(imgIds=[42], iscrowd=False)) == 2
    size, insts = an.CocoInstances(INST, crowd=False).instances(42)
    assert size == (400, 600) and sorted(i['category'] for i in insts) == ['cup', 'spoon']
    assert coco.getAnnIds(imgIds=['42']) == []                   # the pycocotools quirk: string ids match nothing
    assert ci.image_id('42') == 42


def test_synonyms_plurals_and_table_errors(tmp_path):
    ci = an.CocoInstances(INST)
    assert ci.categories(['two', 'men', 'and', 'kittens', 'by', 'the', 'table', 'bikes', 'planes']) == \
        [None, 'person', None, 'cat', None, None, 'dining table', 'bicycle', 'airplane']
    with pytest.raises(an.AnnotationError, match="names 'rocket', which"): an.CocoInstances(INST, synonyms={'rocket': 'rocket'})
    bad = tmp_path/'x.json'; bad.write_text('{"images": []}')
    with pytest.raises(an.AnnotationError, match=r'x.json has no annotations, categories'): an.CocoInstances(bad)
    bad.write_text('not json')
    with pytest.raises(an.AnnotationError, match='is not JSON'): an.CocoInstances(bad)
