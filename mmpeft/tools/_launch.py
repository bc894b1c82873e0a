"""Run a packaged ``tools/`` script as ``__main__`` (``python -m mmpeft.tools.<name>``)."""
import os.path as osp
import runpy
import sys
from typing import List, Optional

from mmpeft.utils import mim


def find_tool(name: str) -> str:
    """Path of ``tools/<name>``: the packaged copy (``mmpeft/.mim/tools``), else, for an mmpeft used from
    its source folder without installing it, the repository's ``tools/`` next to the package."""
    try:
        return mim.packaged_path('tools', name)
    except FileNotFoundError:
        in_repo = osp.join(osp.dirname(mim.PACKAGE_DIR), 'tools', name)
        if osp.isfile(in_repo):
            return in_repo
        raise


def run_tool(name: str, argv: Optional[List[str]] = None) -> None:
    """Run ``tools/<name>`` with ``argv`` (default: this process's arguments) as ``__main__``.

    A first argument ``mmpeft::<path>`` becomes the packaged config's file path.
    """
    script = find_tool(name)
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0].startswith(mim.PREFIX):
        args[0] = mim.resolve(args[0])
    old_argv = sys.argv
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name='__main__')
    finally:
        sys.argv = old_argv
