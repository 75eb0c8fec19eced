"Checkpoints (nbs/22_checkpoint.ipynb): a malicious pickle is refused without running, round trips and refusals."
import os, pickle
import pytest, torch

from show_attend_tell.checkpoint import CheckpointError, FORMAT_VERSION, build_model, load_checkpoint, save_checkpoint
from show_attend_tell.vocab import Vocab

from small_models import tiny_cfg  # tests/fixtures/, on the path through conftest.py

torch.set_num_threads(1)


class _Evil:
    "Unpickling this object opens (creates) the marker file: code execution."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (open, (self.marker, 'w'))


@pytest.mark.parametrize('how', ['torch.save', 'pickle.dump', 'inside_real_checkpoint'])
def test_malicious_pickle_is_refused(tmp_path, how):
    marker = tmp_path/'pwned'
    path = tmp_path/'last.pth'
    if how == 'torch.save': torch.save({'format': 'show_attend_tell', 'x': _Evil(str(marker))}, path)
    elif how == 'pickle.dump': path.write_bytes(pickle.dumps(_Evil(str(marker))))
    else:
        cfg, vocab = tiny_cfg(), Vocab(['<pad>', '<start>', '<end>', '<unk>', 'a', 'b'])
        save_checkpoint(path, build_model(cfg, 6, 8), cfg, vocab, feat_dim=8)
        ck = torch.load(path, weights_only=True); ck['log'] = [_Evil(str(marker))]
        torch.save(ck, path)
    with pytest.raises(CheckpointError, match='refusing to load'):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_roundtrip_and_refusals(tmp_path):
    cfg = tiny_cfg('hard')
    vocab = Vocab(['<pad>', '<start>', '<end>', '<unk>', 'red', 'circle'])
    model = build_model(cfg, len(vocab), 8)
    p = save_checkpoint(tmp_path/'m.pth', model, cfg, vocab, feat_dim=8, encoder='tiny', epoch=2, baseline=-3.5,
                          log=[{'epoch': 0, 'bleu4': None}, {'epoch': 1, 'bleu4': 0.25}])
    assert sorted(os.listdir(tmp_path)) == ['m.pth']                  # no temp file left behind
    m2, cfg2, v2, extra = load_checkpoint(p)
    assert cfg2 == cfg and v2 == vocab and not m2.training
    assert extra['epoch'] == 2 and extra['encoder'] == 'tiny' and extra['feat_dim'] == 8 and extra['baseline'] == -3.5
    assert extra['log'][1]['bleu4'] == 0.25
    for k, v in model.state_dict().items(): assert torch.equal(v, m2.state_dict()[k])
    # another vocabulary
    with pytest.raises(CheckpointError, match='another vocabulary'):
        load_checkpoint(p, vocab=Vocab(['<pad>', '<start>', '<end>', '<unk>', 'red', 'square']))
    # another format version
    ck = torch.load(p, weights_only=True); ck['format_version'] = FORMAT_VERSION + 1; torch.save(ck, tmp_path/'v.pth')
    with pytest.raises(CheckpointError, match=f'format version {FORMAT_VERSION + 1}'): load_checkpoint(tmp_path/'v.pth')
    # not ours, damaged, missing
    torch.save({'weights': torch.zeros(2)}, tmp_path/'other.pth')
    with pytest.raises(CheckpointError, match='not a show_attend_tell checkpoint'): load_checkpoint(tmp_path/'other.pth')
    (tmp_path/'cut.pth').write_bytes(p.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match='not a readable checkpoint'): load_checkpoint(tmp_path/'cut.pth')
    with pytest.raises(CheckpointError, match='does not exist'): load_checkpoint(tmp_path/'nope.pth')
    # weights that do not fit the described model
    ck = torch.load(p, weights_only=True); ck['feat_dim'] = 9; torch.save(ck, tmp_path/'shape.pth')
    with pytest.raises(CheckpointError, match=r"config field 'feat_dim' = 9 does not fit the weights \(tensor init_h.weight is \(48, 8\)"): load_checkpoint(tmp_path/'shape.pth')
    # every message is one line
    for f in ('v.pth', 'other.pth', 'cut.pth', 'shape.pth'):
        with pytest.raises(CheckpointError) as e: load_checkpoint(tmp_path/f)
        assert '\n' not in str(e.value)


# ---------------------------------------------------------------------------------------------------------
# train(): checkpoints every epoch, BLEU-4, early stopping, resume after a kill
