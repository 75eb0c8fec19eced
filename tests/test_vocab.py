"""The vocabulary: built from the training split only, ids and specials, round trips."""

from show_attend_tell.captions import read_karpathy
from show_attend_tell.vocab import Vocab, PAD, START, END, UNK, build_vocab


def test_vocab_from_training_split_only(flickr):
    data = read_karpathy(*flickr)
    v = build_vocab(data, vocab_size=10000)
    train_words = {w for r in data.split('train') for t in r.tokens for w in t}
    other_words = {w for s in ('val', 'test') for r in data.split(s) for t in r.tokens for w in t} - train_words
    assert {'rocket', 'galaxies', 'petals'} <= other_words
    assert set(v.itos[4:]) == train_words and not other_words & set(v.itos)
    assert v.itos[:4] == ['<pad>', '<start>', '<end>', '<unk>'] and (PAD, START, END, UNK) == (0, 1, 2, 3)
    assert v.encode(['a', 'rocket']) == [v.stoi['a'], UNK]
    small = build_vocab(data, vocab_size=12)
    assert len(small) == 12 and small.itos[4] == 'a'
    twice = build_vocab(data, min_word_count=2)
    counts = {w: sum(t.count(w) for r in data.split('train') for t in r.tokens) for w in train_words}
    assert set(twice.itos[4:]) == {w for w, c in counts.items() if c >= 2}
    saved = v.save(flickr[0].parent/'vocab.json')
    assert Vocab.load(saved) == v and Vocab.load(saved).hash() == v.hash() != small.hash()


# ---------------------------------------------------------------- batches
