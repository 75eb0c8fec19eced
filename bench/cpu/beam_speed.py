"""Batched beam search vs the per-image beam loop, same model, same images: images/s and identical captions.

The goal: batched beam search at the coco_modern preset, k = 5, 50 steps, over the 32 images `sat_evaluate` decodes at
a time, at least 10x the images/s of a per-image loop on CPU. The model is the real `ShowAttendTell` with random weights
at the coco_modern preset's size (LSTM 1800, embedding 512, attention 512, 10,000 words over 196 locations of 1280-d
EfficientNet-Lite0 features), and
at the tiny preset's size (its local EfficientNet grid, D = 112). Random weights give an almost flat word
distribution, so the output layer is scaled up (a trained model's distributions are peaked; with flat ones, float32
rounding differences between batch sizes can swap near-tied candidates) and `<end>` is made impossible, so that every
search runs the full `max_len` steps: the worst case, and the same work for both loops. Then the same on the trained
Shapes model (`common.shapes_model`), `<end>` allowed, where captions end after about eight words.

`beam_search` runs all `--images` images in one call; `beam_search_single` runs images one by one. The two are
timed in turns (batched, per-image, batched, per-image) and compared per image; the per-image loop's captions are
compared with the batched search's on the images it ran. At the largest size and k, the profile of the batched search
shows where its time goes, and `lstm_bound` measures what batching can gain at most on its main product.

Usage: .venv/bin/python bench/cpu/beam_speed.py [--sizes coco_modern,tiny] [--images 32] [--single 2] [--reps 2] [--beams 1,3,5]
Writes bench/results/cpu/beam_speed.json and .md.
"""
import argparse, sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root: `bench` imports when run as a script
from bench.common import Profile, autocast, feat_dim, load_avg, machine_info, md_table, save_and_show, shapes_model, time_interleaved
from show_attend_tell.config import preset
from show_attend_tell.vocab import END
from show_attend_tell.decoder import ShowAttendTell
from show_attend_tell.decoding import beam_search, beam_search_single

GOAL = 10.0   # batched ≥ 10x the per-image loop's images/s at the coco_modern preset, k = 5, on CPU


class NoEnd(torch.nn.Module):
    "The step API of `model` with `<end>` impossible, so every search runs to max_len."
    def __init__(self, model):
        super().__init__()
        self.model = model
    def init_state(self, feats, feat_mask=None): return self.model.init_state(feats, feat_mask)
    def reorder_state(self, state, index): return self.model.reorder_state(state, index)
    def step(self, prev, state):
        logp, alpha, state = self.model.step(prev, state)
        logp[:, END] = float('-inf')                   # logp is the step's own new tensor
        return logp, alpha, state


def build(size, logit_scale=20.0, seed=0, device='cpu'):
    "The real model at preset `size`, random init, output layer scaled by `logit_scale`, `<end>` disabled."
    torch.manual_seed(seed)
    cfg = preset(size)
    model = ShowAttendTell(cfg, vocab_size=cfg.vocab_size, feat_dim=feat_dim(cfg.encoder)).eval()
    with torch.no_grad():                       # peaked word distributions, like a trained model's
        model.out.weight.mul_(logit_scale); model.out.bias.mul_(logit_scale)
    return cfg, NoEnd(model).to(device).eval()


class Searches:
    "The batched search over all images and the per-image loop over the next `per_turn` images (cycling), for timing in turns."
    def __init__(self, model, feats, k, max_len, per_turn, amp_dtype=None):
        self.model, self.feats, self.k, self.max_len, self.per_turn, self.amp = model, feats, k, max_len, per_turn, amp_dtype
        self.batched_out, self.single_out, self.next = None, {}, 0

    def batched(self):
        with autocast(self.feats.device, self.amp):
            self.batched_out = beam_search(self.model, self.feats, beam_size=self.k, max_len=self.max_len)

    def single(self):
        with autocast(self.feats.device, self.amp):
            for _ in range(self.per_turn):
                i = self.next % len(self.feats); self.next += 1
                self.single_out[i] = beam_search_single(self.model, self.feats[i], beam_size=self.k, max_len=self.max_len)

    def warm_up(self):
        beam_search(self.model, self.feats, beam_size=self.k, max_len=2)
        beam_search_single(self.model, self.feats[0], beam_size=self.k, max_len=2)

    def compare(self):
        "(identical captions, images compared, largest score difference) of the per-image runs vs the batched run."
        pairs = [(self.batched_out[i], s) for i, s in self.single_out.items()]
        same = sum(b['ids'] == s['ids'] for b, s in pairs)
        return same, len(pairs), max(abs(b['score'] - s['score']) for b, s in pairs)


