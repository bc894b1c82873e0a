"""benchmarks/device/run.sh and its table writer benchmarks/device/tables.py.

The dry run executes every benchmark at toy size on CPU (no timing is asserted, only that each one ran and
left a markdown table); the table writer is checked against hand-written markdown; the preparation's stop
on a wheel folder without the needed files is checked without any install.
"""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RUN = osp.join(ROOT, 'benchmarks', 'device', 'run.sh')
TABLES = osp.join(ROOT, 'benchmarks', 'device', 'tables.py')
EXPECTED = ('hst_efficiency', 'hst_speed_memory', 'polyhistor_batched', 'merge_speed', 'env', 'timings')


@pytest.fixture(scope='module')
def tables():
    spec = importlib.util.spec_from_file_location('device_tables', TABLES)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable)
    env.pop('OUT', None)  # the device machine's output folder: never the default here
    return env


def _table_rows(text: str):
    """(header cells, data rows as cell lists) of the first markdown table in ``text``; plain parsing."""
    lines = [ln.strip() for ln in text.splitlines()]
    for i in range(len(lines) - 1):
        if lines[i].startswith('|') and lines[i + 1].startswith('| ---'):
            cells = [lines[i].strip('|').split('|')]
            for ln in lines[i + 2:]:
                if not ln.startswith('|'):
                    break
                cells.append(ln.strip('|').split('|'))
            clean = [[c.strip() for c in row] for row in cells]
            return clean[0], clean[1:]
    return None, []


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('device')
    proc = subprocess.run(['bash', RUN, '--dry-run', '--out', str(out)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=900)
    return out, proc


def test_dry_run_writes_every_table(dry_run):
    out, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in EXPECTED:
        path = out / f'{name}.md'
        assert path.is_file(), f'{name}.md missing; run output:\n{proc.stdout[-2000:]}'
        header, rows = _table_rows(path.read_text())
        assert header is not None and len(header) >= 2, f'{name}.md has no table header'
        assert rows and all(len(r) == len(header) for r in rows), f'{name}.md: no data row or ragged rows'


def test_dry_run_tables_hold_the_measured_rows(dry_run):
    out, _ = dry_run
    # the dry run asks hst_efficiency for the hst-serial row; full is the baseline it always measures
    text = (out / 'hst_efficiency.md').read_text()
    assert '| full |' in text and '| hst-serial |' in text
    # hst_speed_memory --toy trains HST and full fine-tuning: Mask R-CNN where mmcv's ops carry CUDA, else
    # UperNet (the CPU machines' case, and the path a device run takes without CUDA ops)
    import mmcv.ops
    model = 'UperNet' if mmcv.ops.get_compiling_cuda_version() == 'not available' else 'Mask R-CNN'
    assert f'## Training step ({model}) and memory' in (out / 'hst_speed_memory.md').read_text()
    _, rows = _table_rows((out / 'hst_speed_memory.md').read_text())
    assert sorted(r[0] for r in rows) == ['full-ft', 'hst']
    _, rows = _table_rows((out / 'polyhistor_batched.md').read_text())
    assert [r[0] for r in rows] == ['batched', 'sequential']
    _, rows = _table_rows((out / 'merge_speed.md').read_text())
    assert [r[0] for r in rows] == ['plain', 'LoRA unmerged', 'LoRA merged', 'SSF unmerged', 'SSF merged']
    # every step timed and ok, plus the total
    _, rows = _table_rows((out / 'timings.md').read_text())
    status = {r[0]: r[2] for r in rows}
    assert set(status) == {'hst_efficiency', 'hst_speed_memory', 'polyhistor_batched', 'merge_speed',
                           'collect_env', 'total'}
    assert all(v == 'ok' for k, v in status.items() if k != 'total') and status['total'] == '0 failed'
    assert '| Python |' in (out / 'env.md').read_text()


def test_prepare_stops_naming_missing_wheels(tmp_path):
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    (wheels / 'mmengine-0.10.7-py3-none-any.whl').write_bytes(b'')
    env = dict(_env(), MMPEFT_SITE=str(tmp_path / 'site'))  # no earlier call's prepared folder
    proc = subprocess.run(['bash', RUN, '--out', str(tmp_path / 'out'), '--wheels', str(wheels)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    for name in ('mmdet-3.3.0', 'mmsegmentation-1.2.2', 'mmpretrain-1.2.0', 'mmcv-2.1.0.tar.gz', 'fetch_wheels.sh'):
        assert name in proc.stderr, proc.stderr
    assert 'mmengine' not in proc.stderr.split('lacks:')[1].split(';')[0]  # present: not reported missing
    assert 'no benchmark was run' in proc.stderr
    assert not (tmp_path / 'out' / 'hst_efficiency.md').exists()
    _, rows = _table_rows((tmp_path / 'out' / 'timings.md').read_text())
    assert rows[-1][0] == 'prepare' and rows[-1][2].startswith('failed')


def test_over_budget_steps_are_stopped_and_reported(tmp_path):
    """Device mode on an already prepared folder (a warm machine): each step stopped at a 1 s budget, the
    later steps still started, the logs packed into one archive."""
    site = tmp_path / 'site'
    site.mkdir()
    (site / '.mmpeft-ready').touch()
    steps = ('hst_efficiency', 'hst_speed_memory', 'polyhistor_batched', 'merge_speed', 'collect_env')
    env = dict(_env(), MMPEFT_SITE=str(site), **{f'MMPEFT_BUDGET_{s.upper()}': '1' for s in steps})
    out = tmp_path / 'out'
    proc = subprocess.run(['bash', RUN, '--out', str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert 'preparation skipped' in proc.stdout
    _, rows = _table_rows((out / 'timings.md').read_text())
    assert [r[0] for r in rows] == list(steps) + ['total']
    assert all(r[2] == 'stopped at its 1s budget' for r in rows[:-1]) and rows[-1][2] == '5 failed'
    assert sorted(p.name for p in out.iterdir()) == ['logs.tar.gz', 'timings.md']


def test_unknown_argument_is_named(tmp_path):
    proc = subprocess.run(['bash', RUN, '--out', str(tmp_path), '--fast'], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and '--fast' in proc.stderr


def test_table_renders_columns_in_first_seen_order(tables):
    rows = {'a': {'x': 1.23456, 'nested': {'k': 1}, 'y': None}, 'b': {'x': 2, 'z': True}}
    assert tables.table(rows) == [
        '| row | x | y | z |',
        '| --- | ---: | ---: | ---: |',
        '| a | 1.235 | - | - |',
        '| b | 2 | - | yes |',
    ]
    assert tables.table({}) == []


def test_data_rows_skip_header_and_separator(tables):
    lines = ['text', '| h | v |', '| --- | ---: |', '| a | 1 |', '', '| h2 |', '| --- |']
    assert tables.data_rows(lines) == 1


def test_render_rejects_source_without_rows(tables, tmp_path):
    src = tmp_path / 'empty.json'
    src.write_text(json.dumps({'args': {}}))
    with pytest.raises(tables.TableError, match='empty.json'):
        tables.render('hst_efficiency', str(src), 'x')
    rc = tables.main(['hst_speed_memory', str(src), str(tmp_path / 'o.md')])
    assert rc == 1 and not (tmp_path / 'o.md').exists()


def test_polyhistor_and_merge_and_timings(tables, tmp_path, monkeypatch):
    monkeypatch.setenv('MMPEFT_BENCH_MACHINE', 'NVIDIA H200, 16 CPU cores')
    src = tmp_path / 'p.json'
    src.write_text(json.dumps({'config': 'c.py', 'step': 'train', 'batch_size': 2, 'tasks': 4, 'size': 512,
                               'device': 'cuda', 'batched_s': 0.5, 'sequential_s': 1.5, 'speedup': 3.0}))
    text = tables.render('polyhistor_batched', str(src), 'Polyhistor')
    assert text.startswith('# Polyhistor\n') and 'NVIDIA H200, 16 CPU cores' in text
    assert '| batched | 0.5 | - | - |' in text and '| sequential | 1.5 | - | - |' in text
    assert '| speedup | 3 |' in text

    log = tmp_path / 'm.log'
    log.write_text('noise\nLoRA: merged vs unmerged max abs difference 1.00e-06\n\nvit, batch 1, 32x32, cpu, '
                   '1 threads, 2 rounds of one forward\n| variant | median (ms) |\n| --- | ---: |\n| plain | 4.9 |\n')
    text = tables.render('merge_speed', str(log), 'm')
    assert '| variant | median (ms) |\n| --- | ---: |\n| plain | 4.9 |' in text
    assert '- LoRA: merged vs unmerged max abs difference 1.00e-06' in text

    tsv = tmp_path / 't.tsv'
    tsv.write_text('prepare_mmcv\t250.0\tok\nhst_efficiency\t150.2\tstopped at its 150s budget\n')
    text = tables.render('timings', str(tsv), 't')
    assert '| prepare_mmcv | 250 | ok |' in text and '| hst_efficiency | 150.2 | stopped at its 150s budget |' in text


FAKE_PYTHON = """#!/usr/bin/env bash
# run.sh's interpreter with pip faked: each pip call is recorded with the build variables it saw. The mmcv
# build follows mmcv 2.1.0's setup.py: CUDA kernels when FORCE_CUDA=1 or a GPU is visible (the fake machine
# has one unless CUDA_VISIBLE_DEVICES is set empty); such a build outlives any budget (a slow CUDA build),
# or with FAKE_CUDA_BUILD=ok leaves a mmcv/ marked `cuda` in the target at once. Everything else is the real
# python (whose mmcv has no CUDA ops: a CUDA build's import check fails).
if [ "$1 $2" = "-m pip" ]; then
  echo "pip FORCE_CUDA=${FORCE_CUDA:-} ARCH=${TORCH_CUDA_ARCH_LIST:-} VISIBLE=${CUDA_VISIBLE_DEVICES-unset}" \\
    "OPS=${MMPEFT_MMCV_OPS:-} ${*: -1}" >> "$CALLS"
  if [[ "$*" == *mmcv-2.1.0.tar.gz* ]]; then
    target=""; prev=""
    for a in "$@"; do [ "$prev" = --target ] && target="$a"; prev="$a"; done
    if [[ "${FORCE_CUDA:-}" == 1 || "${CUDA_VISIBLE_DEVICES-unset}" != "" ]]; then
      [ "${FAKE_CUDA_BUILD:-slow}" = ok ] || exec sleep 30
      mkdir -p "$target/mmcv" && echo cuda > "$target/mmcv/built"
    else
      mkdir -p "$target/mmcv" && echo cpu > "$target/mmcv/built"
    fi
  fi
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


@pytest.fixture
def fake_gpu_machine(tmp_path):
    """(environment, calls file): a wheel folder with the names the preparation checks, a python whose pip is
    faked, a visible 9.0 GPU with torch's CUDA 13.0 and a matching CUDA 13.0 toolkit (cuda_build_plan's
    test variables), an empty site folder."""
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    for name in ('mmengine-0.10.7', 'mmdet-3.3.0', 'mmsegmentation-1.2.2', 'mmpretrain-1.2.0', 'setuptools-81.0.0'):
        (wheels / f'{name}-py3-none-any.whl').write_bytes(b'')
    (wheels / 'mmcv-2.1.0.tar.gz').write_bytes(b'')
    toolkit = tmp_path / 'cuda-13.0'
    (toolkit / 'bin').mkdir(parents=True)
    (toolkit / 'include').mkdir()
    (toolkit / 'include' / 'cuda_runtime.h').write_text('')
    nvcc = toolkit / 'bin' / 'nvcc'
    nvcc.write_text('#!/usr/bin/env bash\necho "Cuda compilation tools, release 13.0, V13.0.88"\n')
    python = tmp_path / 'python'
    python.write_text(FAKE_PYTHON)
    for exe in (nvcc, python):
        exe.chmod(0o755)
    calls = tmp_path / 'calls.txt'
    env = dict(_env(), PYTHON=str(python), REAL_PYTHON=sys.executable, CALLS=str(calls),
               MMPEFT_SITE=str(tmp_path / 'site'), MMPEFT_WHEELS=str(wheels), CUDA_HOME=str(toolkit),
               MMPEFT_FAKE_CUDA_DEVICES='9.0', MMPEFT_FAKE_TORCH_CUDA='13.0', MMPEFT_BUDGET_MMCV='2')
    return env, calls


def _prepare(tmp_path, env, *args):
    out = tmp_path / 'out'
    proc = subprocess.run(['bash', RUN, '--prepare-only', '--out', str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    _, rows = _table_rows((out / 'timings.md').read_text())
    return proc, {r[0]: r[2] for r in rows}


def _builds(calls):
    return [ln for ln in calls.read_text().splitlines() if ln.endswith('mmcv-2.1.0.tar.gz')]


def test_slow_cuda_build_falls_back_to_ops_without_cuda(tmp_path, fake_gpu_machine):
    env, calls = fake_gpu_machine
    proc, status = _prepare(tmp_path, env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert status == {'prepare_wheels': 'ok', 'prepare_mmcv': 'stopped at its 2s budget',
                      'prepare_mmcv_cpu': 'ok', 'prepare_check_cpu': 'ok'}
    # the second build: no FORCE_CUDA and the GPU hidden, or mmcv's setup.py would compile CUDA again
    assert [b.split(' OPS=')[0] for b in _builds(calls)] == ['pip FORCE_CUDA=1 ARCH=9.0 VISIBLE=unset',
                                                             'pip FORCE_CUDA= ARCH= VISIBLE=']
    assert ' OPS=cpu ' in _builds(calls)[1]
    assert (tmp_path / 'site' / '.mmpeft-ready').read_text().strip() == 'cpu'


def test_cuda_build_that_does_not_import_falls_back(tmp_path, fake_gpu_machine):
    env, calls = fake_gpu_machine
    proc, status = _prepare(tmp_path, dict(env, FAKE_CUDA_BUILD='ok'))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert status == {'prepare_wheels': 'ok', 'prepare_mmcv': 'ok', 'prepare_check': 'failed (exit 1)',
                      'prepare_mmcv_cpu': 'ok', 'prepare_check_cpu': 'ok'}
    assert 'mmcv ops were built without CUDA' in proc.stdout  # the check's message, in the step's log tail
    assert (tmp_path / 'site' / 'mmcv' / 'built').read_text().strip() == 'cpu'  # the CUDA build is replaced


def test_cuda_mode_stops_instead_of_falling_back(tmp_path, fake_gpu_machine):
    env, calls = fake_gpu_machine
    # an opt-out inherited from the environment does not count
    proc, status = _prepare(tmp_path, dict(env, MMPEFT_MMCV_WITHOUT_CUDA='1'), '--mmcv-ops', 'cuda')
    assert proc.returncode == 1
    assert status['prepare_mmcv'] == 'stopped at its 2s budget' and 'prepare_mmcv_cpu' not in status
    assert len(_builds(calls)) == 1 and _builds(calls)[0].startswith('pip FORCE_CUDA=1 ARCH=9.0')
    assert not (tmp_path / 'site' / '.mmpeft-ready').exists()


def test_cpu_mode_and_a_missing_compiler_build_once_without_cuda(tmp_path, fake_gpu_machine):
    env, calls = fake_gpu_machine
    proc, status = _prepare(tmp_path, env, '--mmcv-ops', 'cpu')
    assert proc.returncode == 0 and status['prepare_mmcv'] == 'ok' and 'prepare_mmcv_cpu' not in status
    # a warm machine's folder without CUDA ops: reused by auto, prepared again for --mmcv-ops cuda
    proc, _ = _prepare(tmp_path, env)
    assert 'preparation skipped' in proc.stdout and len(_builds(calls)) == 1
    proc, _ = _prepare(tmp_path, env, '--mmcv-ops', 'cuda')
    assert 'preparing again' in proc.stdout and proc.returncode == 1 and len(_builds(calls)) == 2
    # auto where no compiler matches torch's CUDA (a version no machine has: this one has a CUDA 13.0 nvcc):
    # the plan's error, then ops without CUDA
    env = dict(env, CUDA_HOME=str(tmp_path / 'nowhere'), MMPEFT_FAKE_TORCH_CUDA='12.99')
    proc, status = _prepare(tmp_path, env)
    assert proc.returncode == 0 and status['prepare_mmcv'] == 'ok', proc.stderr
    assert 'no CUDA 12.99 compiler' in proc.stderr
    builds = _builds(calls)
    assert len(builds) == 3 and all(b.startswith('pip FORCE_CUDA= ARCH= VISIBLE= OPS=cpu') for b in builds[::2])


def test_unknown_mmcv_ops_mode_is_named(tmp_path):
    proc = subprocess.run(['bash', RUN, '--out', str(tmp_path), '--mmcv-ops', 'gpu'], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and '--mmcv-ops gpu' in proc.stderr and 'auto, cuda or cpu' in proc.stderr
