"""``python -m mmpeft.tools.test CONFIG CHECKPOINT [options]``: the packaged ``tools/test.py`` (same
options)."""
from mmpeft.tools._launch import run_tool

if __name__ == '__main__':
    run_tool('test.py')
