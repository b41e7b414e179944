"""The time breakdown tool: operator names go to the right kind, an operator's multiply-adds go to the kind its time
goes to (an attention's products to the attention, run fused or not), the FLOPs by kind add up to the FLOP counter's
total, and the added blocks' scan and FFT show up as time and multiply-adds that the plain backbone does not have."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from gmamba_zoo.bench.breakdown import (
    KINDS, OUTSIDE, attention_modules, breakdown, flop_kind, kind_of, macs_by_kind, markdown, op_times)

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.mark.parametrize('op, kind', [
    ('aten::mkldnn_convolution', 'convolution'), ('aten::_slow_conv2d_forward', 'convolution'),
    ('mkldnn::_linear_pointwise', 'linear, matmul'), ('aten::addmm', 'linear, matmul'), ('aten::mm', 'linear, matmul'),
    ('aten::linear', 'linear, matmul'), ('aten::upsample_linear1d', 'elementwise, copies, allocation'),
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
    if rep['profiled_ms'][0] > rep['profiled_ms'][1]:  # the target's budget in ms, from the FLOPs and the baseline
        gm, gb = (sum(v['gmacs'][i] for k, v in kinds.items() if k != OUTSIDE) for i in (0, 1))
        budget = (1.1 * gm / gb - 1) * rep['wall_ms'][1]
        assert f'allows {budget:.1f} ms of added time' in text


def test_budget_line_splits_the_added_time():
    from gmamba_zoo.bench.breakdown import _budget_lines
    kinds = {k: {'ms': [0.0, 0.0], 'gmacs': [0.0, 0.0]} for k, _, _ in KINDS}
    kinds['convolution'] = {'ms': [10.0, 10.0], 'gmacs': [1.0, 1.0]}
    kinds['linear, matmul'] = {'ms': [6.0, 0.0], 'gmacs': [0.5, 0.0]}
    kinds['selective scan'] = {'ms': [4.0, 0.0], 'gmacs': [0.0, 0.0]}
    kinds[OUTSIDE] = {'ms': [0.0, 0.0], 'gmacs': [None, None]}
    rep = {'kinds': kinds, 'wall_ms': [40.0, 20.0], 'profiled_ms': [20.0, 10.0]}  # the profiler halves the times
    (line,) = _budget_lines(rep)
    # FLOPs 1.5x: (1.1 * 1.5 - 1) * 20 ms = 13 ms allowed; 20 ms added, the products' 6 of 10 profiled: 12 ms
    assert 'FLOPs ratio 1.50x' in line and 'allows 13.0 ms' in line and 'adds 20.0 ms' in line
    assert 'take 12.0 ms' in line and 'Python) 8.0 ms' in line


@pytest.mark.parametrize('op, in_attention, kind', [
    ('aten::matmul', True, 'attention'), ('aten::bmm', True, 'attention'), ('aten::softmax', True, 'attention'),
    ('aten::matmul', False, 'linear, matmul'), ('aten::softmax', False, 'elementwise, copies, allocation'),
    ('aten::linear', True, 'linear, matmul'), ('mkldnn::_linear_pointwise', True, 'linear, matmul'),
    ('aten::conv2d', True, 'convolution'), ('aten::scaled_dot_product_attention', False, 'attention'),
])
def test_operator_kinds_inside_attention(op, in_attention, kind):
    assert kind_of(op, in_attention) == kind
    short = op.split('::')[-1]  # the FLOP counter's name, where it counts the op
    if short in ('matmul', 'bmm', 'linear', 'scaled_dot_product_attention'):
        assert flop_kind(short, in_attention) == kind



@pytest.mark.parametrize('in_attention', [False, True])
def test_every_counted_operator_has_one_kind(in_attention):
    """An operator the FLOP counter counts goes to the same kind under the profiler's name as under the counter's."""
    from gmamba_zoo.flops.counter import FLOP_HANDLES
    for op in FLOP_HANDLES:
        short = op.split('::')[1]
        short = {'_convolution': 'conv'}.get(short, short)  # fvcore's name for its convolution handle
        assert kind_of(op, in_attention) == flop_kind(short, in_attention), op
    assert kind_of('aten::upsample_bilinear2d') == flop_kind('upsample_bilinear2d') != 'linear, matmul'


class TinyAttention(nn.Module):
    """Multi-head self-attention over tokens [B, L, C] that runs ``F.scaled_dot_product_attention`` eagerly (when
    ``fused``) and explicit matmuls under a tracer, as vGamba's 2-D attention does."""

    def __init__(self, dim: int, num_heads: int, fused: bool):
        super().__init__()
        self.num_heads, self.fused = num_heads, fused
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused and not torch.jit.is_tracing():
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TinyNet(nn.Module):
    """Patch conv -> attention -> mean over tokens -> linear head."""

    def __init__(self, fused: bool, dim: int = 16, patch: int = 4, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, patch, stride=patch)
        self.attn = TinyAttention(dim, 2, fused)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        return self.head(self.attn(self.stem(x).flatten(2).transpose(1, 2)).mean(1))


