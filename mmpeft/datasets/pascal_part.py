"""Human-part labels from PASCAL-Part ``.mat`` files (the ``human_parts/`` folder of PASCAL_MT).

File format (as ``scipy.io.loadmat`` returns it with default options)::

    mat['anno']                     (1, 1) struct, fields ('imname', 'objects')
    anno['objects']                 (1, n_obj) struct, fields ('class', 'class_ind', 'mask',
                                    'parts')
        obj['class']                (1,) str array, e.g. 'person'
        obj['class_ind']            (1, 1) int, VOC class index (person = 15)
        obj['mask']                 (H, W) uint8, the object's visible pixels
        obj['parts']                (1, n_parts) struct, fields ('part_name', 'mask'); an empty
                                    (0, 0) array when the object has no part annotation
            part['part_name']       (1,) str array, e.g. 'luarm'
            part['mask']            (H, W) uint8

Fields are read by name, not position, so extra fields or another field order do not matter.

The 6-part grouping (the common multi-task practice on PASCAL-Context: head, torso, upper arm,
lower arm, upper leg, lower leg) maps the PASCAL-Part person part names as in
:data:`PERSON_PART_GROUPS`.
"""
import io
from typing import Dict, Tuple, Union

import numpy as np
import scipy.io

#: 7 classes of the human-parts task, index = label value.
PART_CLASSES = ('background', 'head', 'torso', 'upper_arm', 'lower_arm', 'upper_leg', 'lower_leg')

#: PASCAL-Part person part name -> label value in :data:`PART_CLASSES`.
PERSON_PART_GROUPS: Dict[str, int] = {
    # head: the head itself and everything on it
    'head': 1, 'hair': 1, 'leye': 1, 'reye': 1, 'lear': 1, 'rear': 1,
    'lebrow': 1, 'rebrow': 1, 'nose': 1, 'mouth': 1,
    # torso (the neck belongs to it)
    'torso': 2, 'neck': 2,
    # upper arms
    'luarm': 3, 'ruarm': 3,
    # lower arms including hands
    'llarm': 4, 'rlarm': 4, 'lhand': 4, 'rhand': 4,
    # upper legs
    'luleg': 5, 'ruleg': 5,
    # lower legs including feet
    'llleg': 6, 'rlleg': 6, 'lfoot': 6, 'rfoot': 6,
}

PERSON_CLASS = 'person'
PERSON_CLASS_IND = 15


def _mat_str(value: np.ndarray) -> str:
    """A MATLAB char array as loaded by scipy (``array(['person'])``) -> ``'person'``."""
    return str(np.asarray(value).ravel()[0]) if np.asarray(value).size else ''


def _is_person(obj: np.void) -> bool:
    names = obj.dtype.names
    if 'class' in names:
        return _mat_str(obj['class']) == PERSON_CLASS
    return int(np.asarray(obj['class_ind']).ravel()[0]) == PERSON_CLASS_IND


def read_human_parts(source: Union[str, bytes], shape: Tuple[int, int],
                     name: str = '<bytes>') -> np.ndarray:
    """Merge the person parts of one PASCAL-Part annotation into a 7-class label map.

    Every pixel starts as background (0); the parts of each ``person`` object are painted with their
    group id in file order (a later part wins where masks overlap). Persons without part annotation
    and all non-person objects (their parts included) leave their pixels as background, as in the
    common multi-task practice. Call this only for images that contain a person; images without one
    get all-ignore labels from the caller.

    Args:
        source: path of the ``.mat`` file or its bytes.
        shape: ``(H, W)`` of the image, to check the masks against.
        name: the file name used in error messages when ``source`` is bytes.

    Returns:
        ``(H, W)`` uint8 label map with values in ``0..6``.

    Raises:
        ValueError: naming the file, if it is not a readable ``.mat`` file (corrupt, truncated),
            lacks the ``anno``/``objects`` structure, a person part
            name is unknown, or a mask's shape differs from ``shape``.
    """
    if not isinstance(source, bytes):
        name = source
    try:
        mat = scipy.io.loadmat(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise
    except Exception as e:  # scipy raises MatReadError, IndexError, ValueError ... without the path
        raise ValueError(f'{name}: the human-parts annotation is corrupt or truncated (not a '
                         f'readable .mat file: {e!r}); restore this file from the dataset '
                         f'release') from e
    try:
        objects = mat['anno'][0, 0]['objects']
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f'{name}: not a PASCAL-Part annotation (expected anno.objects): {e!r}') from e

    label = np.zeros(shape, dtype=np.uint8)
    for obj in np.asarray(objects).ravel():
        parts = obj['parts']
        if not _is_person(obj) or parts.size == 0:
            continue
        for part in parts.ravel():
            part_name = _mat_str(part['part_name'])
            if part_name not in PERSON_PART_GROUPS:
                raise ValueError(f'{name}: unknown person part name {part_name!r} '
                                 f'(known: {sorted(PERSON_PART_GROUPS)})')
            mask = np.asarray(part['mask'])
            if mask.shape != tuple(shape):
                raise ValueError(f'{name}: part {part_name!r} mask has shape {mask.shape}, '
                                 f'the image has {tuple(shape)}')
            label[mask.astype(bool)] = PERSON_PART_GROUPS[part_name]
    return label
