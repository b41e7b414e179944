"""``gmamba-zoo``: the package's command line.

Subcommands (``gmamba-zoo --help`` lists them all):
    list         every model this package registers with timm
    info NAME    params, feature channels and strides, scan backend and default config of one model
    bench-scan   the selective-scan speed and memory benchmark (``scripts/bench_scan.py``)
    flops        params, GFLOPs, feature channels and strides of every model (``scripts/report_flops.py``)
    benchmark    throughput and peak memory, and the GMamba-vs-attention scaling study (``scripts/benchmark.py``)
    erf NAME     effective receptive field heat maps: GMamba model vs plain backbone vs scan-only (PNG)
    criterion NAME  the paper's gradient criterion of global perception on a model's feature map
    longrange    the long-range (corner-colour) benchmark (``scripts/longrange.py``)
    train        fine-tune on an ImageFolder data set, single process or DDP under torchrun (``scripts/train.py``)

A module adds a subcommand by decorating a function with :func:`command` and being named in
``_COMMAND_MODULES``; modules are imported only when the parser is built, so ``import gmamba_zoo`` stays light.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Callable, Dict, List, Optional

from . import list_models
from .ops import cuda_kernel_available, resolve_scan_backend

__all__ = ['main', 'model_info', 'command', 'script_main']

_COMMANDS: Dict[str, Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {}
# modules whose @command functions add subcommands (one line each)
_COMMAND_MODULES: List[str] = [
    'gmamba_zoo.hub',  # push-to-hub
    'gmamba_zoo.analysis',  # erf, criterion
    'gmamba_zoo.longrange',  # longrange
    'gmamba_zoo.flops',  # flops
    'gmamba_zoo.benchmark',  # benchmark
    'gmamba_zoo.train',  # train
]


def command(name: str):
    """Register a subcommand: the decorated function adds its arguments to the parser it is given and returns the
    handler, ``handler(args) -> exit code``. Its docstring is the subcommand's help."""
    def wrap(fn):
        _COMMANDS[name] = fn
        return fn
    return wrap


def script_main(description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                run: Callable[[argparse.Namespace], int], argv: Optional[List[str]] = None,
                prog: Optional[str] = None) -> int:
    """The ``main()`` of a module that is also a script: parse ``argv`` (default ``sys.argv[1:]``) with the module's
    arguments and run it. ``args.argv`` keeps the arguments, for reports that quote the command that made them."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog=prog, description=description.split('\n')[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = argv
    return run(args)


def _check_name(name: str) -> None:
    models = list_models()
    if name not in models:
        raise SystemExit(f"gmamba-zoo: unknown model {name!r}; `gmamba-zoo list` shows the {len(models)} models.")


def model_info(name: str) -> dict:
    """What ``gmamba-zoo info`` prints, as a dict: params, feature channels/strides and the default config."""
    import timm
    _check_name(name)
    model = timm.create_model(name, pretrained=False)
    cfg = model.pretrained_cfg
    feats = model.feature_info
    feats = feats.get_dicts() if hasattr(feats, 'get_dicts') else feats
    return {
        'name': name,
        'params_m': round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        'num_features': model.num_features,
        'feature_channels': [f['num_chs'] for f in feats],
        'feature_strides': [f['reduction'] for f in feats],
        'feature_modules': [f['module'] for f in feats],
        'scan_backend_cpu': resolve_scan_backend('cpu'),
        'cuda_kernel_available': cuda_kernel_available(),
        'default_cfg': {k: v for k, v in cfg.items() if isinstance(v, (str, int, float, bool, tuple, list, type(None)))},
    }


@command('list')
def _list_cmd(parser: argparse.ArgumentParser):
    """Every model this package registers with timm."""
    parser.add_argument('--json', action='store_true', help='print a JSON list')

    def run(args):
        names = list_models()
        print(json.dumps(names) if args.json else '\n'.join(names))
        return 0
    return run


@command('info')
def _info_cmd(parser: argparse.ArgumentParser):
    """Params, feature channels and strides, and the default config of one model."""
    parser.add_argument('name', help='a model name from `gmamba-zoo list`')
    parser.add_argument('--json', action='store_true', help='print JSON')

    def run(args):
        info = model_info(args.name)
        if args.json:
            print(json.dumps(info, indent=2, default=str))
            return 0
        print(f"{info['name']}: {info['params_m']:.3f} M params, {info['num_features']} final features")
        print(f"  feature channels: {info['feature_channels']}")
        print(f"  feature strides:  {info['feature_strides']}")
        print(f"  scan backend: {info['scan_backend_cpu']} on CPU; mamba-ssm kernel importable: "
              f"{info['cuda_kernel_available']}")
        print('  default config:')
        for k, v in info['default_cfg'].items():
            print(f'    {k}: {v}')
        return 0
    return run


@command('bench-scan')
def _bench_scan_cmd(parser: argparse.ArgumentParser):
    """Speed and memory of the pure-PyTorch selective scan against a sequential loop."""
    from .bench_scan import add_arguments, run
    add_arguments(parser)
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='gmamba-zoo', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    for module in _COMMAND_MODULES:
        importlib.import_module(module)
    for name, add in _COMMANDS.items():
        p = sub.add_parser(name, help=(add.__doc__ or '').strip() or None)
        p.set_defaults(handler=add(p))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == '__main__':
    # run as `python -m gmamba_zoo.cli`: use the package's module, where the command modules register themselves
    from gmamba_zoo.cli import main as _package_main
    sys.exit(_package_main())
