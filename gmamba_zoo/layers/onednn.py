"""The zoo layers' matrix products through oneDNN in CPU inference: same function, about twice as fast on AMD CPUs.

PyTorch computes a float32 ``nn.Linear`` on CPU with MKL's sgemm, and a 1x1 ``nn.Conv2d`` on a small batch-1 map with
its own im2col + sgemm path. On AMD processors MKL runs its AVX2 code even where the CPU has AVX-512, and reaches
about half of what oneDNN (the library PyTorch's larger convolutions run on) reaches on the same product: on the
benchmark's AMD EPYC, one core, 53 against 120 GFLOP/s for a [3136, 64] x [64, 256] product. The timm backbones the
zoo extends spend their time in oneDNN convolutions, so without this the zoo's own blocks, whose FLOPs are mostly
linear layers, would run at half the speed per FLOP of the backbone around them.

:func:`linear` and :func:`conv1x1` compute ``module(x)`` (:func:`linear_weights`: ``F.linear`` with weights made in
the forward). They take oneDNN's kernels (``torch.ops.mkldnn._linear_pointwise``, the op inductor's CPU backend
emits, and ``torch.mkldnn_convolution``) only when nothing can tell the difference but the time, and call the module
otherwise:

* float32 CPU tensors, plain modules (``type(module)`` is exactly ``nn.Linear`` / ``nn.Conv2d``: a parametrized,
  quantized or otherwise replaced module keeps its own forward), no forward hook on the module nor a global one;
* autograd does not need the product (inference, or a frozen layer on a frozen input): the oneDNN ops have no
  backward;
* not traced, scripted, compiled or exported (a tracer records the module call; the FLOP counter counts it) and no
  CPU autocast (which would run the module in bfloat16);
* oneDNN available and enabled (``torch.backends.mkldnn``), an x86-64 CPU, and the product at least
  :data:`MIN_MACS` multiply-adds: below that oneDNN's fixed cost per call (about 15 us) outweighs what it saves.

:func:`conv1d_tokens` runs the mixers' depthwise conv over a sequence of tokens through oneDNN's channels-last kernel
instead of a transposed copy and its channels-first kernel (about 20x faster at 56x56; it has autograd, so it is
taken in training too).

Results agree with the module's to float32 rounding (the sums are taken in another order). ``GMAMBA_ZOO_ONEDNN=0``
turns these routes off (for comparisons).
"""
from __future__ import annotations

import os
import platform
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from timm.layers import register_notrace_function

from ..compat import forward_hooks_registered

__all__ = ['linear', 'linear_weights', 'conv1x1', 'conv1d_tokens', 'onednn_available', 'MIN_MACS', 'ENV_ONEDNN']

ENV_ONEDNN = 'GMAMBA_ZOO_ONEDNN'
# Smallest product (multiply-adds) sent to oneDNN: measured crossover on the benchmark machine, one and two threads,
# between 0.8M (MKL slightly faster) and 3M multiply-adds (oneDNN 1.5x faster).
MIN_MACS = 2 ** 21
_available: Optional[bool] = None


def onednn_available() -> bool:
    """Whether this process may route products to oneDNN: x86-64, oneDNN built and enabled, the op present, and
    ``GMAMBA_ZOO_ONEDNN`` not ``0``."""
    global _available
    if _available is None:
        _available = (platform.machine().lower() in ('x86_64', 'amd64') and torch.backends.mkldnn.is_available()
                      and hasattr(torch.ops.mkldnn, '_linear_pointwise') and hasattr(torch, 'mkldnn_convolution'))
    return _available and torch.backends.mkldnn.enabled and os.environ.get(ENV_ONEDNN, '1') != '0'


def _autocast_cpu() -> bool:
    try:
        return torch.is_autocast_enabled('cpu')
    except TypeError:  # torch < 2.4 took no device argument
        return torch.is_autocast_cpu_enabled()


def _eligible(weight: Tensor, bias: Optional[Tensor], x: Tensor, macs: int) -> bool:
    """The conditions of the module docstring but the hooks (cheap tests first); x is a plain tensor."""
    if x.device.type != 'cpu' or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if macs < MIN_MACS or (bias is not None and bias.dtype != torch.float32):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return False
    return onednn_available() and not _autocast_cpu()


