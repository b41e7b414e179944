"""Global perception, made checkable: the paper's gradient criterion and effective receptive fields.

GMamba's claim, in the paper's definition of global perception: a map is global when every output depends on every
input position, ``||d f(X) / d X_{i,j}|| >= tau > 0`` everywhere, with no causal order. A causal scan fails it (an
output has zero gradient with respect to every later position in scan order) and so does a CNN whose depth limits its
reach. :func:`gradient_criterion` measures it exactly for any module and input size.

:func:`effective_receptive_field` is the usual ERF (Luo et al., NeurIPS 2016, "Understanding the Effective Receptive
Field in Deep Convolutional Neural Networks"): the gradient of the centre of a feature map with respect to the input,
averaged over several images. :func:`plot_erf_maps` draws them (matplotlib, imported only there) and
``gmamba-zoo erf MODEL`` compares a GMamba model with its plain backbone and a scan-only variant.
"""
from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from ..bench.progress import Progress, add_quiet_argument
from ..compat.extras import require_extra
from ..models.features import feature_info_dicts

__all__ = [
    'GlobalPerceptionResult', 'gradient_criterion', 'effective_receptive_field', 'erf_area_ratio', 'noise_images',
    'plot_erf_maps', 'erf_models', 'require_matplotlib',
]

Position = Tuple[int, int]
_LAYOUTS = ('NCHW', 'NHWC')


# ----------------------------------------------------------------------------------------------------------------------
# helpers shared by the criterion and the ERF

def _check_layout(name: str, layout: str) -> str:
    layout = layout.upper()
    if layout not in _LAYOUTS:
        raise ValueError(f'{name} must be one of {_LAYOUTS}, got {layout!r}.')
    return layout


def _select_map(out: Union[Tensor, Sequence[Tensor]], stage: int, layout: str, who: str) -> Tensor:
    """The chosen feature map of a module's output as [B, C, H, W].

    Args:
        out: A tensor, or a list/tuple of tensors (``features_only`` models, ``forward_intermediates``).
        stage: Which entry of a list/tuple output (negative counts from the end); ignored for a tensor.
        layout: 'NCHW' or 'NHWC', the layout of the chosen map.
    """
    if isinstance(out, (list, tuple)):
        if not out:
            raise ValueError(f'{who}: the module returned an empty {type(out).__name__}; expected feature maps.')
        if not -len(out) <= stage < len(out):
            raise ValueError(f'{who}: stage={stage} but the module returned {len(out)} feature maps.')
        out = out[stage]
    elif isinstance(out, dict):
        raise TypeError(f'{who}: the module returned a dict; wrap it so it returns a tensor or a list of tensors.')
    if not isinstance(out, Tensor) or out.dim() != 4:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f'{who}: expected a 4-D {layout} feature map from the module, got {shape}. Pass '
                         f'`forward="forward_features"` or a features_only model for a classifier.')
    return out.permute(0, 3, 1, 2) if layout == 'NHWC' else out


def _feed(x: Tensor, layout: str) -> Tensor:
    """[B, C, H, W] -> the layout the module expects."""
    return x.permute(0, 2, 3, 1) if layout == 'NHWC' else x