def bench_k(model, feats, k, max_len, per_turn, reps, device, amp_dtype=None):
    s = Searches(model, feats, k, max_len, per_turn, amp_dtype)
    s.warm_up()
    t = time_interleaved(dict(batched=s.batched, single=s.single), reps, warmup=0, device=device)
    n = len(feats)
    same, compared, dscore = s.compare()
    return dict(beam_size=k, images=n, batched_s=round(t['batched'], 3), batched_images_per_s=round(n / t['batched'], 2),
                single_images_per_turn=per_turn, single_images_per_s=round(per_turn / t['single'], 2),
                speedup=round(t['single'] / per_turn * n / t['batched'], 2), identical_captions=f'{same}/{compared}',
                max_score_diff=float(f'{dscore:.3g}'), load_avg_1min=load_avg())


def lstm_bound(cfg, D, k, images, device='cpu', reps=3):
    """The most batching can gain on the LSTM's product [ẑ; h] @ W_zhᵀ, measured: seconds per image of the per-image
    loop's product (k rows) over those of the batched search's (images × k rows), and the per-image product's
    effective memory bandwidth (it reads all of W_zh for its k rows, so it is bound by memory, the batched one by
    arithmetic)."""
    DH, N = D + cfg.hidden_dim, 4 * cfg.hidden_dim
    W = torch.randn(DH, N, device=device)
    one, many = torch.randn(k, DH, device=device), torch.randn(images * k, DH, device=device)
    t = time_interleaved(dict(one=lambda: one @ W, many=lambda: many @ W), reps, device=device, min_total=1.0)
    return dict(per_image_ms=round(t['one'] * 1e3, 2), batched_per_image_ms=round(t['many'] / images * 1e3, 3),
                ratio=round(t['one'] * images / t['many'], 2), per_image_gb_s=round(W.numel() * 4 / t['one'] / 1e9, 1),
                batched_gflops=round(2 * images * k * DH * N / t['many'] / 1e9, 1))


def trained_shapes(images, beams, per_turn, reps, max_len, device='cpu', log=print):
    "The two searches on the trained Shapes model and its test images, `<end>` allowed (captions end early)."
    from show_attend_tell.checkpoint import load_checkpoint
    from show_attend_tell.features import load_prepared
    ck, folder, source = shapes_model(log)
    model = load_checkpoint(ck)[0].to(device).eval()
    data, _, cache = load_prepared(folder)
    test = [cache.row(r.path) for r in data.split('test')][:images]
    feats = torch.stack([cache[i] for i in test]).float().to(device)
    rows = []
    for k in beams:
        r = bench_k(model, feats, k, max_len, per_turn, reps, device)
        s = Searches(model, feats, k, max_len, per_turn); s.batched()
        r['mean_words'] = round(sum(len(c['ids']) for c in s.batched_out) / len(feats), 1)
        rows.append(r)
        log(f"  beam shapes k={k}: batched {r['batched_images_per_s']} images/s, per-image {r['single_images_per_s']}, "
            f"{r['speedup']}x, identical {r['identical_captions']}")
    return dict(meta=dict(size='shapes', model=f"the trained Shapes model ({source}): {model!r}, its {len(feats)} first test "
                          f"images, `<end>` allowed (mean caption length in words shown)"), results=rows)


def run(sizes=('coco_modern', 'tiny'), images=32, per_turn=2, reps=2, beams=(1, 3, 5), max_len=50, logit_scale=20.0,
        device='cpu', amp_dtype=None, profile_images=16, shapes=True, log=print):
    "Time both searches at every size and beam size (and on the trained Shapes model); returns dict(name, data, md)."
    runs, prof, shares, bound = [], None, None, None
    for size in sizes:
        cfg, model = build(size, logit_scale, device=device)
        D = feat_dim(cfg.encoder)
        feats = torch.randn(images, cfg.num_locations, D, generator=torch.Generator().manual_seed(1)).to(device)
        rows = []
        for k in beams:
            main = size == sizes[0] and k == max(beams)
            r = bench_k(model, feats, k, max_len, per_turn, reps, device, amp_dtype)
            rows.append(r)
            log(f"  beam {size} k={k}: batched {r['batched_images_per_s']} images/s, per-image {r['single_images_per_s']}, "
                f"{r['speedup']}x, identical {r['identical_captions']}")
            if main:
                bound = lstm_bound(cfg, D, k, images, device)
                prof = Profile(lambda: Searches(model, feats[:profile_images], k, max_len, 1, amp_dtype).batched(), device)
                H, DH = cfg.hidden_dim, cfg.hidden_dim + D
                four_d = lambda sh: len(sh[0]) == 4
                A = cfg.attn_dim
                shares = dict(lstm=prof.share('aten::mm', lambda sh: sh[1:] == [[DH, 4 * H]]),
                              f_att=prof.share(None, four_d) + prof.share('aten::mm', lambda sh: sh[1] == [A, 1])
                                    + prof.share('aten::addmm', lambda sh: sh[-1] == [A, 1]),
                              output=prof.share('aten::addmm', lambda sh: sh[0] == [cfg.vocab_size]))
        meta = dict(size=size, model=f"ShowAttendTell, preset {size!r}: LSTM {cfg.hidden_dim}, embedding {cfg.embed_dim}, "
                    f"attention {cfg.attn_dim}, vocab {cfg.vocab_size}, L={cfg.num_locations}, D={D}, random init, "
                    f"output layer ×{logit_scale}, <end> disabled")
        runs.append(dict(meta=meta, results=rows))
    if shapes and torch.device(device).type == 'cpu': runs.append(trained_shapes(images, beams, per_turn, reps, max_len, device, log))
    info = machine_info(device)
    main = runs[0]['results'][-1]
    met = main['beam_size'] == 5 and main['speedup'] >= GOAL
    goal = dict(goal=f'batched beam search ≥ {GOAL}× the per-image loop at the {sizes[0]} preset, k = 5, {images} images', value=main['speedup'],
                shown=f"{main['speedup']}×", met=met)
    amp = f", autocast {str(amp_dtype).replace('torch.', '')}" if amp_dtype else ''
    md = ["## Beam search: batched vs per-image loop\n",
          f"Random models: every search runs {max_len} steps (`<end>` disabled), {info['device']}{amp}, {info['torch_threads']} threads. "
          f"Batched: {images} images in one `beam_search` call (the batch `sat_evaluate` decodes); per-image: `beam_search_single` "
          f"on {per_turn} images per turn. The two are timed in turns ({reps} each, medians) and compared per image; captions "
          f"compared on the images the per-image loop ran. Random weights, output layer scaled up so the word distributions "
          f"are peaked like a trained model's.\n",
          f"**Goal: batched ≥ {GOAL}× the per-image loop at k = 5 ({sizes[0]} size): {main['speedup']}× — {'met' if met else 'not met'}.**\n"]
    for rr in runs:
        extra = rr['meta']['size'] == 'shapes'
        md += [f"**{rr['meta']['model']}**\n",
               md_table(['k', 'batched images/s', 'per-image images/s', 'speed-up', 'identical captions', 'max score diff']
                        + (['words per caption'] if extra else []),
                        [(r['beam_size'], r['batched_images_per_s'], r['single_images_per_s'], f"{r['speedup']}x",
                          r['identical_captions'], r['max_score_diff']) + ((r['mean_words'],) if extra else ())
                         for r in rr['results']]) + '\n']
    if prof:
        md += [f"Where the batched search's time goes ({sizes[0]} size, k = {max(beams)}, {profile_images} images; torch.profiler, "
               f"top operators by self time): the LSTM's product [ẑ; h] @ W_zhᵀ {shares['lstm']:.0%}, f_att's element-wise "
               f"work over (images, k, L, A) and its score product {shares['f_att']:.0%}, the output layer L_o "
               f"{shares['output']:.0%}. The per-image loop does the same f_att work per image, so f_att caps the speed-up; "
               f"the LSTM product is where batching gains (the per-image loop reads all of W_zh for k rows at every step).\n",
               prof.md(12) + '\n']
    if bound:
        md += [f"**What batching can gain here, measured.** The LSTM's product alone, timed in turns: the per-image loop's "
               f"{max(beams)} rows × W_zh take {bound['per_image_ms']} ms a step (all of W_zh read for {max(beams)} rows: "
               f"{bound['per_image_gb_s']} GB/s, this machine's memory bandwidth, not its arithmetic, is the limit), the batched "
               f"search's {images} × {max(beams)} rows {bound['batched_per_image_ms']} ms a step per image ({bound['batched_gflops']} "
               f"GFLOP/s, arithmetic-bound). So on this product, where most of the time goes, batching gains at most "
               f"{bound['ratio']}×; the output layer and x_gates products gain alike, f_att's element-wise work not at all. "
               f"A goal above that ratio cannot be met with the same arithmetic (float32, identical captions) on this machine; "
               f"what was tried: more images per call (the batched step is already arithmetic-bound, so the time per image stays), and folding W_z into the annotations (α (a W_zᵀ) for (Σ α a) W_zᵀ), which at L = 196, D = 1280 and k · 50 rows per image costs more to precompute than it saves. On a GPU the per-image loop is bound by kernel launches instead (`make gpu-check` measures it).\n"]
    return dict(name='beam_speed', data=dict(machine=info, max_len=max_len, images=images, goal=goal, runs=runs,
                                                  lstm_bound=bound, profile_md=prof and prof.md(12), profile_shares=shares),
                md='\n'.join(md))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', default='coco_modern,tiny', help='config presets giving the model sizes, comma-separated')
    ap.add_argument('--images', type=int, default=32, help='images in the batched search (sat_evaluate decodes 32 at a time)')
    ap.add_argument('--single', type=int, default=2, help='images the per-image loop runs per turn')
    ap.add_argument('--reps', type=int, default=2, help='turns of each')
    ap.add_argument('--beams', default='1,3,5')
    ap.add_argument('--max-len', type=int, default=50)
    ap.add_argument('--logit-scale', type=float, default=20.0)
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    save_and_show(run(a.sizes.split(','), a.images, a.single, a.reps, [int(x) for x in a.beams.split(',')], a.max_len, a.logit_scale))


if __name__ == '__main__': main()
