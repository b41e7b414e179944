"""The oneDNN route of the layers' matrix products (layers/onednn.py): same results as the modules, taken only when
nothing but the time can tell (inference, plain modules, no hooks, no tracing or autocast, large enough)."""
import pytest
import torch
import torch.nn as nn

from gmamba_zoo.layers import GambaBlock, GMambaBlock, onednn
from gmamba_zoo.layers.onednn import ENV_ONEDNN, conv1d_tokens, conv1x1, linear, linear_weights

pytestmark = [pytest.mark.usefixtures('one_thread'),
              pytest.mark.skipif(not onednn.onednn_available(), reason='oneDNN route not available here')]


def _routed(monkeypatch) -> list:
    """Record the calls that take the oneDNN ops."""
    calls = []
    for name, label in (('_onednn_linear', 'linear'), ('_onednn_conv1x1', 'conv')):
        op = getattr(onednn, name)
        monkeypatch.setattr(onednn, name, lambda *a, op=op, label=label: calls.append(label) or op(*a))
    return calls


class _Wrap(nn.Module):
    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.lin = lin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.lin, x)


def test_linear_and_conv_match_the_modules(monkeypatch):
    calls = _routed(monkeypatch)
    lin, conv = nn.Linear(96, 384), nn.Conv2d(128, 384, 1)
    x, m = torch.randn(2, 14, 14, 96), torch.randn(2, 128, 14, 14)
    w, b = torch.randn(192, 96), torch.randn(192)
    with torch.no_grad():
        torch.testing.assert_close(linear(lin, x), lin(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(linear(lin, x.transpose(1, 2)), lin(x.transpose(1, 2)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(conv1x1(conv, m), conv(m), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(linear_weights(x, w, b), nn.functional.linear(x, w, b), rtol=1e-5, atol=1e-5)
    assert calls == ['linear', 'linear', 'conv', 'linear']


def test_falls_back_to_the_module_whenever_it_could_be_told_apart(monkeypatch):
    calls = _routed(monkeypatch)
    lin = nn.Linear(96, 384)
    x = torch.randn(1, 196, 96)
    y = linear(lin, x)  # autograd needs it
    assert y.requires_grad and y.grad_fn is not None
    with torch.no_grad():
        linear(lin, x.double().float()[:, :2])  # too small to pay
        linear(nn.Linear(96, 384).double(), x.double())  # not float32
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert linear(lin, x).dtype == torch.bfloat16
        seen = []
        handle = lin.register_forward_hook(lambda *a: seen.append(1))
        linear(lin, x)
        handle.remove()
        assert seen == [1]
        monkeypatch.setenv(ENV_ONEDNN, '0')
        linear(lin, x)
        monkeypatch.delenv(ENV_ONEDNN)
        traced = torch.jit.trace(_Wrap(lin), (x,), check_trace=False)
        assert 'aten::linear' in str(traced.inlined_graph) and 'mkldnn' not in str(traced.inlined_graph)
        linear(lin, x)
    assert calls == ['linear']  # only the last call


@pytest.mark.parametrize('kind', ['gmamba', 'gmamba_cl', 'gamba'])
def test_blocks_agree_with_the_route_off(kind, monkeypatch):
    torch.manual_seed(0)
    if kind == 'gamba':
        block, x = GambaBlock(128, (14, 14)).eval(), torch.randn(1, 128, 14, 14)
    else:
        block = GMambaBlock(96, channels_last=kind == 'gmamba_cl', layer_scale_init_value=1.0).eval()
        x = torch.randn(1, 28, 28, 96) if kind == 'gmamba_cl' else torch.randn(1, 96, 28, 28)
    with torch.no_grad():
        y = block(x)
        monkeypatch.setenv(ENV_ONEDNN, '0')
        y_ref = block(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('causal', [False, True])
def test_conv1d_tokens_matches_the_module_with_gradients(causal, monkeypatch):
    k = 4 if causal else 3
    conv = nn.Conv1d(48, 48, k, padding=k - 1 if causal else k // 2, groups=48)
    x = torch.randn(2, 50, 96)[..., :48].requires_grad_()  # tokens [B, L, C], a strided slice as in the mixers
    y = conv1d_tokens(conv, x)
    ref = conv(x.transpose(1, 2))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(ref.shape)
    grads = torch.autograd.grad(y, [x, conv.weight, conv.bias], g)
    grads_ref = torch.autograd.grad(ref, [x, conv.weight, conv.bias], g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    seen = []
    conv.register_forward_hook(lambda *a: seen.append(1))
    torch.testing.assert_close(conv1d_tokens(conv, x), ref, rtol=1e-5, atol=1e-5)
    assert seen == [1]  # a hooked module is called
