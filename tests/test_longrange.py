"""Long-range benchmark: the generated task, the models' reach, and a trivial-size end-to-end run."""
import json

import pytest
import torch

from gmamba_zoo.layers import GMambaBlock
from gmamba_zoo.analysis.longrange import PALETTE, build_model, make_corner_task, receptive_field


def test_corner_task_labels_and_seeds():
    x, y = make_corner_task(64, size=32, mark=3, jitter=3, colours=3, noise=0.0, seed=5)
    assert x.shape == (64, 3, 32, 32) and y.dtype == torch.int64
    x2, y2 = make_corner_task(64, size=32, mark=3, jitter=3, colours=3, noise=0.0, seed=5)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    for img, label in zip(x, y):  # without noise each mark is a solid palette colour in its corner quadrant
        tl = img[:, :16, :16].flatten(1)
        br = img[:, 16:, 16:].flatten(1)
        c_tl = tl[:, tl.abs().sum(0) > 0][:, 0]
        c_br = br[:, br.abs().sum(0) > 0][:, 0]
        assert any(torch.equal(c_tl, p) for p in PALETTE[:3])
        assert bool(torch.equal(c_tl, c_br)) == bool(label)
    _, y = make_corner_task(2000, size=32, jitter=3, seed=0)
    assert abs(y.float().mean() - 0.5) < 0.05


def test_corner_task_rejects_bad_arguments():
    with pytest.raises(ValueError, match='colours'):
        make_corner_task(2, colours=7)
    with pytest.raises(ValueError, match='too small'):
        make_corner_task(2, size=16, jitter=6)


def test_models_share_the_trunk_and_cnn_reach_is_short():
    cnn, gm, scan = (build_model(v, seed=3) for v in ('cnn', 'gmamba', 'scan-only'))
    assert receptive_field(cnn) == 27 < 48 - 2 * (1 + 6 + 3) + 4  # the default task's minimum span per axis
    trunk = cnn.state_dict()
    for m in (gm, scan):
        for k, v in trunk.items():
            assert torch.equal(m.state_dict()[k], v)
    assert sum(isinstance(b, GMambaBlock) for b in gm.modules()) == 2
    assert gm.stages[2][-1].mixer.fem is not None and scan.stages[2][-1].mixer.fem is None


def test_benchmark_runs_at_trivial_size(tmp_path):
    pytest.importorskip('matplotlib')
    from gmamba_zoo.cli import main
    out = tmp_path / 'lr.md'
    assert main(['longrange', '--epochs', '1', '--train', '32', '--test', '16', '--size', '24', '--jitter', '2',
                 '--seeds', '0', '--threads', '1', '--out', str(out)]) == 0
    md = out.read_text()
    for v in ('cnn', 'gmamba', 'scan-only'):
        assert f'| {v} |' in md
    assert out.with_suffix('.png').read_bytes()[:4] == b'\x89PNG'
    res = json.loads(out.with_suffix('.json').read_text())
    assert res['models']['gmamba']['criterion_holds'] and not res['models']['cnn']['criterion_holds']
    assert not res['models']['scan-only']['criterion_holds']
    assert len(res['models']['cnn']['runs']['0']) == 1
