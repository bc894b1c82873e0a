"""The built-in default main job: pretrain a tiny Swin, adapt it frozen with Polyhistor-Lite, compare.

    python tools/demo/run_demo.py [--work-dir work_dirs/demo] [--iters N] [--pretrain-iters N]

1. Pretraining (cached): ``configs/demo/pretrain_swin-tiny_synthetic-semseg-64x64.py`` trains the tiny
   Swin from scratch on synthetic images of their own (no download is possible); its weights go to
   ``WORK_DIR/pretrain/pretrained_swin-tiny.pth``. A later run reuses them while the pretraining
   config, its iterations and the data folder are unchanged.
2. Adaptation: Polyhistor-Lite, decoders only and multi-task full fine-tuning
   (``configs/demo/*_swin-tiny_synthetic-mt-64x64.py``) start from those weights, train on the
   synthetic PASCAL_MT copy (4 tasks) with ``tools/train.py`` and are evaluated with ``tools/test.py``.
   They run side by side, ``--jobs`` at a time (default: one per core, at most three), each with
   ``cores / jobs`` threads (``OMP_NUM_THREADS``, unless set already): a model this small keeps two
   threads only partly busy. On the 2-core machine a run on one thread beside another takes 1.1-1.3x
   the seconds per iteration it takes alone on two (Polyhistor-Lite 0.53 vs 0.40, decoders only 0.19
   vs 0.16, full fine-tuning 0.28 vs 0.25), so two side by side finish about 1.6x sooner.
3. Export: Polyhistor-Lite's trained result is written as a shareable adapter
   (``WORK_DIR/polyhistor-lite/adapter``: ``adapter.safetensors`` + ``adapter_config.json``) by
   ``tools/model_converters/export_adapter.py``.
4. Report: trainable parameters (Encoder / All, from count_params) and the four task metrics per
   method, with delta_m against multi-task full fine-tuning measured in the same run (the paper's
   Swin-T single-task numbers mean nothing on synthetic data), printed and written to
   ``WORK_DIR/results.md``; PNGs of the predictions of the re-loaded adapter (pretrained tiny Swin +
   ``load_adapter``) in ``WORK_DIR/vis``.

Each phase prints one line; the tools' full output (mmengine's logs) goes to ``*.log`` files in the
work dirs, and a failing phase prints the end of its log.
"""
import argparse
import contextlib
import hashlib
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PRETRAIN_CFG = 'configs/demo/pretrain_swin-tiny_synthetic-semseg-64x64.py'
PRETRAIN_ITERS = 1000
METHODS: List[Tuple[str, str, str]] = [
    # name, config, key of the pretrained checkpoint in the config
    ('Polyhistor-Lite', 'configs/demo/polyhistor-lite_swin-tiny_synthetic-mt-64x64.py',
     'model.backbone.init_cfg.checkpoint'),
    ('Decoders only', 'configs/demo/decoders-only_swin-tiny_synthetic-mt-64x64.py',
     'model.backbone.backbone.init_cfg.checkpoint'),
    ('MT full fine-tuning', 'configs/demo/mt-full-ft_swin-tiny_synthetic-mt-64x64.py',
     'model.backbone.backbone.init_cfg.checkpoint'),
]
# metric, higher is better
METRICS = [('semseg/mIoU', True), ('parts/mIoU', True), ('sal/maxIoU', True), ('normals/mean', False)]
START = time.time()
T, R = TypeVar('T'), TypeVar('R')
_PRINT = threading.Lock()  # progress lines come from the threads of the side-by-side runs
_LOG = []  # the open file of WORK_DIR/demo.log: what in-process imports and loggers print


@contextlib.contextmanager
def quiet():
    """Send what mmengine / mmpeft print in this process (warnings, log lines) to ``WORK_DIR/demo.log``."""
    if not _LOG:
        yield
        return
    with contextlib.redirect_stdout(_LOG[0]), contextlib.redirect_stderr(_LOG[0]):
        yield
    _LOG[0].flush()


def progress(text: str) -> None:
    """One line per phase: ``[mm:ss] text`` (minutes since the demo started)."""
    sec = int(time.time() - START)
    with _PRINT:
        sys.stdout.write(f'[{sec // 60:2d}:{sec % 60:02d}] {text}\n')
        sys.stdout.flush()


def run(cmd: List[str], log: str, env: Optional[Dict[str, str]] = None) -> None:
    """Run ``cmd`` in the repository root with its output in ``log``; on failure show the log's end."""
    os.makedirs(osp.dirname(log), exist_ok=True)
    with open(log, 'w') as f:
        f.write('+ ' + ' '.join(cmd) + '\n')
        f.flush()
        res = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if res.returncode != 0:
        with open(log) as f:
            tail = f.readlines()[-40:]
        sys.stderr.write(''.join(tail))
        raise SystemExit(f'demo step failed (exit {res.returncode}): {" ".join(cmd)}\nfull log: {log}')


