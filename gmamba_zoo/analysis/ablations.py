"""The GMamba paper's ablations as block options, measured: ``gmamba-zoo ablations`` (``scripts/ablations.py``).

The paper (ConvNeXt-S + UNet, seven GSSM blocks after the four stages as (2, 2, 2, 1), Vaihingen) argues from an
ablation table (SSM only, FEM+SSM, DFT+FGMM+SSM without the adaptive FEM, the full GSSM) and from its Table 6 (one-,
two- and four-way scanning). Each row is an option of :class:`~gmamba_zoo.layers.GMambaBlock` (:data:`ABLATIONS`); for
each, this module measures the parameters and multiply-adds the seven blocks add to timm's ``convnext_small``
(``timm.create_model('convnext_s_gmamba', gmamba_kwargs=...)``, fvcore through :mod:`gmamba_zoo.flops`) and whether
one block passes the paper's gradient criterion (:func:`gmamba_zoo.analysis.gradient_criterion`), and sets them beside
the paper's figures. :func:`report` also derives, from the layers' own parameter counts, which parameters a scan
direction must own for the paper's four-way count to come out (docs/ablations.md).

Nothing here is fitted to the paper: the layers are the package's own, and where a count differs the report says by
how much and what the paper's own rows imply.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..flops.counter import count, count_params
from ..layers import GMambaBlock
from ..models.variants import GMAMBA_VARIANTS
from .perception import GlobalPerceptionResult, gradient_criterion

__all__ = [
    'Ablation', 'ABLATIONS', 'PAPER_BASELINE_PARAMS_M', 'VARIANT', 'added_params', 'added_flops', 'block_criterion',
    'component_params', 'direction_candidates', 'measure', 'report', 'add_arguments', 'run',
]

#: The model the paper's ablations are on: ConvNeXt-S with seven blocks after its stages, (2, 2, 2, 1).
VARIANT = 'convnext_s_gmamba'
#: The paper's ConvNeXt-S + UNet without GMamba, in M parameters; its rows' added parameters are taken against it.
PAPER_BASELINE_PARAMS_M = 58.42


@dataclass(frozen=True)
class Ablation:
    """One configuration of the block and the paper's figures for it.

    Attributes:
        name: The configuration, in the paper's words where it has a row.
        kwargs: Its ``gmamba_kwargs`` (block options).
        paper_params_m: The paper's total parameters (ConvNeXt-S + UNet + blocks), M; None where it gives none.
        paper_gflops: The paper's total GFLOPs (Table 6), or None.
        paper_miou: The paper's Vaihingen mIoU, or None.
        note: Where the row comes from.
    """
    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    paper_params_m: Optional[float] = None
    paper_gflops: Optional[float] = None
    paper_miou: Optional[float] = None
    note: str = ''

    @property
    def paper_added_m(self) -> Optional[float]:
        """The parameters the paper's row adds to its baseline, M."""
        return None if self.paper_params_m is None else self.paper_params_m - PAPER_BASELINE_PARAMS_M


ABLATIONS: Tuple[Ablation, ...] = (
    Ablation('SSM only', dict(frequency_path=False), 68.31, None, 84.01, 'ablation table'),
    Ablation('FEM+SSM (no FGMM)', dict(fgmm=False), 70.80, None, 85.30, 'ablation table'),
    Ablation('DFT+FGMM+SSM (no adaptive FEM)', dict(adaptive_fem=False), 68.62, None, 84.79, 'ablation table'),
    Ablation('GSSM, one-way scan (default)', {}, 71.06, 85.66, 86.00, 'ablation table, Table 6'),
    Ablation('GSSM, bidirectional scan', dict(scan_directions=2), None, None, None, 'Table 6 (figures not quoted '
             'in SPEC.md)'),
    Ablation('GSSM, four-way scan', dict(scan_directions=4), 78.50, 91.00, 85.98, 'Table 6'),
    Ablation('GSSM in 7x7 windows (released code)', dict(window_size=7), note='docs/official-code.md'),
    Ablation('SSM only, four-way scan', dict(frequency_path=False, scan_directions=4), note='not in the paper'),
)

