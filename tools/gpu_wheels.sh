#!/usr/bin/env bash
# The wheels for the offline GPU check (tools/gpu_check.sh on a GPU machine that has no network; its header gives the steps).
# Run it on a machine where pip reaches the package registry: `make gpu-wheels`, or `bash tools/gpu_wheels.sh [DIR]` (default
# DIR: .whl, which .gitignore ignores), then copy DIR with the tree to the GPU machine. It downloads, for CPython 3.12 on
# manylinux x86_64, every package the GPU checks import (the #| gpu notebooks under nbdev_test, `pytest -m gpu tests`,
# `bench/run.py --device cuda`) that the GPU machine's python3 lacks. That python3 is assumed to be a CUDA PyTorch
# environment (Python 3.12) that already has torch, torchvision, numpy, pandas, scipy, scikit-learn, scikit-image,
# matplotlib, pillow, pyyaml, requests, rich, safetensors, timm, pytest and the rest of IMAGE below; for another one, set
# GPU_WHEELS_IMAGE to the names of its packages (`python3 -m pip list --format freeze` there, the names before ==).
# Versions: settings.ini's pins where it pins a package (PINNED), else the versions `make install` resolves (so the CPU tests
# ran with the same code). Left out on purpose (SKIPPED, with the reason): packages some wheel declares but nothing on the GPU
# checks' path imports. pycocoevalcap is carried as pycocoevalcap-1.2+nojava, its Python code without the jars and METEOR's
# 60 MB paraphrase table: the GPU checks import it (show_attend_tell.metrics, through learner) and score BLEU in pure Python,
# never through Java.
# The run ends by checking that every requirement of every wheel is carried, in IMAGE or in SKIPPED, that carried versions meet
# the specifiers, that no package comes twice, and that the whole stays under GPU_WHEELS_MAX_MIB (default 40); it prints the
# list and the size.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEST=${1:-.whl}
PY=${PYTHON:-python3}
MAX_MIB=${GPU_WHEELS_MAX_MIB:-40}

