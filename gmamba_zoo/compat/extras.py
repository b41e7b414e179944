"""Optional dependencies: each belongs to an extra of the package (pyproject's ``optional-dependencies``), and code
that needs one calls :func:`require_extra` before it starts working, so a plain install fails at once with one line
naming the extra to install instead of an ``ImportError`` from deep inside another library.
"""
from __future__ import annotations

import importlib
from typing import Dict, Optional, Sequence, Tuple

__all__ = ['EXTRAS', 'MissingExtraError', 'require_extra']

# extra -> the modules it installs (import names), as listed in pyproject.toml's optional-dependencies
EXTRAS: Dict[str, Tuple[str, ...]] = {
    'onnx': ('onnx', 'onnxscript', 'onnxruntime'),
    'viz': ('matplotlib',),
    'detection': ('torchvision',),
    'seg': ('segmentation_models_pytorch',),
    'openmmlab': ('mmengine',),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed (or does not import); the message names the extra that installs it."""


def require_extra(extra: str, what: str, modules: Optional[Sequence[str]] = None, command: bool = False) -> None:
    """Import the modules of ``extra`` (or those of ``modules`` it lists), or raise one line naming the extra.

    Args:
        extra: A key of :data:`EXTRAS`.
        what: What needs them, for the message (e.g. ``'gmamba-zoo export'``).
        modules: The extra's modules actually needed (default: all of them).
        command: Exit with the message (``SystemExit``, no traceback), for a command-line entry point.

    Raises:
        MissingExtraError: ``"<what> needs the [<extra>] extra (<module> is not installed): pip install
            'gmamba-zoo[<extra>]'"``; a module that is installed but fails to import says so with its error.
        SystemExit: The same message, when ``command``.
    """
    if extra not in EXTRAS:
        raise ValueError(f'require_extra: unknown extra {extra!r}; expected one of {sorted(EXTRAS)}.')
    modules = tuple(modules or EXTRAS[extra])
    unknown = [m for m in modules if m not in EXTRAS[extra]]
    if unknown:
        raise ValueError(f'require_extra: {unknown} are not modules of the [{extra}] extra {EXTRAS[extra]}.')
    missing, broken = [], []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            if getattr(e, 'name', None) == name or name.startswith(f'{getattr(e, "name", None)}.'):
                missing.append(name)
            else:  # installed, but one of its own imports fails (e.g. a torchvision built for another torch)
                broken.append(f'{name} does not import: {e}')
    if missing:
        message = (f"{what} needs the [{extra}] extra ({', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                   f"not installed): pip install 'gmamba-zoo[{extra}]'")
    elif broken:
        message = (f"{what} needs the [{extra}] extra, installed but broken ({'; '.join(broken)}); reinstall it: "
                   f"pip install --force-reinstall 'gmamba-zoo[{extra}]'")
    else:
        return
    if command:
        raise SystemExit(message)
    raise MissingExtraError(message)
