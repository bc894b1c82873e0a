"""What tools/train.py and tools/test.py share: reading a config for the MMEngine runner."""
import os.path as osp
from typing import Optional

from mmengine.config import Config


def load_runner_config(config: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                       launcher: str = 'none') -> Config:
    """Read ``config``, apply ``--cfg-options``, and set ``launcher`` and ``work_dir``.

    ``work_dir`` defaults to the config's own, else ``./work_dirs/<config name>`` (the toolboxes'
    convention). A missing config file is an error naming it.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file {config} does not exist')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg
