"""Teacher-forced training step: `ShowAttendTell` vs a reference decoder of the kind most public PyTorch
reimplementations use, at equal dimensions, in the same run (a ratio, because this machine is shared and noisy).

The reference is written here from the published description of the most-used one (sgrvinod's
"a-PyTorch-Tutorial-to-Image-Captioning", `DecoderWithAttention`): captions sorted by length and a Python loop
over time steps in which the batch shrinks to the captions still running; at every step the attention
projection of the encoder output is recomputed (`encoder_att(encoder_out)`), the context is a weighted sum,
a gate β = σ(f_β(h)) scales it, an `LSTMCell` reads [embedding; context], and the output layer (dropout +
linear from h) runs per step. The batch here is length-bucketed (one caption length, as `01_data` makes them),
which is also that loop's best case (it never shrinks).

Both do forward + backward + Adam step on the same random batch. Ours has the deep output layer (eq. 7), which
costs more than the reference's plain output layer, and still has to win.

Usage: .venv/bin/python bench/train_speed.py [--presets tiny,flickr8k,coco] [--batch 32] [--length 12] [--reps 3]
Writes bench/results/train_speed.json and .md.
"""
import argparse, statistics, sys, time
from pathlib import Path
import torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, str(Path(__file__).parent))
from common import machine_info, write_result
from show_attend_tell.config import preset
from show_attend_tell.decoder import ShowAttendTell

RESULTS = Path(__file__).parent / 'results'


class ReferenceDecoder(nn.Module):
    "Per-step loop over a shrinking batch, attention projection recomputed every step (as described above)."
    def __init__(self, E, H, A, D, V, dropout=0.5):
        super().__init__()
        self.encoder_att, self.decoder_att, self.full_att = nn.Linear(D, A), nn.Linear(H, A), nn.Linear(A, 1)
        self.embedding, self.dropout = nn.Embedding(V, E), nn.Dropout(dropout)
        self.decode_step = nn.LSTMCell(E + D, H, bias=True)
        self.init_h, self.init_c, self.f_beta, self.fc = nn.Linear(D, H), nn.Linear(D, H), nn.Linear(H, D), nn.Linear(H, V)
        self.V = V

    def forward(self, enc, caps, lengths):
        B = enc.shape[0]
        emb = self.embedding(caps)
        mean = enc.mean(1)
        h, c = self.init_h(mean), self.init_c(mean)
        T = max(lengths)
        preds = enc.new_zeros(B, T, self.V)
        for t in range(T):
            bt = sum(l > t for l in lengths)
            att = self.full_att(F.relu(self.encoder_att(enc[:bt]) + self.decoder_att(h[:bt])[:, None])).squeeze(2)
            alpha = att.softmax(1)
            z = (enc[:bt] * alpha[..., None]).sum(1)
            z = torch.sigmoid(self.f_beta(h[:bt])) * z
            h, c = self.decode_step(torch.cat([emb[:bt, t], z], 1), (h[:bt], c[:bt]))
            preds[:bt, t] = self.fc(self.dropout(h))
        return preds


def _time(step, reps):
    step()                                                   # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); step(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench_preset(name, B, T, reps, D=1280, L=196):
    cfg = preset(name)
    V = cfg.vocab_size
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(B, L, D, generator=g)
    caps = torch.randint(4, V, (B, T + 1), generator=g)
    ours = ShowAttendTell(cfg, V, D)
    ref = ReferenceDecoder(cfg.embed_dim, cfg.hidden_dim, cfg.attn_dim, D, V, cfg.dropout)
    opt_o, opt_r = torch.optim.Adam(ours.parameters(), 1e-4), torch.optim.Adam(ref.parameters(), 1e-4)

    def step_ours():
        out = ours(feats, caps)
        loss = F.cross_entropy(out['logits'].transpose(1, 2), caps[:, 1:])
        opt_o.zero_grad(); loss.backward(); opt_o.step()

    def step_ref():
        preds = ref(feats, caps, [T] * B)
        loss = F.cross_entropy(preds.transpose(1, 2), caps[:, 1:])
        opt_r.zero_grad(); loss.backward(); opt_r.step()

    t_o, t_r = _time(step_ours, reps), _time(step_ref, reps)
    return dict(preset=name, hidden=cfg.hidden_dim, embed=cfg.embed_dim, attn=cfg.attn_dim, vocab=V, D=D, L=L,
                batch=B, length=T, ours_captions_s=B / t_o, reference_captions_s=B / t_r, speedup=t_r / t_o)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--presets', default='tiny,flickr8k,coco'); p.add_argument('--batch', type=int, default=32)
    p.add_argument('--length', type=int, default=12); p.add_argument('--reps', type=int, default=3)
    p.add_argument('--threads', type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    rows = []
    for name in a.presets.split(','):
        r = bench_preset(name, a.batch, a.length, a.reps); rows.append(r)
        print(f"{name}: ours {r['ours_captions_s']:.1f} captions/s, reference {r['reference_captions_s']:.1f}, {r['speedup']:.2f}x", flush=True)
    md = ["| preset | LSTM | emb | attn | vocab | ours captions/s | reference captions/s | speed-up |", "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['preset']} | {r['hidden']} | {r['embed']} | {r['attn']} | {r['vocab']} | {r['ours_captions_s']:.1f} | "
           f"{r['reference_captions_s']:.1f} | {r['speedup']:.2f}x |" for r in rows]
    info = machine_info()
    notes = (f"# Training step: ShowAttendTell vs the reference decoder\n\n`{' '.join(['bench/train_speed.py'] + sys.argv[1:])}`: "
             f"forward + backward + Adam, batch {a.batch} captions of {a.length} words, 196×1280 annotations, random init; "
             f"{info['device']}, {a.threads} threads, torch {info['torch']}, median of {a.reps}. The flickr8k and coco presets "
             f"have the same decoder (the original code's configuration), so the spread between their rows is this shared "
             f"machine's noise; each ratio compares two models timed back to back in the same run.")
    write_result(RESULTS, 'train_speed', dict(machine=info, args=vars(a), rows=rows), '\n'.join(md), notes)


if __name__ == '__main__':
    main()