# name (version from settings.ini's requirements / dev_requirements)
PINNED=(fastai fastcore fastprogress nbdev execnb pycocotools)
# name==version: the packages above need them and the image lacks them (versions as `make install` resolves them)
DEPS=(
    fastdownload==0.0.8 fasttransform==0.0.2 plum-dispatch==2.10.1 beartype==0.23.1    # fastai (fastai.imports: plum, fasttransform)
    python-fasthtml==0.14.5 starlette==1.10.0 itsdangerous==2.2.0                       # fastprogress (from fasthtml.common import *)
    ghapi==2.0.3 fastspec==0.1.0 fastgit==0.1.4 asttokens==3.0.2 astunparse==1.6.3 watchdog==7.1.0   # nbdev
    ipython==9.18.1 ipython-pygments-lexers==1.1.1 jedi==0.20.1 parso==0.8.7 matplotlib-inline==0.2.2  # execnb (IPython's shell)
    pexpect==4.9.0 ptyprocess==0.7.0 prompt-toolkit==3.0.53 wcwidth==0.9.4 stack-data==0.6.3 executing==2.3.0 pure-eval==0.2.4
    traitlets==5.16.1
)
# declared by a carried wheel, not imported on the GPU checks' path (checked with `python -X importtime` of each entry point)
SKIPPED=(
    "spacy: fastai imports it only in fastai.text"
    "oauthlib: fasthtml.oauth, which fasthtml.common does not import"
    "uvicorn: fasthtml's server (serve), imported when a server starts"
    "httpx2: fasthtml's test client and OAuth, imported inside functions"
    "fastlite: fasthtml's database helper, imported inside a function"
    "python-multipart: starlette's form parsing, imported when a form is parsed"
    "beautifulsoup4: fasthtml's html2ft, imported inside the function"
)
# the packages of the GPU machine's python3 (a CUDA PyTorch image with Python 3.12); GPU_WHEELS_IMAGE replaces the list
IMAGE=${GPU_WHEELS_IMAGE:-"absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile
nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx
optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark
pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision
tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt
xarray xxhash yarl zipp"}

pin() {   # the version settings.ini pins package $1 to
    local v
    v=$(grep -E '^(requirements|dev_requirements) *=' settings.ini | tr ' ' '\n' | grep -iE "^$1==" | head -1 | cut -d= -f3)
    [ -n "$v" ] || { echo "error: settings.ini pins no version of $1 (requirements / dev_requirements): add $1==VERSION there" >&2; exit 1; }
    echo "$1==$v"
}
SPECS=()
for p in "${PINNED[@]}"; do SPECS+=("$(pin "$p")"); done
SPECS+=("${DEPS[@]}")
COCOEVAL=$(pin pycocoevalcap)

mkdir -p "$DEST"
rm -f "$DEST"/*.whl                    # two versions of one package would stop the install there
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
PIP=("$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
     --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
echo "gpu_wheels: downloading ${#SPECS[@]} wheels (CPython 3.12, manylinux x86_64) into $DEST/"
quiet() { grep -v 'is ignored: it is neither a file nor a directory' >&2 || true; }   # a pip.conf naming absent local indexes
"${PIP[@]}" -d "$DEST" "${SPECS[@]}" 2> >(quiet)
echo "gpu_wheels: $COCOEVAL without its Java parts"
"${PIP[@]}" -d "$TMP" "$COCOEVAL" 2> >(quiet)

"$PY" - "$DEST" "$TMP" "$MAX_MIB" "$IMAGE" "${SKIPPED[@]}" <<'EOF'
import base64, hashlib, re, sys, zipfile
from email.parser import HeaderParser
from pathlib import Path
try: from packaging.requirements import Requirement; from packaging.utils import canonicalize_name; from packaging.version import Version
except ImportError: from pip._vendor.packaging.requirements import Requirement; from pip._vendor.packaging.utils import canonicalize_name; from pip._vendor.packaging.version import Version

dest, tmp, max_mib, image, skipped = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(), sys.argv[5:]

# pycocoevalcap 1.2 without Java: keep its .py files, drop the jars and data (100 MB), version 1.2+nojava
src, = tmp.glob('pycocoevalcap-*.whl')
ver = src.name.split('-')[1]
new_ver = f'{ver}+nojava'
old_info, new_info = f'pycocoevalcap-{ver}.dist-info', f'pycocoevalcap-{new_ver}.dist-info'
out = dest/f'pycocoevalcap-{new_ver}-py3-none-any.whl'
records = []
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        name = info.filename
        if info.is_dir() or name.endswith('/RECORD'): continue
        if not name.startswith(old_info + '/') and not name.endswith('.py'): continue     # jars, METEOR's data, ...
        data = zin.read(name)
        if name.startswith(old_info + '/'):
            name = new_info + name[len(old_info):]
            if name.endswith('/METADATA'):
                data = re.sub(rb'^Version: .*$', f'Version: {new_ver}'.encode(), data, count=1, flags=re.M)
                data += b'\n(show_attend_tell: repacked without the Java jars and METEOR data, for the offline GPU check)\n'
            if name.endswith('/WHEEL'): data = data.replace(b'Root-Is-Purelib: false', b'Root-Is-Purelib: true')
        zout.writestr(zipfile.ZipInfo(name, date_time=info.date_time), data, zipfile.ZIP_DEFLATED)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
        records.append(f'{name},sha256={digest},{len(data)}')
    records.append(f'{new_info}/RECORD,,')
    zout.writestr(f'{new_info}/RECORD', '\n'.join(records) + '\n')
assert not any(n.endswith(('.jar', '.gz')) for n in zipfile.ZipFile(out).namelist())

# what is carried, and whether every requirement is met
env = dict(python_version='3.12', python_full_version='3.12.3', sys_platform='linux', platform_system='Linux',
           platform_machine='x86_64', implementation_name='cpython', platform_python_implementation='CPython', os_name='posix',
           platform_release='', platform_version='', implementation_version='3.12.3', extra='')
wheels, carried, problems = sorted(dest.glob('*.whl')), {}, []
reqs = {}
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = HeaderParser().parsestr(z.read(next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))).decode())
    name = canonicalize_name(meta['Name'])
    if name in carried: problems.append(f'{name} twice: {carried[name][1].name} and {w.name}')
    carried[name] = (Version(meta['Version']), w)
    reqs[name] = meta.get_all('Requires-Dist') or []
skip = {canonicalize_name(s.split(':')[0]): s for s in skipped}
image = {canonicalize_name(n) for n in image}
for name, rs in reqs.items():
    for r in map(Requirement, rs):
        if r.marker is not None and not r.marker.evaluate(env): continue        # extras, other platforms and Pythons
        dep = canonicalize_name(r.name)
        if dep in carried:
            v = carried[dep][0]
            if dep == 'pycocoevalcap': v = Version(str(v).split('+')[0])
            if r.specifier and not r.specifier.contains(v, prereleases=True):
                problems.append(f'{name} needs {r}, and {dep} {v} is carried')
        elif dep not in image and dep not in skip:
            problems.append(f'{name} needs {r}: carry it (DEPS), or add it to SKIPPED with the reason nothing imports it')
total = sum(w.stat().st_size for w in wheels)
for w in wheels: print(f'  {w.stat().st_size / 2**20:6.2f} MiB  {w.name}')
print(f'gpu_wheels: {len(wheels)} wheels, {total / 2**20:.1f} MiB in {dest}/ (left out: {"; ".join(skipped)})')
if total > max_mib * 2**20: problems.append(f'{total / 2**20:.1f} MiB is over GPU_WHEELS_MAX_MIB={max_mib:g}')
for p in problems: print(f'error: {p}', file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
