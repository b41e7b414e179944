"""Every model's forward on CUDA tensors, without a GPU: ``FakeTensorMode`` with fake tensors on device 'cuda'.

The torch here is a CUDA build on a machine without a GPU, so 'cuda' tensors can exist only as fake tensors (shapes,
dtypes and devices, no data). A model is built on the CPU as usual, then its parameters and buffers are converted
with the mode's ``from_tensor`` and moved to 'cuda' (what ``model.cuda()`` does on a GPU); the input is made under
the mode. The forward then runs every op's fake (meta) implementation, and the selective scan's custom op its
registered fake. Checked for each model:

* the forward runs and the outputs have the right shapes, on 'cuda';
* no op inside the forward makes a tensor on the CPU or reads one (a device mismatch or a host-device copy on a
  GPU), recorded by a ``TorchDispatchMode`` stacked on the fake mode; 0-dim CPU tensors passed as inputs are allowed:
  PyTorch itself passes wrapped Python numbers so, and reads them as scalars without a copy. A host sync
  (``.item()``, ``bool(t)``, ``float(t)`` on a tensor) raises under the fake mode (``DataDependentOutputException``):
  the forward has none either;
* the scan op runs once per scan layer through its fake, with the checkpoint layout of the backend ``auto`` picks
  for CUDA tensors (mamba-ssm's kernel, else Triton, else PyTorch); the real implementations are patched to fail.
"""
from typing import List, Tuple

import pytest
import timm
import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import gmamba_zoo
from gmamba_zoo.layers.ssm import SelectiveSSM
from gmamba_zoo.ops import selective_scan as ss
from test_build_checks import _shrunk  # one block per stage, narrow

pytestmark = pytest.mark.usefixtures('one_thread')

DEFAULT_MODELS = ('resnet18_gmamba', 'swin_t_gmamba', 'vgamba_b')  # one per model file: gmamba.py, swin.py, vgamba.py
BATCH, SIZE = 2, 64
SCAN_OP = torch.ops.gmamba_zoo.selective_scan.default


class DeviceRecorder(TorchDispatchMode):
    """Every op that makes or reads a tensor off ``device_type``, and the scan op's calls."""

    def __init__(self, device_type: str = 'cuda'):
        super().__init__()
        self.device_type = device_type
        self.off_device: List[str] = []
        self.scans: List[Tuple[str, Tuple[int, ...], Tuple[int, ...], Tuple[int, ...], int]] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        for where, tree in (('makes', out), ('reads', (args, kwargs))):
            for t in tree_leaves(tree):
                if isinstance(t, Tensor) and t.device.type != self.device_type and not (
                        where == 'reads' and t.dim() == 0):
                    self.off_device.append(f'{func} {where} a {list(t.shape)} {t.dtype} tensor on {t.device}')
        if func is SCAN_OP:
            u, A, chunk, backend = args[0], args[2], args[9], args[10]
            self.scans.append((backend, tuple(u.shape), tuple(A.shape), tuple(out[1].shape), chunk))
        return out


def fake_cuda(model: torch.nn.Module, mode: FakeTensorMode) -> torch.nn.Module:
    """``model.cuda()`` with fake tensors: each parameter and buffer becomes a fake tensor of its shape on 'cuda'."""
    with mode:
        return model._apply(lambda t: mode.from_tensor(t).to('cuda'))


