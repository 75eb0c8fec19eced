"""Batched beam search vs the per-image beam loop, same model, same images: images/s and identical captions.

The issue's goal: batched beam search at k=5, 50 steps, at least 5x the images/s of a per-image loop on CPU.
The model is the real `ShowAttendTell` with random weights at the Flickr8k preset's size (LSTM 1800, embedding
512, attention 512, 10,000 words, 196 locations of 1280-d EfficientNet-Lite0 features). Random weights give an
almost flat word distribution, so the output layer is scaled up (a trained model's distributions are peaked;
with flat ones, float32 rounding differences between batch sizes can swap near-tied candidates) and `<end>`
is made impossible, so that every search runs the full `max_len` steps: the worst case, and the same work for
both loops. The per-image loop is timed on the first `--single` images, one by one (its images/s, from the median image,
does not depend on how many it runs), and its captions are compared with the batched search's on those images.

Usage: .venv/bin/python bench/beam_speed.py [--model real|standin] [--size flickr8k|tiny] [--images 64] [--single 12] [--threads 2]
Writes bench/results/beam_speed.json and bench/results/beam_speed.md.
"""
import argparse, json, os, platform, statistics, sys, time
from pathlib import Path
import torch
from show_attend_tell.config import preset
from show_attend_tell.data import END
from show_attend_tell.inference import beam_search, beam_search_single

RESULTS = Path(__file__).parent / 'results'


class NoEnd(torch.nn.Module):
    "The step API of `model` with `<end>` impossible, so every search runs to max_len."
    def __init__(self, model):
        super().__init__()
        self.model = model
    def init_state(self, feats, feat_mask=None): return self.model.init_state(feats, feat_mask)
    def reorder_state(self, state, index): return self.model.reorder_state(state, index)
    def step(self, prev, state):
        logp, alpha, state = self.model.step(prev, state)
        return logp.index_fill(1, torch.tensor([END]), float('-inf')), alpha, state


class StandIn(torch.nn.Module):
    """`--model standin`: the paper's decoder written plainly (LSTM on [E y, z], MLP attention, deep output eq. 7),
    with a state that `reorder_state` index_selects whole (annotations included). Only for measuring the search
    before `show_attend_tell.decoder` exists, or to compare with it."""
    def __init__(self, cfg, vocab_size, feat_dim):
        super().__init__()
        E, H, A, D = cfg.embed_dim, cfg.hidden_dim, cfg.attn_dim, feat_dim
        self.emb, self.lstm = torch.nn.Embedding(vocab_size, E), torch.nn.LSTMCell(E + D, H)
        self.init_h, self.init_c = torch.nn.Linear(D, H), torch.nn.Linear(D, H)
        self.att_a, self.att_h, self.att_w = torch.nn.Linear(D, A), torch.nn.Linear(H, A), torch.nn.Linear(A, 1)
        self.out_h, self.out_z, self.out = torch.nn.Linear(H, E), torch.nn.Linear(D, E), torch.nn.Linear(E, vocab_size)
    def init_state(self, feats, feat_mask=None):
        m = feats.mean(1)
        return dict(h=self.init_h(m).tanh(), c=self.init_c(m).tanh(), a=feats, pa=self.att_a(feats))
    def reorder_state(self, state, index): return {k: v.index_select(0, index) for k, v in state.items()}
    def step(self, prev, state):
        alpha = self.att_w((state['pa'] + self.att_h(state['h'])[:, None]).tanh()).squeeze(-1).softmax(-1)
        z, y = torch.bmm(alpha[:, None], state['a']).squeeze(1), self.emb(prev)
        h, c = self.lstm(torch.cat([y, z], -1), (state['h'], state['c']))
        logp = self.out((y + self.out_h(h) + self.out_z(z)).tanh()).log_softmax(-1)
        return logp, alpha, dict(state, h=h, c=c)


def build(size, feat_dim, logit_scale, which='real', seed=0):
    torch.manual_seed(seed)
    cfg = preset(size)
    if which == 'real':
        from show_attend_tell.decoder import ShowAttendTell
        model = ShowAttendTell(cfg, vocab_size=cfg.vocab_size, feat_dim=feat_dim).eval()
    else: model = StandIn(cfg, cfg.vocab_size, feat_dim).eval()
    with torch.no_grad():                       # peaked word distributions, like a trained model's
        outs = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == cfg.vocab_size]
        for m in outs:
            m.weight.mul_(logit_scale)
            if m.bias is not None: m.bias.mul_(logit_scale)
    return cfg, NoEnd(model).eval(), len(outs)