def _eager(x: Tensor) -> bool:
    """x is a plain tensor and no tracer, scripting or compiler is at work (tested before any size is read, so that
    a tracer records no test)."""
    return type(x) is Tensor and not (torch.jit.is_tracing() or torch.jit.is_scripting()
                                      or torch.compiler.is_compiling())


def _onednn_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], '')


def _onednn_conv1x1(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return torch.mkldnn_convolution(x, weight, bias, [0, 0], [1, 1], [1, 1], 1)


@register_notrace_function  # timm FX leaf: a traced graph takes the same route as eager
def linear(module: nn.Linear, x: Tensor) -> Tensor:
    """``module(x)`` for an ``nn.Linear`` and x [..., in_features], through oneDNN when that cannot be told apart."""
    if (_eager(x) and type(module) is nn.Linear and x.dim() >= 1 and x.shape[-1] == module.in_features
            and _eligible(module.weight, module.bias, x, x.numel() * module.out_features)
            and not forward_hooks_registered(module)):
        return _onednn_linear(x, module.weight, module.bias)
    return module(x)


@register_notrace_function  # timm FX leaf: a traced graph takes the same route as eager
def linear_weights(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)`` for weights computed in the forward (folded ones), through oneDNN when that
    cannot be told apart (no module, so no hooks to respect)."""
    if (_eager(x) and type(weight) is Tensor and weight.dim() == 2 and x.dim() >= 1
            and x.shape[-1] == weight.shape[1] and (bias is None or type(bias) is Tensor)
            and _eligible(weight, bias, x, x.numel() * weight.shape[0])):
        return _onednn_linear(x, weight, bias)
    return F.linear(x, weight, bias)


@register_notrace_function  # timm FX leaf: a traced graph takes the same route as eager
def conv1x1(module: nn.Conv2d, x: Tensor) -> Tensor:
    """``module(x)`` for a pointwise ``nn.Conv2d`` (1x1 kernel, stride 1, no padding, one group) and x [B, C, H, W],
    through oneDNN when that cannot be told apart."""
    if (_eager(x) and type(module) is nn.Conv2d and x.dim() == 4 and module.kernel_size == (1, 1)
            and module.stride == (1, 1) and module.padding == (0, 0) and module.dilation == (1, 1)
            and module.groups == 1 and module.padding_mode == 'zeros' and x.shape[1] == module.in_channels
            and _eligible(module.weight, module.bias, x, x.numel() * module.out_channels)
            and not forward_hooks_registered(module)):
        return _onednn_conv1x1(x, module.weight, module.bias)
    return module(x)


@register_notrace_function  # timm FX leaf: a traced graph takes the same route as eager
def conv1d_tokens(module: nn.Conv1d, x: Tensor) -> Tensor:
    """``module(x.transpose(1, 2))`` for a depthwise ``nn.Conv1d`` and a sequence of tokens x [B, L, C]: [B, C, L'].

    The conv slides along the sequence, so PyTorch wants x channels-first, and a transposed copy of x (a slow strided
    copy) followed by oneDNN's channels-first 1-D depthwise kernel is what a plain call costs: about 1 ms for
    [1, 3136, 64] on one core of the benchmark machine. On CPU the same conv runs instead as a 2-D conv (kernel
    1 x k) on the tokens seen as a channels-last [B, C, 1, L] map, which oneDNN's channels-last depthwise kernel reads
    in place: about 50 us, same function to float32 rounding, with autograd. The result is a [B, C, L'] view with
    channel stride 1. Otherwise (other devices, a replaced module, hooks, tracers, oneDNN off) it calls the module
    on a channels-first copy.
    """
    conv = module
    if (_eager(x) and type(conv) is nn.Conv1d and x.dim() == 3 and x.device.type == 'cpu'
            and conv.groups == conv.in_channels == conv.out_channels == x.shape[-1] and conv.stride == (1,)
            and conv.dilation == (1,) and conv.padding_mode == 'zeros' and isinstance(conv.padding, tuple)
            and onednn_available() and not forward_hooks_registered(conv)):
        y = F.conv2d(x.unsqueeze(1).permute(0, 3, 1, 2), conv.weight.unsqueeze(2), conv.bias,
                     padding=(0, conv.padding[0]), groups=conv.groups)  # [B, C, 1, L'], channels-last
        return y.squeeze(2)
    return module(x.transpose(1, 2).contiguous())