def expected_ckpt_shape(backend: str, u: Tuple[int, ...], A: Tuple[int, ...], chunk: int) -> Tuple[int, ...]:
    """The checkpoint shape each backend's real implementation returns (and its backward reads)."""
    (b, d, L), n = u, A[1]
    if backend == 'cuda':  # mamba-ssm: [B, D, n_chunks of 2048, 2N]
        return b, d, -(-L // 2048), 2 * n
    n_chunks = -(-L // chunk)
    return (n_chunks + 1, b, n, d) if backend == 'torch' else (n_chunks + 1, b, d, n)


@pytest.fixture
def no_real_scan(monkeypatch):
    """The scan's real implementations fail if called: only the op's fake may run on fake tensors."""
    def fail(*args, **kwargs):
        raise AssertionError('a real scan implementation ran under FakeTensorMode')

    monkeypatch.setattr(ss, '_scan_fwd_torch', fail)
    monkeypatch.setattr(ss, '_scan_fwd_cuda', fail)
    for module, _ in ss._KERNELS.values():
        if module.get() is not None and hasattr(module.module, 'scan_fwd'):
            monkeypatch.setattr(module.module, 'scan_fwd', fail)


def run_fake_cuda(model: torch.nn.Module) -> Tuple[object, DeviceRecorder]:
    mode = FakeTensorMode()
    model = fake_cuda(model.eval(), mode)
    assert all(t.device.type == 'cuda' for t in list(model.parameters()) + list(model.buffers()))
    with mode:
        x = torch.randn(BATCH, 3, SIZE, SIZE, device='cuda')
        recorder = DeviceRecorder()
        with recorder, torch.no_grad():
            out = model(x)
    return out, recorder


def check(model: torch.nn.Module, recorder: DeviceRecorder) -> None:
    assert not recorder.off_device, 'CPU tensors inside a forward on CUDA inputs:\n' + '\n'.join(
        sorted(set(recorder.off_device)))
    n_scans = sum(isinstance(m, SelectiveSSM) for m in model.modules())
    assert n_scans > 0 and len(recorder.scans) == n_scans  # the op, once per scan layer
    backend = ss.resolve_scan_backend('cuda')
    for got, u, A, ckpt, chunk in recorder.scans:
        assert got == backend
        assert ckpt == expected_ckpt_shape(backend, u, A, chunk)


def _check_model(model: torch.nn.Module) -> None:
    out, recorder = run_fake_cuda(model)
    assert out.shape == (BATCH, model.num_classes) and out.device.type == 'cuda'
    check(model, recorder)


@pytest.mark.filterwarnings("ignore:Scan backend 'cuda' needs mamba-ssm")
@pytest.mark.parametrize('name', DEFAULT_MODELS)
def test_forward_on_fake_cuda(name, no_real_scan):
    """Each block type, in models with one block per stage (the full models: the slow test below)."""
    _check_model(_shrunk(name))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Scan backend 'cuda' needs mamba-ssm")
@pytest.mark.parametrize('name', gmamba_zoo.list_models())
def test_forward_on_fake_cuda_all_models(name, no_real_scan):
    _check_model(timm.create_model(name, num_classes=10))


@pytest.mark.filterwarnings("ignore:Scan backend 'cuda' needs mamba-ssm")
def test_features_only_on_fake_cuda(no_real_scan):
    model = _shrunk('resnet18_gmamba', features_only=True)
    feats, recorder = run_fake_cuda(model)
    info = model.feature_info
    assert [tuple(f.shape) for f in feats] == [
        (BATCH, c, SIZE // r, SIZE // r) for c, r in zip(info.channels(), info.reduction())]
    assert all(f.device.type == 'cuda' for f in feats)
    check(model, recorder)


def test_the_torch_scan_runs_on_fake_cuda_without_cpu_tensors_or_syncs():
    """The PyTorch backend, which auto falls back to on a GPU, in fake mode: a host read (it once read max |dt| per
    chunk) would raise here."""
    b, d, n, L, chunk = 2, 6, 4, 21, 8
    with FakeTensorMode():
        r = lambda *s: torch.randn(*s, device='cuda')
        u, delta, B, C, z, dout = r(b, d, L), r(b, d, L), r(b, n, L), r(b, n, L), r(b, d, L), r(b, d, L)
        A, D, bias = -torch.rand(d, n, device='cuda'), r(d), r(d)
        recorder = DeviceRecorder()
        with recorder:
            out, ckpt = ss._scan_fwd_torch(u, delta, A, B, C, D, z, bias, True, chunk)
            grads = ss._scan_bwd_torch(dout, u, delta, A, B, C, D, z, bias, ckpt, True, chunk)
    assert not recorder.off_device, recorder.off_device
    assert tuple(ckpt.shape) == expected_ckpt_shape('torch', (b, d, L), (d, n), chunk)
    assert [tuple(g.shape) for g in grads] == [tuple(t.shape) for t in (u, delta, A, B, C, D, z, bias)]


def test_the_recorder_catches_a_cpu_tensor_and_a_sync():
    """The checks above can fail: a forward that makes a CPU tensor is named, one that reads a value raises."""
    class MakesCpu(torch.nn.Module):
        def forward(self, x):
            return x * torch.arange(x.shape[-1]).to(x.device)

    class Syncs(torch.nn.Module):
        def forward(self, x):
            return x * float(x.abs().max())

    _, recorder = run_fake_cuda(MakesCpu())
    assert any('arange' in op and 'on cpu' in op for op in recorder.off_device)
    with pytest.raises(Exception, match='local_scalar_dense|data-dependent|DataDependent'):
        run_fake_cuda(Syncs())
