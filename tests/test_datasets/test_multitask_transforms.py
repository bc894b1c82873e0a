"""Geometric transforms: labels move like the image and normals turn with it (x right, y down)."""
import numpy as np
import pytest

from mmpeft.datasets.transforms import MultiTaskRandomFlip, MultiTaskRandomRotate, MultiTaskRandomScale, MultiTaskResize

H, W = 61, 81
C = np.array([(W - 1) / 2, (H - 1) / 2])          # image centre (x, y)
PLANE = np.array([0.3, -0.2, 0.9]) / np.linalg.norm([0.3, -0.2, 0.9])


def sphere_scene(centre, radius, plane=PLANE):
    """Normals of a sphere (image disc at ``centre``) in front of a plane, (H, W, 3) float32."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    dx, dy = (xx - centre[0]) / radius, (yy - centre[1]) / radius
    inside = dx**2 + dy**2 <= 1
    n = np.broadcast_to(plane, (H, W, 3)).copy()
    n[inside] = np.stack([dx, dy, np.sqrt(np.clip(1 - dx**2 - dy**2, 0, 1))], -1)[inside]
    return n.astype(np.float32)


def dist_to(centre):
    yy, xx = np.mgrid[0:H, 0:W]
    return np.hypot(xx - centre[0], yy - centre[1])


def blob(centre, value=7):
    """Labels: 255 outside a 3x3 square of ``value`` centred on the pixel ``centre``."""
    lab = np.zeros((H, W), np.uint8)
    x, y = int(round(centre[0])), int(round(centre[1]))
    lab[y - 1:y + 2, x - 1:x + 2] = value
    return lab


def centroid(lab, value=7):
    ys, xs = np.nonzero(lab == value)
    return np.array([xs.mean(), ys.mean()])


def make_results(normals, label_centre):
    rng = np.random.default_rng(0)
    return dict(img=rng.integers(1, 255, (H, W, 3), dtype=np.uint8),
                gt_semseg=blob(label_centre), gt_parts=blob(label_centre),
                gt_sal=(blob(label_centre) > 0).astype(np.uint8), gt_normals=normals,
                img_shape=(H, W), ori_shape=(H, W))


def test_horizontal_flip_mirrors_labels_and_negates_nx():
    p0 = C + (12, -6)
    normals = sphere_scene(p0, 15)
    normals[:5] = 0                                       # an invalid band stays invalid
    res = make_results(normals.copy(), p0)
    img = res['img'].copy()
    out = MultiTaskRandomFlip(prob=1.0)(res)
    assert out['flip'] is True and out['flip_direction'] == 'horizontal'
    np.testing.assert_array_equal(out['img'], img[:, ::-1])
    mirrored = np.array([W - 1 - p0[0], p0[1]])
    np.testing.assert_allclose(centroid(out['gt_semseg']), mirrored)
    # the flipped scene is the same scene with the sphere at the mirrored place and the plane's
    # normal with x negated -- exactly, since a flip needs no interpolation
    expected = sphere_scene(mirrored, 15, PLANE * [-1, 1, 1])
    expected[:5] = 0
    np.testing.assert_allclose(out['gt_normals'], expected, atol=1e-6)


def test_vertical_flip_negates_ny_and_no_flip_is_identity():
    res = make_results(sphere_scene(C, 10), C)
    out = MultiTaskRandomFlip(prob=1.0, direction='vertical')(dict(res))
    np.testing.assert_allclose(out['gt_normals'][20, 10], PLANE * [1, -1, 1], atol=1e-6)
    same = MultiTaskRandomFlip(prob=0.0)(dict(res))
    assert same['flip'] is False and same['flip_direction'] is None
    np.testing.assert_array_equal(same['gt_normals'], res['gt_normals'])


def test_rotation_by_90_turns_a_right_facing_normal_down():
    normals = np.zeros((H, W, 3), np.float32)
    normals[..., 0] = 1                                      # facing right everywhere
    res = make_results(normals, C + (20, 0))
    out = MultiTaskRandomRotate(degree=(90, 90))(res)
    assert out['rotate_angle'] == 90
    # clockwise as displayed: a point right of the centre goes below it, the normal points down
    np.testing.assert_allclose(centroid(out['gt_semseg']), C + (0, 20), atol=0.5)
    np.testing.assert_allclose(out['gt_normals'][H // 2, W // 2], [0, 1, 0], atol=1e-5)


def test_rotation_keeps_normals_consistent_with_the_analytic_field():
    theta = 15.0
    t = np.deg2rad(theta)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    p0, r = C + (10, -4), 16.0
    res = make_results(sphere_scene(p0, r), C + (20, 6))
    out = MultiTaskRandomRotate(degree=(theta, theta))(res)

    # labels: the pixel at p goes to c + R (p - c)
    np.testing.assert_allclose(centroid(out['gt_semseg']), C + rot @ (20, 6), atol=0.5)
    # normals: a sphere seen after turning the camera is the same sphere, moved; the plane's
    # (nx, ny) turns by R
    p1 = C + rot @ (p0 - C)
    plane = np.concatenate([rot @ PLANE[:2], PLANE[2:]])
    expected = sphere_scene(p1, r, plane)
    got = out['gt_normals']
    on_sphere = dist_to(p1) < 0.85 * r
    err = np.degrees(np.arccos(np.clip((got * expected).sum(-1), -1, 1)))
    assert err[on_sphere].max() < 2.0 and err[on_sphere].mean() < 0.5
    # the plane far from the sphere and from the padded corners
    yy, xx = np.mgrid[0:H, 0:W]
    src = (np.stack([xx - C[0], yy - C[1]], -1) @ rot)      # R^T (q - c): where q came from
    inside_src = ((np.abs(src[..., 0]) < C[0] - 2) & (np.abs(src[..., 1]) < C[1] - 2))
    on_plane = inside_src & (dist_to(p1) > r + 2)
    np.testing.assert_allclose(got[on_plane], np.broadcast_to(plane, got[on_plane].shape),
                               atol=1e-5)
    # corners come from outside the image: ignore labels, invalid normals, black image
    assert out['gt_semseg'][0, 0] == 255 and out['gt_sal'][0, 0] == 255
    np.testing.assert_array_equal(out['gt_normals'][0, 0], 0)
    np.testing.assert_array_equal(out['img'][0, 0], 0)
    # every normal is unit or zero
    norm = np.linalg.norm(got, axis=-1)
    assert np.all((np.abs(norm - 1) < 1e-5) | (norm == 0))


def test_random_rotation_stays_in_range():
    np.random.seed(0)
    angles = [MultiTaskRandomRotate(degree=20)(make_results(sphere_scene(C, 5), C))['rotate_angle']
              for _ in range(20)]
    assert min(angles) >= -20 and max(angles) <= 20 and np.std(angles) > 5


@pytest.mark.parametrize('s', [1.2, 0.8])
def test_zoom_moves_labels_and_sphere_keeps_canvas(s):
    p0, r = C + (10, 4), 12.0
    res = make_results(sphere_scene(p0, r), C + (10, 4))
    out = MultiTaskRandomScale(scale_range=(s, s))(res)
    assert out['zoom_factor'] == s and out['img'].shape == (H, W, 3)
    assert out['gt_semseg'].shape == (H, W) and out['gt_normals'].shape == (H, W, 3)
    np.testing.assert_allclose(centroid(out['gt_semseg']), C + s * np.array([10, 4]), atol=0.5)
    expected = sphere_scene(C + s * (p0 - C), s * r)
    inner = dist_to(C + s * (p0 - C)) < 0.85 * s * r
    cos = (out['gt_normals'][inner] * expected[inner]).sum(-1)
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 2.0
    if s < 1:   # zooming out pads the border
        assert out['gt_parts'][0, 0] == 255
        np.testing.assert_array_equal(out['gt_normals'][0, 0], 0)
        np.testing.assert_array_equal(out['img'][0, 0], 0)


def test_resize_labels_nearest_normals_unit():
    normals = sphere_scene(C, 20)
    normals[:10] = 0                                       # invalid band
    res = make_results(normals, C)
    res['gt_semseg'] = (np.arange(W)[None].repeat(H, 0) // 9).astype(np.uint8)  # 0..8 stripes
    out = MultiTaskResize(scale=(40, 30))(res)
    assert out['img'].shape == (30, 40, 3) and out['gt_semseg'].shape == (30, 40)
    assert out['gt_normals'].shape == (30, 40, 3)
    assert out['img_shape'] == (30, 40) and out['scale_factor'] == (40 / W, 30 / H)
    # nearest: no label is invented between two stripes
    assert set(np.unique(out['gt_semseg'])) == set(range(9))
    assert set(np.unique(out['gt_sal'])) <= {0, 1}
    n = out['gt_normals']
    norm = np.linalg.norm(n, axis=-1)
    assert np.all((np.abs(norm - 1) < 1e-5) | (norm == 0))
    assert np.all(norm[:4] == 0) and np.all(norm[6:] > 0)   # band rows 0..9 of 61 -> ~0..4.9
    np.testing.assert_allclose(n[20, 5], PLANE, atol=1e-5)
    ratio = MultiTaskResize(scale=(40, 40), keep_ratio=True)(make_results(sphere_scene(C, 5), C))
    assert ratio['img_shape'] == (30, 40)


def test_photometric_distortion_touches_only_the_image():
    from mmseg.datasets.transforms import PhotoMetricDistortion
    np.random.seed(1)
    res = make_results(sphere_scene(C, 10), C)
    keys = ('img', 'gt_semseg', 'gt_parts', 'gt_sal', 'gt_normals')
    before = {k: res[k].copy() for k in keys}
    out = PhotoMetricDistortion()(res)
    assert not np.array_equal(out['img'], before['img']) and out['img'].dtype == np.uint8
    for k in ('gt_semseg', 'gt_parts', 'gt_sal', 'gt_normals'):
        np.testing.assert_array_equal(out[k], before[k])
