"Helpers shared by the benchmark scripts: what machine ran them, and writing JSON + markdown atomically."
import json, os, platform, time
from pathlib import Path

import torch


def machine_info():
    "What the numbers were measured on; 'cpu only' when no GPU was used."
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return dict(date=time.strftime('%Y-%m-%d %H:%M'), python=platform.python_version(), torch=torch.__version__,
                cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                torch_threads=torch.get_num_threads(), device=gpu or 'cpu only')


def _atomic_write(path: Path, text: str):
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(text)
    os.replace(tmp, path)


def write_result(out_dir, name, data: dict, table_md: str, notes: str = ''):
    "Write `<name>.json` and `<name>.md` (a table with notes) into `out_dir`."
    out = Path(out_dir); out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / f'{name}.json', json.dumps(data, indent=2))
    _atomic_write(out / f'{name}.md', (f'{notes}\n\n' if notes else '') + table_md + '\n')
