"The config presets and their files, as a user writes them by hand."
import json, pytest
from show_attend_tell.config import Config, ConfigError, preset, PRESETS


@pytest.mark.parametrize('name', list(PRESETS))
def test_presets_round_trip(tmp_path, name):
    cfg = preset(name)
    for ext in ('json', 'yaml', 'yml'):
        assert Config.load(cfg.save(tmp_path/f'c.{ext}')) == cfg
    assert not list(tmp_path.glob('*.tmp')), "atomic save leaves no temp file"


def test_paper_settings():
    coco = preset('coco')
    assert (coco.hidden_dim, coco.embed_dim, coco.vocab_size, coco.grid_size**2) == (1800, 512, 10000, 196)
    assert (coco.alpha_c, coco.entropy_weight, coco.baseline_decay, coco.hard_expected_prob) == (1.0, 0.002, 0.9, 0.5)


def test_bad_files_name_the_problem(tmp_path):
    (tmp_path/'typo.json').write_text(json.dumps({'hidden_dim': 8, 'atention': 'soft'}))
    with pytest.raises(ConfigError, match=r"'atention' in .*typo.json.*did you mean 'attention'"):
        Config.load(tmp_path/'typo.json')
    (tmp_path/'broken.json').write_text('{"hidden_dim": ')
    with pytest.raises(ConfigError, match='not valid JSON'): Config.load(tmp_path/'broken.json')
    with pytest.raises(ConfigError, match='does not exist'): Config.load(tmp_path/'missing.yaml')
    with pytest.raises(ConfigError, match="unknown preset 'imagenet'"): preset('imagenet')
    with pytest.raises(ConfigError, match="'attention'"): preset('tiny', attention='sharp')
