"""Input checks shared by every zoo model: one forward pre-hook, installed by the model builders.

:func:`install_input_checks` is called once at the end of each family's builder (``_create_gmamba``,
``_create_vgamba``) on whatever ``build_model_with_cfg`` returns, i.e. on the classification model or on its
``features_only`` wrapper, so ``model(x)`` and ``features(x)`` both check their input before any layer runs. A bad input
gets an error naming what was expected instead of a shape error from deep inside a convolution or the scan:

* a tensor that is not 4-D ``[B, C, H, W]`` (a single 3-D image, a 5-D video clip): ``ValueError``;
* the wrong channel count (not ``in_chans``): ``ValueError``;
* a map smaller than the network's total stride (e.g. 32) on either side: ``ValueError``;
* an integer, bool or complex tensor (e.g. a ``uint8`` image not yet converted with ``.float() / 255``): ``TypeError``;
* a floating dtype other than the parameters' outside autocast (e.g. float64 into a float32 model): ``TypeError``;
* a float64 input under autocast into a model that is not float64 (autocast does not cast float64): ``TypeError``.

The checks are skipped while ``torch.jit.trace`` (fvcore's FLOP counter) or ``torch.compile``/``torch.export`` trace
the model: they read Python-level shapes only, so skipping them changes no computation, and a compiled graph then has
no guard or graph break from them. The hook is a small picklable object, so deepcopy, pickle and ``torch.save`` of a
whole model keep working.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn as nn

from .features import feature_info_dicts

__all__ = ['InputSpec', 'install_input_checks', 'network_stride']


def network_stride(model: nn.Module) -> int:
    """The largest ``reduction`` in a model's ``feature_info`` (either of timm's forms); 1 if it has none."""
    return int(max((i.get('reduction', 1) for i in feature_info_dicts(model)), default=1))


def _tracing() -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, 'compiler', None)
    return bool(compiler is not None and compiler.is_compiling())


class InputSpec:
    """What a zoo model accepts; called as a forward pre-hook it raises on anything else.

    Attributes:
        name: The model's name, for messages.
        in_chans: Channels C of the image batch.
        min_size: Smallest H and W: the network's total stride (the deepest feature map is 1 x 1 there).
    """

    def __init__(self, name: str, in_chans: int, min_size: int):
        self.name, self.in_chans, self.min_size = name, int(in_chans), int(min_size)

    def __repr__(self) -> str:
        return f'InputSpec(name={self.name!r}, in_chans={self.in_chans}, min_size={self.min_size})'

    def check(self, x: Any, param_dtype: Optional[torch.dtype] = None) -> None:
        """Raise if ``x`` is not a [B, in_chans, H, W] floating tensor with H, W >= min_size.

        Raises:
            TypeError: Not a tensor, not a floating-point dtype, or a floating dtype other than ``param_dtype`` while
                autocast is off.
            ValueError: Not 4-D, wrong channel count, or smaller than ``min_size``.
        """
        expected = f'a [B, C, H, W] = [B, {self.in_chans}, H, W] image batch with H, W >= {self.min_size}'
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'{self.name}: expected {expected} as a torch.Tensor, got {type(x).__name__}.')
        if x.dim() != 4:
            hint = ''
            if x.dim() == 3:
                hint = ' For a single image [C, H, W], add the batch dimension: x.unsqueeze(0).'
            elif x.dim() == 5:
                hint = (' For a clip or a stack [B, T, C, H, W], fold the extra dimension into the batch: '
                        'x.flatten(0, 1).')
            raise ValueError(f'{self.name}: expected {expected}; got a {x.dim()}-D tensor of shape '
                             f'{tuple(x.shape)}.{hint}')
        if x.shape[1] != self.in_chans:
            if x.shape[-1] == self.in_chans:
                hint = 'Is it channels-last [B, H, W, C]? Use x.permute(0, 3, 1, 2).'
            else:
                hint = f'For {x.shape[1]}-channel inputs build the model with in_chans={x.shape[1]}.'
            raise ValueError(f'{self.name}: expected in_chans={self.in_chans} channels ({expected}); got shape '
                             f'{tuple(x.shape)} with {x.shape[1]} channels. {hint}')
        h, w = x.shape[-2:]
        if h < self.min_size or w < self.min_size:
            raise ValueError(f'{self.name}: the input is {h} x {w}; expected H, W >= {self.min_size}, the network\'s '
                             f'total stride (its deepest feature map would be empty or below 1 x 1). Resize or pad '
                             f'the image.')
        if not x.is_floating_point():
            raise TypeError(f'{self.name}: expected a floating-point image batch (e.g. '
                            f'{param_dtype or torch.float32}); got dtype {x.dtype}. Convert it first, e.g. '
                            f'x.float() / 255 for uint8 images, then normalise.')
        if param_dtype is not None and x.dtype != param_dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f'{self.name}: input dtype {x.dtype} does not match the parameters\' dtype {param_dtype}; '
                            f'convert the input (x.to({param_dtype})) or the model, or run under torch.autocast.')
        if param_dtype is not None and x.dtype == torch.float64 != param_dtype and torch.is_autocast_enabled(
                x.device.type):
            raise TypeError(f'{self.name}: a float64 input under torch.autocast: autocast lowers float32 tensors but '
                            f'leaves float64 ones alone, so the first conv would mix float64 with lower-precision '
                            f'weights; convert the input first (x.float()).')

    def __call__(self, module: nn.Module, args: Tuple[Any, ...]) -> None:
        if _tracing() or not args:
            return
        param = next(module.parameters(), None)
        self.check(args[0], param.dtype if param is not None and param.is_floating_point() else None)


def install_input_checks(model: nn.Module, name: str, in_chans: int = 3) -> nn.Module:
    """Check every input of ``model`` (a zoo model or its ``features_only`` wrapper) with an :class:`InputSpec`.

    The minimum size is the largest stride in ``model.feature_info`` (for a ``features_only`` wrapper, of the maps it
    returns). Returns the model, with the spec on ``model.input_spec``.
    """
    spec = InputSpec(name, in_chans, network_stride(model))
    model.input_spec = spec
    model.register_forward_pre_hook(spec)
    return model