@pytest.mark.parametrize('fused', [True, False])
def test_multiply_adds_and_time_of_an_operator_share_its_kind(fused):
    """The attention's products count as attention, in MACs (traced as matmuls) and in time (run fused or not); the
    linear kind holds the linear layers' MACs, computed from their shapes, and only linear operators' time."""
    torch.manual_seed(0)
    model, (h, w), dim, patch = TinyNet(fused).eval(), (32, 48), 16, 4
    assert list(attention_modules(model)) == ['attn']
    tokens = (h // patch) * (w // patch)
    macs = {k: sum(v.values()) * 1e9 for k, v in macs_by_kind(model, (h, w)).items()}
    assert macs['convolution'] == pytest.approx(tokens * dim * 3 * patch * patch)
    assert macs['linear, matmul'] == pytest.approx(tokens * dim * 3 * dim + tokens * dim * dim + dim * 10)
    assert macs['attention'] == pytest.approx(tokens * tokens * 2 * dim)  # q k^T and attn v over all heads
    times, _ = op_times(model, torch.randn(1, 3, h, w), iters=2)
    assert all(sum(times[k].values()) > 0 for k, v in macs.items() if v)
    attention_ops = {'aten::scaled_dot_product_attention'} if fused else {'aten::matmul', 'aten::softmax'}
    assert attention_ops <= set(times['attention'])
    assert all('linear' in op or 'addmm' in op for op in times['linear, matmul'])


class _LinearCalls(TorchFunctionMode):
    """Multiply-adds of every ``F.linear`` call from its operands' shapes."""

    def __init__(self):
        super().__init__()
        self.macs = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear:
            x, weight = args[0], args[1]
            self.macs += x.numel() // weight.shape[1] * weight.numel()
        return func(*args, **(kwargs or {}))


def test_attention_of_a_vgamba_counts_where_it_runs(monkeypatch):
    """vGamba's 2-D attention (fused in eager mode, matmuls when traced): its multiply-adds are the attention's,
    the linear kind holds exactly the linear layers' multiply-adds, and each kind's time comes from its operators."""
    import timm
    from gmamba_zoo.layers.gamba import RegisterMHSA2d
    from gmamba_zoo.layers.onednn import ENV_ONEDNN
    model = timm.create_model('vgamba_b', widths=(8, 16, 32, 64), layers=(1, 1, 1, 1), d_state=8, num_classes=10,
                              img_size=64).eval()
    assert {type(m) for m in attention_modules(model).values()} == {RegisterMHSA2d}
    attention_by_hand = []

    def count_attention(m, args, out):
        b, c, h, w = args[0].shape
        attention_by_hand.append(b * (h * w) * (h * w + m.num_registers) * c * 2)  # q k^T and attn v, all heads

    x = torch.randn(1, 3, 64, 64)
    hooks = [m.register_forward_hook(count_attention) for m in model.modules() if isinstance(m, RegisterMHSA2d)]
    with monkeypatch.context() as env, torch.no_grad(), _LinearCalls() as linear_calls:
        env.setenv(ENV_ONEDNN, '0')  # every linear layer through F.linear
        model(x)
    for hk in hooks:
        hk.remove()
    macs = {k: sum(v.values()) * 1e9 for k, v in macs_by_kind(model, (64, 64)).items()}
    assert len(attention_by_hand) == 2 and macs['attention'] == pytest.approx(sum(attention_by_hand))
    assert linear_calls.macs > 0 and macs['linear, matmul'] == pytest.approx(linear_calls.macs)
    times, _ = op_times(model, x, iters=1)
    assert 'aten::scaled_dot_product_attention' in times['attention']
    assert all(sum(times[k].values()) > 0 for k, v in macs.items() if v)
    assert not any(k in op for op in times['linear, matmul'] for k in ('matmul', 'bmm', 'scaled_dot_product'))


def test_img_size_repeats_and_is_checked():
    import argparse
    from gmamba_zoo.bench.breakdown import add_arguments, run
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).img_size is None  # run() takes 224 x 224
    assert parser.parse_args(['--img-size', '224', '224', '--img-size', '512', '512']).img_size == [[224, 224],
                                                                                                   [512, 512]]
    with pytest.raises(SystemExit, match='two positive ints'):
        run(parser.parse_args(['--img-size', '0', '64']))