def run_size(a, size):
    "Time both loops for every beam size on one model size; returns (meta, rows)."
    cfg, model, n_scaled = build(size, a.feat_dim, a.logit_scale, a.model)
    L = cfg.grid_size ** 2
    feats = torch.randn(a.images, L, a.feat_dim, generator=torch.Generator().manual_seed(1))
    beam_search(model, feats[:2], beam_size=2, max_len=3)          # warm-up (allocator, kernels)
    beam_search_single(model, feats[0], beam_size=2, max_len=3)
    rows = []
    for k in [int(x) for x in a.beams.split(',')]:
        t0 = time.perf_counter()
        batched = beam_search(model, feats, beam_size=k, max_len=a.max_len)
        t_batched = time.perf_counter() - t0
        single, per_image = [], []
        for i in range(a.single):
            t0 = time.perf_counter()
            single.append(beam_search_single(model, feats[i], beam_size=k, max_len=a.max_len))
            per_image.append(time.perf_counter() - t0)
        t_image = statistics.median(per_image)       # the median image: robust to a busy shared machine
        same = sum(b['ids'] == s['ids'] for b, s in zip(batched, single))
        max_dscore = max(abs(b['score'] - s['score']) for b, s in zip(batched, single))
        row = dict(size=size, beam_size=k, batched_images=a.images, batched_s=round(t_batched, 3),
                   batched_images_per_s=round(a.images / t_batched, 2), single_images=a.single,
                   single_s_median_image=round(t_image, 4), single_images_per_s=round(1 / t_image, 2),
                   speedup=round(a.images / t_batched * t_image, 2),
                   identical_captions=f'{same}/{a.single}', max_score_diff=float(f'{max_dscore:.3g}'),
                   mean_words=round(sum(len(b['ids']) for b in batched) / a.images, 1),
                   load_avg_1min=round(os.getloadavg()[0], 2))
        rows.append(row)
        print(json.dumps(row), flush=True)
    name = 'ShowAttendTell' if a.model == 'real' else 'the bench stand-in decoder (not the real ShowAttendTell)'
    meta = dict(size=size, model=f"{name}, preset {size!r}: LSTM {cfg.hidden_dim}, embedding {cfg.embed_dim}, "
                f"attention {cfg.attn_dim}, vocab {cfg.vocab_size}, L={L}, D={a.feat_dim}, random init, "
                f"output layer x{a.logit_scale} ({n_scaled} layer(s)), <end> disabled")
    return meta, rows


def write(out:Path, obj:dict, md:list):
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in (('.json', json.dumps(obj, indent=2)), ('.md', '\n'.join(md) + '\n')):
        tmp = out.with_suffix(suffix + '.tmp')
        tmp.write_text(text)
        os.replace(tmp, out.with_suffix(suffix))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', default='flickr8k,tiny', help='config presets giving the model sizes, comma-separated')
    ap.add_argument('--model', default='real', choices=['real', 'standin'], help="'real': show_attend_tell.decoder.ShowAttendTell")
    ap.add_argument('--feat-dim', type=int, default=1280, help='annotation size D (1280: EfficientNet-Lite0)')
    ap.add_argument('--images', type=int, default=64, help='images in the batched search')
    ap.add_argument('--single', type=int, default=12, help='images run through the per-image loop')
    ap.add_argument('--beams', default='1,3,5')
    ap.add_argument('--max-len', type=int, default=50)
    ap.add_argument('--logit-scale', type=float, default=20.0)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--out', default=str(RESULTS / 'beam_speed'))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    runs = [run_size(a, size) for size in a.size.split(',')]
    env = dict(max_len=a.max_len, images=a.images, single_images=a.single, threads=torch.get_num_threads(),
               torch=torch.__version__, cpu=platform.processor() or platform.machine(), cpus=os.cpu_count(),
               python=sys.version.split()[0], wall_s=round(time.perf_counter() - t0, 1))
    md = ['# Beam search: batched vs per-image loop', '',
          f"`bench/beam_speed.py`: every search runs {a.max_len} steps (`<end>` disabled). CPU, {env['threads']} threads, "
          f"torch {env['torch']}. Batched: {a.images} images in one `beam_search` call; per-image: `beam_search_single` on the "
          f"first {a.single} of them, one by one (images/s from the median image); captions compared on those images.", '']
    for meta, rows in runs:
        md += [f"**{meta['model']}**", '',
               '| k | batched images/s | per-image images/s | speed-up | identical captions | max score diff |',
               '|---|---|---|---|---|---|']
        md += [f"| {r['beam_size']} | {r['batched_images_per_s']} | {r['single_images_per_s']} | {r['speedup']}x | "
               f"{r['identical_captions']} | {r['max_score_diff']} |" for r in rows]
        md.append('')
    write(Path(a.out), dict(env=env, runs=[dict(meta=m, results=r) for m, r in runs]), md)
    print('\n'.join(md))


if __name__ == '__main__': main()
