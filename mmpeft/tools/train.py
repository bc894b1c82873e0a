"""``python -m mmpeft.tools.train CONFIG [options]``: the packaged ``tools/train.py`` (same options)."""
from mmpeft.tools._launch import run_tool

if __name__ == '__main__':
    run_tool('train.py')
