"""Property-based fuzz of the zoo's models: random inputs and random build arguments, valid and invalid.

* Inputs: tiny models of each family (ResNet, ConvNeXt and Swin with GMamba blocks active, vGamba), full or
  ``features_only``, channels-last or not, fed batches of 0-3 images of 16-64 px (odd sizes too), 1-4 channels,
  float32/float64/float16/bfloat16/uint8, with and without bfloat16 autocast. A valid input must run and match the
  float32 eager result of the same model (float32 exactly up to summation order; autocast within bfloat16's error);
  an invalid one must raise ``ValueError``/``TypeError`` naming what was expected. Nothing may fail any other way or
  return numbers that do not match.
* Build arguments: random ``gmamba_depths``/``gmamba_kwargs`` for resnet18_gmamba and random vGamba arguments, each
  drawn valid or invalid. With an invalid one the build must raise ``ValueError``/``TypeError`` naming an invalid
  argument and its value; with none the model must build, run, and give each image the result it gets alone.

Reproducible in CI: ``derandomize=True`` (examples derived from the test, no example database), no deadline (the
machine is shared). Runtime about 40 s on 2 cores.
"""
import copy
import math
from typing import Any, Dict, Tuple

import pytest
import timm
import torch
from hypothesis import HealthCheck, event, given, settings, strategies as st

import gmamba_zoo

pytestmark = pytest.mark.usefixtures('one_thread')

FUZZ = settings(derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))

ACTIVE = dict(gmamba_kwargs=dict(layer_scale_init_value=0.1), num_classes=5)
TINY = {
    'resnet18_gmamba': dict(layers=(1, 1, 1, 1), gmamba_depths=(1, 0, 0, 1), **ACTIVE),
    'convnext_t_gmamba': dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), gmamba_depths=(1, 1, 0, 1), **ACTIVE),
    'swin_t_gmamba': dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), gmamba_depths=(1, 0, 1, 0),
                          **ACTIVE),
    'vgamba_b': dict(widths=(8, 16, 32, 64), layers=(1, 1, 1, 1), d_state=4, num_classes=5),
}
_MODELS: Dict[Tuple[str, bool, bool], torch.nn.Module] = {}


def tiny_model(name: str, features_only: bool, channels_last: bool) -> torch.nn.Module:
    """The tiny model, built once per process; the channels-last one is a converted copy (same weights)."""
    key = (name, features_only, channels_last)
    if key not in _MODELS:
        if channels_last:
            _MODELS[key] = copy.deepcopy(tiny_model(name, features_only, False)).to(memory_format=torch.channels_last)
        else:
            torch.manual_seed(0)
            _MODELS[key] = timm.create_model(name, features_only=features_only, **TINY[name]).eval()
    return _MODELS[key]


def _outputs(y: Any) -> list:
    return list(y) if isinstance(y, (list, tuple)) else [y]


def assert_close(got: list, ref: list, rel: float) -> None:
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        assert torch.isfinite(g).all()
        if r.numel():
            err = float((g.float() - r).norm())
            assert err <= rel * float(r.norm()) + 1e-6 * math.sqrt(r.numel()), (err, float(r.norm()))


@st.composite
def inputs(draw) -> Dict[str, Any]:
    """An input case: most are valid (a run to check against float32 eager), the rest break one rule each."""
    case = dict(batch=draw(st.integers(0, 3)), height=draw(st.integers(32, 64)), width=draw(st.integers(32, 64)),
                channels=3, dtype=torch.float32, autocast=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))
    kind = draw(st.sampled_from(['run', 'run', 'run', 'run', 'size', 'channels', 'dtype']))
    if kind == 'run' and case['autocast']:
        case['dtype'] = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    elif kind == 'size':
        side = draw(st.sampled_from(['height', 'width']))
        case[side] = draw(st.integers(16, 31))
    elif kind == 'channels':
        case['channels'] = draw(st.sampled_from([1, 2, 4]))
    elif kind == 'dtype':
        options = [torch.uint8, torch.int64, torch.float64] + ([] if case['autocast'] else [torch.float16])
        case['dtype'] = draw(st.sampled_from(options))
    return case


