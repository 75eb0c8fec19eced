"""sat_caption start-up: seconds from launching `sat_caption IMAGE --checkpoint MODEL_FOLDER` until its caption line can
be read from its stdout, median of several runs, on the CPU (2 cores here).

The goal: the caption of one image within 2 s. The floor is Python importing torch: the same measurement of
`python -c "import torch; print(...)"` (launch until its line is read), which no caption can beat. Also reported: the
full process wall time of both (until the process has exited: interpreter teardown of torch's modules comes after the
caption and is not part of "prints its caption"), and which modules the captioning process imported, by cumulative
import time (`python -X importtime`), to show what is left between the floor and the caption.

Model: the trained Shapes model of `common.shapes_model` (the demo's when it exists, else one trained here once),
exported as a model folder (`sat_export`), as users receive one; the image is one Shapes test image. Runs are taken
in turns with the floor (caption, floor, caption, floor, …) after one untimed warm-up of each (bytecode caches); a
round during which other processes kept more than half a core busy is dropped and run again after a quieter moment,
within the suite's budget (`common.DISTURBED`).

Usage: .venv/bin/python bench/cpu/startup.py [--reps 5]
Writes bench/results/cpu/startup.json and .md.
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # the repository root: `bench` imports when run as a script
from bench.common import DISTURBED, OtherLoad, machine_info, md_table, save_and_show, shapes_model, wait_for_quiet

GOAL = 2.0          # sat_caption prints its caption within 2 s on 2 cores
HEAVY = ('fastai', 'timm', 'torchvision', 'matplotlib')
ENTRY = 'import sys\nfrom show_attend_tell.captioning import sat_caption\nsys.exit(sat_caption())\n'


def _command(tmp:Path)->list:
    "The installed console script when there is one (what a user runs), else the same entry point through this Python."
    script = Path(sys.executable).parent/'sat_caption'
    if script.is_file(): return [str(script)]
    (tmp/'sat_caption.py').write_text(ENTRY)
    return [sys.executable, str(tmp/'sat_caption.py')]


def time_to_line(cmd:list, expect:str, cwd)->tuple:
    "(seconds until the first stdout line, seconds until exit, that line) of one run of `cmd`; raises if it fails."
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    line = p.stdout.readline()
    t_line = time.perf_counter() - t0
    rest, err = p.communicate(timeout=300)
    t_exit = time.perf_counter() - t0
    if p.returncode != 0 or expect not in line:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {p.returncode}): {(line + rest).strip()[:300]} {err.strip()[-500:]}")
    return t_line, t_exit, line.rstrip('\n')


def import_profile(image, model, cwd, top:int=8)->tuple:
    """(the `top` packages the captioning process imports, by cumulative import time in ms (nested imports included),
    the heavy packages among all it imports) of one run under `python -X importtime`."""
    script = Path(cwd)/'sat_caption_entry.py'         # a file: fastcore's call_parse reads no arguments under `python -c`
    script.write_text(ENTRY)
    r = subprocess.run([sys.executable, '-X', 'importtime', str(script), str(image), '--checkpoint', str(model), '--device', 'cpu'],
                       capture_output=True, text=True, cwd=cwd, timeout=300)
    if r.returncode != 0: raise RuntimeError(f"sat_caption under -X importtime failed: {r.stderr.strip()[-500:]}")
    cum, own, loaded = {}, 0, set()
    for m in re.finditer(r'^import time:\s+(\d+) \|\s+(\d+) \| *(\S+)$', r.stderr, re.M):
        self_us, cum_us, name = int(m.group(1)), int(m.group(2)), m.group(3)
        loaded.add(name.split('.')[0])
        if name.startswith('show_attend_tell'): own += self_us
        elif '.' not in name: cum[name] = max(cum.get(name, 0), cum_us)          # a package's first, outermost import
    rows = sorted(cum.items(), key=lambda kv: -kv[1])[:top] + [('show_attend_tell (its own modules, self time)', own)]
    return [(name, round(us/1000)) for name, us in rows], sorted(loaded & set(HEAVY))


def run(reps:int=5, log=print)->dict:
    tmp = Path(tempfile.mkdtemp(prefix='bench_startup_'))
    try: return _run(tmp, reps, log)
    finally: shutil.rmtree(tmp, ignore_errors=True)


def _run(tmp:Path, reps:int, log)->dict:
    from show_attend_tell.export import export_model
    from show_attend_tell.shapes import make_shapes
    ckpt, _, what = shapes_model(log=log)
    model = export_model(ckpt, tmp/'model')
    make_shapes(tmp/'img', n_train=0, n_val=0, n_test=1, seed=1)
    image = next((tmp/'img'/'images').glob('test_*.png'))
    cap_cmd = _command(tmp) + [str(image), '--checkpoint', str(model), '--device', 'cpu']
    floor_cmd = [sys.executable, '-c', "import torch; print('torch imported', flush=True)"]
    for cmd, expect in ((cap_cmd, '\t'), (floor_cmd, 'torch')): time_to_line(cmd, expect, tmp)     # warm-up: bytecode, page cache
    wait_for_quiet(min(60.0, DISTURBED['budget_s']), log=log)
    cap, cap_exit, floor, floor_exit, redo_s, dropped = [], [], [], [], 0.0, 0
    while len(cap) < reps:
        load = OtherLoad().start()
        c, ce, line = time_to_line(cap_cmd, '\t', tmp)
        f, fe, _ = time_to_line(floor_cmd, 'torch', tmp)
        if load.stop() > 0.5 and redo_s < 120 and DISTURBED['budget_s'] > 0:     # another process was busy: again, later
            t0 = time.perf_counter()
            wait_for_quiet(min(30.0, DISTURBED['budget_s']), log=lambda *_: None)
            cost = time.perf_counter() - t0 + c + f
            redo_s += cost; DISTURBED['budget_s'] -= cost; DISTURBED['rounds'] += 1; dropped += 1
            continue
        cap.append(c); cap_exit.append(ce); floor.append(f); floor_exit.append(fe)
    med = {k: round(statistics.median(v), 3) for k, v in
           dict(caption=cap, caption_exit=cap_exit, torch=floor, torch_exit=floor_exit).items()}
    after_torch = round(med['caption'] - med['torch'], 3)
    log(f"sat_caption prints its caption {med['caption']:.2f} s after launch (median of {reps}); importing torch alone takes "
        f"{med['torch']:.2f} s; the process exits after {med['caption_exit']:.2f} s")
    imports, heavy = import_profile(image, model, tmp)
    info = machine_info('cpu')
    goal = dict(goal=f'sat_caption prints its caption ≤ {GOAL:g} s after launch ({os.cpu_count()} CPU cores)', value=med['caption'],
                shown=f"{med['caption']:.2f} s (torch import alone {med['torch']:.2f} s)", met=med['caption'] <= GOAL)
    data = dict(machine=info, reps=reps, goal=goal, caption_s=med['caption'], caption_all_s=[round(t, 3) for t in cap],
                process_exit_s=med['caption_exit'], torch_import_s=med['torch'], torch_import_all_s=[round(t, 3) for t in floor],
                torch_process_exit_s=med['torch_exit'], after_torch_s=after_torch, dropped_rounds=dropped,
                heavy_modules_imported=heavy, top_imports_ms=imports, checkpoint=what, command=' '.join(cap_cmd[:1] + ['IMAGE', '--checkpoint', 'MODEL', '--device', 'cpu']),
                caption=line.split('\t', 1)[1])
    table = md_table(['measure', f'seconds (median of {reps})', 'target'],
                     [('sat_caption: launch → caption line on stdout', f"{med['caption']:.2f}", f'≤ {GOAL:g}'),
                      ('python -c "import torch": launch → its line (the floor)', f"{med['torch']:.2f}", ''),
                      ('sat_caption beyond the floor (model, encoder, image, beam search)', f'{after_torch:.2f}', ''),
                      ('sat_caption: launch → process exit', f"{med['caption_exit']:.2f}", ''),
                      ('python -c "import torch": launch → process exit', f"{med['torch_exit']:.2f}", '')])
    imp = md_table(['imported by the captioning process', 'ms (cumulative)'], imports)
    md = (f"## sat_caption start-up\n\n`sat_caption IMAGE --checkpoint MODEL --device cpu` on one 224×224 Shapes image with the "
          f"trained Shapes model ({what}) as an exported model folder, beam 3, {info['cpu']}, {info['cores']} cores, CPU only. "
          f"Timed from launch until its caption line is read from its stdout, in turns with the floor (Python importing torch, "
          f"timed the same way); {dropped} disturbed round(s) dropped and rerun. Caption: \"{data['caption']}\".\n\n"
          f"**Goal: the caption within {GOAL:g} s: {med['caption']:.2f} s — {'met' if goal['met'] else 'not met'}.** "
          f"Heavy packages imported: {', '.join(heavy) or 'none'} (of {', '.join(HEAVY)}).\n\n{table}\n\n{imp}")
    return dict(name='startup', data=data, md=md)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reps', type=int, default=5)
    a = p.parse_args()
    save_and_show(run(a.reps))
