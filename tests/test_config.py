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


def test_paper_presets_are_the_original_configuration():
    "arctic-captions' evaluate_coco.py values, the paper's optimizer per dataset, VGG-19: see the arctic_config page."
    for name in ('coco', 'flickr30k', 'flickr8k'):
        c = preset(name)
        assert (c.encoder, c.att_layers, c.init_layers, c.first_word, c.init) == ('vgg19', 2, 2, 'zero', 'arctic')
        assert (c.penalty_norm, c.entropy_norm, c.reward, c.grad_clip, c.max_caption_len) == ('arctic', 'arctic', 'arctic', 0.0, 100)
        assert (c.batch_size, c.patience, c.alpha_c, c.dropout, c.attn_dim) == (64, 10, 1.0, 0.5, 512)
    assert (preset('coco').optimizer, preset('coco').lr) == ('adam_arctic', 2e-4)
    assert (preset('flickr8k').optimizer, preset('flickr8k').lr) == ('rmsprop', 1e-4)


def test_defaults_and_tiny_keep_todays_behaviour():
    "Our settings are the defaults, `tiny` has them for every new key, and a config written before the keys existed loads."
    new = dict(att_layers=1, init_layers=1, optimizer='adam', penalty_norm='caption', entropy_norm='caption',
               reward='caption', early_stop='bleu', first_word='start', init='torch', grad_clip=5.0)
    for name in ('tiny', 'coco_modern', 'flickr8k_modern', 'flickr30k_modern'):
        assert {k: getattr(preset(name), k) for k in new} == new
    old = {k: v for k, v in preset('tiny').to_dict().items() if k not in new}
    assert Config.from_dict({**old, 'grad_clip': 5.0, 'fine_tune_encoder': False}) == preset('tiny')
    with pytest.raises(ConfigError, match="'reward' is 'arctc'"): preset('tiny', reward='arctc')
