"""``auto`` on CUDA is safe: a Triton that cannot launch, or is too old, leaves the PyTorch scan (one warning).

No GPU is needed: a GPU is simulated by patching ``torch.cuda.is_available``/``current_device``, and the probe
launch that :func:`gmamba_zoo.ops.selective_scan.resolve_scan_backend` makes before auto first picks Triton on a GPU
runs on CPU tensors against patched ``scan_fwd``/``scan_bwd`` of the Triton module (the failures are injected there,
as Triton raises them). Fake CUDA tensors (``FakeTensorMode``) then show which backend the custom op is given.
"""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from gmamba_zoo.ops import selective_scan as ss
from gmamba_zoo.ops import resolve_scan_backend, selective_scan_fn

triton = pytest.importorskip('triton')
ts = pytest.importorskip('gmamba_zoo.ops.triton_scan')


def _out_of_resources(*args, **kwargs):
    raise triton.runtime.errors.OutOfResources(262144, 232448, 'shared memory')


def _fwd_ok(u, delta, A, B, C, D, z, delta_bias, softplus, chunk, **kw):
    n_chunks = -(-u.shape[2] // chunk)
    return torch.zeros_like(u), u.new_zeros((n_chunks + 1, u.shape[0], u.shape[1], A.shape[1]))


def _bwd_ok(dout, u, delta, A, B, C, D, z, delta_bias, ckpt, softplus, chunk, **kw):
    return tuple(None if t is None else torch.zeros_like(t) for t in (u, delta, A, B, C, D, z, delta_bias))


@pytest.fixture
def gpu(monkeypatch):
    """A simulated GPU without mamba-ssm: fresh probe cache and warnings; the probe runs on CPU tensors and records
    the device it was asked for."""
    monkeypatch.delenv(ss.ENV_BACKEND, raising=False)
    monkeypatch.setattr(ss, '_warned', {('cuda', 'cuda')})  # mamba-ssm's absence was named already
    monkeypatch.setattr(ss, '_triton_launches', {})
    monkeypatch.setattr(ss, '_KERNELS', dict(ss._KERNELS, cuda=(ss._OptionalModule('selective_scan_cuda_missing'),
                                                                'mamba-ssm')))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
    monkeypatch.setattr(ts, 'scan_fwd', _fwd_ok)
    monkeypatch.setattr(ts, 'scan_bwd', _bwd_ok)
    probe = ss._probe_triton
    probed = []

    def probe_on_cpu(device, variant=None):
        probed.append(str(device))
        probe(torch.device('cpu'), variant)

    monkeypatch.setattr(ss, '_probe_triton', probe_on_cpu)
    return probed


@pytest.mark.parametrize('fails', ['scan_fwd', 'scan_bwd'])
def test_failed_launch_falls_back_to_torch_once_and_is_cached(gpu, monkeypatch, fails):
    monkeypatch.setattr(ts, fails, _out_of_resources)
    with pytest.warns(RuntimeWarning, match=r"failed on cuda:0 \(OutOfResources: .*shared memory.*'torch'") as rec:
        assert resolve_scan_backend('cuda') == 'torch'
    assert len([w for w in rec if 'Triton selective-scan kernels failed' in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no second warning
        assert resolve_scan_backend('cuda') == 'torch'
        assert resolve_scan_backend('cuda:0') == 'torch'
    assert gpu == ['cuda:0']  # probed once for the device, however it was named
    with pytest.raises(RuntimeError, match=r"'triton' cannot run on cuda:0: its kernels failed to launch there "
                                           r"\(OutOfResources"):
        resolve_scan_backend('cuda', 'triton')


def test_failure_is_per_device_and_success_is_cached(gpu, monkeypatch):
    monkeypatch.setattr(ts, 'scan_fwd', _out_of_resources)
    with pytest.warns(RuntimeWarning, match='OutOfResources'):
        assert resolve_scan_backend('cuda:0') == 'torch'
    monkeypatch.setattr(ts, 'scan_fwd', _fwd_ok)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert resolve_scan_backend('cuda:1') == 'triton'
        assert resolve_scan_backend('cuda:1') == 'triton'
        assert resolve_scan_backend('cuda:1', 'triton') == 'triton'
    assert gpu == ['cuda:0', 'cuda:1']


def test_probe_catches_any_exception_and_non_finite_results(gpu, monkeypatch):
    monkeypatch.setattr(ts, 'scan_bwd', lambda *a, **k: tuple(torch.full_like(t, float('nan')) if t is not None
                                                               else None for t in _bwd_ok(*a, **k)))
    with pytest.warns(RuntimeWarning, match='non-finite'):
        assert resolve_scan_backend('cuda') == 'torch'


def test_no_probe_without_a_real_gpu(gpu, monkeypatch):
    """Fake CUDA tensors on a machine without a GPU: nothing to launch on, auto keeps Triton and caches nothing."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(ts, 'scan_fwd', _out_of_resources)
    assert resolve_scan_backend('cuda') == 'triton'
    assert gpu == [] and ss._triton_launches == {}


def test_op_gets_the_fallback_backend_under_fake_cuda(gpu, monkeypatch):
    """The backend is settled before the custom op: after a failed probe the op runs 'torch', and its fake gives the
    PyTorch layout of the checkpoints ([n + 1, B, N, D]) that the backward of that backend reads."""
    monkeypatch.setattr(ts, 'scan_fwd', _out_of_resources)
    seen = []
    op = ss._selective_scan_op

    def record(*args):
        seen.append(args[-1])
        res = op(*args)
        seen.append(tuple(res[1].shape))
        return res

    monkeypatch.setattr(ss, '_selective_scan_op', record)
    b, d, n, L = 2, 6, 4, 10
    with FakeTensorMode():
        r = lambda *s: torch.randn(*s, device='cuda')
        with pytest.warns(RuntimeWarning, match='OutOfResources'):
            out = selective_scan_fn(r(b, d, L), r(b, d, L), -torch.rand(d, n, device='cuda'), r(b, n, L),
                                    r(b, n, L), r(d), r(b, d, L), r(d), True, chunk_size=4)
    assert seen == ['torch', (-(-L // 4) + 1, b, n, d)]
    assert out.shape == (b, d, L) and out.device.type == 'cuda'


@pytest.mark.parametrize('version,ok', [('2.3.1', False), ('2.9.9', False), (ss.MIN_TRITON, True), ('3.1.0', True),
                                        ('3.2.0+git1a2b3c4', True), ('10.0.0', True)])
def test_triton_older_than_min_is_passed_over_by_auto_and_refused_by_name(gpu, monkeypatch, version, ok):
    monkeypatch.setattr(triton, '__version__', version)
    if ok:
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            assert resolve_scan_backend('cuda') == 'triton'
            assert resolve_scan_backend('cuda', 'triton') == 'triton'
        return
    with pytest.warns(RuntimeWarning, match=rf"needs triton>={ss.MIN_TRITON}, found triton {version}"):
        assert resolve_scan_backend('cuda') == 'torch'
    with pytest.raises(RuntimeError, match=rf"needs triton>={ss.MIN_TRITON}, found triton {version}"):
        resolve_scan_backend('cuda', 'triton')
    assert gpu == []  # an old Triton is not launched


def test_version_tuple():
    assert ss._version_tuple('3.0.0') == (3, 0, 0)
    assert ss._version_tuple('3.2.0+git1a2b') == (3, 2, 0)
    assert ss._version_tuple('3.1') == ss._version_tuple('3.1.0') < ss._version_tuple('3.10.0')
    assert ss._version_tuple('nightly') < ss._version_tuple(ss.MIN_TRITON)  # unparsable: treated as too old


def test_probe_runs_on_real_tensors_under_fake_mode(gpu):
    """Resolving under FakeTensorMode (a user's, or a tracer's) probes with real tensors: the mode is set aside."""
    with FakeTensorMode():
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            assert resolve_scan_backend('cuda') == 'triton'
    assert gpu == ['cuda:0'] and ss._triton_launches == {('cuda:0', None): None}


def test_each_kernel_variant_is_probed_and_falls_back_alone(gpu, monkeypatch):
    """The kernels a call compiles depend on its width, state size, optional inputs and dtype: a variant that fails
    (here: any call with a gate z, as vGamba's mixer makes) falls back alone; GSSM's (no z) keeps Triton. The probe
    runs the variant's own inputs."""
    seen = []

    def fails_with_z(u, delta, A, B, C, D, z, *args, **kwargs):
        seen.append((u.shape[1], A.shape[1], z is not None, u.dtype))
        if z is not None:
            raise RuntimeError('OutOfResources: shared memory')
        return _fwd_ok(u, delta, A, B, C, D, z, *args, **kwargs)

    monkeypatch.setattr(ts, 'scan_fwd', fails_with_z)
    gssm = (256, 8, True, False, True, True, 'bfloat16')
    vgamba = (512, 64, True, True, True, True, 'float32')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert resolve_scan_backend('cuda', variant=gssm) == 'triton'
    with pytest.warns(RuntimeWarning, match='OutOfResources'):
        assert resolve_scan_backend('cuda', variant=vgamba) == 'torch'
    assert resolve_scan_backend('cuda', variant=gssm) == 'triton'  # cached, no new probe
    assert seen == [(256, 8, False, torch.bfloat16), (512, 64, True, torch.float32)]
    with pytest.raises(RuntimeError, match='failed to launch there'):
        resolve_scan_backend('cuda', 'triton', variant=vgamba)
    assert ss._variant(torch.zeros(2, 512, 5), torch.zeros(512, 64), torch.zeros(512), torch.zeros(2, 512, 5),
                       torch.zeros(512), True) == vgamba


@pytest.mark.slow
def test_kernels_compile_for_a_gpu_with_this_triton(tmp_path):
    """Triton's full compiler (to a cubin for sm_90) on both kernels, no GPU needed: what a first launch on a GPU
    compiles (the interpreter of tests/test_triton_scan.py does not check what the compiler refuses)."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / 'scripts' / 'compile_triton_kernels.py')], cwd=root,
                          env={**os.environ, 'TRITON_CACHE_DIR': str(tmp_path)}, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.count('OK   ') == 4


_PROBE_CHILD = """
import torch
from gmamba_zoo.ops import selective_scan as ss
ts = ss._triton_kernel.get()
assert ts is not None and ts.interpreted()
ss._probe_triton(torch.device('cpu'))  # the real kernels, in the interpreter: no error
ts._bwd_kernel = None  # a broken backward
try:
    ss._probe_triton(torch.device('cpu'))
except TypeError:
    print('PROBE OK')
"""


@pytest.mark.slow
def test_probe_launches_the_real_kernels():
    """The probe's calls match the kernels' wrappers: it runs them in Triton's interpreter (about 30 s), and raises
    when a kernel cannot launch."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, 'TRITON_INTERPRET': '1', 'OMP_NUM_THREADS': '1',
           'PYTHONPATH': os.pathsep.join(filter(None, [str(root), os.environ.get('PYTHONPATH')]))}
    proc = subprocess.run([sys.executable, '-c', _PROBE_CHILD], cwd=root, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0 and 'PROBE OK' in proc.stdout, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_auto_passes_over_mamba_ssm_for_states_its_kernel_refuses(gpu, monkeypatch):
    """mamba-ssm's kernel takes d_state <= 256: above it auto goes on to Triton, and 'cuda' by name says why."""
    monkeypatch.setattr(ss, '_KERNELS', dict(ss._KERNELS, cuda=(ss._OptionalModule('math'), 'mamba-ssm')))
    small, large = (64, 256, True, False, True, True, 'float32'), (64, 257, True, False, True, True, 'float32')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert resolve_scan_backend('cuda', variant=small) == 'cuda'
        assert resolve_scan_backend('cuda', variant=large) == 'triton'
    with pytest.raises(RuntimeError, match=r"takes d_state <= 256, got 257"):
        resolve_scan_backend('cuda', 'cuda', variant=large)