_ONE_WAY = 'GSSM, one-way scan (default)'


def _widths() -> List[int]:
    """The block widths of :data:`VARIANT`, one per block (96, 96, 192, 192, 384, 384, 768)."""
    import timm
    import gmamba_zoo  # noqa: F401  (registers the models)
    with torch.device('meta'):
        model = timm.create_model(VARIANT)
    return [m.dim for m in model.modules() if isinstance(m, GMambaBlock)]


@functools.lru_cache(maxsize=None)
def _base_params(base: str) -> int:
    import timm
    with torch.device('meta'):
        return count_params(timm.create_model(base))


def added_params(kwargs: Mapping[str, Any], variant: str = VARIANT) -> int:
    """Parameters the blocks with options ``kwargs`` add to the variant's plain timm base (both built on the meta
    device: no memory, no initialisation work)."""
    import timm
    import gmamba_zoo  # noqa: F401
    with torch.device('meta'):
        model = timm.create_model(variant, gmamba_kwargs=dict(kwargs))
    return count_params(model) - _base_params(GMAMBA_VARIANTS[variant].base)


def added_flops(kwargs: Mapping[str, Any], size: Tuple[int, int], variant: str = VARIANT,
                base_flops: Optional[int] = None) -> Tuple[int, int, Dict[str, int]]:
    """Multiply-adds (fvcore, batch 1, classifier included on both sides) the blocks add at ``size``.

    Returns:
        ``(added, base, by_operator)``: the added multiply-adds, the base's (pass ``base_flops`` to skip counting it
        again) and the model's by operator.
    """
    import timm
    import gmamba_zoo  # noqa: F401
    if base_flops is None:
        base_flops = count(timm.create_model(GMAMBA_VARIANTS[variant].base), (3, *size))['flops']
    c = count(timm.create_model(variant, gmamba_kwargs=dict(kwargs)), (3, *size), what=f'{variant} {dict(kwargs)}')
    return c['flops'] - base_flops, base_flops, c['by_operator']


#: Map sizes of the block criterion: 16 (any size with H, W not 2 mod 4), and 14, where the default low band (|f| <
#: 0.25) is an ideal low-pass filter with exact zeros at even offsets (its Dirichlet kernel sin(7 pi d / 14) /
#: sin(pi d / 14) / 14), so FEM alone does not reach every position there. Both exceed the released code's 7x7 window.
CRITERION_SIZES = (16, 14)


def block_criterion(kwargs: Mapping[str, Any], dim: int = 16, size: int = 16, layer_scale: float = 0.5,
                    seed: int = 0) -> GlobalPerceptionResult:
    """The paper's gradient criterion for one block with options ``kwargs`` on a ``size`` x ``size`` map (exact
    Jacobian, float64; outputs at the first, centre and last position).

    The block's layer scale starts at ``layer_scale``, not 0: at 0 a block is the identity and depends on nothing
    but its own position.
    """
    torch.manual_seed(seed)
    block = GMambaBlock(dim, layer_scale_init_value=layer_scale, **kwargs)
    res = gradient_criterion(block, (dim, size, size), seed=seed)
    res.name = f'GMambaBlock({dim}, {dict(kwargs)})'
    return res


#: The mixer's parts, by parameter-name prefix within a block (``mixer.A_log`` and ``mixer.D`` are parameters).
_PARTS = ('in_proj', 'conv1d', 'fem', 'fgmm', 'x_proj', 'dt_proj', 'A_log', 'D', 'out_proj')