@settings(FUZZ, max_examples=150)
@given(name=st.sampled_from(sorted(TINY)), features_only=st.booleans(), channels_last=st.booleans(), case=inputs())
def test_fuzz_inputs(name, features_only, channels_last, case):
    model = tiny_model(name, features_only, channels_last)
    batch, height, width, channels, dtype, autocast = (
        case[k] for k in ('batch', 'height', 'width', 'channels', 'dtype', 'autocast'))
    g = torch.Generator().manual_seed(case['seed'])
    x32 = torch.randn(batch, channels, height, width, generator=g)
    x = (x32 * 50 + 100).clamp(0, 255).to(dtype) if not dtype.is_floating_point else x32.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    expected_error = None
    if channels != 3:
        expected_error = (ValueError, 'in_chans=3')
    elif min(height, width) < 32:
        expected_error = (ValueError, f'{height} x {width}')
    elif not dtype.is_floating_point:
        expected_error = (TypeError, 'floating-point')
    elif dtype == torch.float64 and autocast:
        expected_error = (TypeError, 'float64 input under torch.autocast')
    elif dtype != torch.float32 and not autocast:
        expected_error = (TypeError, f'input dtype {dtype}')

    event(f'error: {expected_error[0].__name__}' if expected_error else f'runs (autocast {autocast})')
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        if expected_error is not None:
            with pytest.raises(expected_error[0]) as err:
                model(x)
            assert expected_error[1] in str(err.value) and str(err.value).startswith(name)
            return
        got = _outputs(model(x))
    with torch.no_grad():
        ref = _outputs(tiny_model(name, features_only, False)(x.float().contiguous()))
    assert all(t.shape[0] == batch for t in got)
    assert_close(got, ref, rel=5e-2 if autocast else 1e-4)


# ------------------------------------------------------------------------------------------------ build arguments

# key -> (valid values, invalid values); None marks "left out"
GMAMBA_KWARGS = {
    'd_state': ([1, 2, 4], [0, -1, 2.5, '4', True]),
    'd_conv': ([1, 3, 5], [0, 2, 4, 3.0]),
    'dt_rank': (['auto', 1, 3], [0, 'big', 1.5]),
    'freq_cutoff': ([0.1, 0.25, 0.5], [0, 0.6, -0.1, float('nan'), '0.2']),
    'frequency_path': ([True, False], [1, 'yes']),
    'mlp_ratio': ([1, 2.5, 4.0], [0, -1, 'x']),
    'layer_scale_init_value': ([0.0, 0.1, 1], [float('inf'), None]),
    'bogus': ([], [1]),
}
GMAMBA_DEPTHS = ([(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 1), (1, 1, 1, 1), [0, 0, 1, 0]],
                 [3, (1, 2), (1, -1, 0, 0), (1.0, 0, 0, 0), '1111', (1, 0, 0, 0, 0)])


@st.composite
def gmamba_build_args(draw) -> Tuple[Dict[str, Any], Dict[str, Tuple[str, Any]]]:
    """create_model kwargs and the invalid ones among them: name in the message -> value."""
    kwargs, invalid = {}, {}
    choice = draw(st.integers(0, 3))
    if choice == 0:
        kwargs['gmamba_depths'] = invalid['gmamba_depths'] = draw(st.sampled_from(GMAMBA_DEPTHS[1]))
    elif choice in (1, 2):
        kwargs['gmamba_depths'] = draw(st.sampled_from(GMAMBA_DEPTHS[0]))
    block = dict(layer_scale_init_value=0.1)
    for key, (good, bad) in GMAMBA_KWARGS.items():
        choice = draw(st.integers(0, 5))  # mostly left out or valid, so that invalid ones come one or two at a time
        if choice == 0 and bad:
            block[key] = value = draw(st.sampled_from(bad))
            if key == 'bogus':  # an unknown key: the message names the key itself
                invalid[f"'{key}'"] = key
            else:
                invalid[f"gmamba_kwargs['{key}']"] = value
        elif choice in (1, 2) and good:
            block[key] = draw(st.sampled_from(good))
    if draw(st.integers(0, 9)) == 0:
        block = draw(st.sampled_from([5, 'd_state=4', [('d_state', 4)]]))
        invalid = {k: v for k, v in invalid.items() if not k.startswith(("gmamba_kwargs", "'"))}
        invalid['gmamba_kwargs'] = block
    kwargs['gmamba_kwargs'] = block
    return kwargs, invalid


