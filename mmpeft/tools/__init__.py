"""The repository's ``tools/`` as modules of an installed mmpeft, as mim runs a toolbox's tools:

    python -m mmpeft.tools.train CONFIG [tools/train.py options]
    python -m mmpeft.tools.test CONFIG CHECKPOINT [tools/test.py options]

``CONFIG`` is a file, or ``mmpeft::<path under configs/>`` for a packaged config. Each module runs the
packaged script (``mmpeft/.mim/tools/*.py``, see :mod:`mmpeft.utils.mim`) as ``__main__``: one copy of
the training / testing logic, the one in ``tools/``.
"""