def data_options(data_dir: str, name: str) -> List[str]:
    if not data_dir:
        return []
    root = osp.join(data_dir, name)
    return [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]


def iters_options(iters: int) -> List[str]:
    return [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'param_scheduler.0.end={iters}', f'default_hooks.checkpoint.interval={iters}']


def cache_key(iters: int, data_dir: str = None) -> str:
    """What decides the pretrained weights: the resolved pretraining config, iterations, data."""
    with quiet():
        from mmengine.config import Config
        text = Config.fromfile(osp.join(ROOT, PRETRAIN_CFG)).pretty_text
    return hashlib.sha256(f'{text}\n{iters} {data_dir}'.encode()).hexdigest()


def pretrain(work_dir: str, iters: int, data_dir: str = None) -> str:
    """Train the tiny Swin once; return the path of its weights (cached, see :func:`cache_key`)."""
    out = osp.join(work_dir, 'pretrain', 'pretrained_swin-tiny.pth')
    key = cache_key(iters, data_dir)
    stamp = out + '.key'
    if osp.isfile(out) and osp.isfile(stamp) and open(stamp).read() == key:
        progress(f'pretrain: cached tiny Swin {out} (delete it to pretrain again)')
        return out
    run_dir = osp.join(work_dir, 'pretrain', 'run')
    if osp.isdir(run_dir):
        shutil.rmtree(run_dir)
    t0 = time.time()
    run([sys.executable, 'tools/train.py', PRETRAIN_CFG, '--work-dir', run_dir,
         '--cfg-options', *iters_options(iters), *data_options(data_dir, 'synthetic_pascal_mt_pretrain')],
        osp.join(run_dir, 'train.log'))
    last = open(osp.join(run_dir, 'last_checkpoint')).read().strip()
    with quiet():
        from mmengine.runner.checkpoint import save_checkpoint

        import mmpeft  # noqa: F401  (atomic save)
        from mmpeft.utils.checkpoint_io import load_checkpoint_file
        ckpt = load_checkpoint_file(last)
        backbone = {k: v for k, v in ckpt['state_dict'].items() if k.startswith('backbone.')}
        save_checkpoint(dict(meta=dict(source=last, config=PRETRAIN_CFG), state_dict=backbone), out)
    with open(stamp, 'w') as f:
        f.write(key)
    progress(f'pretrain: tiny Swin from scratch, {iters} iterations, {time.time() - t0:.0f} s -> {out}')
    return out


def adapt(method: Tuple[str, str, str], work_dir: str, weights: str, data_opts: List[str],
          iters: Optional[int], env: Dict[str, str]) -> dict:
    """Train one method of :data:`METHODS` with ``tools/train.py`` and test it with ``tools/test.py``."""
    name, config, key = method
    slug = osp.basename(config).split('_')[0]
    run_dir = osp.join(work_dir, slug)
    opts = [f'{key}={weights}', *data_opts] + (iters_options(iters) if iters else [])
    t0 = time.time()
    run([sys.executable, 'tools/train.py', config, '--work-dir', run_dir, '--cfg-options', *opts],
        osp.join(run_dir, 'train.log'), env)
    t1 = time.time()
    last = open(osp.join(run_dir, 'last_checkpoint')).read().strip()
    metrics_file = osp.join(run_dir, 'test_metrics.json')
    run([sys.executable, 'tools/test.py', config, last, '--work-dir', run_dir, '--out', metrics_file,
         '--cfg-options', f'{key}={weights}', *data_opts], osp.join(run_dir, 'test.log'), env)
    metrics = json.load(open(metrics_file))
    progress(f'{name}: trained {t1 - t0:.0f} s, tested {time.time() - t1:.0f} s: {short(metrics)}')
    return dict(name=name, config=config, key=key, slug=slug, checkpoint=last, metrics=metrics,
                size=os.path.getsize(last))


def side_by_side(fn: Callable[[T], R], items: Sequence[T], jobs: int) -> List[R]:
    """``[fn(item) for item in items]``, ``jobs`` calls at a time in threads, results in the order of ``items``.

    After a call fails (or on Ctrl-C) the items not started yet are not started; the calls running finish
    and the first failure in the order of ``items`` is raised.
    """
    failed = threading.Event()

    def call(item: T) -> Optional[R]:
        if failed.is_set():
            return None
        try:
            return fn(item)
        except BaseException:
            failed.set()
            raise

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(call, item) for item in items]
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [f.result() for f in futures]


