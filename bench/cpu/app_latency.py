"""sat_app start-up and response time: seconds from launching `sat_app` until it serves its page, and seconds to answer
a 224×224 upload with beam 3 (through Gradio's HTTP API, as the page's Caption button does), median of several.

Checkpoint: the demo's demo_out/run_soft/best.pth when present, else a random `tiny` decoder over the real
EfficientNet-Lite0 encoder (latency does not depend on the weights).

Usage: .venv/bin/python bench/cpu/app_latency.py
Writes bench/results/cpu/app_latency.json and .md.
"""
import os, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root: `bench` imports when run as a script
from bench.common import REPO, feat_dim, save_and_show


def _checkpoint(folder):
    demo = REPO/'demo_out'/'run_soft'/'best.pth'
    if demo.is_file(): return demo, 'demo_out/run_soft/best.pth'
    import torch
    from show_attend_tell.checkpoint import save_checkpoint
    from show_attend_tell.config import preset
    from show_attend_tell.decoder import ShowAttendTell
    from show_attend_tell.vocab import Vocab
    vocab = Vocab(['<pad>', '<start>', '<end>', '<unk>'] + [f'w{i}' for i in range(40)])
    cfg = preset('tiny')
    torch.manual_seed(0)
    model = ShowAttendTell(cfg, len(vocab), feat_dim=feat_dim(cfg.encoder))
    save_checkpoint(folder/'random_tiny.pth', model, cfg, vocab)
    return folder/'random_tiny.pth', f'random tiny decoder, {cfg.encoder} encoder'


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _serves(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r: return r.status == 200
    except OSError: return False


def run(reps:int=5, log=print)->dict:
    os.environ['GRADIO_ANALYTICS_ENABLED'] = 'False'
    from PIL import Image
    from gradio_client import Client, handle_file
    tmp = Path(tempfile.mkdtemp(prefix='bench_app_'))
    ckpt, what = _checkpoint(tmp)
    img = tmp/'upload.png'
    Image.fromarray((np.random.default_rng(0).random((224, 224, 3))*255).astype(np.uint8)).save(img)
    (tmp/'entry.py').write_text('from show_attend_tell.app import sat_app\nsat_app()\n')
    port = _free_port(); url = f'http://127.0.0.1:{port}/'
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, str(tmp/'entry.py'), '--checkpoint', str(ckpt), '--port', str(port), '--device', 'cpu'],
                         cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        while not _serves(url):
            if p.poll() is not None or time.perf_counter() - t0 > 300: raise RuntimeError('sat_app did not start')
            time.sleep(0.1)
        startup = time.perf_counter() - t0
        log(f"sat_app serves its page after {startup:.1f} s")
        client = Client(url, verbose=False)
        times = []
        for i in range(reps + 1):
            t = time.perf_counter()
            client.predict(str(ckpt), handle_file(str(img)), 3, 'soft / expected', api_name='/caption')
            if i: times.append(time.perf_counter() - t)       # the first call also loads the checkpoint
        resp = statistics.median(times)
        log(f"a 224×224 upload with beam 3 is answered in {resp:.2f} s (median of {reps})")
    finally:
        p.terminate(); p.wait(20)
    data = dict(startup_s=round(startup, 2), response_s=round(resp, 3), response_all_s=[round(t, 3) for t in times],
                checkpoint=what, threads=os.cpu_count())
    md = (f"## sat_app: start-up and response time\n\n"
          f"| measure | seconds | target |\n|---|---|---|\n| start-up until the page is served | {startup:.1f} | 20 |\n"
          f"| 224×224 upload, beam 3, answered (median of {reps}) | {resp:.2f} | 2 |\n\nCheckpoint: {what}; CPU only.")
    return dict(name='app_latency', data=data, md=md)


if __name__ == '__main__':
    save_and_show(run())