def _check_error(err: pytest.ExceptionInfo, invalid: Dict[str, Any]) -> None:
    msg = str(err.value)
    named = [k for k in invalid if k in msg]
    assert named, f'none of {sorted(invalid)} named in {msg!r}'
    assert any(repr(invalid[k]) in msg or str(invalid[k]) in msg for k in named), (msg, invalid)


def _check_runs(model: torch.nn.Module) -> None:
    """Runs, finite, and each image's result does not depend on the others in the batch (eval mode)."""
    model.eval()
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        both = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(2)])
    assert torch.isfinite(both).all()
    torch.testing.assert_close(both, alone, rtol=1e-4, atol=1e-5)


@settings(FUZZ, max_examples=80)
@given(args=gmamba_build_args())
def test_fuzz_gmamba_build_arguments(args):
    kwargs, invalid = args
    event(f'{len(invalid)} invalid')
    torch.manual_seed(0)
    if invalid:
        with torch.device('meta'), pytest.raises((ValueError, TypeError)) as err:
            timm.create_model('resnet18_gmamba', **kwargs)
        _check_error(err, invalid)
        return
    model = timm.create_model('resnet18_gmamba', layers=(1, 1, 1, 1), num_classes=5, **kwargs)
    depths = kwargs.get('gmamba_depths', (2, 2, 2, 1))
    assert sum(isinstance(m, gmamba_zoo.GMambaBlock) for m in model.modules()) == sum(depths)
    _check_runs(model)


VGAMBA_ARGS = {
    'd_state': ([2, 4], [0, -3, 4.0]),
    'd_conv': ([1, 2, 4], [0, 2.0]),
    'expand': ([1, 2, 1.5], [0, -1, 'two']),
    'num_heads': ([1, 2, 4], [0, 3, -1]),  # 3: the Gamba stages' widths (32, 64) halve to 16 and 32
    'num_registers': ([0, 1, 3], [-1, 0.5]),
    'layers': ([(1, 1, 1, 1), (1, 2, 1, 1)], [(1, 1, 1), (1, 0, 1, 1), 4]),
    'drop_path_rate': ([0.0, 0.1], [1.0, -0.1]),
    'img_size': ([64, (48, 64)], [0, (64,), 'big']),
}


@st.composite
def vgamba_build_args(draw) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    kwargs, invalid = dict(widths=(8, 16, 32, 64), layers=(1, 1, 1, 1), d_state=4, num_classes=5), {}
    for key, (good, bad) in VGAMBA_ARGS.items():
        choice = draw(st.integers(0, 6))
        if choice == 0:
            kwargs[key] = invalid[key] = draw(st.sampled_from(bad))
        elif choice in (1, 2):
            kwargs[key] = draw(st.sampled_from(good))
    return kwargs, invalid


@settings(FUZZ, max_examples=60)
@given(args=vgamba_build_args())
def test_fuzz_vgamba_build_arguments(args):
    kwargs, invalid = args
    event(f'{len(invalid)} invalid')
    torch.manual_seed(0)
    if invalid:
        with torch.device('meta'), pytest.raises((ValueError, TypeError)) as err:
            timm.create_model('vgamba_b', **kwargs)
        if 'num_heads' in invalid and invalid['num_heads'] == 3:
            invalid['widths[2]'] = 32
        _check_error(err, invalid)
        return
    _check_runs(timm.create_model('vgamba_b', **kwargs))
