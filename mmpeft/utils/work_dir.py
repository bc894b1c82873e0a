"""The training work dir: one training at a time, and resuming from the right checkpoint.

Why: two trainings in one work dir interleave their checkpoints and ``last_checkpoint``; a kill -9
can leave ``last_checkpoint`` empty or pointing at a half-written file; a copied work dir's
``last_checkpoint`` points into the old folder. mmengine resumes from whatever ``last_checkpoint``
says; :func:`find_resume_checkpoint` (installed for mmengine's ``find_latest_checkpoint`` by
:mod:`mmpeft.utils.compat`) picks a complete checkpoint of *this* work dir and logs why.
"""
import fcntl
import os
import os.path as osp
import re
from typing import IO, List, Optional

from mmengine.logging import print_log

from .checkpoint_io import checkpoint_file_problem

LOCK_NAME = '.mmpeft.lock'
_CKPT_RE = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')
# what compat._atomic_write leaves when killed: '.' + name + '.' + mkstemp's 8 characters + '.tmp'
_TMP_RE = re.compile(r'^\..+\.[a-z0-9_]{8}\.tmp$')


class WorkDirInUseError(RuntimeError):
    """Another process trains in this work dir."""


def lock_work_dir(work_dir: str) -> IO[str]:
    """Take an exclusive, non-blocking lock on ``work_dir`` for as long as the returned file is open.

    The lock (``fcntl.flock`` on ``work_dir/.mmpeft.lock``) is released by the OS when the process
    ends, even by kill -9, so it never goes stale. The file holds the holder's pid for the message.
    """
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, LOCK_NAME)
    f = open(path, 'a+')
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or 'unknown'
        f.close()
        raise WorkDirInUseError(
            f'work dir {osp.abspath(work_dir)} is in use by another training (pid {holder}, lock '
            f'file {path}): two trainings in one work dir overwrite each other\'s checkpoints. Wait '
            f'for it to finish (or stop it), or pass --work-dir DIR to train in another folder') from None
    f.seek(0)
    f.truncate()
    f.write(f'{os.getpid()}\n')
    f.flush()
    return f


def clean_stale_temporary_files(work_dir: str) -> List[str]:
    """Remove the temporary files an atomic save killed half-way leaves (``.NAME.xxxxxxxx.tmp``).

    Call only while holding :func:`lock_work_dir`: a running training's temporary file looks the same.
    """
    removed = []
    if osp.isdir(work_dir):
        for name in sorted(os.listdir(work_dir)):
            path = osp.join(work_dir, name)
            if _TMP_RE.match(name) and osp.isfile(path):
                os.remove(path)
                removed.append(name)
    if removed:
        print_log(f'removed {len(removed)} temporary file(s) left by an interrupted save in '
                  f'{work_dir}: {", ".join(removed)}', logger='current')
    return removed


def _newest_complete_checkpoint(work_dir: str) -> Optional[str]:
    numbered = [(int(m.group(1)), name) for name in os.listdir(work_dir) if (m := _CKPT_RE.match(name))]
    for _, name in sorted(numbered, reverse=True):
        path = osp.join(work_dir, name)
        problem = checkpoint_file_problem(path)
        if problem is None:
            return path
        print_log(f'resume: skipping {path}, which {problem}', logger='current', level=30)
    return None


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``resume=True`` should continue from, or None for a fresh start.

    ``work_dir/last_checkpoint`` decides when it names a complete file; a file of the same name in
    ``work_dir`` wins over the recorded path (a copied or moved work dir must not resume from the
    old folder). Otherwise (record empty, missing, or naming a missing / truncated file) the newest
    complete ``iter_N.pth`` / ``epoch_N.pth`` in ``work_dir`` is used, and the choice is logged.
    """
    record = osp.join(work_dir, 'last_checkpoint')
    named = ''
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip()
    reason = f'{record} does not exist' if not osp.isfile(record) else f'{record} is empty'
    if named:
        here = osp.join(work_dir, osp.basename(named))
        candidate = named
        if osp.abspath(here) != osp.abspath(named) and osp.isfile(here):
            print_log(f'resume: {record} names {named}, outside this work dir (was it copied or '
                      f'moved?); using the file of that name here, {here}', logger='current', level=30)
            candidate = here
        problem = checkpoint_file_problem(candidate)
        if problem is None:
            return candidate
        reason = f'{record} names {candidate}, which {problem}'
    if not osp.isdir(work_dir):
        return None
    fallback = _newest_complete_checkpoint(work_dir)
    if fallback is not None:
        print_log(f'resume: {reason}; resuming from the newest complete checkpoint in the work dir, '
                  f'{fallback}', logger='current', level=30)
        return fallback
    if named:
        raise FileNotFoundError(
            f'cannot resume in {work_dir}: {reason}, and the work dir holds no other complete '
            f'checkpoint (iter_*.pth / epoch_*.pth). Resume from a given file with --resume CKPT '
            f'(or load_from=CKPT, resume=True), or delete {record} to start training from scratch')
    return None
