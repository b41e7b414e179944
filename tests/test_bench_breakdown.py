"""The time breakdown tool: operator names go to the right kind, the FLOPs by kind add up to the FLOP counter's total,
and the added blocks' scan and FFT show up as time and multiply-adds that the plain backbone does not have."""
import pytest
import torch

from gmamba_zoo.bench.breakdown import KINDS, OUTSIDE, breakdown, kind_of, markdown

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.mark.parametrize('op, kind', [
    ('aten::mkldnn_convolution', 'convolution'), ('aten::_slow_conv2d_forward', 'convolution'),
    ('mkldnn::_linear_pointwise', 'linear, matmul'), ('aten::addmm', 'linear, matmul'), ('aten::mm', 'linear, matmul'),
    ('gmamba_zoo::selective_scan', 'selective scan'), ('aten::_fft_r2c', 'FFT'), ('aten::_fft_c2r', 'FFT'),
    ('aten::_scaled_dot_product_flash_attention_for_cpu', 'attention'), ('aten::native_layer_norm', 'normalisation'),
    ('aten::max_pool2d_with_indices', 'pooling, reductions'), ('aten::mean', 'pooling, reductions'),
    ('aten::add', 'elementwise, copies, allocation'), ('aten::empty', 'elementwise, copies, allocation'),
])
def test_operator_kinds(op, kind):
    assert kind_of(op) == kind


def test_breakdown_of_a_model_against_its_backbone():
    from gmamba_zoo.flops.counter import count
    from gmamba_zoo.models import create_for_input_size
    rep = breakdown('resnet18_gmamba', (64, 64), warmup=1, iters=2)
    assert rep['baseline'] == 'resnet18' and set(rep['kinds']) == {k for k, _, _ in KINDS} | {OUTSIDE}
    kinds = rep['kinds']
    for i, name in enumerate(('resnet18_gmamba', 'resnet18')):
        total = count(create_for_input_size(name, (64, 64)), (3, 64, 64))['flops'] / 1e9
        assert sum(v['gmacs'][i] for k, v in kinds.items() if k != OUTSIDE) == pytest.approx(total, rel=1e-9)
        assert sum(v['ms'][i] for v in kinds.values()) >= 0.99 * rep['profiled_ms'][i]
    for kind in ('selective scan', 'FFT'):  # only the GMamba model runs them
        assert kinds[kind]['ms'][0] > 0 and kinds[kind]['ms'][1] == 0
        assert kinds[kind]['gmacs'][0] > 0 and kinds[kind]['gmacs'][1] == 0
    linear = kinds['linear, matmul']['gmacs']
    assert kinds['convolution']['ms'][1] > 0 and linear[0] > linear[1]
    text = markdown([rep], {'cpu': 'x', 'cores': 2, 'torch_threads': 1, 'torch': torch.__version__, 'python': '3',
                            'date': 'today'}, [None, None], 'cmd')
    assert '## resnet18_gmamba vs resnet18 (64x64)' in text and '| selective scan |' in text
