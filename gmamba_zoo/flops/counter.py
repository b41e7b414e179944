"""Parameters and FLOPs of every zoo model and its plain timm baseline, counted with fvcore.

Conventions (printed with every report):

* **One multiply-add counts as one FLOP**, as in fvcore and as the papers report them: the "GFLOPs" here are GMACs.
* Dense ops are counted with fvcore's own handles (``aten::linear``, ``aten::_convolution``, ``aten::addmm``,
  ``aten::mm``, ``aten::bmm``, ``aten::einsum``, the norms, ``aten::adaptive_avg_pool2d``, upsampling), plus:

  - ``aten::matmul``: prod(broadcast batch dims) * M * K * N. fvcore's handle multiplies by the batch dims of the
    first operand only, which undercounts a broadcast second operand and rejects 1-D operands.
  - ``aten::scaled_dot_product_attention`` (fvcore has no handle): q [..., L, E], k [..., S, E], v [..., S, Ev]
    -> prod(q batch dims) * L * S * (E + Ev), i.e. the two matmuls q k^T and attn v. Masks, scaling and the
    softmax are element-wise and not counted, as for the explicit matmul form.
  - the FFTs (``aten::fft_rfft2``, ``fft_irfft2``, ``fft_fft2``, ``fft_ifft2``, the 1-D and n-D forms):
    numel * ceil(log2 n), numel the element count of the real-valued side (input of a forward real FFT, output
    of an inverse real FFT, the input of a complex FFT) including the batch, n the product of the transformed
    sizes. That is radix-2 Cooley-Tukey's n log2 n butterfly steps per transform, one FLOP each; HorNet's
    counter uses the same n log2 n form per channel (and leaves out the batch).
  - ``gmamba_zoo::selective_scan`` (the scan custom op, whichever backend runs): 9 * B * L * D * N, plus
    B * D * L when the skip weight D is given and B * D * L more for the z gate. This is the Mamba authors'
    count (state-spaces/mamba issue 110), also used by VMamba.
  - ``aten::mean``, ``aten::sum`` (reductions) and ``aten::avg_pool2d``: one FLOP per input element summed,
    like fvcore's ``aten::adaptive_avg_pool2d``.

* Everything else in the trace must be on an explicit allow-list of FLOP-free ops: :data:`SHAPE_OPS` (views,
  copies, indexing, concatenation, tensor creation) and :data:`ELEMENTWISE_OPS` (additions, products,
  activations, softmax, comparisons, max-pooling), which fvcore and the papers do not count. fvcore's own
  built-in ignore list is switched off, so an op on neither list is reported as skipped and :func:`count`
  raises :class:`SkippedOpsError`: a new FLOP-bearing op cannot silently count as zero.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..bench.progress import Progress, add_quiet_argument
from ..compat import flop_analysis, fvcore_nn
from ..models.features import feature_info_dicts
from ..models.gmamba import build_for_input_size
from ..models.variants import baseline_name, gmamba_spec

__all__ = [
    'FLOP_HANDLES', 'SHAPE_OPS', 'ELEMENTWISE_OPS', 'FLOP_FREE_OPS', 'SkippedOpsError', 'ZooFlopCountAnalysis',
    'count', 'count_params', 'baseline_name', 'fft_flop_jit', 'scan_flop_jit', 'sdpa_flop_jit', 'matmul_flop_jit',
    'reduction_flop_jit', 'avg_pool_flop_jit', 'baddbmm_flop_jit', 'PAPER', 'CONVENTION', 'build_report',
    'add_arguments', 'run',
]

CONVENTION = ('fvcore counts one multiply-add as one FLOP, so GFLOPs here are GMACs (the unit the papers report '
              'as FLOPs).')

jh = fvcore_nn().jit_handles
Handle = Callable[[List[Any], List[Any]], float]


# ----------------------------------------------------------------------------------------------------------------
# Handles
# ----------------------------------------------------------------------------------------------------------------

def _shape(v: Any) -> Optional[List[int]]:
    """Sizes of a traced tensor value, or None for a non-tensor (a None argument stays an input of the node)."""
    return v.type().sizes() if v.isCompleteTensor() else None


def _ivalue(v: Any) -> Any:
    """The constant behind a traced value: a constant, or a list built from constants; None when not constant."""
    node = v.node()
    if node.kind() == 'prim::ListConstruct':
        return [_ivalue(i) for i in node.inputs()]
    return v.toIValue()


def fft_flop_jit(default_ndim: Optional[int], real_side: str) -> Handle:
    """Handle for an FFT node: numel(real-valued side) * ceil(log2 n), n the product of the transformed sizes.

    Args:
        default_ndim: Number of trailing dims transformed when ``dim`` is not given (1 for ``fft_rfft``, 2 for
            ``fft_rfft2``, None for all dims as in ``fft_rfftn``).
        real_side: ``'input'`` (forward real and complex FFTs) or ``'output'`` (inverse real FFTs, whose
            output is the real signal).
    """
    def handle(inputs: List[Any], outputs: List[Any]) -> float:
        shape = _shape(inputs[0] if real_side == 'input' else outputs[0])
        dim = _ivalue(inputs[2]) if len(inputs) > 2 else None
        if dim is None:
            dim = list(range(len(shape))) if default_ndim is None else list(range(-default_ndim, 0))
        elif isinstance(dim, int):
            dim = [dim]
        n = math.prod(shape[d] for d in dim)
        return math.prod(shape) * math.ceil(math.log2(n)) if n > 1 else 0
    return handle


def scan_flop_jit(inputs: List[Any], outputs: List[Any]) -> float:
    """``gmamba_zoo::selective_scan``: 9*B*L*D*N, + B*D*L for the D term, + B*D*L for the z gate.

    Inputs by position: u [B, D, L], delta, A [D, N], B, C, D (or None), z (or None), delta_bias, ...
    """
    b, d, length = _shape(inputs[0])
    n = _shape(inputs[2])[1]
    flops = 9 * b * length * d * n
    if _shape(inputs[5]) is not None:
        flops += b * d * length
    if _shape(inputs[6]) is not None:
        flops += b * d * length
    return flops


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> float:
    """``aten::scaled_dot_product_attention``: q [..., L, E], k [..., S, E], v [..., S, Ev] -> prod(...)*L*S*(E+Ev)."""
    q, k, v = (_shape(x) for x in inputs[:3])
    return math.prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


def matmul_flop_jit(inputs: List[Any], outputs: List[Any]) -> float:
    """``aten::matmul`` with numpy broadcasting: prod(broadcast batch) * M * K * N; 1-D operands allowed."""
    a, b = _shape(inputs[0]), _shape(inputs[1])
    a = [1] + a if len(a) == 1 else a
    b = b + [1] if len(b) == 1 else b
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def reduction_flop_jit(inputs: List[Any], outputs: List[Any]) -> float:
    """``aten::mean`` / ``aten::sum``: one FLOP per input element."""
    return math.prod(_shape(inputs[0]))


def avg_pool_flop_jit(inputs: List[Any], outputs: List[Any]) -> float:
    """``aten::avg_pool2d``: output elements * kernel area (one add per element under the window)."""
    kernel = _ivalue(inputs[1])
    kernel = [kernel, kernel] if isinstance(kernel, int) else list(kernel) * (2 // len(kernel))
    return math.prod(_shape(outputs[0])) * math.prod(kernel)


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> float:
    """``aten::baddbmm(input, b1 [n, m, k], b2 [n, k, p])``: n * m * k * p (the added input is not counted)."""
    (n, m, k), p = _shape(inputs[1]), _shape(inputs[2])[-1]
    return n * m * k * p


#: Every FLOP-bearing op our models and their baselines use -> its fvcore handle. Pass it to
#: ``FlopCountAnalysis.set_op_handle(**FLOP_HANDLES)``.
FLOP_HANDLES: Dict[str, Handle] = {
    # fvcore's own handles (the set FlopCountAnalysis installs by default), except aten::matmul
    'aten::addmm': jh.addmm_flop_jit,
    'aten::bmm': jh.bmm_flop_jit,
    'aten::_convolution': jh.conv_flop_jit,
    'aten::einsum': jh.einsum_flop_jit,
    'aten::mm': jh.matmul_flop_jit,
    'aten::linear': jh.linear_flop_jit,
    'aten::batch_norm': jh.batchnorm_flop_jit,
    'aten::group_norm': jh.norm_flop_counter(2),
    'aten::layer_norm': jh.norm_flop_counter(2),
    'aten::instance_norm': jh.norm_flop_counter(1),
    'aten::upsample_nearest2d': jh.elementwise_flop_counter(0, 1),
    'aten::upsample_bilinear2d': jh.elementwise_flop_counter(0, 4),
    'aten::upsample_bicubic2d': jh.elementwise_flop_counter(0, 16),
    'aten::upsample_nearest1d': jh.elementwise_flop_counter(0, 1),
    'aten::upsample_linear1d': jh.elementwise_flop_counter(0, 2),
    'aten::adaptive_avg_pool2d': jh.elementwise_flop_counter(1, 0),
    'aten::grid_sampler': jh.elementwise_flop_counter(0, 4),
    # ours
    'aten::matmul': matmul_flop_jit,
    'aten::baddbmm': baddbmm_flop_jit,
    'aten::scaled_dot_product_attention': sdpa_flop_jit,
    'aten::fft_rfft': fft_flop_jit(1, 'input'),
    'aten::fft_irfft': fft_flop_jit(1, 'output'),
    'aten::fft_fft': fft_flop_jit(1, 'input'),
    'aten::fft_ifft': fft_flop_jit(1, 'input'),
    'aten::fft_rfft2': fft_flop_jit(2, 'input'),
    'aten::fft_irfft2': fft_flop_jit(2, 'output'),
    'aten::fft_fft2': fft_flop_jit(2, 'input'),
    'aten::fft_ifft2': fft_flop_jit(2, 'input'),
    'aten::fft_rfftn': fft_flop_jit(None, 'input'),
    'aten::fft_irfftn': fft_flop_jit(None, 'output'),
    'aten::fft_fftn': fft_flop_jit(None, 'input'),
    'aten::fft_ifftn': fft_flop_jit(None, 'input'),
    'gmamba_zoo::selective_scan': scan_flop_jit,
    'aten::mean': reduction_flop_jit,
    'aten::sum': reduction_flop_jit,
    'aten::avg_pool2d': avg_pool_flop_jit,
}

#: Ops that move, view, index or create data: no arithmetic.
SHAPE_OPS = frozenset('aten::' + op for op in '''
    Int ScalarImplicit size numel dim view view_as reshape reshape_as permute transpose t flatten unflatten squeeze
    unsqueeze unsqueeze_ expand expand_as contiguous clone detach detach_ alias to type_as copy_ cat concat stack
    chunk split split_with_sizes tensor_split unbind slice select narrow index index_select gather masked_select
    roll flip pad constant_pad_nd reflection_pad2d replication_pad2d repeat repeat_interleave tile movedim
    pixel_shuffle pixel_unshuffle channel_shuffle dropout dropout_ feature_dropout alpha_dropout zeros zeros_like
    ones ones_like full full_like empty empty_like new_empty new_zeros new_ones new_full arange linspace tensor
    scalar_tensor lift_fresh randn rand randn_like rand_like fft_fftfreq fft_rfftfreq fft_fftshift fft_ifftshift
    meshgrid masked_fill masked_fill_
    index_put_ where real imag view_as_real view_as_complex complex resolve_conj resolve_neg fill_ zero_
    '''.split())

#: Element-wise arithmetic, activations, softmax, comparisons and max-pooling: cheap next to the dense ops and,
#: as in fvcore and the papers' tables, not counted.
ELEMENTWISE_OPS = frozenset('aten::' + op for op in '''
    add add_ sub sub_ rsub mul mul_ div div_ neg abs exp exp_ log log1p expm1 sqrt rsqrt pow reciprocal sign erf
    addcmul addcmul_ addcdiv lerp sigmoid sigmoid_ silu silu_ gelu gelu_ relu relu_ relu6 leaky_relu hardtanh
    hardswish hardswish_ hardsigmoid hardsigmoid_ tanh softplus mish elu softmax log_softmax clamp clamp_ clamp_min
    clamp_min_ clamp_max clamp_max_ max min maximum minimum amax amin argmax lt gt le ge eq ne __and__ __or__ __xor__
    bitwise_not bitwise_and bitwise_or logical_not logical_and logical_or floor floor_divide ceil round trunc
    remainder fmod max_pool1d max_pool2d max_pool2d_with_indices adaptive_max_pool2d
    '''.split())

FLOP_FREE_OPS = SHAPE_OPS | ELEMENTWISE_OPS


class SkippedOpsError(RuntimeError):
    """A traced op has no FLOP handle and is not on the FLOP-free allow-list."""

    def __init__(self, skipped: Dict[str, int], what: str = 'model'):
        self.skipped = dict(skipped)
        ops = ', '.join(f'{k} (x{v})' for k, v in sorted(skipped.items()))
        super().__init__(f'{what}: fvcore skipped FLOP-bearing ops with no handle: {ops}. Add a handle to '
                         f'gmamba_zoo.flops.FLOP_HANDLES or, if the op does no arithmetic, to the allow-list.')


class ZooFlopCountAnalysis:
    """fvcore's ``FlopCountAnalysis`` with :data:`FLOP_HANDLES`, and :data:`FLOP_FREE_OPS` as the only ignore list.

    fvcore silently drops ops on its built-in ignore list; here that list is replaced by ours, and every
    allow-listed op that occurs is recorded in :attr:`not_counted` so the report can list it.

    Args:
        model: Module to trace (put it in eval mode first).
        inputs: Its inputs, e.g. ``(torch.randn(1, 3, 224, 224),)``.
        handles: Op name -> handle; defaults to :data:`FLOP_HANDLES`.
        flop_free: Allow-listed op names; defaults to :data:`FLOP_FREE_OPS`.
    """

    def __init__(self, model: nn.Module, inputs: Tuple[torch.Tensor, ...],
                 handles: Optional[Dict[str, Handle]] = None, flop_free: Optional[Iterable[str]] = None):
        handles = FLOP_HANDLES if handles is None else handles
        self.fca = flop_analysis(model, inputs)  # our handles and allow-list are the only ones
        self.fca.set_op_handle(**handles)
        self.not_counted: Counter = Counter()
        for op in (FLOP_FREE_OPS if flop_free is None else flop_free):
            if op not in handles:
                self.fca.set_op_handle(op, self._recorder(op))
        self.fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)

    def _recorder(self, op: str) -> Handle:
        def handle(inputs, outputs):
            self.not_counted[op] += 1
            return Counter()
        return handle

    def total(self) -> int:
        return self.fca.total()

    def by_operator(self) -> Counter:
        return self.fca.by_operator()

    def skipped(self) -> Dict[str, int]:
        """Ops in the trace with no handle and not allow-listed: FLOP-bearing ops that counted as zero."""
        return dict(self.fca.unsupported_ops())


def count_params(model: nn.Module) -> int:
    """Every parameter, including those held directly by non-leaf modules."""
    return sum(p.numel() for p in model.parameters())


def count(model: nn.Module, input_size: Sequence[int], handles: Optional[Dict[str, Handle]] = None,
          strict: bool = True, what: str = 'model', flop_free: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """Params and FLOPs of ``model`` on one random input.

    Args:
        model: The model; it is put in eval mode.
        input_size: (C, H, W), given a batch of 1, or any other full input shape such as (B, C, H, W).
        handles: Op handles; defaults to :data:`FLOP_HANDLES`.
        strict: Raise :class:`SkippedOpsError` when a FLOP-bearing op had no handle.
        what: Name used in the error message.
        flop_free: Allow-listed FLOP-free ops; defaults to :data:`FLOP_FREE_OPS`.

    Returns:
        ``{'params': int, 'flops': int (multiply-adds), 'gflops': float, 'by_operator': {op: flops},
        'not_counted': {allow-listed op: occurrences}, 'skipped': {op: occurrences}}``.
    """
    size = tuple(input_size)
    if len(size) == 3:
        size = (1,) + size
    if not size or min(size) < 1:
        raise ValueError(f'count: input_size must be (C, H, W) or a full input shape, got {input_size}.')
    model.eval()
    x = torch.randn(size, device=next(model.parameters()).device)
    analysis = ZooFlopCountAnalysis(model, (x,), handles, flop_free)
    with torch.no_grad():
        total = analysis.total()
    skipped = analysis.skipped()
    if strict and skipped:
        raise SkippedOpsError(skipped, what)
    return {'params': count_params(model), 'flops': int(total), 'gflops': total / 1e9,
            'by_operator': {k: int(v) for k, v in sorted(analysis.by_operator().items())},
            'not_counted': dict(sorted(analysis.not_counted.items())), 'skipped': skipped}


# ----------------------------------------------------------------------------------------------------------------
# Models, baselines and the papers' figures
# ----------------------------------------------------------------------------------------------------------------

#: The papers' figures. GMamba reports parameters added over the plain model for given block layouts;
#: vGamba reports totals at 224, taken with a counter that misses functional matmuls and scans and
#: parameters held by non-leaf modules.
PAPER: Dict[str, Dict[str, Any]] = {
    'resnet34_gmamba': {'delta_params_m': 5.63, 'layout': '+GMamba x7 (2,2,2,1)'},
    'convnext_s_gmamba': {'delta_params_m': 12.64, 'layout': '+GMamba x7 (2,2,2,1)'},
    'resnet50_gmamba': {'delta_params_m': 17.6, 'layout': '+GMamba x3 (1,1,1,0)'},
    'vgamba_b': {'params_m': 18.94, 'gflops_224': 3.77},
    'vgamba_l': {'params_m': 31.89, 'gflops_224': 6.32},
}

#: The paper's GMamba layouts (blocks after stages 1-4, stage widths) to check the block's parameter count alone.
PAPER_LAYOUTS = [
    ('ResNet-34 UNet +GMamba x7', (2, 2, 2, 1), (64, 128, 256, 512), 5.63),
    ('ConvNeXt-S UNet +GMamba x7', (2, 2, 2, 1), (96, 192, 384, 768), 12.64),
    ('ResNet-50 Faster R-CNN +GMamba x3', (1, 1, 1, 0), (256, 512, 1024, 2048), 17.6),
]


def _feature_info(model: nn.Module) -> Tuple[List[int], List[int]]:
    feats = feature_info_dicts(model)
    return [f['num_chs'] for f in feats], [f['reduction'] for f in feats]


def _create(name: str, size: Optional[Tuple[int, int]] = None, **kwargs) -> nn.Module:
    """Build a model in eval mode, laid out for ``size``: a Swin (plain or GMamba) keeps its windows at any size.

    Both a model and its baseline come from :func:`gmamba_zoo.models.build_for_input_size`, so a plain Swin
    baseline computes the way the GMamba Swin does (timm's own resize would scale the windows with the grid); a
    ``'base+gmamba(1,1,1,1)'`` name (``--base``) is any timm backbone with GMamba blocks.
    """
    return build_for_input_size(name, size, **kwargs).eval()


def measure(name: str, size: Tuple[int, int], det_size: Optional[Tuple[int, int]],
            handles: Optional[Dict[str, Handle]] = None) -> Dict[str, Any]:
    """Params, FLOPs at ``size`` (with classifier) and at ``det_size`` (backbone: ``num_classes=0``), features.

    The result has ``'error'`` (and ``'skipped'``) instead of figures when counting failed.
    """
    row: Dict[str, Any] = {'name': name}
    try:
        model = _create(name)
        row['params_m'] = count_params(model) / 1e6
        row['feature_channels'], row['feature_strides'] = _feature_info(model)
        if tuple(size) != tuple(model.pretrained_cfg.get('input_size', (3, 224, 224))[1:]):
            model = _create(name, size)
        c = count(model, (3, *size), handles, what=name)
        row['gflops'], row['by_operator'], row['not_counted'] = c['gflops'], c['by_operator'], c['not_counted']
        del model
        if det_size:
            c = count(_create(name, det_size, num_classes=0), (3, *det_size), handles, what=f'{name} at {det_size}')
            row['gflops_det'], row['by_operator_det'] = c['gflops'], c['by_operator']
    except SkippedOpsError as e:
        row['error'], row['skipped'] = str(e), e.skipped
    return row


def paper_layout_params() -> List[Dict[str, Any]]:
    """Parameters the GMamba block adds in the paper's layouts, from :class:`gmamba_zoo.GMambaBlock` alone."""
    from ..layers import GMambaBlock
    out = []
    for label, blocks, widths, paper in PAPER_LAYOUTS:
        ours = sum(n * count_params(GMambaBlock(w)) for n, w in zip(blocks, widths))
        out.append({'layout': label, 'blocks': blocks, 'widths': widths, 'ours_m': ours / 1e6, 'paper_m': paper})
    return out


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------

def _f(x: Optional[float], nd: int = 2) -> str:
    return '-' if x is None else f'{x:.{nd}f}'


def report_jobs(names: Sequence[str], baselines: bool = True) -> List[Tuple[str, str]]:
    """(model, name to measure) for every model and, once each, its baseline, in the order they are measured."""
    jobs: List[Tuple[str, str]] = []
    for name in names:
        for n in [name] + ([baseline_name(name)] if baselines and baseline_name(name) else []):
            if all(n != done for _, done in jobs):
                jobs.append((name, n))
    return jobs


def build_report(names: Sequence[str], size: Tuple[int, int] = (224, 224),
                 det_size: Optional[Tuple[int, int]] = (800, 1216), baselines: bool = True,
                 handles: Optional[Dict[str, Handle]] = None, progress: Optional[Callable[[str], None]] = None
                 ) -> Dict[str, Any]:
    """Measure every model in ``names`` and (once each) its baseline.

    Returns:
        ``{'machine': ..., 'size': ..., 'det_size': ..., 'convention': ..., 'models': [row], 'baselines': {name: row},
        'paper_layouts': [...], 'skipped': {model: {op: n}}}``.
    """
    rows, base_rows, skipped = [], {}, {}
    for name, n in report_jobs(names, baselines):
        if progress:
            progress(n)
        r = measure(n, size, det_size, handles)
        if 'skipped' in r:
            skipped[n] = r['skipped']
        if n == name:
            rows.append(r)
        else:
            base_rows[n] = r
    for r in rows:
        b = base_rows.get(baseline_name(r['name']) or '')
        r['baseline'] = baseline_name(r['name'])
        if b and 'error' not in b and 'error' not in r:
            r['delta_params_m'] = r['params_m'] - b['params_m']
        r['paper'] = PAPER.get(r['name'], {})
    import timm
    return {
        'machine': {'torch': torch.__version__, 'timm': timm.__version__, 'python': platform.python_version(),
                    'date': datetime.date.today().isoformat()},
        'size': list(size), 'det_size': list(det_size) if det_size else None, 'convention': CONVENTION,
        'models': rows, 'baselines': base_rows, 'paper_layouts': paper_layout_params(), 'skipped': skipped,
    }


def _main_table(rep: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    s, d = rep['size'], rep['det_size']
    det = f'{d[0]}x{d[1]}' if d else None
    head = ['model', 'params (M)', f'GFLOPs {s[0]}x{s[1]}'] + ([f'GFLOPs {det} (backbone)'] if det else []) + [
        'baseline', 'baseline params (M)', f'baseline GFLOPs {s[0]}'] + ([f'baseline GFLOPs {det}'] if det else []) + [
        'added params (M)', 'paper']
    body = []
    for r in rep['models']:
        if 'error' in r:
            body.append([r['name'], 'SKIPPED OPS: ' + ', '.join(r['skipped'])] + [''] * (len(head) - 2))
            continue
        b = rep['baselines'].get(r['baseline'] or '', {})
        p = r['paper']
        paper = '; '.join(filter(None, [
            f"{p['params_m']} M" if 'params_m' in p else '', f"{p['gflops_224']} GFLOPs" if 'gflops_224' in p else '',
            f"+{p['delta_params_m']} M for {p['layout']}" if 'delta_params_m' in p else ''])) or '-'
        body.append([r['name'], _f(r['params_m']), _f(r['gflops'])] + ([_f(r.get('gflops_det'), 1)] if det else []) + [
            r['baseline'] or '-', _f(b.get('params_m')), _f(b.get('gflops'))] + (
            [_f(b.get('gflops_det'), 1)] if det else []) + [_f(r.get('delta_params_m')), paper])
    return head, body


def _feature_table(rep: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    join = lambda xs: ', '.join(map(str, xs))
    return ['model', 'feature channels', 'feature strides'], [
        [r['name'], join(r.get('feature_channels', [])), join(r.get('feature_strides', []))] for r in rep['models']]


def _ops_table(rep: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    groups = {'scan': ('selective_scan',), 'FFT': ('fft_',), 'attention': ('matmul', 'bmm', 'einsum',
                                                                         'scaled_dot_product_attention')}
    head = ['model'] + [f'{g} GFLOPs' for g in groups] + ['not counted (allow-listed, FLOP-free)']
    body = []
    for r in rep['models']:
        if 'error' in r:
            continue
        ops = r['by_operator']
        body.append([r['name']] + [_f(sum(v for k, v in ops.items() if k.startswith(pre)) / 1e9, 3)
                                   for pre in groups.values()] + [', '.join(sorted(k.split('::')[-1]
                                                                                   for k in r['not_counted']))])
    return head, body


def _md(head: List[str], body: List[List[str]]) -> str:
    return '\n'.join(['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)] +
                     ['| ' + ' | '.join(row) + ' |' for row in body])


def _text(head: List[str], body: List[List[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda row: '  '.join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()
    return '\n'.join([line(head), line(['-' * w for w in widths])] + [line(r) for r in body])


FORMULAS = [
    '`aten::matmul`, `aten::bmm`, `aten::einsum`, `aten::linear`, `aten::_convolution`: multiply-adds of the '
    'product (fvcore\'s handles; `aten::matmul` re-implemented to honour broadcasting).',
    '`aten::scaled_dot_product_attention`: batch * L * S * (E + Ev) (the q k^T and attn v products).',
    'FFTs (`aten::fft_rfft2`, `aten::fft_irfft2`, ...): numel * ceil(log2 n), numel the real-valued side with '
    'the batch, n the product of the transformed sizes (radix-2 n log2 n; HorNet counts n log2 n per channel).',
    '`gmamba_zoo::selective_scan`: 9 * B * L * D * N + B * D * L (D skip) + B * D * L (z gate, when given), '
    'the Mamba authors\' count in state-spaces/mamba issue 110 (also VMamba\'s).',
    'Norms: fvcore (4 or 5 per element); `aten::mean`, `aten::sum`, `aten::avg_pool2d`, '
    '`aten::adaptive_avg_pool2d`: one per summed element; upsampling: 1 (nearest), 2 (linear 1-D), 4 (bilinear, '
    'fvcore) or 16 (bicubic) per output element.',
    'Not counted (explicit allow-list in `gmamba_zoo/flops/counter.py`): data movement and element-wise ops (adds, '
    'products, activations, softmax, comparisons, max-pooling). Any other op with no handle fails the report.',
]


def _vgamba_note() -> str:
    return ('vGamba: the paper\'s counter counts neither parameters held directly by a non-leaf module nor '
            'functional matmuls and scans, so the complete counts here are higher than the paper\'s '
            '(docs/vgamba.md breaks the difference down); the model is not shrunk to match.')


def markdown(rep: Dict[str, Any], command: str) -> str:
    m = rep['machine']
    lines = [
        '# Parameters and FLOPs', '',
        f'Generated by `{command}` (also `gmamba-zoo flops`); do not edit by hand.', '',
        f"torch {m['torch']}, timm {m['timm']}, Python {m['python']}; {m['date']}.", '',
        f"**{rep['convention']}** Batch 1. GFLOPs at {rep['size'][0]}x{rep['size'][1]} include the classifier; "
        + (f"at {rep['det_size'][0]}x{rep['det_size'][1]} they are for the backbone (`num_classes=0`, as a "
           'detector uses it). ' if rep['det_size'] else '') +
        'Params are every parameter of the classification model (1000 classes). "added params" is the '
        'difference to the baseline; the GMamba paper reports its added params for the layout named beside them, '
        'which may differ from this package\'s default layout (see the layout table below).', '',
        _md(*_main_table(rep)), '',
        '## Feature maps', '', _md(*_feature_table(rep)), '',
        '## Where the new ops\' FLOPs go', '',
        f"At {rep['size'][0]}x{rep['size'][1]}; \"attention\" is every matmul/bmm/einsum/SDPA.", '',
        _md(*_ops_table(rep)), '',
        '## GMamba block parameters in the paper\'s layouts', '',
        _md(['layout', 'blocks after stages 1-4', 'widths', 'ours (M)', 'paper (M)'],
            [[p['layout'], str(p['blocks']), str(p['widths']), _f(p['ours_m']), _f(p['paper_m'])]
             for p in rep['paper_layouts']]), '',
        '## How the FLOPs are counted', '', *[f'- {x}' for x in FORMULAS], f'- {_vgamba_note()}', '',
    ]
    if rep['skipped']:
        lines += ['## FAILED: FLOP-bearing ops skipped', ''] + [f'- {k}: {v}' for k, v in rep['skipped'].items()] + ['']
    return '\n'.join(lines)


# the docs' address for links in generated Markdown: it is read in the README on the package index and in docs/ alike
DOCS_URL = 'https://github.com/gmamba-zoo/gmamba_zoo/blob/main/docs'


def models_table(rep: Dict[str, Any]) -> str:
    """The README's model table (Markdown), generated from a report."""
    s, d = rep['size'], rep['det_size']
    head = ['model', 'baseline', 'params (M)', 'added params (M)', f'GFLOPs {s[0]}'] + (
        [f'GFLOPs {d[0]}x{d[1]}'] if d else []) + ['feature channels', 'strides']
    body = [[f"`{r['name']}`", f"`{r['baseline']}`" if r.get('baseline') else '-', _f(r.get('params_m')),
             _f(r.get('delta_params_m')), _f(r.get('gflops'))] + ([_f(r.get('gflops_det'), 1)] if d else []) +
            [', '.join(map(str, r.get('feature_channels', []))), ', '.join(map(str, r.get('feature_strides', [])))]
            for r in rep['models']]
    return (_md(head, body) + f"\n\n{rep['convention']} Generated by `gmamba-zoo flops`; details in "
            f'[docs/flops.md]({DOCS_URL}/flops.md).\n')


README_START, README_END = '<!-- models:start -->', '<!-- models:end -->'


def update_readme(path: Path, table: str) -> None:
    """Replace the text between the README's ``<!-- models:start -->`` and ``<!-- models:end -->`` markers."""
    text = path.read_text()
    pat = re.compile(re.escape(README_START) + r'.*?' + re.escape(README_END), re.S)
    if not pat.search(text):
        raise SystemExit(f'{path}: no {README_START} ... {README_END} block to regenerate; add the two markers.')
    path.write_text(pat.sub(lambda _: f'{README_START}\n{table}{README_END}', text, count=1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--models', nargs='*', help='zoo models (default: every registered one)')
    parser.add_argument('--base', help='any timm backbone: count it with GMamba blocks (--depths) beside itself; '
                                       'with --models, in addition to those')
    parser.add_argument('--depths', type=int, nargs='+', default=[1, 1, 1, 1],
                        help='with --base: GMamba blocks after each of its last len(depths) feature taps')
    parser.add_argument('--size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    parser.add_argument('--det-size', type=int, nargs=2, default=(800, 1216), metavar=('H', 'W'),
                        help='detection size (backbone only)')
    parser.add_argument('--no-det', action='store_true', help='skip the detection size')
    parser.add_argument('--no-baselines', action='store_true', help='skip the plain timm baselines')
    parser.add_argument('--out', type=Path, help='write the Markdown report here and JSON beside it (.json)')
    parser.add_argument('--models-md', type=Path, help='write the README model table here (e.g. docs/models.md)')
    parser.add_argument('--readme', type=Path, help='regenerate the marked model block of this README')
    add_quiet_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ..models import list_models
    names = args.models or ([] if getattr(args, 'base', None) else list_models())
    unknown = sorted(set(names) - set(list_models()))
    if getattr(args, 'base', None):
        names = list(names) + [gmamba_spec(args.base, args.depths)]
    if unknown:
        raise SystemExit(f'gmamba-zoo flops: unknown models {unknown}; `gmamba-zoo list` shows them.')
    if not names:
        raise SystemExit('gmamba-zoo flops: no models registered.')
    with Progress('flops', len(report_jobs(names, not args.no_baselines)), 'model', args.quiet) as progress:
        started = []

        def count_next(n: str) -> None:
            if started:
                progress.done()
            started.append(n)
            progress.stage(n)
            progress(f'counting {n} ...')

        rep = build_report(names, tuple(args.size), None if args.no_det else tuple(args.det_size),
                           baselines=not args.no_baselines, progress=count_next)
        progress.done()
    print(rep['convention'])
    print(_text(*_main_table(rep)))
    print()
    print(_text(*_feature_table(rep)))
    print()
    head, body = _ops_table(rep)
    print(_text(head[:-1], [row[:-1] for row in body]))
    seen = sorted({op.split('::')[-1] for r in rep['models'] for op in r.get('not_counted', {})})
    print(f"\nNot counted (allow-listed FLOP-free ops seen): {', '.join(seen)}")
    from ..bench.machine import command_line
    command = command_line('scripts/report_flops.py', 'flops', args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(rep, command))
        args.out.with_suffix('.json').write_text(json.dumps(rep, indent=2))
    if args.models_md:
        args.models_md.parent.mkdir(parents=True, exist_ok=True)
        args.models_md.write_text(f'# Models\n\nGenerated by `{command}`; do not edit by hand.\n\n'
                                  + models_table(rep))
    if args.readme:
        update_readme(args.readme, models_table(rep))
    if rep['skipped']:
        print(f"FAILED: FLOP-bearing ops were skipped: {json.dumps(rep['skipped'])}", file=sys.stderr)
        return 1
    return 0
