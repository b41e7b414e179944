"""The private timm and fvcore APIs the package needs, in one place, each with the versions it was checked against.

Everything else uses the public APIs of timm (``timm.models``, ``timm.layers``), fvcore (``fvcore.nn``) and
huggingface_hub. This room sits below every other (docs/architecture.md); when a dependency makes one of these
public, or changes it, this is the only file to edit.

* ``FeatureGetterNet``, ``feature_take_indices`` (timm 1.0.3 to 1.0.31, the oldest and newest supported): timm's
  feature wrapper around a model's ``forward_intermediates`` and its index resolver. Neither is exported from
  ``timm.models`` or ``timm.layers``; ``create_model(..., features_only=True, feature_cls='getter')`` is the public
  route, but it needs a model name, and the zoo wraps model instances.
* fvcore (0.1.5.post20221221, its last release): :func:`fvcore_nn` imports ``fvcore.nn`` without the FutureWarning
  that its module-level ``torch.jit.script`` prints under torch >= 2.10, and :func:`flop_analysis` empties the
  analysis' built-in list of ignored ops, which only the private ``_ignored_ops`` attribute holds.
* ``timm.models._factory.load_checkpoint`` (timm 1.0.31): ``create_model(..., checkpoint_path=...)`` loads the file
  through this module-level name after the model's entrypoint has returned, so no code of the model's sees the file.
  :func:`route_checkpoint_path_errors` wraps that one name so that a model carrying ``explain_checkpoint_error``
  turns a failure into an error naming the file; other models load exactly as before.
* torch's hook registries (checked against torch 2.14): :func:`forward_hooks_registered` reads
  ``Module._forward_hooks``, ``Module._forward_pre_hooks`` and the global
  ``torch.nn.modules.module._global_forward_hooks`` / ``_global_forward_pre_hooks``; torch has no public "is this
  module observed" query.
* ``torch.fx.experimental._config.backed_size_oblivious`` (torch 2.14): while it is set, a tracer reasoning about a
  symbolic size does not specialise on the size being 0 or 1 where either would do. :func:`size_oblivious_tracing`
  sets it around timm's Swin window arithmetic during ``torch.export`` (torch's ONNX exporter sets it for a whole
  export); torch has no public switch.
* ``torch._dynamo.config.assume_static_by_default`` (torch 2.14): False while ``torch.compile(..., dynamic=True)``
  traces. :func:`compiling_dynamic_shapes` reads it so that a size-dependent choice is left out of such a graph
  (a guard on it would recompile); torch has no public query.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import warnings
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn
from timm.models._features import FeatureGetterNet, feature_take_indices

__all__ = [
    'FeatureGetterNet', 'feature_take_indices', 'fvcore_nn', 'flop_analysis', 'route_checkpoint_path_errors',
    'forward_hooks_registered', 'size_oblivious_tracing', 'compiling_dynamic_shapes',
]


def fvcore_nn() -> ModuleType:
    """``fvcore.nn``, imported without its deprecation warning about ``torch.jit.script`` (and only when called)."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*torch.jit.script.* is deprecated', category=FutureWarning)
        import fvcore.nn
    return fvcore.nn


def flop_analysis(model: Any, inputs: Any) -> Any:
    """An ``fvcore.nn.FlopCountAnalysis`` with no op handles and an empty ignore list: only the handles the caller
    sets count, and every other op is reported by ``unsupported_ops()``."""
    fca = fvcore_nn().FlopCountAnalysis(model, inputs)
    fca.clear_op_handles()
    fca._ignored_ops = set()  # fvcore 0.1.5: the built-in ignore list; no public way to empty it
    return fca


def route_checkpoint_path_errors() -> bool:
    """Make ``timm.create_model(..., checkpoint_path=...)`` let a model explain a failure to load the file.

    For a model with an ``explain_checkpoint_error(model, path, error)`` attribute, an exception raised while timm
    reads or loads the file is replaced by what that returns, raised from the original (alone if the returned error
    has ``__suppress_context__`` set). Loading itself (the reader, EMA first, strict keys) stays timm's, and models
    without the attribute are untouched. Idempotent.

    Returns:
        Whether the route is in place (False if timm no longer has the name, in which case timm's errors stand).
    """
    factory = importlib.import_module('timm.models._factory')
    original = getattr(factory, 'load_checkpoint', None)
    if original is None:
        return False
    if getattr(original, '_explains_errors', False):
        return True

    @functools.wraps(original)
    def load_checkpoint(model: Any, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
        explain = getattr(model, 'explain_checkpoint_error', None)
        if explain is None:
            return original(model, checkpoint_path, *args, **kwargs)
        try:
            return original(model, checkpoint_path, *args, **kwargs)
        except Exception as e:
            explained = explain(model, checkpoint_path, e)
            if explained.__suppress_context__:  # an explanation meant to stand alone
                raise explained from None
            raise explained from e

    load_checkpoint._explains_errors = True
    factory.load_checkpoint = load_checkpoint
    return True


def forward_hooks_registered(*modules: nn.Module) -> bool:
    """Whether a forward hook or forward pre-hook would see the inputs or outputs of any of ``modules``: one registered
    on one of them, or a global one (``torch.nn.modules.module.register_module_forward_hook``)."""
    from torch.nn.modules import module as torch_module
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def size_oblivious_tracing() -> contextlib.AbstractContextManager:
    """A context in which ``torch.export`` treats symbolic sizes as size-oblivious (``backed_size_oblivious``);
    a no-op context where torch lacks the setting."""
    config = importlib.import_module('torch.fx.experimental._config')
    if not hasattr(config, 'backed_size_oblivious'):
        return contextlib.nullcontext()
    return config.patch(backed_size_oblivious=True)


@torch.compiler.assume_constant_result
def compiling_dynamic_shapes() -> bool:
    """Whether the code calling this is being traced by ``torch.compile(..., dynamic=True)``; call it only while
    ``torch.compiler.is_compiling()``. Its answer is a constant of the graph (read once, at trace time)."""
    config = importlib.import_module('torch._dynamo.config')
    return not getattr(config, 'assume_static_by_default', True)
