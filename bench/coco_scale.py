"""The COCO run rehearsed at full size on the CPU (`make coco-scale`): what preparing, training, evaluating and self-critical
training's reward cost in time, memory and disk when the data has COCO's size, before a GPU is booked for the real run.

Each stage runs as a subprocess (the console scripts themselves where there is one), timed, with the peak resident memory of
that process (and of the processes it waited for: os.wait4) and the disk its output takes:
  data           a synthetic dataset_coco.json in the Karpathy format at COCO's size: 113,287 training images (82,783 train +
                 30,504 restval), 5,000 val, 5,000 test; 5 captions per image (6 or 7 for one in ten), COCO-like lengths (mean
                 about 10.5 words, 95% at most 16, a tail to 50) over a vocabulary of 25,000 words (real function words and
                 Zipf-distributed pseudo-words, a few topic words per image), and one 8 x 8 JPEG per image
  prepare        sat_prepare with a stand-in encoder of VGG-19 conv5_4's shape (14 x 14 x 512; the mean colour of each cell through a
                 fixed projection, written to WORK/coco_scale_encoder.py): every image file read, the float16 cache at its real size
                 (123,287 x 196 x 512 x 2 bytes = 24.7 GB)
  train          sat_train at the paper's COCO preset (vocabulary 10,000, batch 64, 196 x 512 annotations) with a narrower decoder
                 (--decoder small: LSTM 512, embedding and attention 256, so that the CPU gets through in minutes; --decoder
                 paper keeps the preset's 1,800 units), one epoch cut after --steps training steps, then the whole validation (NLL
                 of the 5,000 validation images' captions, greedy BLEU-4 of the images) and the checkpoints
  evaluate       sat_evaluate on the 5,000 test images (beam search, coco-caption's BLEU, METEOR, ROUGE-L and CIDEr)
  reward_dicts   SCST's CIDEr-D statistics of the training references kept as dicts of n-gram tuples (how `cider.CiderD` held
                 them before `cider.CiderRefs`; `LegacyCiderD` below), built and used for one pass over the training images; the
                 reward stages take the captions of the training images at --reward_scale (default 1: COCO's 113,287, whatever
                 --scale is), from the same generator
  reward_arrays  the same statistics as `cider.CiderRefs` arrays, built and saved once (what rank 0 of `sat_scst` does)
  reward_shared  ... memory-mapped by a fresh process and used for one pass (what every `sat_scst` process holds); its scores are
                 compared with reward_dicts' image by image
Stages are resumable: a finished one is skipped (its record is WORK/stages/NAME.json) unless a stage it depends on ran again;
--redo reruns some. With --scale s < 1 every count of images is scaled by s, and the results give each stage's projection to full
size next to its measurement (for evaluate, its time on 2 images is taken as fixed and the rest scaled; the other stages'
start-up costs are scaled too: an upper bound). The disk it needs is checked before the data is written.

Usage: .venv/bin/python bench/coco_scale.py [--scale 1.0] [--steps 100] [--decoder small|paper] [--reward_scale 1.0]
       [--work WORK] [--only STAGES] [--redo STAGES] [--out bench/results]
(WORK: the .cache/coco_scale folder beside this script unless --work names another.)
Writes OUT/coco_scale.md and OUT/coco_scale.json (whatever the scale: their title says it).
"""
import argparse, gc, json, math, os, random, resource, shutil, subprocess, sys, time
from collections import Counter
from pathlib import Path
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))                              # `bench` imports when run as a script
BIN = Path(sys.executable).parent                          # the console scripts of this Python's environment
COCO = dict(train=82783, restval=30504, val=5000, test=5000)
D, GRID = 512, 14                                          # VGG-19 conv5_4: 14 x 14 x 512
FUNCTION_WORDS = ('a', 'on', 'of', 'the', 'in', 'with', 'and', 'is', 'to', 'an', 'at', 'two', 'are', 'next', 'near', 'his',
                  'some', 'for', 'top', 'up', 'down', 'while', 'by', 'her', 'its', 'from', 'there', 'into', 'three', 'other')
N_WORDS = 25000
STAGES = {  # name: stages it depends on
    'data': (), 'prepare': ('data',), 'train': ('prepare',), 'evaluate': ('train',),
    'reward_dicts': (), 'reward_arrays': (), 'reward_shared': ('reward_arrays', 'reward_dicts')}
