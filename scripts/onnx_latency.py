#!/usr/bin/env python
"""onnxruntime against PyTorch eager on CPU for a few zoo models: ``python scripts/onnx_latency.py``.

Exports each model (random weights, blocks active) with :func:`gmamba_zoo.export.export_onnx`, then times both
runtimes alternately (:mod:`gmamba_zoo.export.latency`). Prints a Markdown table for docs/export.md and, with
``--json``, writes everything measured (machine, load averages, settings) to a file.
"""
import argparse
import json
import sys

from gmamba_zoo.export.latency import latency_report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', default=['resnet18_gmamba', 'convnext_t_gmamba', 'swin_t_gmamba', 'vgamba_b'])
    p.add_argument('--size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--json', default=None, help='write the report to this JSON file')
    args = p.parse_args(argv)
    report = latency_report(args.models, img_size=tuple(args.size), batch=args.batch, threads=args.threads,
                            repeats=args.repeats)
    m = report['machine']
    print(f"{m['cpu']}, {args.threads} thread(s), torch {m['torch']}, onnxruntime {m['onnxruntime']}, {m['date']}; "
          f"load average before {m['load_before']}, after {report['load_after']}")
    print('| model | input | PyTorch eager (ms) | onnxruntime (ms) | onnxruntime / eager | max rel. error |')
    print('| --- | --- | ---: | ---: | ---: | ---: |')
    for r in report['rows']:
        print(f"| {r['model']} | {r['batch']}x3x{r['img_size'][0]}x{r['img_size'][1]} | {r['eager_ms']:.1f} | "
              f"{r['onnxruntime_ms']:.1f} | {r['ratio']:.2f} | {r['max_rel_error']:.1e} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