def cores() -> int:
    """The cores this process may run on (its affinity, which a container or ``taskset`` may limit)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


def job_env(jobs: int) -> Dict[str, str]:
    """The environment of the adaptation runs when ``jobs`` of them run at once: ``cores // jobs``
    threads each, unless ``OMP_NUM_THREADS`` is set already."""
    env = dict(os.environ)
    if jobs > 1 and 'OMP_NUM_THREADS' not in env:
        env['OMP_NUM_THREADS'] = str(max(1, cores() // jobs))
    return env


def trainable(config: str) -> Tuple[float, float]:
    sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
    with quiet():
        from count_params import model_counts
        c = model_counts(osp.join(ROOT, config))
    return c.get('Encoder', dict(trainable=0))['trainable'] / 1e6, c['All']['trainable'] / 1e6


def delta_m(metrics: Dict[str, float], ref: Dict[str, float]) -> float:
    """Mean relative difference to ``ref`` over the four tasks in percent (lower-is-better flipped)."""
    terms = []
    for key, higher in METRICS:
        sign = 1.0 if higher else -1.0
        terms.append(sign * (metrics[key] - ref[key]) / ref[key] * 100.0)
    return sum(terms) / len(terms)


def short(metrics: Dict[str, float]) -> str:
    return ', '.join(f'{k.replace("/", " ")} {metrics[k]:.1f}' for k, _ in METRICS)


def main() -> None:
    p = argparse.ArgumentParser(description='mmpeft demo: Polyhistor-Lite vs decoders only vs full fine-tuning')
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument('--iters', type=int, default=None, help='adaptation iterations (default: the configs\')')
    p.add_argument('--pretrain-iters', type=int, default=PRETRAIN_ITERS)
    p.add_argument('--num-vis', type=int, default=4)
    p.add_argument('--jobs', type=int, default=min(len(METHODS), cores()),
                   help='methods adapted at a time (default: one per core, at most %(default)s here)')
    p.add_argument('--data-dir', default=None,
                   help="where the synthetic data go (default: the configs' data/)")
    args = p.parse_args()
    work_dir = osp.abspath(osp.join(ROOT, args.work_dir))
    data_dir = osp.abspath(args.data_dir) if args.data_dir else None
    os.makedirs(work_dir, exist_ok=True)
    _LOG.append(open(osp.join(work_dir, 'demo.log'), 'a'))
    if args.jobs < 1:
        p.error(f'--jobs {args.jobs}: give 1 or more')
    jobs = min(args.jobs, len(METHODS))
    env = job_env(jobs)
    threads = env.get('OMP_NUM_THREADS', 'default')
    progress(f'mmpeft demo: work dir {work_dir} (full logs: *.log there); {jobs} method(s) at a time, '
             f'{threads} thread(s) each')
    weights = pretrain(work_dir, args.pretrain_iters, data_dir)
    data_opts = data_options(data_dir, 'synthetic_pascal_mt')

    # Polyhistor-Lite, the longest, first
    results = side_by_side(lambda m: adapt(m, work_dir, weights, data_opts, args.iters, env), METHODS, jobs)
    for r in results:
        r['params'] = trainable(r['config'])

    # the shareable result: Polyhistor-Lite's trainable tensors as adapter.safetensors + adapter_config.json
    lite = results[0]
    adapter = osp.join(work_dir, lite['slug'], 'adapter')
    run([sys.executable, 'tools/model_converters/export_adapter.py', lite['config'], lite['checkpoint'], adapter,
         '--cfg-options', f"{lite['key']}={weights}", *data_opts], osp.join(work_dir, lite['slug'], 'export.log'))
    adapter_mb = os.path.getsize(osp.join(adapter, 'adapter.safetensors')) / 2 ** 20
    progress(f'export: {lite["name"]} adapter {adapter} (adapter.safetensors {adapter_mb:.2f} MB '
             '+ adapter_config.json)')

    ref = results[-1]['metrics']
    lines = ['| method | Encoder / All trainable (M) | checkpoint (MB) | semseg mIoU | parts mIoU | '
             'sal maxIoU | normals mean err | delta_m vs full FT (%) |',
             '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |']
    for r in results:
        m = r['metrics']
        lines.append(f"| {r['name']} | {r['params'][0]:.2f} / {r['params'][1]:.2f} | {r['size'] / 2 ** 20:.2f} | "
                     f"{m['semseg/mIoU']:.2f} | {m['parts/mIoU']:.2f} | {m['sal/maxIoU']:.2f} | "
                     f"{m['normals/mean']:.2f} | {delta_m(m, ref):+.2f} |")
    table = '\n'.join(lines)
    with open(osp.join(work_dir, 'results.md'), 'w') as f:
        f.write(table + '\n')

    vis = osp.join(work_dir, 'vis')
    run([sys.executable, 'tools/demo/visualize_predictions.py', lite['config'], '--adapter', adapter,
         '--out', vis, '--num', str(args.num_vis), '--cfg-options', f"{lite['key']}={weights}", *data_opts],
        osp.join(vis, 'visualize.log'))
    progress(f'PNGs: {args.num_vis} validation images, predicted by the re-loaded adapter -> {vis}')
    print('\nmmpeft demo on synthetic PASCAL_MT (64x64), tiny Swin pretrained by the demo itself:\n')
    print(table)
    print(f'\n(Polyhistor-Lite checkpoints are deltas: trainable weights only; its adapter: {adapter}.) '
          f'Results: {osp.join(work_dir, "results.md")}; predictions: {vis}')


if __name__ == '__main__':
    main()