SMALL_DECODER = dict(hidden_dim=512, embed_dim=256, attn_dim=256)
ENCODER = '''"The rehearsal's stand-in encoder (bench/coco_scale.py writes this file): VGG-19 conv5_4's shape, 14 x 14 x 512, at no cost."
from show_attend_tell.encoder import ColourGridEncoder

def encoder(): return ColourGridEncoder(grid_size={g}, feat_dim={d}, image_size={g}, name='coco_scale_standin')
'''
STAMPED_TRAIN = '''"sat_train, stamping when its training part and its validation end (the epoch is cut by --max_steps)."
import json, os, time
from fastai.callback.core import Callback
import show_attend_tell.training as T

STAMPS, stamps = os.environ['COCO_SCALE_STAMPS'], {}
class Stamps(Callback):
    order = 99                                    # before StepLimit, whose after_batch cancels the epoch after its last step
    def _stamp(self, k): stamps[k] = time.time(); open(STAMPS, 'w').write(json.dumps(stamps))
    def before_train(self): self._stamp('train_start')
    def after_batch(self):
        if self.training: stamps['steps'] = self.iter + 1
    def after_train(self): self._stamp('train_end')
    def after_validate(self): self._stamp('validate_end')

train = T.train
T.train = lambda *a, cbs=None, **kw: train(*a, cbs=list(cbs or []) + [Stamps()], **kw)
T.sat_train()
'''


# ---------------------------------------------------------------------------------------------------------
# the synthetic COCO

def split_counts(scale:float)->dict:
    "Images per Karpathy split at `scale` (at least 2 per split)."
    return {k: max(2, round(v * scale)) for k, v in COCO.items()}


def vocabulary(n:int=N_WORDS)->list:
    "The function words, then distinct pseudo-words of 2 or 3 syllables (e.g. 'bado', 'kemilu')."
    syl = [c + v for c in 'bdfghklmnprstvz' for v in 'aeiou']
    words, seen, i = list(FUNCTION_WORDS), set(FUNCTION_WORDS), 0
    while len(words) < n:
        j, s = i, ''
        for _ in range(2 + (i >= len(syl) ** 2)):
            s += syl[j % len(syl)]; j //= len(syl)
        i += 1
        if s not in seen: words.append(s); seen.add(s)
    return words


def caption_lengths(rng, size:int)->np.ndarray:
    "COCO-like caption lengths in words: mostly 8-13 (mean about 10.5, 95% at most 16), a few short ones, a tail to 50."
    n = 8 + rng.poisson(1.7, size)
    long = rng.random(size) < 0.17
    n[long] = 11 + rng.geometric(0.24, long.sum())
    short = rng.random(size) < 0.03
    n[short] = rng.integers(5, 8, short.sum())
    return np.clip(n, 5, 50)


def synthetic_captions(n_images:int, seed:int=0, n_words:int=N_WORDS)->list:
    "Per image, its captions as word lists: 42% function words, the others from 5 topic words of the image or the whole vocabulary."
    rng = np.random.default_rng(seed)
    words, F = vocabulary(n_words), len(FUNCTION_WORDS)
    zipf = 1.0 / np.arange(1, n_words - F + 1); zipf /= zipf.sum()          # content words, rank-frequency 1/r
    fw = 1.0 / np.arange(1, F + 1); fw /= fw.sum()
    per = np.where(rng.random(n_images) < 0.9, 5, rng.integers(6, 8, n_images))
    lens = caption_lengths(rng, int(per.sum()))
    T = int(lens.sum())
    img = np.repeat(np.repeat(np.arange(n_images), per), lens)              # the image of each token
    topics = F + rng.choice(n_words - F, (n_images, 5), p=zipf)
    kind = rng.random(T)
    tok = np.where(kind < 0.42, rng.choice(F, T, p=fw),
                   np.where(kind < 0.75, topics[img, rng.integers(0, 5, T)], F + rng.choice(n_words - F, T, p=zipf)))
    flat = [words[t] for t in tok.tolist()]
    ends = np.cumsum(lens).tolist()
    caps = [flat[e - l:e] for e, l in zip(ends, lens.tolist())]
    out, j = [], 0
    for p in per.tolist(): out.append(caps[j:j + p]); j += p
    return out


def karpathy_images(scale:float, seed:int=0)->tuple:
    "(folder, split) and captions of every image at `scale`: train2014's images are train, val2014's restval, val or test."
    n = split_counts(scale)
    val_splits = ['restval'] * n['restval'] + ['val'] * n['val'] + ['test'] * n['test']
    random.Random(seed).shuffle(val_splits)
    where = [('train2014', 'train')] * n['train'] + [('val2014', s) for s in val_splits]
    return where, synthetic_captions(len(where), seed)


