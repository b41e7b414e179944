"""``gmamba-zoo``: the package's command line.

The top of the house (docs/architecture.md): it only parses arguments and calls the application that does the
work; nothing imports it. Each subcommand names the module that adds its arguments and runs it, and only that module
is imported, so ``gmamba-zoo list`` does not load the FLOP counter, the benchmarks or fvcore.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Dict, List, NamedTuple, Optional

__all__ = ['main', 'build_parser', 'COMMANDS']


class Command(NamedTuple):
    """A subcommand: ``module.add(parser)`` adds its arguments, ``module.run(args)`` returns the exit code."""
    module: str
    help: str
    add: str = 'add_arguments'
    run: str = 'run'


COMMANDS: Dict[str, Command] = {
    'list': Command('gmamba_zoo.cli', 'every model this package registers with timm', '_add_list', '_run_list'),
    'info': Command('gmamba_zoo.cli', 'params, feature channels and strides, scan backend and default config of one '
                    'model', '_add_info', '_run_info'),
    'flops': Command('gmamba_zoo.flops.counter', 'params, GFLOPs (fvcore), feature channels and strides of every model '
                     'and its baseline'),
    'benchmark': Command('gmamba_zoo.bench.models', 'throughput and peak memory of the models and their baselines; '
                         'GMamba block vs attention scaling study'),
    'bench-scan': Command('gmamba_zoo.bench.scan', 'the fused scan kernels against the PyTorch scan: speed, memory, '
                                                  'first call (CPU: numba; --device cuda: Triton vs mamba-ssm)'),
    'triton-build': Command('gmamba_zoo.bench.triton_build', "the Triton scan kernels compiled for every GPU target "
                            'without a GPU: compile errors, registers, spills, shared memory'),
    'bench-compile': Command('gmamba_zoo.bench.compile', 'torch.compile against eager for one model'),
    'check-gpu': Command('gmamba_zoo.bench.gpu_check', 'the GPU paths in one run: every scan backend against the '
                         'float64 oracle, scan speed, AMP training steps, torch.compile; writes docs/gpu-check.md'),
    'bench-breakdown': Command('gmamba_zoo.bench.breakdown', "where a model's forward time goes, by kind of operation, "
                               'beside its plain backbone (time, multiply-adds, rate)'),
    'export': Command('gmamba_zoo.export.onnx', 'export a model to ONNX (dynamic batch, height and width) and check it '
                      'in onnxruntime'),
    'push-to-hub': Command('gmamba_zoo.hub.publish', 'export a model (its own, pretrained or checkpoint weights) as a '
                           'Hub folder with a model card; upload it'),
    'erf': Command('gmamba_zoo.analysis.perception', 'effective receptive field heat maps (PNG) of a GMamba model, '
                   'its plain backbone and a scan-only variant', 'add_erf_arguments', 'run_erf'),
    'criterion': Command('gmamba_zoo.analysis.perception', "the paper's gradient criterion (does every output depend "
                         "on every input position?) for a model's features", 'add_criterion_arguments',
                         'run_criterion'),
    'ablations': Command('gmamba_zoo.analysis.ablations', "the paper's ablations as block options: added params, "
                         'GFLOPs and the gradient criterion of each, beside the paper\'s figures'),
    'longrange': Command('gmamba_zoo.analysis.longrange', 'long-range benchmark: a CNN, the same with GMamba blocks '
                         'and a scan-only variant on the corner-colour task'),
    'train': Command('gmamba_zoo.train.finetune', 'fine-tune a model on an ImageFolder data set (single process, or '
                     'DDP under torchrun)'),
    'timm': Command('gmamba_zoo.integrations.timm_scripts', "run one of timm's scripts (train.py, validate.py, ...) "
                    'with the zoo models registered: gmamba-zoo timm SCRIPT.py [ARGS ...]'),
}


def _add_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--json', action='store_true', help='print a JSON list')


def _run_list(args: argparse.Namespace) -> int:
    from gmamba_zoo.models import list_models
    names = list_models()
    print(json.dumps(names) if args.json else '\n'.join(names))
    return 0


def _add_info(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('name', help='a model name from `gmamba-zoo list`')
    parser.add_argument('--json', action='store_true', help='print JSON')


def _run_info(args: argparse.Namespace) -> int:
    from gmamba_zoo.models.info import model_info
    try:
        info = model_info(args.name)
    except KeyError as e:
        raise SystemExit(f'gmamba-zoo: {e.args[0]}') from None
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['name']}: {info['params_m']:.3f} M params, {info['num_features']} final features")
    print(f"  feature channels: {info['feature_channels']}")
    print(f"  feature strides:  {info['feature_strides']}")
    cuda = f"{info['scan_backend_cuda']} on CUDA" if info['scan_backend_cuda'] else 'no CUDA device'
    print(f"  scan backend ({info['scan_backend_requested']}): {info['scan_backend_cpu']} on CPU, {cuda}; "
          f"mamba-ssm kernel importable: {info['cuda_kernel_available']}")
    print('  default config:')
    for k, v in info['default_cfg'].items():
        print(f'    {k}: {v}')
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default once: help that already states its default is left as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ''
        if 'default' in help_text or action.default in (None, False, argparse.SUPPRESS):
            return help_text
        return super()._get_help_string(action)


def _functions(name: str) -> tuple:
    cmd = COMMANDS[name]
    module = sys.modules[__name__] if cmd.module == __name__ else importlib.import_module(cmd.module)
    return getattr(module, cmd.add), getattr(module, cmd.run)


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` (default ``sys.argv[1:]``) gets its arguments and imports
    its module, the others are listed by name and help."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith('-')), None)
    parser = argparse.ArgumentParser(
        prog='gmamba-zoo', description='timm-compatible global-perception state-space backbones: GMamba, vGamba.')
    from gmamba_zoo import __version__
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help[0].upper() + cmd.help[1:] + '.',
                           formatter_class=_HelpFormatter)
        if name == chosen:
            add, run = _functions(name)
            add(p)
            for action in p._actions:  # an option without help still shows its default
                if action.help is None and action.option_strings and action.default not in (None, False):
                    action.help = 'default: %(default)s'
            p.set_defaults(handler=run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``gmamba-zoo`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    args.argv = argv[argv.index(args.command) + 1:]  # quoted by the reports that record the command that made them
    return args.handler(args)


if __name__ == '__main__':
    sys.exit(main())
