"""ONNX export of zoo models with a dynamic batch, height and width, checked in onnxruntime: ``gmamba-zoo export``.

``gmamba-zoo export convnext_t_gmamba --out convnext_t_gmamba.onnx [--checkpoint PATH] [--features-only]`` writes one
ONNX file that onnxruntime runs at any batch size and any height and width from twice the network's stride to
``--max-size``, with standard operators only (no custom-op library). :func:`export_onnx` is the function behind it.

The graph comes from torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``); while it traces, the model
takes its ONNX forms (docs/export.md):

* the selective scan: a fixed graph of slices, products and sums (a blocked parallel prefix scan,
  :mod:`gmamba_zoo.ops.parallel_scan`) instead of the ``gmamba_zoo::selective_scan`` op, for any batch and length up to
  2 ** 20 positions;
* the 2-D DFT low band: two products with real DFT-filter matrices built from the map's size in the graph
  (:func:`gmamba_zoo.layers.gssm.low_band_matrix`);
* FEM's folded form at every map size, vGamba's pool and position resizing and Swin's windows in size-symbolic form.

A plain ``torch.onnx.export(model, ..., dynamo=True, dynamic_shapes=...)`` after ``import gmamba_zoo`` exports the
same graph; the TorchScript exporter (``dynamo=False``) stops with an error that names :func:`export_onnx`.

After writing, the file is checked (``check=True``): onnxruntime's outputs against PyTorch's at two sizes other than
the export size, within 1e-4 of the largest output value.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.models import FeatureInfo

from ..bench.progress import Progress, add_quiet_argument
from ..compat.extras import require_extra
from ..hub.checkpoint import CheckpointMismatchError, CheckpointReadError
from .program import DEFAULT_MAX_SIZE, build_model, dynamic_image_shapes, example_input, min_export_size

__all__ = [
    'export_onnx', 'check_onnx', 'onnx_session', 'check_sizes', 'OnnxExport', 'OnnxCheckError', 'DEFAULT_OPSET',
    'TOLERANCE', 'add_arguments', 'run',
]

DEFAULT_OPSET = 18
TOLERANCE = 1e-4  # onnxruntime against PyTorch: max |difference| / max |PyTorch output|, per output
INPUT_NAME = 'images'


class OnnxCheckError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's beyond the tolerance, or the graph is not dynamic."""


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote and how it checked out.

    Attributes:
        path: The ONNX file.
        input_name: The graph's input, [batch, in_chans, height, width].
        output_names: ``logits`` [batch, num_classes], or ``features_<i>`` [batch, C_i, H_i, W_i] per feature tap.
        opset: ONNX opset.
        img_size: (H, W) it was traced at.
        min_size: Smallest height and width it takes; the largest is the export's ``max_size``.
        export_s: Seconds the export took.
        errors: Per checked input shape, the largest relative error of each output (empty without a check).
    """
    path: str
    input_name: str
    output_names: List[str]
    opset: int
    img_size: Tuple[int, int]
    min_size: int
    export_s: float
    errors: Dict[str, List[float]] = field(default_factory=dict)


def _output_names(model: nn.Module) -> List[str]:
    info = getattr(model, 'feature_info', None)
    if isinstance(info, FeatureInfo):  # a features_only extractor of any kind
        return [f'features_{i}' for i in range(len(info.out_indices))]
    return ['logits']


def check_sizes(img_size: Sequence[int], min_size: int) -> List[Tuple[int, int, int]]:
    """Two (batch, H, W) input shapes other than the export's: smaller and odd-sized with batch 1, larger with 3."""
    h, w = img_size
    small = (1, max(min_size + 3, h // 2 + 7), max(min_size + 1, w // 2 + 13))
    large = (3, h + 29, w + 3)
    return [small, large]


def onnx_session(path: Union[str, Path], threads: Optional[int] = None) -> Any:
    """An onnxruntime CPU session on ``path`` with all graph optimisations (``threads``: intra-op threads)."""
    require_extra('onnx', 'an onnxruntime session', ['onnxruntime'])
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def check_onnx(
        path: Union[str, Path],
        model: nn.Module,
        shapes: Sequence[Sequence[int]],
        tolerance: float = TOLERANCE,
        session: Any = None,
) -> Dict[str, List[float]]:
    """Run the ONNX file and ``model`` on random inputs of ``shapes`` and compare.

    Args:
        path: The ONNX file (input :data:`INPUT_NAME`).
        model: The PyTorch model it was exported from, in eval mode.
        shapes: (batch, H, W) per check.
        tolerance: Largest allowed max |onnxruntime - PyTorch| / max |PyTorch|, per output.
        session: An onnxruntime session on ``path`` to reuse.

    Returns:
        ``'BxHxW'`` -> the relative error of each output.

    Raises:
        OnnxCheckError: An output shape differs, or an error exceeds ``tolerance``.
    """
    session = session or onnx_session(path)
    ref = next(model.parameters())
    in_chans = getattr(getattr(model, 'input_spec', None), 'in_chans', 3)
    gen = torch.Generator().manual_seed(0)
    errors = {}
    for b, h, w in shapes:
        x = torch.randn(b, in_chans, h, w, generator=gen).to(ref.dtype)
        with torch.no_grad():
            expected = model(x.to(ref.device))
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        got = session.run(None, {INPUT_NAME: x.numpy()})
        key, errors[key] = f'{b}x{h}x{w}', []
        for i, (e, g) in enumerate(zip(expected, got)):
            e = e.detach().float().cpu()
            g = torch.from_numpy(g).float()
            if tuple(g.shape) != tuple(e.shape):
                raise OnnxCheckError(f'{path}: output {i} has shape {tuple(g.shape)} in onnxruntime, {tuple(e.shape)} '
                                     f'in PyTorch, for an input of {key}.')
            err = float((g - e).abs().max() / e.abs().max().clamp_min(1e-12))
            errors[key].append(err)
            if not err <= tolerance:
                raise OnnxCheckError(f'{path}: output {i} differs from PyTorch by {err:.3g} of its largest value for '
                                     f'an input of {key} (tolerance {tolerance:g}).')
    return errors


def _check_dynamic(path: Path, names: Sequence[str]) -> None:
    """Raise unless the graph's input has symbolic batch, height and width (the exporter may fix a dimension when
    it cannot keep it symbolic)."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    fixed = [axis for axis, d in zip(('batch', 'channels', 'height', 'width'), dims)
             if axis != 'channels' and not d.dim_param]
    if fixed:
        raise OnnxCheckError(f'{path}: the exported input has fixed {", ".join(fixed)} (expected dynamic batch, height '
                             f'and width); please report this with the model name.')
    if [o.name for o in graph.output] != list(names):
        raise OnnxCheckError(f'{path}: outputs {[o.name for o in graph.output]}, expected {list(names)}.')


def export_onnx(
        model: Union[str, nn.Module],
        path: Union[str, Path],
        *,
        pretrained: bool = False,
        checkpoint: Optional[Union[str, Path]] = None,
        features_only: bool = False,
        model_args: Optional[Dict[str, Any]] = None,
        img_size: Sequence[int] = (224, 224),
        opset: int = DEFAULT_OPSET,
        max_size: int = DEFAULT_MAX_SIZE,
        optimize: bool = True,
        check: bool = True,
        tolerance: float = TOLERANCE,
        verbose: bool = False,
        progress: Optional[Progress] = None,
) -> OnnxExport:
    """Export a zoo model to ONNX with a dynamic batch, height and width; check it in onnxruntime.

    Args:
        model: A model name (built by :func:`~gmamba_zoo.export.program.build_model` with ``pretrained``,
            ``checkpoint`` and ``features_only``) or a model / feature extractor to export as it is.
        path: The ONNX file to write (weights inside it).
        pretrained: With a name and no checkpoint: the pretrained weights of its default cfg; else random.
        checkpoint: With a name: a checkpoint file of the full model, loaded strictly.
        features_only: With a name: export the feature maps of every feature tap instead of the logits.
        model_args: With a name: model arguments for ``timm.create_model`` (``gmamba_depths``, ``num_classes``, ...).
        img_size: (H, W) of the example input the graph is traced with.
        opset: ONNX opset version.
        max_size: Largest height and width the graph is meant for (at most 4096: the scan's ONNX form reaches 2 ** 20
            positions).
        optimize: Let the exporter optimise the graph (about 10% faster in onnxruntime, a slower export).
        check: Compare onnxruntime with PyTorch at the two shapes of :func:`check_sizes`.
        tolerance: The check's tolerance, relative to each output's largest value.
        verbose: Print the exporter's progress.
        progress: Reports the stages (build, export, write, check in onnxruntime) when given.

    Returns:
        An :class:`OnnxExport`.

    Raises:
        OnnxCheckError: The graph is not dynamic, or the check failed.
        MissingExtraError: onnx, onnxscript (or, with ``check``, onnxruntime) is not installed: the ``[onnx]`` extra.
    """
    require_extra('onnx', 'export_onnx', ['onnx', 'onnxscript'] + (['onnxruntime'] if check else []))
    progress = progress or Progress('export', quiet=True)
    progress.add((2 if isinstance(model, str) else 1) + 1 + int(check))
    if isinstance(model, str):
        progress.stage(f'build {model}')
        model = build_model(model, pretrained=pretrained, checkpoint=checkpoint, features_only=features_only,
                            **(model_args or {}))
        progress.done()
    elif pretrained or checkpoint is not None or features_only or model_args:
        raise ValueError('export_onnx: pretrained, checkpoint, features_only and model_args apply to a model name; a '
                         'model is exported as it is.')
    model = model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = _output_names(model)
    img_size = (int(img_size[0]), int(img_size[1]))
    start = time.perf_counter()
    progress.stage('torch.onnx.export' + (' and optimise' if optimize else ''))
    with torch.no_grad():
        program = torch.onnx.export(
            model, (example_input(model, img_size),), dynamo=True, dynamic_shapes=dynamic_image_shapes(model, max_size),
            input_names=[INPUT_NAME], output_names=names, opset_version=opset, optimize=optimize, verbose=verbose)
    progress.done()
    progress.stage(f'write {path.name}')
    program.save(str(path))
    result = OnnxExport(str(path), INPUT_NAME, names, opset, img_size, min_export_size(model),
                        time.perf_counter() - start)
    _check_dynamic(path, names)
    progress.done()
    if check:
        progress.stage('check in onnxruntime')
        result.errors = check_onnx(path, model, check_sizes(img_size, result.min_size), tolerance)
        progress.done()
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``gmamba-zoo export``."""
    p.description = f'{p.description or ""} Needs the [onnx] extra: pip install "gmamba-zoo[onnx]".'.strip()
    p.add_argument('model', help='a model name from `gmamba-zoo list`')
    p.add_argument('--out', required=True, help='the ONNX file to write')
    p.add_argument('--checkpoint', default=None,
                   help='a checkpoint file of the full model (safetensors or torch.save), loaded strictly as timm\'s '
                        'checkpoint_path; also with --features-only')
    p.add_argument('--features-only', action='store_true',
                   help='export the feature maps of every feature tap (features_0, ...) instead of the logits')
    p.add_argument('--pretrained', action='store_true',
                   help='without --checkpoint: the pretrained weights of the default cfg (downloaded); without either '
                        'the weights are random (for trying the pipeline, not for use)')
    p.add_argument('--model-args', type=json.loads, default=None, metavar='JSON',
                   help='model arguments for timm.create_model as a JSON object (those the checkpoint was trained '
                        'with), e.g. \'{"gmamba_depths": [1, 1, 1, 0]}\'')
    p.add_argument('--img-size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'),
                   help='height and width of the example input the graph is traced with; the graph takes any size')
    p.add_argument('--opset', type=int, default=DEFAULT_OPSET, help='ONNX opset version')
    p.add_argument('--max-size', type=int, default=DEFAULT_MAX_SIZE, help='largest height and width')
    p.add_argument('--no-optimize', action='store_true', help="skip the exporter's graph optimisation (faster export)")
    p.add_argument('--no-check', action='store_true', help='skip the onnxruntime check against PyTorch')
    p.add_argument('--json', action='store_true', help='print the result as JSON')
    add_quiet_argument(p)


def run(args: argparse.Namespace) -> int:
    """``gmamba-zoo export``: write the ONNX file, check it, print what was written."""
    require_extra('onnx', 'gmamba-zoo export', ['onnx', 'onnxscript'] + ([] if args.no_check else ['onnxruntime']),
                  command=True)
    with Progress('export', unit='stage', quiet=args.quiet) as progress:
        progress.stage('build')
        try:
            model = build_model(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint,
                                features_only=args.features_only, **(args.model_args or {}))
        except (CheckpointReadError, CheckpointMismatchError, FileNotFoundError) as e:  # a file given: one clear line
            raise SystemExit(f'export: {e}') from None
        res = export_onnx(model, args.out, img_size=args.img_size, opset=args.opset, max_size=args.max_size,
                          optimize=not args.no_optimize, check=not args.no_check, progress=progress)
    if args.json:
        print(json.dumps(asdict(res), indent=2))
        return 0
    size_mb = Path(res.path).stat().st_size / 2 ** 20
    print(f'{res.path}: {size_mb:.1f} MiB, opset {res.opset}, exported in {res.export_s:.0f} s')
    print(f'  input  {res.input_name}: [batch, C, height, width], height and width {res.min_size}..{args.max_size}')
    print(f'  output {", ".join(res.output_names)}')
    for shape, errs in res.errors.items():
        print(f'  onnxruntime vs PyTorch at {shape}: max relative error {max(errs):.2e}')
    return 0