def write_dataset(work:Path, scale:float, seed:int=0, log=print)->dict:
    "WORK/dataset_coco.json (Karpathy format) and WORK/images/{train2014,val2014}/*.jpg; returns the caption statistics."
    from PIL import Image
    where, caps = karpathy_images(scale, seed)
    rng = random.Random(seed + 1)
    images, sentid = [], 0
    for d in ('train2014', 'val2014'): (work/'images'/d).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for i, (folder, split) in enumerate(where):
        cocoid = 9 + 7 * i
        name = f"COCO_{folder}_{cocoid:012d}.jpg"
        Image.new('RGB', (8, 8), (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(work/'images'/folder/name, quality=90)
        sents = []
        for t in caps[i]:
            raw = ' '.join(t).capitalize() + ('.' if rng.random() < 0.7 else '')
            sents.append(dict(tokens=t, raw=raw, imgid=i, sentid=sentid)); sentid += 1
        images.append(dict(filepath=folder, sentids=[s['sentid'] for s in sents], filename=name, imgid=i, split=split,
                           sentences=sents, cocoid=cocoid))
        if (i + 1) % 20000 == 0: log(f"  data: {i + 1:,} images written ({time.time() - t0:.0f} s)")
    tmp = work/'dataset_coco.json.tmp'
    tmp.write_text(json.dumps(dict(images=images, dataset='coco')))
    os.replace(tmp, work/'dataset_coco.json')
    lens = np.array([len(t) for c in caps for t in c])
    train_words = Counter(w for (_, split), c in zip(where, caps) if split in ('train', 'restval') for t in c for w in t)
    return dict(images=len(images), splits=split_counts(scale), captions=int(len(lens)), mean_words=round(float(lens.mean()), 2),
                p95_words=int(np.quantile(lens, 0.95, method='inverted_cdf')), max_words=int(lens.max()),
                train_word_types=len(train_words), train_words_5_or_more=sum(1 for v in train_words.values() if v >= 5))


# ---------------------------------------------------------------------------------------------------------
# the reward's statistics: the former representation, kept here to measure it

def _words(c)->list: return c.split() if isinstance(c, str) else list(c)

def _ngram_counts(words:list, n:int=4)->Counter:
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


class LegacyCiderD:
    "CIDEr-D as `cider.CiderD` computed it before its statistics became arrays: df and per-image reference vectors in dicts."
    def __init__(self, refs:dict, n:int=4, sigma:float=6.0):
        self.n, self.sigma = n, sigma
        self.refs = {k: [_words(r) for r in v] for k, v in refs.items()}
        self.df = Counter()
        for rs in self.refs.values(): self.df.update(set().union(*(_ngram_counts(r, n) for r in rs)))
        self.log_n = math.log(float(len(self.refs)))
        self._ref_vecs = {}

    def vector(self, words:list)->tuple:
        vec, norm = [dict() for _ in range(self.n)], [0.0] * self.n
        for g, tf in _ngram_counts(words, self.n).items():
            k = len(g) - 1
            w = float(tf) * (self.log_n - math.log(max(1.0, self.df.get(g, 0.0))))
            vec[k][g] = w; norm[k] += w * w
        return vec, [math.sqrt(x) for x in norm], max(len(words) - 1, 0)

    def _index(self, refs:list)->tuple:
        index, norms, lengths = {}, [], []
        for j, r in enumerate(refs):
            vec, norm, length = self.vector(r)
            for per_n in vec:
                for g, w in per_n.items(): index.setdefault(g, []).append((j, w))
            norms.append(norm); lengths.append(length)
        return index, norms, lengths

    def score_one(self, words:list, ref_index:tuple)->float:
        index, rnorms, rlengths = ref_index
        vec, norm, length = self.vector(words)
        m = len(rlengths)
        val = [[0.0] * self.n for _ in range(m)]
        for k in range(self.n):
            for g, w in vec[k].items():
                for j, rw in index.get(g, ()): val[j][k] += min(w, rw) * rw
        total = 0.0
        for j in range(m):
            pen = math.exp(-float(length - rlengths[j]) ** 2 / (2 * self.sigma ** 2))
            for k in range(self.n):
                v = val[j][k]
                if norm[k] != 0 and rnorms[j][k] != 0: v /= norm[k] * rnorms[j][k]
                total += v * pen
        return total / self.n / m * 10.0

    def score(self, keys:list, captions:list)->np.ndarray:
        out = []
        for k, c in zip(keys, captions):
            if k not in self._ref_vecs: self._ref_vecs[k] = self._index(self.refs[k])
            out.append(self.score_one(_words(c), self._ref_vecs[k]))
        return np.array(out, dtype=np.float64)


def _memory()->dict:
    "Resident bytes of this process: all, private (anonymous), file-backed (memory-mapped files, shared between processes)."
    st = dict(l.split(':', 1) for l in Path('/proc/self/status').read_text().splitlines() if ':' in l)
    return {k: int(st[k].split()[0]) * 1024 for k in ('VmRSS', 'RssAnon', 'RssFile')}


def _reward_inputs(scale:float, seed:int)->tuple:
    "The training images' keys, their references (word lists, as sat_scst holds them) and one sample-like candidate each."
    where, caps = karpathy_images(scale, seed)
    keys = [i for i, (_, split) in enumerate(where) if split in ('train', 'restval')]
    rng = np.random.default_rng(1)
    cands = []
    for i in keys:
        t = caps[i][int(rng.integers(len(caps[i])))]
        cands.append([w for w in t if rng.random() > 0.25] + t[:1])        # a reference with words dropped, one repeated
    return keys, {i: caps[i] for i in keys}, cands


def _one_pass(scorer, keys:list, cands:list, bs:int=320)->np.ndarray:
    "The reward of one candidate per training image, in SCST-sized batches (64 images x 5 samples)."
    return np.concatenate([scorer.score(keys[j:j + bs], cands[j:j + bs]) for j in range(0, len(keys), bs)])


def child_reward_dicts(work:Path, scale:float, seed:int)->dict:
    keys, refs, cands = _reward_inputs(scale, seed)
    gc.collect(); before = _memory()
    t0 = time.perf_counter(); scorer = LegacyCiderD(refs); built = time.perf_counter() - t0
    t0 = time.perf_counter(); scores = _one_pass(scorer, keys, cands); passed = time.perf_counter() - t0
    gc.collect(); after = _memory()
    np.save(work/'stages'/'reward_dicts_scores.npy', scores)
    held = {k: after[k] - before[k] for k in before}
    return dict(images=len(keys), build_s=round(built, 1), pass_s=round(passed, 1), held_bytes=held,
                bytes_per_image=round(held['VmRSS'] / len(keys)), private_bytes_per_image=round(held['RssAnon'] / len(keys)),
                shared_bytes_per_image=round(held['RssFile'] / len(keys)))


def child_reward_arrays(work:Path, scale:float, seed:int)->dict:
    from show_attend_tell.cider import CiderD
    keys, refs, cands = _reward_inputs(scale, seed)
    t0 = time.perf_counter(); scorer = CiderD(refs); built = time.perf_counter() - t0
    scorer.save(work/'cider_refs')
    return dict(images=len(keys), build_s=round(built, 1), array_bytes=int(scorer.stats.nbytes),
                array_bytes_per_image=round(scorer.stats.nbytes / len(keys)), n_grams=int(scorer.stats.offsets[-1]),
                words=scorer.stats.n_words)


def child_reward_shared(work:Path, scale:float, seed:int)->dict:
    from show_attend_tell.cider import CiderD
    keys, refs, cands = _reward_inputs(scale, seed)         # kept, as sat_scst keeps its captions: freed memory would be reused
    gc.collect(); before = _memory()
    scorer = CiderD.load(work/'cider_refs')
    t0 = time.perf_counter(); scores = _one_pass(scorer, keys, cands); passed = time.perf_counter() - t0
    gc.collect(); after = _memory()
    held = {k: after[k] - before[k] for k in before}
    old = work/'stages'/'reward_dicts_scores.npy'
    diff = float(np.abs(np.load(old) - scores).max()) if old.is_file() else None
    return dict(images=len(keys), pass_s=round(passed, 1), held_bytes=held, bytes_per_image=round(held['VmRSS'] / len(keys)),
                private_bytes_per_image=round(held['RssAnon'] / len(keys)),
                shared_bytes_per_image=round(held['RssFile'] / len(keys)), max_abs_diff_vs_dicts=diff,
                mean_reward=round(float(scores.mean()), 4))


CHILDREN = {'reward_dicts': child_reward_dicts, 'reward_arrays': child_reward_arrays, 'reward_shared': child_reward_shared}


# ---------------------------------------------------------------------------------------------------------
# running the stages

def disk_bytes(path:Path)->int:
    "Bytes the files under `path` take on disk (allocated blocks)."
    if not path.exists(): return 0
    if path.is_file(): return path.stat().st_blocks * 512
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try: total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError: pass
    return total


def gb(n:float)->str: return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _last_line(log:Path)->str:
    try:
        with open(log, 'rb') as f:
            f.seek(max(0, f.seek(0, 2) - 4000)); tail = f.read().decode(errors='replace')
    except OSError: return ''
    lines = [s.strip() for s in tail.replace('\r', '\n').split('\n') if s.strip()]
    return lines[-1][:150] if lines else ''


def run_child(name:str, cmd:list, work:Path, env:dict|None=None, every:float=30.0)->dict:
    "Run `cmd` with its output in WORK/logs/NAME.log, a progress line every `every` seconds; wall time and peak RSS (os.wait4)."
    log = work/'logs'/f'{name}.log'
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{name}] {' '.join(str(c) for c in cmd)}\n[{name}] output in {log}", flush=True)
    t0 = time.time()
    with open(log, 'wb') as out:
        p = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, cwd=work, env={**os.environ, **(env or {})})
        last = t0
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid: break
            time.sleep(1.0)
            if time.time() - last >= every:
                last = time.time(); print(f"[{name}] {last - t0:.0f} s: {_last_line(log)}", flush=True)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t0
    if p.returncode != 0:
        print(log.read_text(errors='replace')[-3000:], file=sys.stderr)
        raise SystemExit(f"error: stage {name} failed (exit status {p.returncode}); its output is in {log}; fix it and rerun the same command to resume")
    return dict(seconds=round(wall, 1), peak_rss_bytes=ru.ru_maxrss * 1024, cpu_seconds=round(ru.ru_utime + ru.ru_stime, 1))