def component_params(widths: Sequence[int]) -> Dict[str, int]:
    """Parameters of each part of the default block's mixer (:data:`_PARTS`), summed over blocks of ``widths``, and
    ``'rest'`` (norms, MLP, layer scales)."""
    out = dict.fromkeys(_PARTS + ('rest',), 0)
    for w in widths:
        with torch.device('meta'):  # shapes only
            block = GMambaBlock(w)
        for name, p in block.named_parameters():
            part = name.split('.')[1] if name.startswith('mixer.') else 'rest'
            out[part] += p.numel()
    return out


def direction_candidates(parts: Mapping[str, int], target_m: float, extra: int = 3
                         ) -> List[Tuple[Tuple[str, ...], float]]:
    """Every set of mixer parts that, owned by each of ``extra`` more scan directions, adds ``target_m`` M to two
    decimals (the paper's rounding), smallest sets first."""
    hits = []
    for n in range(1, len(_PARTS) + 1):
        for subset in itertools.combinations(_PARTS, n):
            added = extra * sum(parts[p] for p in subset) / 1e6
            if round(added, 2) == round(target_m, 2):
                hits.append((subset, added))
    return hits


def measure(size: Tuple[int, int] = (512, 512), flops: bool = True, criterion_sizes: Sequence[int] = CRITERION_SIZES,
            ablations: Sequence[Ablation] = ABLATIONS, progress: Optional[Callable[[str], None]] = None
            ) -> Dict[str, Any]:
    """Every configuration's added parameters, added multiply-adds at ``size`` and block criterion at each of
    ``criterion_sizes``.

    Returns:
        ``{'size', 'base_flops', 'rows': [{'name', 'kwargs', 'added_params', 'added_flops', 'scan_flops',
        'criterion': [{'size', 'tau', 'holds'}], 'paper_added_m', 'paper_gflops', 'paper_miou', 'note'}], 'parts'
        (:func:`component_params`), 'select' (FGMM's selection branch over the blocks), 'widths', 'seconds'}``.
    """
    start = time.perf_counter()
    base_flops, rows = None, []
    for ab in ablations:
        if progress:
            progress(ab.name)
        row: Dict[str, Any] = dict(name=ab.name, kwargs=dict(ab.kwargs), added_params=added_params(ab.kwargs),
                                   paper_added_m=ab.paper_added_m, paper_gflops=ab.paper_gflops,
                                   paper_miou=ab.paper_miou, note=ab.note)
        if flops:
            row['added_flops'], base_flops, ops = added_flops(ab.kwargs, size, base_flops=base_flops)
            row['scan_flops'] = sum(v for k, v in ops.items() if 'selective_scan' in k)
        row['criterion'] = []
        for n in criterion_sizes:
            res = block_criterion(ab.kwargs, size=n)
            row['criterion'].append(dict(size=n, tau=res.tau, holds=res.holds))
        rows.append(row)
    widths = _widths()
    with torch.device('meta'):
        select = sum(count_params(GMambaBlock(w).mixer.fgmm.select) for w in widths)
    return dict(size=list(size), base_flops=base_flops, rows=rows, widths=widths, parts=component_params(widths),
                select=select, seconds=time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------------------------------
# report

def _m(n: Optional[float], nd: int = 3) -> str:
    return '-' if n is None else f'{n / 1e6:.{nd}f}'


def _g(n: Optional[float], nd: int = 2) -> str:
    return '-' if n is None else f'{n / 1e9:.{nd}f}'


def _md(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    return '\n'.join(['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
                     + ['| ' + ' | '.join(map(str, r)) + ' |' for r in body])


def _kwargs(kwargs: Mapping[str, Any]) -> str:
    return '`' + ', '.join(f'{k}={v!r}' for k, v in kwargs.items()) + '`' if kwargs else '(default)'


def table(rep: Dict[str, Any]) -> str:
    """The main table (Markdown)."""
    rows = {r['name']: r for r in rep['rows']}
    one_way = rows.get(_ONE_WAY, {})
    paper_one_way = next((a.paper_gflops for a in ABLATIONS if a.name == _ONE_WAY), None)
    h, w = rep['size']
    sizes = [c['size'] for c in rep['rows'][0]['criterion']] if rep['rows'] else []
    head = ['configuration', 'gmamba_kwargs', 'added params (M)', 'paper (M)', 'ours - paper (M)',
            f'added GFLOPs at {h}x{w}', 'GFLOPs over one-way', 'paper GFLOPs over one-way'] + [
            f'criterion, block at {n}x{n}' for n in sizes] + ['paper mIoU']
    body = []
    for r in rep['rows']:
        paper = r['paper_added_m']
        diff = '-' if paper is None else f"{r['added_params'] / 1e6 - paper:+.3f}"
        over = (r['added_flops'] - one_way['added_flops']) if 'added_flops' in r and 'added_flops' in one_way else None
        paper_over = (r['paper_gflops'] - paper_one_way) if r['paper_gflops'] and paper_one_way else None
        crit = [f"{'holds' if c['holds'] else 'FAILS'} (tau {c['tau']:.1e})" for c in r['criterion']]
        over = '-' if r['name'] == _ONE_WAY or over is None else f'{over / 1e9:+.2f}'
        paper_over = '-' if paper_over is None or r['name'] == _ONE_WAY else f'{paper_over:+.2f}'
        body.append([r['name'], _kwargs(r['kwargs']), _m(r['added_params']), '-' if paper is None else f'{paper:.2f}',
                     diff, _g(r.get('added_flops')), over, paper_over, *crit,
                     '-' if r['paper_miou'] is None else f"{r['paper_miou']:.2f}"])
    return _md(head, body)


def _arithmetic(rep: Dict[str, Any]) -> List[str]:
    """The per-direction parameters, derived: the parts' totals and the sets that give the paper's four-way count."""
    parts = rep['parts']
    four = next(a for a in ABLATIONS if a.kwargs == {'scan_directions': 4})
    one = next(a for a in ABLATIONS if a.name == _ONE_WAY)
    target = four.paper_params_m - one.paper_params_m
    hits = direction_candidates(parts, target)
    named = {
        "VMamba's per-direction set (x_proj, dt_proj, A_log, D)": ('x_proj', 'dt_proj', 'A_log', 'D'),
        'the same with FEM': ('fem', 'x_proj', 'dt_proj', 'A_log', 'D'),
        'FEM alone': ('fem',),
        'FEM and FGMM': ('fem', 'fgmm'),
        'the whole mixer': _PARTS,
    }
    lines = [
        f"The paper's four-way scan adds {four.paper_params_m:.2f} - {one.paper_params_m:.2f} = {target:.2f} M over "
        f'the one-way block: three more directions, {target / 3:.3f} M each over the seven blocks. The default '
        f"block's mixer, part by part, summed over the seven blocks (widths {', '.join(map(str, rep['widths']))}):",
        '',
        _md(['part', 'params over 7 blocks', 'x 3 directions (M)'],
            [[f'`{p}`', f'{parts[p]:,}', f'{3 * parts[p] / 1e6:.3f}'] for p in _PARTS]
            + [['norms, MLP, layer scales', f"{parts['rest']:,}", '-']]),
        '',
        f'Sets of parts that, owned by each extra direction, give {target:.2f} M to two decimals (every subset of the '
        f'nine parts was tried): ' + '; '.join(f"{' + '.join(s)} = {v:.4f} M" for s, v in hits) + '.',
        '',
        'Other choices and what they would add: ' + '; '.join(
            f'{label}: {3 * sum(parts[p] for p in ps) / 1e6:.3f} M' for label, ps in named.items()) + '.',
        '',
        f'Only FEM reaches the order of {target / 3:.2f} M per direction (FEM alone falls '
        f"{target - 3 * parts['fem'] / 1e6:.2f} M short of {target:.2f} M, FEM with FGMM overshoots it by "
        f"{3 * (parts['fem'] + parts['fgmm']) / 1e6 - target:.2f} M), and the rest must be a step-size projection's "
        'worth. So each extra direction gets its own FEM and `dt_proj`; `D` as well would also round to the figure, '
        'and is left shared with `A_log` and `x_proj` (the smaller set: the directions differ by their frequency '
        'features and their step sizes). By hand, per block of width C with m = C / 2 and r = ceil(C / 16): FEM is two '
        'band Linear(m, m), two scalar weights, Linear(3m, 2m) and Linear(2m, m), 10m^2 + 5m + 2 parameters; `dt_proj` '
        f"is Linear(r, m), (r + 1) m. Over the seven blocks, 3 x ({parts['fem']:,} + {parts['dt_proj']:,}) = "
        f"{3 * (parts['fem'] + parts['dt_proj']):,} = {3 * (parts['fem'] + parts['dt_proj']) / 1e6:.2f} M "
        '(`tests/test_ablations.py` checks these formulas against the blocks). The paper does not draw the '
        'multi-directional block; this is the reading its count allows, not a description of the authors\' code.',
    ]
    return lines


def report(rep: Dict[str, Any], command: str, machine: Mapping[str, Any]) -> str:
    """docs/ablations.md from a :func:`measure` result."""
    rows = {r['name']: r for r in rep['rows']}
    h, w = rep['size']
    parts = rep['parts']
    fem_fgmm = [rows[n]['added_params'] for n in (_ONE_WAY, 'FEM+SSM (no FGMM)', 'DFT+FGMM+SSM (no adaptive FEM)',
                                                  'SSM only') if n in rows]
    four = rows.get('GSSM, four-way scan', {})
    one = rows.get(_ONE_WAY, {})
    lines = [
        "# The paper's ablations as block options", '',
        f'Generated by `{command}` (also `gmamba-zoo ablations`); do not edit by hand.', '',
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch threads; torch "
        f"{machine['torch']}; {machine['date']}; {rep['seconds'] / 60:.1f} min"
        + (f"; 1-minute load average {machine['load'][0]:.1f} at the start" if machine.get('load') else '')
        + ' (the figures are counts, not timings).', '',
        'Every row of the GMamba paper\'s ablation table and of its Table 6 (ConvNeXt-S + UNet, seven blocks after '
        'the stages as (2, 2, 2, 1), Vaihingen) is an option of `GMambaBlock`, passed through `gmamba_kwargs`:',
        '',
        '```python',
        'import timm',
        'import gmamba_zoo  # registers the models with timm',
        '',
        "timm.create_model('convnext_s_gmamba', gmamba_kwargs=dict(fgmm=False))            # FEM+SSM",
        "timm.create_model('convnext_s_gmamba', gmamba_kwargs=dict(adaptive_fem=False))    # DFT+FGMM+SSM",
        "timm.create_model('convnext_s_gmamba', gmamba_kwargs=dict(frequency_path=False))  # SSM only",
        "timm.create_model('convnext_s_gmamba', gmamba_kwargs=dict(scan_directions=4))     # four-way scan",
        '```',
        '',
        '- `frequency_path=False`: "SSM only", neither FEM nor FGMM: the scan alone, causal in raster order.',
        "- `fgmm=False`: \"FEM+SSM\": FEM's output F_freq is the scan's input in place of FGMM's modulated x.",
        '- `adaptive_fem=False`: "DFT+FGMM+SSM without the adaptive FEM": no band projections, band weights or fusion '
        'MLP; the DFT band split is fixed and FGMM is guided by the low band of x (|f| < `freq_cutoff` on both axes), '
        'which has no parameters. The paper does not say which fixed combination of the bands it fed FGMM; the low '
        'band is the one that is not x itself (the two bands add up to x).',
        '- `scan_directions=2` (raster forward and reverse) or `4` (also column-major forward and reverse, as '
        "VMamba's cross-scan): each direction scans the modulated map in its order; the outputs, back in raster "
        'order, are summed. Each extra direction owns a FEM and a `dt_proj` (below); in_proj, the conv, FGMM, x_proj, '
        'A_log, D and out_proj are shared. The directions run as one scan over a K-times batch, which the FLOP '
        "counter's scan handle counts K times.",
        '- `window_size=7`: the released code\'s 7x7 windows (docs/official-code.md), for the criterion.',
        '',
        'Combinations are checked when the block is built (`fgmm=False` with `adaptive_fem=False`, or either with '
        '`frequency_path=False`, is refused with a message saying why); the default block, its state dict and its '
        'outputs are unchanged.', '',
        '## Parameters, multiply-adds and the criterion', '',
        table(rep), '',
        f"Added params: `timm.create_model('convnext_s_gmamba', gmamba_kwargs=...)` minus `convnext_small`, every "
        f'parameter. The paper\'s: its row\'s total minus its baseline, {PAPER_BASELINE_PARAMS_M} M. GFLOPs: fvcore '
        f'multiply-adds (docs/flops.md), batch 1, {h}x{w}, the model minus `convnext_small` '
        f"({_g(rep['base_flops'])} G at that size). The paper gives GFLOPs only in Table 6 (one-way 85.66 G, four-way "
        '91.00 G, for its whole UNet), so only the difference between scan directions can be compared. Criterion: '
        '`gradient_criterion` (the tool behind `gmamba-zoo criterion`) on one block of 16 channels with layer scale '
        '0.5 (at 0 a block is the identity), exact Jacobian in float64, outputs at the first, centre and last '
        'position; it holds when every input position has a gradient norm above 1e-9 of the mean.', '',
        '## Which parameters are per direction', '',
        *_arithmetic(rep), '',
        '## Where our counts differ from the paper\'s', '',
    ]
    if len(fem_fgmm) == 4:
        full, no_fgmm, no_fem, ssm = fem_fgmm
        lines += [
            f'- **FGMM, 0.31 or 0.26 M.** FGMM here is {_m(full - no_fgmm)} M over the seven blocks '
            f"(`fgmm` part: {parts['fgmm'] / 1e6:.3f} M). The paper's own rows give two values for it: "
            f'"DFT+FGMM+SSM" minus "SSM only" is 68.62 - 68.31 = 0.31 M (ours: {_m(no_fem - ssm)} M, the same), '
            'while the full block minus "FEM+SSM" is 71.06 - 70.80 = 0.26 M. The adaptive FEM likewise: full minus '
            f'"DFT+FGMM+SSM" is 71.06 - 68.62 = 2.44 M (ours: {_m(full - no_fem)} M), "FEM+SSM" minus "SSM only" '
            f'is 70.80 - 68.31 = 2.49 M (ours: {_m(no_fgmm - ssm)} M). Both disagreements point at the same row: '
            'the paper\'s "FEM+SSM" model held about 0.05 M that the other three rows do not account for. The '
            'likely reason is that, without FGMM, something of its own handed FEM\'s output to the scan (the paper '
            "does not say what; FGMM's selection branch alone, which mixes x with the frequency features, is "
            f"{_m(rep['select'])} M), or that row was counted on a different build. Ours feeds F_freq to the scan "
            'directly, adding nothing; the layer is not changed to hit the figure.',
        ]
    if four.get('added_flops') is not None and one.get('added_flops') is not None:
        over = (four['added_flops'] - one['added_flops']) / 1e9
        implied = h * (5.34 / over) ** 0.5
        lines += [
            f'- **Four-way multiply-adds, {over:.2f} G against the paper\'s 5.34 G.** The paper does not state the '
            'input size of its GFLOPs (SPEC.md and the figures quoted there do not; docs/flops.md counts the '
            'classifiers at 224x224 and detectors at 800x1216). We count at 512x512, the usual Vaihingen crop, which '
            "is also the size the paper's 85.66 G total allows: `convnext_s_gmamba` alone is "
            f"{_g(one['added_flops'] + rep['base_flops'])} G here (docs/flops.md: 11.27 G at 224; about 4x more at "
            '1024, above the total), leaving a UNet decoder the rest. The added cost of the extra '
            'directions grows with the number of positions, so our figure equals the paper\'s at about '
            f'{implied:.0f}x{implied:.0f}. Beyond the size, what runs per direction here is its FEM (folded into two '
            '[2m, m] products when H*W > 2m, fewer multiply-adds than the released code\'s layer-by-layer FEM), FGMM, '
            f"x_proj, dt_proj and the scan (scan: {_g(one.get('scan_flops'), 3)} G one-way, "
            f"{_g(four.get('scan_flops'), 3)} G four-way); the paper's counter and its split of the work per "
            'direction are not known, so the gap is reported, not closed.',
        ]
    lines += [
        '- **The criterion** separates the configurations by reach, as the paper\'s theory says: with one scan '
        'direction, only a front end with the DFT (FEM, or FGMM guided by the DFT low band) makes every output depend '
        'on every input position. "SSM only" fails: an output has no gradient with respect to any position more than '
        'one step after it in raster order (the kernel-3 conv reaches one step ahead). The windowed block fails: no '
        'gradient outside the output\'s 7x7 window. The last row, not in the paper, shows what the criterion does not '
        'separate: four scan orders alone also reach every position.',
        '- **FEM+SSM fails at 14x14.** The paper\'s argument is that every DFT coefficient depends on every pixel. '
        'After the band split and the inverse DFT, though, the low band is an ideal low-pass filter: along an axis '
        'of n positions it is a circular convolution with the Dirichlet kernel sin((2K+1) pi d / n) / (n sin(pi d / '
        'n)), K the number of positive frequencies kept, and that kernel is exactly 0 wherever (2K+1) d is a '
        'multiple of n. With the default cut-off (|f| < 0.25) that happens when n = 2 (mod 4): at n = 14 (K = 3) '
        'every even offset d has weight 0. The high band (x - low) has the same zeros, and a one-way causal scan '
        'cannot fill them in for the first output, so FEM alone does not reach every position of a 14x14 map (nor of '
        'a 10x10 or 18x18 one); at 15 or 16 it does. The full block passes at every size because FGMM\'s global '
        'averages (its selection weights and its importance gate) see every position; DFT+FGMM+SSM passes for the '
        'same reason. ConvNeXt-S at 224x224 has a 14x14 stage-3 map; at 512x512 its maps (128 ... 16) have no '
        'such zeros.',
        '',
        'The mIoU column is the paper\'s claim, quoted for orientation; this package ships no weights trained to it '
        'and measures no accuracy here.',
        '',
    ]
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gmamba-zoo ablations``."""
    parser.add_argument('--size', type=int, nargs=2, default=(512, 512), metavar=('H', 'W'),
                        help='input size of the FLOP counts (default 512 512, see docs/ablations.md)')
    parser.add_argument('--no-flops', action='store_true', help='parameters and criterion only (seconds, not minutes)')
    parser.add_argument('--threads', type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument('--out', type=Path, help='write the Markdown report here and JSON beside it (.json)')


def run(args: argparse.Namespace) -> int:
    """``gmamba-zoo ablations``: print (and with ``--out`` write) the report."""
    from ..bench.machine import command_line, load_average, machine, write_report
    load = load_average()
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rep = measure(tuple(args.size), flops=not args.no_flops,
                      progress=lambda n: print(f'measuring {n} ...', flush=True))
        info = dict(machine(), load=load)
    finally:
        torch.set_num_threads(threads)
    command = command_line('scripts/ablations.py', 'ablations', args)
    write_report(args.out, report(rep, command, info), dict(rep, machine=info, command=command))
    return 0