def _resolve_positions(positions: Optional[Sequence[Position]], h: int, w: int, who: str) -> List[Position]:
    if positions is None:  # first and last in raster order (the extremes for a causal scan) and the centre
        positions = [(0, 0), (h // 2, w // 2), (h - 1, w - 1)]
    resolved = []
    for p in positions:
        if len(p) != 2:
            raise ValueError(f'{who}: an output position is (row, col), got {p!r}.')
        i, j = int(p[0]), int(p[1])
        if not (-h <= i < h and -w <= j < w):
            raise ValueError(f'{who}: output position {tuple(p)} is outside the {h}x{w} output map.')
        q = (i % h, j % w)
        if q not in resolved:
            resolved.append(q)
    return resolved


class _EvalMode:
    """Put a module in eval mode (BatchNorm on running statistics, no dropout) and restore its modes after."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.module.modules()]
        self.module.eval()
        return self.module

    def __exit__(self, *exc) -> None:
        for m, mode in self.modes:
            m.training = mode


# ----------------------------------------------------------------------------------------------------------------------
# the gradient criterion

@dataclass
class GlobalPerceptionResult:
    """What :func:`gradient_criterion` found.

    Attributes:
        norms: [P, H, W] gradient norm of each chosen output position with respect to each input position (input
            resolution; see :func:`gradient_criterion` for which norm).
        positions: The P output positions (row, col) on the output map.
        taus: [P] per output position: min over input positions of its norm map divided by the mean of that map.
        tau: ``min(taus)``.
        holds: ``tau > threshold``: every chosen output depends on every input position.
        threshold: The relative threshold used.
        input_shape: (C, H, W) of the input.
        output_shape: (C, H, W) of the chosen output map.
        per_channel: Whether the minimum ran over input elements (i, j, c) rather than positions (i, j).
        name: Name of the module, for the report.
    """
    norms: Tensor
    positions: List[Position]
    taus: Tensor
    tau: float
    holds: bool
    threshold: float
    input_shape: Tuple[int, int, int]
    output_shape: Tuple[int, int, int]
    per_channel: bool = False
    name: str = 'module'

    @property
    def map(self) -> Tensor:
        """[H, W] norm map of the output position with the smallest tau (the one that decides ``holds``)."""
        return self.norms[int(self.taus.argmin())]

    def _describe_zeros(self, k: int) -> str:
        h, w = self.input_shape[1:]
        norms = self.norms[k]
        dead = norms <= self.threshold * norms.mean()
        n = int(dead.sum())
        if n == 0:
            return 'no input position without dependence'
        flat = dead.flatten()
        live = (~flat).nonzero().flatten()
        text = f'no dependence on {n} of {h * w} input positions'
        if live.numel() == 0:
            return text + ' (the output is constant in the input)'
        last = int(live.max())
        if bool(flat[last + 1:].all()) and not bool(flat[:last + 1].any()):
            return text + (f': exactly those after raster index {last} = position {divmod(last, w)} '
                           f'(a causal order)')
        rows, cols = (~dead).nonzero(as_tuple=True)
        return text + (f'; its dependence lies within rows {int(rows.min())}..{int(rows.max())}, '
                       f'cols {int(cols.min())}..{int(cols.max())} (a limited reach)')

    def report(self) -> str:
        """A readable account: one line per output position and the verdict."""
        c, h, w = self.input_shape
        what = 'input element (i, j, c)' if self.per_channel else 'input position (i, j)'
        lines = [
            f'Gradient criterion (the GMamba paper\'s definition of global perception) for {self.name}: input '
            f'{list(self.input_shape)} -> output map {list(self.output_shape)}; exact Jacobian, tau = min over each '
            f'{what} of the gradient norm / its mean.']
        for k, (p, t) in enumerate(zip(self.positions, self.taus.tolist())):
            lines.append(f'  output {p}: tau = {t:.3e}; {self._describe_zeros(k)}')
        verdict = 'HOLDS' if self.holds else 'FAILS'
        lines.append(f'Criterion {verdict}: tau = {self.tau:.3e} {">" if self.holds else "<="} threshold '
                     f'{self.threshold:.0e}' + ('; every chosen output depends on every input position.' if self.holds
                                                else '.'))
        return '\n'.join(lines)

    def __str__(self) -> str:
        return self.report()


def gradient_criterion(
        module: nn.Module,
        input_size: Sequence[int],
        positions: Optional[Sequence[Position]] = None,
        *,
        forward: Optional[str] = None,
        stage: int = -1,
        input_layout: str = 'NCHW',
        output_layout: str = 'NCHW',
        per_channel: bool = False,
        threshold: Optional[float] = None,
        dtype: torch.dtype = torch.float64,
        chunk_size: int = 64,
        x: Optional[Tensor] = None,
        seed: int = 0,
        progress: Optional[Progress] = None,
) -> GlobalPerceptionResult:
    """The paper's global-perception criterion, computed exactly.

    For each chosen output position p of the output map, the full Jacobian block ``J_p(a, b) = d f(X)[:, p] /
    d X[:, a, b]`` (C_out x C_in) is computed for every input position (a, b), and its Frobenius norm, over all output
    channels of p and all input channels of (a, b), forms the [H, W] norm map of p. With ``per_channel=True`` the
    minimum runs over input elements (a, b, c) instead (norm over output channels only), the paper's literal form.
    ``tau_p = min / mean`` of that map; the criterion holds when ``min_p tau_p > threshold``.

    Exact, not estimated: the Jacobian rows come from replicating the input along the batch and back-propagating
    output channel k of replica k, ``chunk_size`` rows per backward (P * C_out rows in all). This needs samples in a
    batch not to interact, which holds in eval mode (BatchNorm on running statistics), so the module runs in eval
    mode. The module is deep-copied and cast to ``dtype``; the original is untouched. In float64 the zeros of a
    causal scan or of a convolution's finite reach are exact (0.0), while a genuine dependence through GSSM's DFT
    measures about 1e-3 (per position) to 1e-6 (per element) of the mean on a random block, so the default threshold,
    1e-9 in float64 and 1e-5 in lower precision, sits well above round-off and well below real dependence.

    Args:
        module: Any module taking one [B, C, H, W] (or [B, H, W, C], see ``input_layout``) tensor and returning a
            feature map, or a list/tuple of them (``features_only`` models; ``stage`` picks one).
        input_size: (C, H, W) of the input (always in this order, whatever ``input_layout``).
        positions: Output positions (row, col) on the output map, negative indices allowed. Default: the first, the
            centre and the last position in raster order.
        forward: Name of a method to call instead of ``forward``, e.g. ``'forward_features'`` for a timm classifier.
        stage: Which map of a list/tuple output (default the last).
        input_layout, output_layout: 'NCHW' or 'NHWC' (timm's Swin stages and GMambaBlock(channels_last=True)).
        per_channel: Take the minimum over input elements (a, b, c) rather than positions (a, b).
        threshold: Relative threshold on tau; default 1e-9 for float64, 1e-5 otherwise.
        dtype: Compute dtype (float64 by default, so exact zeros and tiny dependences are told apart).
        chunk_size: Jacobian rows per forward/backward pass (memory against speed).
        x: The point at which to take the Jacobian, [C, H, W] or [1, C, H, W]; default standard normal from ``seed``.
        seed: Seed of the default input.
        progress: Counts the forward/backward passes when given.

    Returns:
        A :class:`GlobalPerceptionResult`: the [P, H, W] norm maps, taus, tau, holds and ``report()``.

    Raises:
        ValueError: Bad ``input_size``, layout, position or stage, or a module output that is not a feature map.
    """
    who = 'gradient_criterion'
    input_layout, output_layout = _check_layout('input_layout', input_layout), _check_layout('output_layout',
                                                                                             output_layout)
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(f'{who}: input_size must be (C, H, W) with positive entries, got {tuple(input_size)}.')
    c_in, h_in, w_in = (int(s) for s in input_size)
    if x is None:
        x = torch.randn(c_in, h_in, w_in, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x.reshape(-1, *x.shape[-3:])
    if tuple(x.shape) != (1, c_in, h_in, w_in):
        raise ValueError(f'{who}: x must be [C, H, W] = {[c_in, h_in, w_in]} or [1, C, H, W], got {tuple(x.shape)}.')
    if threshold is None:
        threshold = 1e-9 if dtype == torch.float64 else 1e-5
    if chunk_size < 1:
        raise ValueError(f'{who}: chunk_size must be >= 1, got {chunk_size}.')
    first = next((p for p in module.parameters()), None)
    device = first.device if first is not None else torch.device('cpu')
    model = copy.deepcopy(module).to(device=device, dtype=dtype).eval()
    fn: Callable = getattr(model, forward) if forward else model
    x = x.to(device=device, dtype=dtype)

    with torch.no_grad():
        probe = _select_map(fn(_feed(x, input_layout)), stage, output_layout, who)
    c_out, h_out, w_out = probe.shape[1:]
    pos = _resolve_positions(positions, h_out, w_out, who)
    rows = [(k, c) for k in range(len(pos)) for c in range(c_out)]
    sq = torch.zeros(len(pos), c_in, h_in, w_in, dtype=dtype, device=device)  # summed over output channels
    elem_max = torch.zeros_like(sq) if per_channel else None
    progress = progress or Progress('criterion', quiet=True)
    progress.add(-(-len(rows) // chunk_size))
    for start in range(0, len(rows), chunk_size):
        chunk = rows[start:start + chunk_size]
        xb = x.expand(len(chunk), -1, -1, -1).clone().requires_grad_(True)
        out = _select_map(fn(_feed(xb, input_layout)), stage, output_layout, who)
        idx = torch.arange(len(chunk), device=device)
        ks = [pos[k] for k, _ in chunk]
        sel = out[idx, torch.tensor([c for _, c in chunk], device=device),
                  torch.tensor([p[0] for p in ks], device=device), torch.tensor([p[1] for p in ks], device=device)]
        grad, = torch.autograd.grad(sel.sum(), xb, allow_unused=True)
        progress.done()
        if grad is None:
            continue
        for r, (k, _) in enumerate(chunk):
            sq[k] += grad[r].square()
    norms = sq.sum(1).sqrt()  # [P, H, W]: Frobenius norm over output channels and input channels
    if per_channel:
        elem = sq.sqrt()  # [P, C, H, W]: norm over output channels, per input element
        mins = elem.flatten(1).min(1).values
        means = elem.flatten(1).mean(1)
    else:
        mins, means = norms.flatten(1).min(1).values, norms.flatten(1).mean(1)
    taus = torch.where(means > 0, mins / means.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(means))
    tau = float(taus.min())
    return GlobalPerceptionResult(
        norms=norms.detach().cpu(), positions=pos, taus=taus.detach().cpu(), tau=tau, holds=tau > threshold,
        threshold=threshold, input_shape=(c_in, h_in, w_in), output_shape=(c_out, h_out, w_out),
        per_channel=per_channel, name=type(module).__name__)


# ----------------------------------------------------------------------------------------------------------------------
# effective receptive fields

def noise_images(n: int, size: Sequence[int], kind: str = 'pink', seed: int = 0) -> Tensor:
    """Random test images, standardised per image and channel.

    Args:
        n: Number of images.
        size: (C, H, W).
        kind: 'gaussian' (white noise) or 'pink' (1/f amplitude spectrum, the second-order statistics of natural
            images).
        seed: Generator seed.

    Returns:
        [n, C, H, W] float32.
    """
    c, h, w = size
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    if kind == 'pink':
        f = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2)
        f[0, 0] = 1.0 / max(h, w)
        x = torch.fft.irfft2(torch.fft.rfft2(x) / f, s=(h, w))
    elif kind != 'gaussian':
        raise ValueError(f"noise_images: kind must be 'pink' or 'gaussian', got {kind!r}.")
    x = x - x.mean((-2, -1), keepdim=True)
    return x / x.std((-2, -1), keepdim=True).clamp_min(1e-8)


def effective_receptive_field(
        module: nn.Module,
        images: Tensor,
        *,
        forward: Optional[str] = None,
        stage: int = -1,
        output_layout: str = 'NCHW',
        position: Optional[Position] = None,
        batch_size: int = 4,
) -> Tensor:
    """Effective receptive field of one output position, averaged over images.

    For each image, the gradient of the sum over channels of the chosen output position (default: the centre of the
    output map) with respect to the input; its absolute value is summed over input channels and averaged over the
    images. The module runs in eval mode (its modes are restored after).

    Args:
        module: Module taking [B, C, H, W] images and returning a feature map or a list/tuple of them.
        images: [N, C, H, W] images (see :func:`noise_images`).
        forward: Method to call instead of ``forward`` (e.g. ``'forward_features'``).
        stage: Which map of a list/tuple output.
        output_layout: 'NCHW' or 'NHWC' (timm Swin's ``forward_features``).
        position: (row, col) on the output map; default the centre.
        batch_size: Images per backward pass.

    Returns:
        [H, W] float32, non-negative.
    """
    who = 'effective_receptive_field'
    output_layout = _check_layout('output_layout', output_layout)
    if images.dim() != 4:
        raise ValueError(f'{who}: images must be [N, C, H, W], got {tuple(images.shape)}.')
    first = next((p for p in module.parameters()), None)
    if first is not None:
        images = images.to(device=first.device, dtype=first.dtype)
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)
    with _EvalMode(module):
        fn: Callable = getattr(module, forward) if forward else module
        for start in range(0, images.shape[0], batch_size):
            xb = images[start:start + batch_size].clone().requires_grad_(True)
            out = _select_map(fn(xb), stage, output_layout, who)
            h, w = out.shape[-2:]
            (i, j), = _resolve_positions([position] if position is not None else [(h // 2, w // 2)], h, w, who)
            grad, = torch.autograd.grad(out[:, :, i, j].sum(), xb)
            total += grad.abs().sum(1).sum(0).double().cpu()
    return (total / images.shape[0]).float()


def erf_area_ratio(erf: Tensor, fraction: float) -> float:
    """Smallest share of input positions that holds ``fraction`` of an ERF's total (RepLKNet's area ratio).

    Args:
        erf: [H, W] non-negative map.
        fraction: In (0, 1].

    Returns:
        A share in (0, 1]; larger means the dependence is spread over more of the input.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f'erf_area_ratio: fraction must be in (0, 1], got {fraction}.')
    v = erf.flatten().double().sort(descending=True).values
    if v.sum() <= 0:
        return float('nan')
    cum = v.cumsum(0) / v.sum()
    k = int(torch.searchsorted(cum, torch.tensor([fraction], dtype=cum.dtype) - 1e-12)) + 1
    return min(k, v.numel()) / v.numel()


def require_matplotlib(what: str = 'plotting', command: bool = False) -> Any:
    """``matplotlib.pyplot`` on the Agg backend; :class:`~gmamba_zoo.compat.extras.MissingExtraError` (``SystemExit``
    with ``command``) naming the ``[viz]`` extra when matplotlib is not installed."""
    require_extra('viz', what, command=command)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_erf_maps(maps: Dict[str, Tensor], path: Union[str, Path], title: str = '', caption: str = '',
                  decades: float = 4.0) -> Path:
    """Side-by-side log-scaled heat maps of ERFs, on one shared colour scale.

    Each map is divided by the largest value over all maps and shown as log10, clipped ``decades`` below 0, so the
    panels can be compared directly.

    Args:
        maps: Panel title -> [H, W] ERF.
        path: PNG to write.
        title, caption: Figure title and a caption line under the panels.
        decades: Orders of magnitude shown.

    Returns:
        The path written.
    """
    plt = require_matplotlib()
    top = max(float(m.max()) for m in maps.values()) or 1.0
    fig, axes = plt.subplots(1, len(maps), figsize=(3.4 * len(maps) + 0.8, 3.9), squeeze=False)
    for ax, (name, m) in zip(axes[0], maps.items()):
        img = torch.log10((m.double() / top).clamp_min(10 ** -decades)).numpy()
        im = ax.imshow(img, cmap='magma', vmin=-decades, vmax=0, interpolation='nearest')
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label='log10(|grad| / max)')
    if title:
        fig.suptitle(title, fontsize=10)
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=7, wrap=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# model-level comparison: GMamba model vs its plain backbone vs a scan-only variant

def erf_models(name: str, layer_scale: float = 0.5, seed: int = 0, depths: Optional[Sequence[int]] = None
               ) -> Dict[str, nn.Module]:
    """A GMamba model, its plain backbone and its scan-only variant, sharing the backbone's weights.

    The backbone is randomly initialised from ``seed`` (no download; ResNets with ``zero_init_last=False``, since
    zeroed residual branches leave a random ResNet almost no receptive field); the two GMamba variants load its
    weights, so they differ from it only by the inserted blocks. The blocks get ``layer_scale`` as their layer-scale
    init: at the default 0 a GMamba model computes exactly what its backbone computes.

    Args:
        name: A registered ``*_gmamba`` model.
        layer_scale: Layer-scale init of the inserted blocks (non-zero, or the three ERFs coincide).
        seed: Seed of the random weights.
        depths: Blocks per stage (default: the model's own).

    Returns:
        ``{'<name> (GSSM)': ..., '<name> scan-only': ..., '<base> (plain)': ...}``, all in eval mode.
    """
    import timm
    from ..models.variants import GMAMBA_VARIANTS
    if name not in GMAMBA_VARIANTS:
        raise ValueError(f'erf_models: {name!r} is not a GMamba model; expected one of {sorted(GMAMBA_VARIANTS)}.')
    variant = GMAMBA_VARIANTS[name]
    base, depths = variant.base, tuple(depths or variant.depths)
    # timm's ResNets zero the last BatchNorm of each residual branch at init, which leaves a random ResNet with almost
    # no receptive field (only the shortcuts); a conv ERF needs the branches live
    model_kwargs = dict(zero_init_last=False) if variant.family == 'resnet' else {}
    torch.manual_seed(seed)
    plain = timm.create_model(name, gmamba_depths=(0,) * len(depths), **model_kwargs)
    out = {}
    for label, extra in (('GSSM', {}), ('scan-only', {'frequency_path': False})):
        torch.manual_seed(seed + 1)
        m = timm.create_model(name, gmamba_depths=depths, **model_kwargs,
                              gmamba_kwargs=dict(layer_scale_init_value=layer_scale, **extra))
        missing, unexpected = m.load_state_dict(plain.state_dict(), strict=False)
        if unexpected or any('.' not in k for k in missing):
            raise RuntimeError(f'erf_models: backbone keys of {name} do not match its plain model: {unexpected}')
        out[f'{name} {label}'] = m.eval()
    out[f'{base} (plain)'] = plain.eval()
    return out


class _Intermediate(nn.Module):
    """The output of one feature tap of a timm model (``forward_intermediates``), [B, C, H, W]."""

    def __init__(self, model: nn.Module, index: int):
        super().__init__()
        self.model, self.index = model, index

    def forward(self, x: Tensor) -> Tensor:
        n = len(feature_info_dicts(self.model))
        if not -n <= self.index < n:
            raise ValueError(f'gmamba-zoo erf: --stage {self.index} but the model has {n} feature taps.')
        return self.model.forward_intermediates(x, indices=[self.index % n], intermediates_only=True)[0]


def _output_layout(model: nn.Module) -> str:
    return 'NHWC' if str(getattr(model, 'output_fmt', 'NCHW')).upper().endswith('NHWC') else 'NCHW'


def add_erf_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('name', help='a GMamba model from `gmamba-zoo list`, e.g. resnet18_gmamba')
    parser.add_argument('--size', type=int, nargs='+', default=[224], metavar='PX',
                        help='input resolution: one value (square) or H W (default 224)')
    parser.add_argument('--images', type=int, default=8, help='random images averaged over (default 8)')
    parser.add_argument('--kind', choices=['pink', 'gaussian'], default='pink',
                        help='image statistics: pink (1/f, natural-image spectrum) or gaussian (default pink)')
    parser.add_argument('--layer-scale', type=float, default=0.5,
                        help='layer-scale init of the GMamba blocks (default 0.5; 0 makes them the identity)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the weights and the images (default 0)')
    parser.add_argument('--stage', type=int, default=None,
                        help='feature tap (index into the model\'s feature_info, e.g. 1 = ResNet layer1) instead of '
                             'the last stage\'s forward_features output')
    parser.add_argument('--decades', type=float, default=6.0, help='orders of magnitude shown (default 6)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--out', type=Path, default=Path('.'), help='output folder (default: current)')
    add_quiet_argument(parser)


def run_erf(args: argparse.Namespace) -> int:
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run_erf(args)
    finally:
        torch.set_num_threads(threads)


def _erf_row(label: str, model: nn.Module, images: Tensor, stage: Optional[int]) -> Tuple[Tensor, Dict[str, float]]:
    """One model's ERF map and its row of the report (areas holding 20/50/90% of it, non-zero support)."""
    if stage is None:
        erf = effective_receptive_field(model, images, forward='forward_features', output_layout=_output_layout(model))
    else:  # timm's forward_intermediates returns NCHW maps for every backbone here
        erf = effective_receptive_field(_Intermediate(model, stage), images)
    ratios = [erf_area_ratio(erf, t) for t in (0.2, 0.5, 0.9)]
    return erf, {'model': label, 'area_20': ratios[0], 'area_50': ratios[1], 'area_90': ratios[2],
                 'support': float((erf > 0).float().mean())}


def _run_erf(args: argparse.Namespace) -> int:
    require_matplotlib('gmamba-zoo erf', command=True)  # fail before the slow part
    from ..models import list_models
    if args.name not in list_models():
        raise SystemExit(f'gmamba-zoo erf: unknown model {args.name!r}; `gmamba-zoo list` shows the models.')
    size = args.size * 2 if len(args.size) == 1 else args.size
    if len(size) != 2:
        raise SystemExit(f'gmamba-zoo erf: --size takes one or two values (H W), got {args.size}.')
    h, w = size
    models = erf_models(args.name, args.layer_scale, args.seed)
    images = noise_images(args.images, (3, h, w), args.kind, seed=args.seed)
    maps, rows = {}, []
    with Progress('erf', len(models), 'model', args.quiet) as progress:
        for label, model in models.items():
            progress.stage(f'{label}: {args.images} images')
            maps[label], row = _erf_row(label, model, images, args.stage)
            rows.append(row)
            progress.print(f'{label}: share of input area holding 20/50/90% of the ERF: '
                           + ' / '.join(f"{row[k]:.3f}" for k in ('area_20', 'area_50', 'area_90'))
                           + f"; non-zero on {row['support']:.3f} of the input")
            progress.done()
    where = 'last stage' if args.stage is None else f'feature tap {args.stage}'
    stem = f'erf-{args.name}-{h}x{w}' + ('' if args.stage is None else f'-tap{args.stage}')
    args.out.mkdir(parents=True, exist_ok=True)
    caption = (f'{args.images} {args.kind}-noise images at {h}x{w}, random weights (seed {args.seed}), backbone '
               f'weights shared (ResNets: zero_init_last=False); GMamba blocks with layer scale init '
               f'{args.layer_scale} (at the default 0 the GMamba model equals its backbone). '
               f'ERF: |d sum_c out[c, centre] / d input|, {where}, log scale.')
    png = plot_erf_maps(maps, args.out / f'{stem}.png', title=f'Effective receptive field: {args.name}, {where}',
                        caption=caption, decades=args.decades)
    cmd = (f'gmamba-zoo erf {args.name} --size {h} {w} --images {args.images} --kind {args.kind} '
           f'--layer-scale {args.layer_scale} --seed {args.seed} --decades {args.decades:g} --out {args.out}'
           + ('' if args.stage is None else f' --stage {args.stage}'))
    md = [f'### {args.name} at {h}x{w}, {where}', '', f'![ERF of {args.name}]({png.name})', '', caption, '',
          '| model | share of input with non-zero gradient | area holding 20% of the ERF | 50% | 90% |',
          '| --- | --- | --- | --- | --- |']
    md += [f"| {r['model']} | {r['support']:.3f} | {r['area_20']:.3f} | {r['area_50']:.3f} | {r['area_90']:.3f} |"
           for r in rows]
    md += ['', f'Command: `{cmd}`', '']
    (args.out / f'{stem}.md').write_text('\n'.join(md))
    (args.out / f'{stem}.json').write_text(json.dumps({'command': cmd, 'rows': rows}, indent=2))
    print(f'wrote {png}, {args.out / (stem + ".md")}')
    return 0


def add_criterion_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gmamba-zoo criterion``."""
    parser.add_argument('name', help='a model from `gmamba-zoo list`')
    parser.add_argument('--size', type=int, nargs='+', default=[64], metavar='PX', help='input H [W] (default 64)')
    parser.add_argument('--layer-scale', type=float, default=0.5, help='layer-scale init of GMamba blocks')
    parser.add_argument('--scan-only', action='store_true', help='GMamba blocks without their frequency path')
    parser.add_argument('--stage', type=int, default=-1, help='feature stage (default last)')
    parser.add_argument('--positions', type=int, nargs='+', default=None, metavar='I J',
                        help='output positions as row col pairs (default: first, centre, last)')
    parser.add_argument('--seed', type=int, default=0)
    add_quiet_argument(parser)


def run_criterion(args: argparse.Namespace) -> int:
    """``gmamba-zoo criterion``: the criterion's report; exit code 0 when it holds."""
    import timm
    from ..models import list_models
    if args.name not in list_models():
        raise SystemExit(f'gmamba-zoo criterion: unknown model {args.name!r}; `gmamba-zoo list` shows them.')
    h, w = (args.size * 2)[:2] if len(args.size) == 1 else args.size[:2]
    from ..models.variants import GMAMBA_VARIANTS
    torch.manual_seed(args.seed)
    extra = {}
    if args.name in GMAMBA_VARIANTS:
        extra['gmamba_kwargs'] = dict(layer_scale_init_value=args.layer_scale)
        if args.scan_only:
            extra['gmamba_kwargs']['frequency_path'] = False
    elif args.scan_only:
        raise SystemExit(f'gmamba-zoo criterion: --scan-only needs a GMamba model, not {args.name!r}.')
    model = timm.create_model(args.name, features_only=True, **extra)
    pos = args.positions
    if pos is not None and len(pos) % 2:
        raise SystemExit('gmamba-zoo criterion: --positions takes row col pairs.')
    pos = None if pos is None else list(zip(pos[::2], pos[1::2]))
    with Progress('criterion', unit='pass', quiet=args.quiet) as progress:
        res = gradient_criterion(model, (3, h, w), pos, stage=args.stage, seed=args.seed, progress=progress)
    res.name = args.name + (' (scan-only)' if args.scan_only else '')
    print(res.report())
    return 0 if res.holds else 1