def needed_disk(scale:float)->int:
    "Bytes the rehearsal writes at `scale`: the feature cache, one image file and the JSON per image, checkpoints and logs."
    n = sum(split_counts(scale).values())
    return n * (GRID * GRID * D * 2 + 4096 + 1400 + 2000) + int(1.5e9)


class Rehearsal:
    def __init__(self, a):
        self.a, self.work = a, Path(a.work).resolve()
        self.stages = self.work/'stages'
        self.env = dict(PYTHONPATH=os.pathsep.join([str(self.work), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep),
                        OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', str(a.threads)))

    def record(self, name): p = self.stages/f'{name}.json'; return json.loads(p.read_text()) if p.is_file() else None

    def params(self, name)->dict:
        "What a stage's result depends on besides the stages before it."
        a = self.a
        if name.startswith('reward'): return dict(reward_scale=a.reward_scale, seed=a.seed)
        if name in ('train', 'evaluate'): return dict(scale=a.scale, seed=a.seed, steps=a.steps, preset=a.preset, decoder=a.decoder)
        return dict(scale=a.scale, seed=a.seed)

    def done(self, name)->bool:
        r = self.record(name)
        return (r is not None and r.get('params') == self.params(name)
                and all((self.record(d) or {}).get('finished') == r['after'].get(d) for d in STAGES[name]))

    def check_params(self):
        p, want = self.work/'params.json', dict(scale=self.a.scale, seed=self.a.seed)
        if p.is_file():
            have = json.loads(p.read_text())
            if have != want: raise SystemExit(f"error: {self.work} holds a rehearsal with {have}, this run asks for {want}; "
                                              f"pass --work with another folder, or delete {self.work}")
        else:
            self.work.mkdir(parents=True, exist_ok=True); p.write_text(json.dumps(want))

    def check_disk(self):
        free, need = shutil.disk_usage(self.work).free, needed_disk(self.a.scale) - disk_bytes(self.work)
        print(f"disk: {gb(free)} free under {self.work}, the rehearsal at scale {self.a.scale:g} needs about {gb(max(need, 0))} more")
        if need > free:
            fits = max(0.0, (free - 1.5e9) / (needed_disk(1.0) - 1.5e9))
            raise SystemExit(f"error: not enough disk under {self.work} ({gb(free)} free, about {gb(need)} needed): free some, pass "
                             f"--work on a larger disk, or rehearse at --scale {math.floor(fits * 100) / 100:g} (what fits)")

    def run(self, name, fn):
        if name in self.a.redo or not self.done(name):
            print(f"== {name}", flush=True)
            rec = fn()
            rec.update(stage=name, params=self.params(name), finished=time.time(),
                       after={d: (self.record(d) or {}).get('finished') for d in STAGES[name]})
            self.stages.mkdir(parents=True, exist_ok=True)
            (self.stages/f'{name}.json').write_text(json.dumps(rec, indent=1))
            print(f"== {name}: {rec['seconds']:.0f} s, peak RSS {gb(rec['peak_rss_bytes'])}, disk {gb(rec.get('disk_bytes', 0))}", flush=True)
        else: print(f"== {name}: done already ({self.stages/name}.json), skipped")

    # the stages
    def data(self):
        rec = run_child('data', [sys.executable, __file__, '--_child', 'data', '--work', self.work, '--scale', self.a.scale,
                                 '--seed', self.a.seed], self.work, self.env)
        (self.work/'coco_scale_encoder.py').write_text(ENCODER.format(g=GRID, d=D))
        return dict(rec, **json.loads((self.stages/'data.child.json').read_text()),
                    disk_bytes=disk_bytes(self.work/'images') + disk_bytes(self.work/'dataset_coco.json'))

    def prepare(self):
        if 'prepare' in self.a.redo: shutil.rmtree(self.work/'data'/'features', ignore_errors=True)
        rec = run_child('prepare', [BIN/'sat_prepare', self.work/'dataset_coco.json', '--images', self.work/'images', '--out',
                                    self.work/'data', '--encoder', 'coco_scale_encoder:encoder', '--bs', 256, '--device', 'cpu'],
                        self.work, self.env)
        return dict(rec, disk_bytes=disk_bytes(self.work/'data'), cache_bytes=disk_bytes(self.work/'data'/'features'))

    def train(self):
        run = self.work/'run'
        shutil.rmtree(run, ignore_errors=True)                  # a capped epoch does not resume: start it again
        args = [self.work/'data', '--preset', self.a.preset, '--epochs', 1, '--out', run, '--device', 'cpu']
        if self.a.decoder == 'small':
            (self.work/'decoder_small.json').write_text(json.dumps(SMALL_DECODER))
            args += ['--config', self.work/'decoder_small.json']
        stamps = self.work/'stages'/'train_stamps.json'
        stamps.unlink(missing_ok=True)
        (self.work/'stamped_train.py').write_text(STAMPED_TRAIN)
        cmd = [sys.executable, self.work/'stamped_train.py', *args, '--max_steps', self.a.steps]
        rec = run_child('train', cmd, self.work, dict(self.env, COCO_SCALE_STAMPS=str(stamps)))
        rec.update(steps=self.a.steps, preset=self.a.preset, decoder=self.a.decoder, how=f'sat_train --max_steps {self.a.steps}',
                   disk_bytes=disk_bytes(run))
        if stamps.is_file():
            s = json.loads(stamps.read_text())
            rec.update(steps_run=s.get('steps'), train_part_s=round(s['train_end'] - s['train_start'], 1),
                       validation_s=round(s['validate_end'] - s['train_end'], 1))
        return rec

    def evaluate(self):
        out, fixed = self.work/'eval', None
        cmd = [BIN/'sat_evaluate', self.work/'run'/'best.pth', self.work/'data', '--split', 'test', '--device', 'cpu', '--quiet']
        if self.a.scale < 1:                   # its cost on 2 images: what does not grow with the images (loading, Java), to project
            fixed = run_child('evaluate_2_images', cmd + ['--out', self.work/'eval_2', '--max_images', 2], self.work, self.env)['seconds']
        rec = run_child('evaluate', cmd + ['--out', out], self.work, self.env)
        rec['fixed_s'] = fixed
        res = json.loads((out/'evaluation.json').read_text())
        words = [len(str(c.get('caption', '')).split()) for c in res.get('captions', [])]
        return dict(rec, disk_bytes=disk_bytes(out), images=res['meta']['n_images'], scores=res['scores'],
                    mean_caption_words=round(float(np.mean(words)), 2) if words else None, max_caption_words=max(words, default=None))

    def reward(self, name):
        def go():
            rec = run_child(name, [sys.executable, __file__, '--_child', name, '--work', self.work, '--reward_scale', self.a.reward_scale,
                                   '--seed', self.a.seed], self.work, self.env)
            rec.update(json.loads((self.stages/f'{name}.child.json').read_text()))
            if name == 'reward_arrays': rec['disk_bytes'] = disk_bytes(self.work/'cider_refs')
            return rec
        return go

    def all(self):
        self.check_params()
        only = self.a.only or list(STAGES)
        if 'data' in only and not self.done('data') or 'prepare' in only and not self.done('prepare'): self.check_disk()
        for name, fn in (('data', self.data), ('prepare', self.prepare), ('train', self.train), ('evaluate', self.evaluate),
                         ('reward_dicts', self.reward('reward_dicts')), ('reward_arrays', self.reward('reward_arrays')),
                         ('reward_shared', self.reward('reward_shared'))):
            if name in only: self.run(name, fn)
        return {n: self.record(n) for n in STAGES if self.record(n)}


# ---------------------------------------------------------------------------------------------------------
# the results

def projected(name:str, r:dict, a)->tuple:
    "(seconds, disk bytes) of stage `name` at full size: what grows with the images is divided by the scale, the rest kept."
    s = a.reward_scale if name.startswith('reward') else a.scale
    t, disk = r['seconds'], r.get('disk_bytes', 0)
    if name == 'train':                       # the steps are fixed, the validation grows; the checkpoints do not
        return (t - r['validation_s'] + r['validation_s'] / s if 'validation_s' in r else None), disk
    if name == 'evaluate':                    # loading and Java take the same time on 2 images as on all
        f = min(r.get('fixed_s') or 0, t)
        return f + (t - f) / s, disk
    return t / s, disk / s


def _caption_length_note(e:dict, data:dict|None)->str:
    "What the generated captions' length says about evaluation's cost, against the references' mean length."
    mean, longest, ref = e.get('mean_caption_words'), e.get('max_caption_words'), (data or {}).get('mean_words')
    if mean is None: return 'no captions'
    if longest and mean >= longest - 0.5:
        return (f"every caption ran to the length cap of {longest} words, as a barely trained model's repeating captions do: "
                "beam search did the most work it can, an upper bound for a trained model")
    if ref and mean < ref:
        return f"shorter than the references' {ref}: a model this briefly trained stops early, so beam search costs less than it will for a trained one"
    return f"about as long as the references' {ref}" if ref else "the references' length unknown"


def report(recs:dict, a, out:Path):
    "Write OUT/coco_scale.md and .json and print the markdown."
    from bench.common import machine_info, md_table
    from show_attend_tell.core import atomic_write
    info, s = machine_info('cpu'), a.scale
    full = s == 1 and a.reward_scale == 1
    rows, total, total_full = [], 0.0, 0.0
    for name, r in recs.items():
        pt, pd = projected(name, r, a)
        total += r['seconds']; total_full += pt or 0
        rows.append((name, f"{r['seconds']:,.0f}", f"{r['cpu_seconds']:,.0f}", gb(r['peak_rss_bytes']), gb(r.get('disk_bytes', 0)))
                    + (() if full else (f"{pt:,.0f}" if pt is not None else '?', gb(pd))))
    head = ['stage', 'wall s', 'CPU s', 'peak RSS', 'disk'] + ([] if full else ['wall s at full size', 'disk at full size'])
    d, n = recs.get('data', {}), split_counts(s)
    dec = SMALL_DECODER if a.decoder == 'small' else {}
    md = [f"# The COCO run rehearsed on the CPU{'' if s == 1 else f' at scale {s:g}'}\n",
          f"`bench/coco_scale.py` (`make coco-scale`): synthetic COCO in the Karpathy format, {sum(n.values()):,} images "
          f"({n['train']:,} train + {n['restval']:,} restval, {n['val']:,} val, {n['test']:,} test)"
          + (f", {d['captions']:,} captions of {d['mean_words']} words on average (95% at most {d['p95_words']}, the longest "
             f"{d['max_words']}), {d['train_word_types']:,} distinct training words ({d['train_words_5_or_more']:,} seen 5 times or more)" if d else '')
          + f"; a stand-in encoder of VGG-19's shape ({GRID} × {GRID} × {D}); the `{a.preset}` preset"
          + (f" with a narrower decoder ({', '.join(f'{k} {v}' for k, v in dec.items())})" if dec else '') + ". "
          f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}; {info['date']}; load average {os.getloadavg()[0]:.1f} at the end "
          "(other work on the machine slows the stages down).\n",
          md_table(head, rows),
          f"\nTotal: {total / 60:.0f} min" + ('' if full else f"; about {total_full / 60:.0f} min projected at full size (each stage's "
              "time divided by its scale, except the training steps and evaluation's cost on 2 images; an upper bound, since the "
              "other stages' start-up costs are scaled too)") + ".\n"]
    if 'train' in recs:
        t = recs['train']
        md.append(f"Training: {t['how']}; {t.get('steps_run', t['steps'])} steps"
                  + (f" in {t['train_part_s']:.0f} s, then the validation in {t['validation_s']:.0f} s" if 'validation_s' in t else '') + ".")
    if 'evaluate' in recs:
        e = recs['evaluate']
        md.append(f"Evaluation: {e['images']:,} test images" + (f" ({e['fixed_s']:.0f} s on 2 images)" if e.get('fixed_s') else '')
                  + f", captions of {e['mean_caption_words']} words on average ({_caption_length_note(e, recs.get('data'))}).\n")
    rd, ra, rs = recs.get('reward_dicts'), recs.get('reward_arrays'), recs.get('reward_shared')
    if rd and ra and rs:
        at_coco = a.reward_scale == 1
        ntr = rd['images']
        one = lambda b: gb(b * ntr) if at_coco else '–'
        rows = [('dicts of n-gram tuples (before)', f"{rd['build_s']:.0f}", f"{rd['pass_s']:.0f}", f"{rd['bytes_per_image']:,}",
                 f"{rd['private_bytes_per_image']:,}", '–', one(rd['bytes_per_image'])),
                ('`cider.CiderRefs` arrays, memory-mapped (now)', f"{ra['build_s']:.0f}", f"{rs['pass_s']:.0f}", f"{rs['bytes_per_image']:,}",
                 f"{rs['private_bytes_per_image']:,}", f"{rs['shared_bytes_per_image']:,}", one(rs['bytes_per_image']))]
        md += ["## The reward's statistics (self-critical training)\n",
               f"CIDEr-D statistics of the references of {ntr:,} training images"
               + ('' if at_coco else f" (--reward_scale {a.reward_scale:g}; per image, both shrink as the corpus grows and n-grams repeat)")
               + ", held for one pass over them (one candidate per image, in batches of 320 = 64 images × 5 samples). Bytes per "
               "image: the resident memory the statistics add to the process (the change of VmRSS); private bytes are each process's "
               "own, shared bytes the memory-mapped files that all processes of a machine share. "
               f"On disk: {gb(ra['disk_bytes'])} ({ra['n_grams']:,} distinct n-grams of {ra['words']:,} words). Largest difference "
               f"between the two scorers' rewards, image by image: {rs['max_abs_diff_vs_dicts']:.1e}.\n",
               md_table(['statistics', 'build s', 'one pass s', 'bytes per image', 'private', 'shared', 'one process'], rows)]
        if at_coco:
            md.append(f"\nEight processes on one machine: the dicts take 8 × {gb(rd['bytes_per_image'] * ntr)}; the arrays "
                      f"{gb(rs['shared_bytes_per_image'] * ntr)} once plus 8 × {gb(max(rs['private_bytes_per_image'], 0) * ntr)}.\n")
    text = '\n'.join(md)
    out.mkdir(parents=True, exist_ok=True)
    stem = 'coco_scale'
    atomic_write(out/f'{stem}.md', text)
    atomic_write(out/f'{stem}.json', json.dumps(dict(machine=info, scale=s, reward_scale=a.reward_scale, preset=a.preset, decoder=a.decoder,
                                                       steps=a.steps, stages=recs, total_s=round(total, 1),
                                                       projected_full_size_s=round(total_full, 1)), indent=1))
    print('\n' + text + f"\nwritten: {out/stem}.md, {out/stem}.json")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--scale', type=float, default=1.0, help='fraction of COCO\'s images (default 1: full size)')
    p.add_argument('--steps', type=int, default=100, help='training steps of the capped epoch (default 100)')
    p.add_argument('--preset', default='coco', help='the training preset (default coco, the paper\'s)')
    p.add_argument('--decoder', default='small', choices=('small', 'paper'),
                   help=f"small: the preset with {SMALL_DECODER} (default); paper: the preset as it is")
    p.add_argument('--reward_scale', type=float, default=1.0, help='fraction of COCO\'s training captions for the reward stages (default 1)')
    p.add_argument('--work', default=str(REPO/'bench'/'.cache'/'coco_scale'), help='where the data, cache and run go')
    p.add_argument('--out', default=str(REPO/'bench'/'results'), help='where coco_scale.md and .json go')
    p.add_argument('--only', type=lambda s: s.split(','), default=None, help=f"stages to run, comma-separated: {','.join(STAGES)}")
    p.add_argument('--redo', type=lambda s: s.split(','), default=[], help='stages to run again though finished')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=2, help='OMP_NUM_THREADS of the stages (default 2)')
    p.add_argument('--_child', help=argparse.SUPPRESS)
    a = p.parse_args()
    if not (0 < a.scale <= 1 and 0 < a.reward_scale <= 1): p.error('--scale and --reward_scale must be in (0, 1]')
    for s in (a.only or []) + a.redo:
        if s not in STAGES: p.error(f"unknown stage {s!r}; the stages: {', '.join(STAGES)}")
    work = Path(a.work).resolve()
    if a._child:                                            # a stage's own process
        (work/'stages').mkdir(parents=True, exist_ok=True)
        if a._child == 'data': res = write_dataset(work, a.scale, a.seed)
        else: res = CHILDREN[a._child](work, a.reward_scale, a.seed)
        (work/'stages'/f'{a._child}.child.json').write_text(json.dumps(res, indent=1))
        return
    recs = Rehearsal(a).all()
    report(recs, a, Path(a.out))


if __name__ == '__main__': main()
