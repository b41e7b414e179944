"""The selective state-space layer both zoo mixers are built on.

GMamba's GSSM mixer (:class:`~gmamba_zoo.layers.gssm.GSSMMixer`) and vGamba's Mamba mixer
(:class:`~gmamba_zoo.layers.gamba.MambaMixer`) are both Mamba's selective-scan layer: an input projection to a scan
branch x and a gate branch z, a depthwise 1-D conv with SiLU, input-dependent step sizes and B, C projected from x,
the scan (``gmamba_zoo.ops.selective_scan_fn``), an output projection. :class:`SelectiveSSM` holds those parameters
and that computation once; the mixers only configure it:

    ===============  =====================================  ===================================
    knob             GSSM                                   Mamba
    ===============  =====================================  ===================================
    ``d_inner`` E    C / 2                                  expand * C
    ``conv_z``       True: conv + SiLU on x and z           False: on x only
    ``causal``       False: same padding, odd kernel        True
    ``gate``         ``'concat'``: out_proj([y, z])         ``'scan'``: y * silu(z) in the scan
    ``front_end``    FEM + FGMM, applied by ``modulate``    none
    ===============  =====================================  ===================================

Choices where the papers are silent, shared by both mixers (Mamba's):
    * in_proj, x_proj and out_proj have no bias; the conv and dt_proj have one. dt_proj's bias is not added by the
      linear layer: it enters the scan as ``delta_bias``, before the softplus, in float32.
    * The step-size rank ``'auto'`` is ceil(C / 16), C the model width (not the inner width).
    * Initialisation as in Mamba (:func:`init_ssm_params`): softplus(dt_proj.bias) log-uniform in [dt_min, dt_max],
      A = -exp(A_log) = -(1..N) on every channel, D = 1. The scan reads A, D and delta_bias in float32 whatever the
      parameters' dtype.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from timm.layers import register_notrace_function

from ..ops import selective_scan_fn
from ._checks import check_bool, check_callable, check_choice, check_int, check_mapping, check_real
from .onednn import conv1d_tokens, linear

__all__ = ['init_ssm_params', 'init_dt_proj', 'SelectiveSSM', 'check_ssm_args', 'SSM_INIT_KWARGS']

# FX leaf (timm's tracer, and any torch.fx tracer through torch.fx.wrap): the scan checks its inputs and chooses its
# backend and chunk size from the tensors when the traced graph runs.
register_notrace_function(selective_scan_fn)
torch.fx.wrap('selective_scan_fn')
torch.fx.wrap('linear')  # and the oneDNN routes (onednn.py), so that a traced graph computes what eager computes
torch.fx.wrap('conv1d_tokens')

#: The initial step-size range, keyword arguments every mixer passes through to :class:`SelectiveSSM`.
SSM_INIT_KWARGS = ('dt_min', 'dt_max', 'dt_init_floor')
_SSM_INIT_DEFAULTS = dict(dt_min=0.001, dt_max=0.1, dt_init_floor=1e-4)


def check_ssm_args(owner: str, args: Mapping[str, Any], causal: bool, arg: str = '{}') -> None:
    """Check the selective-SSM arguments present in ``args``: d_state, d_conv, dt_rank, dt_min, dt_max, dt_init_floor.

    Args:
        owner: Who is being built, for the message.
        args: Some of those arguments (others are ignored).
        causal: Whether the conv is causal (any kernel >= 1) or same-padded (odd kernel).
        arg: How an argument is named in the message, ``'{}'`` formatted with its name.

    Raises:
        TypeError, ValueError: Naming the argument, the value and what is expected.
    """
    if 'd_state' in args:
        check_int(owner, arg.format('d_state'), args['d_state'], minimum=1)
    if 'd_conv' in args:
        check_int(owner, arg.format('d_conv'), args['d_conv'], minimum=1, odd=not causal)
    if 'dt_rank' in args:
        check_int(owner, arg.format('dt_rank'), args['dt_rank'], minimum=1, or_literal='auto')
    if any(k in args for k in SSM_INIT_KWARGS):
        dt_min = check_real(owner, arg.format('dt_min'), args.get('dt_min', _SSM_INIT_DEFAULTS['dt_min']), 0,
                            low_open=True)
        dt_max = check_real(owner, arg.format('dt_max'), args.get('dt_max', _SSM_INIT_DEFAULTS['dt_max']), 0,
                            low_open=True)
        if dt_max < dt_min:
            raise ValueError(f"{owner}: {arg.format('dt_min')} must be <= {arg.format('dt_max')} (the range of the "
                             f"initial step sizes), got dt_min={dt_min!r}, dt_max={dt_max!r}.")
        check_real(owner, arg.format('dt_init_floor'), args.get('dt_init_floor', _SSM_INIT_DEFAULTS['dt_init_floor']),
                   0)


@torch.no_grad()
def init_ssm_params(
        dt_proj: nn.Linear, d_state: int, dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
) -> Tuple[nn.Parameter, nn.Parameter]:
    """Mamba's initialisation of a selective-scan layer's parameters.

    Initialises ``dt_proj`` in place (weight uniform in +-rank^-0.5; bias such that softplus(bias) is log-uniform in
    [dt_min, dt_max]) and returns new ``A_log`` [D, N] = log(1..N) and ``D`` [D] = 1 parameters, D = out_features.
    """
    d = dt_proj.out_features
    init_dt_proj(dt_proj, dt_min, dt_max, dt_init_floor)
    a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d, 1)
    return nn.Parameter(a_log), nn.Parameter(torch.ones(d))


@torch.no_grad()
def init_dt_proj(dt_proj: nn.Linear, dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> None:
    """Mamba's initialisation of a step-size projection, in place: weight uniform in +-rank^-0.5, bias such that
    softplus(bias) is log-uniform in [dt_min, dt_max] (floored at ``dt_init_floor``)."""
    rank, d = dt_proj.in_features, dt_proj.out_features
    nn.init.uniform_(dt_proj.weight, -rank ** -0.5, rank ** -0.5)
    u = torch.rand(d)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
    dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus


class SelectiveSSM(nn.Module):
    """Mamba's selective-scan layer, configurable: in_proj, depthwise conv + SiLU, :meth:`modulate`, scan, out_proj.

    Maps ``[B, *S, C]`` to ``[B, *S, C]``: the positions S (any number of dims) are scanned in raster order.
    :meth:`ssm` (modulate, step sizes, B and C, the scan) is the part a mixer overrides to scan in other orders
    (GSSM's ``scan_directions``).

    Args:
        dim: Model width C, in and out.
        d_inner: Width E of the scan branch x and of the gate branch z (in_proj: C -> 2E).
        d_state: State size N of the scan.
        d_conv: Kernel of the depthwise 1-D conv (odd unless ``causal``).
        causal: Causal conv (the first L outputs of a conv padded by d_conv - 1) instead of same padding.
        conv_z: The conv and SiLU cover z as well as x (2E channels) instead of x alone (E channels).
        gate: Where z goes: ``'scan'`` gates inside the scan (``y * silu(z)``; out_proj E -> C), ``'concat'`` is
            set beside the scan's output (out_proj on ``[y, z]``, 2E -> C).
        dt_rank: Rank of the step-size projection; ``'auto'`` is ceil(C / 16).
        front_end: Named constructors, each called with E, of the modules :meth:`modulate` uses. They are built and
            registered between the conv and x_proj, which fixes their place in ``state_dict()`` and ``parameters()``
            (the order checkpoints and optimizer states follow) and in the random draws of the initialisation.
        dt_min, dt_max, dt_init_floor: Range of the initial step sizes, see :func:`init_ssm_params`.
    """

    GATES = ('scan', 'concat')

    def __init__(
            self,
            dim: int,
            d_inner: int,
            d_state: int = 16,
            d_conv: int = 4,
            causal: bool = True,
            conv_z: bool = False,
            gate: str = 'scan',
            dt_rank: Union[int, str] = 'auto',
            front_end: Optional[Dict[str, Callable[[int], nn.Module]]] = None,
            dt_min: float = 0.001,
            dt_max: float = 0.1,
            dt_init_floor: float = 1e-4,
    ):
        name = type(self).__name__
        check_int(name, 'dim', dim, minimum=1)
        check_int(name, 'd_inner', d_inner, minimum=1)
        check_bool(name, 'causal', causal)
        check_bool(name, 'conv_z', conv_z)
        check_choice(name, 'gate', gate, self.GATES)
        check_ssm_args(name, dict(
            d_state=d_state, d_conv=d_conv, dt_rank=dt_rank, dt_min=dt_min, dt_max=dt_max,
            dt_init_floor=dt_init_floor), causal=causal)
        for module_name, build in check_mapping(name, 'front_end', front_end).items():
            check_callable(name, f'front_end[{module_name!r}]', build)
        super().__init__()
        self.dim, self.d_inner, self.d_state, self.d_conv = dim, d_inner, d_state, d_conv
        self.causal, self.conv_z, self.gate = causal, conv_z, gate
        self.dt_rank = math.ceil(dim / 16) if dt_rank == 'auto' else int(dt_rank)
        conv_dim = 2 * d_inner if conv_z else d_inner
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            conv_dim, conv_dim, d_conv, padding=d_conv - 1 if causal else d_conv // 2, groups=conv_dim)
        for module_name, build in (front_end or {}).items():
            self.add_module(module_name, build(d_inner))
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        self.A_log, self.D = init_ssm_params(self.dt_proj, d_state, dt_min, dt_max, dt_init_floor)
        self.out_proj = nn.Linear(2 * d_inner if gate == 'concat' else d_inner, dim, bias=False)

    def modulate(self, x: Tensor, size: Sequence[int]) -> Tensor:
        """Hook between the conv and the scan: x [B, E, L] (after SiLU), ``size`` = S -> x [B, E, L]. Identity here."""
        return x

    def ssm(self, xs: Tensor, z: Tensor, size: Sequence[int]) -> Tensor:
        """:meth:`modulate`, the step sizes, B and C, and the scan: xs, z [B, E, L] (after the conv), ``size`` = S ->
        y [B, E, L] (gated by z inside the scan when ``gate='scan'``)."""
        n, r = self.d_state, self.dt_rank
        xs = self.modulate(xs, size)
        dt, B, C = linear(self.x_proj, xs.transpose(1, 2)).split([r, n, n], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # [B, E, L]; the bias enters the scan as delta_bias
        return selective_scan_fn(
            xs, dt, -torch.exp(self.A_log.float()), B.transpose(1, 2), C.transpose(1, 2), self.D.float(),
            z=z if self.gate == 'scan' else None, delta_bias=self.dt_proj.bias.float(), delta_softplus=True)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, *S, C] -> [B, *S, C]."""
        size = x.shape[1:-1]
        xz = linear(self.in_proj, x).flatten(1, -2)  # [B, L, 2E] tokens
        seq_len = xz.shape[1]
        # The conv reads the tokens in place on CPU (conv1d_tokens), a channels-first copy elsewhere; [:L] keeps a
        # causal conv's first L outputs and is a no-op with same padding.
        if self.conv_z:
            xs, z = F.silu(conv1d_tokens(self.conv1d, xz)[..., :seq_len]).chunk(2, dim=1)  # [B, E, L] each
        else:
            xs, z = xz.transpose(1, 2).chunk(2, dim=1)
            xs = F.silu(conv1d_tokens(self.conv1d, xs.transpose(1, 2))[..., :seq_len])
        if not isinstance(xs, torch.fx.Proxy) and xs.numel() == 0:  # torch.fx traces the non-empty case
            # An empty batch: the output is empty too, as for a conv or linear layer; the FFT (MKL) and the scan's
            # reductions refuse empty tensors, so they are skipped. out_proj still runs, so autograd sees the layer.
            y = xs.new_zeros(xs.shape)
        else:
            y = self.ssm(xs, z, size)
        y = y.transpose(1, 2)  # [B, L, E] tokens
        if self.gate == 'concat':  # [B, L, 2E], made contiguous for out_proj by the one copy cat makes anyway
            y = torch.cat([y.to(z.dtype), z.transpose(1, 2)], dim=-1)
        return linear(self.out_proj, y).unflatten(1, size)
