"""A long-range benchmark small enough for a CPU: do two marks in opposite corners share a colour?

The task (:func:`make_corner_task`): an S x S noise image holds two small square marks, one near the top-left corner
and one near the bottom-right, each in one of K colours; the label says whether the two colours are equal (balanced,
50% each). Each mark alone says nothing about the label, so a model must relate pixels about S apart.

Four models are trained from scratch on the same data with the same seeds (:func:`build_model`):
    * ``cnn``: a tiny CNN (five 3x3 convs, three of stride 2) whose receptive field (27 px) is smaller than the span a
      feature needs to touch both marks (at least 32 px per axis at the defaults), with the standard head (global
      average pool + linear). Pooling + a linear layer adds up per-position features, so its score is a(c1) + b(c2):
      a function of one mark plus a function of the other. "Same colour" is not such a threshold (XOR for two
      colours), so the best rule it can express gets 3 of the 4 colour pairs right (75%, e.g. "same iff both red"),
      and cross-entropy training of such a model sits at chance (the best additive logit for XOR is constant).
    * ``gmamba``: the same CNN with GMamba (GSSM) blocks appended to stages (``--blocks``), layer scale initialised to
      ``layer_scale``, not 0, so they learn from scratch; same head.
    * ``scan-only``: the same with ``frequency_path=False``: a one-way causal scan. In raster order the bottom-right
      mark comes after the top-left one, so a causal scan can in principle carry the first colour to the second mark:
      this task does not by itself defeat a causal scan; it shows whether the frequency path helps it learn.
    * ``cnn-mlp-head``: the control: the same CNN with a head that sees the whole map at once (flatten, a hidden
      layer of 64, GELU, linear). It shows that the task and the trunk's features allow a solution in this budget.

Everything is seeded: the test set (``data_seed``), a fresh training sample per epoch (``data_seed + epoch``, the same
for every model and seed, so no model can memorise the noise of a small fixed set), weights and batch order
(``seed``).
``python scripts/longrange.py --out docs/longrange.md`` (or ``gmamba-zoo longrange``) writes the Markdown table, a PNG
plot of accuracy per epoch beside it and the raw numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..bench.progress import Progress, add_quiet_argument
from ..layers import GMambaBlock

__all__ = ['PALETTE', 'make_corner_task', 'TinyNet', 'build_model', 'receptive_field', 'train_and_evaluate',
           'run_benchmark', 'add_arguments', 'run']

# RGB colours in [-1, 1] (the images are zero-mean): red, green, blue, yellow, magenta, cyan
PALETTE = torch.tensor([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1]], dtype=torch.float32)
VARIANTS = ('cnn', 'gmamba', 'scan-only', 'cnn-mlp-head')


def make_corner_task(
        n: int, size: int = 48, mark: int = 6, jitter: int = 3, margin: int = 1, colours: int = 2,
        noise: float = 0.2, seed: int = 0,
) -> Tuple[Tensor, Tensor]:
    """Generate the corner-colour task.

    Args:
        n: Number of images.
        size: Image side S.
        mark: Side of each square mark.
        jitter: Each mark's top-left pixel is uniform in ``[margin, margin + jitter)`` from its own corner, per axis.
        margin: Distance of the marks from the image border.
        colours: K colours drawn from :data:`PALETTE` (2..6).
        noise: Std of the Gaussian pixel noise over the whole image (marks included).
        seed: Generator seed.

    Returns:
        ``(images [n, 3, S, S] float32, labels [n] int64)``: 1 where the two marks share a colour.
    """
    if not 2 <= colours <= len(PALETTE):
        raise ValueError(f'make_corner_task: colours must be in 2..{len(PALETTE)}, got {colours}.')
    if 2 * (margin + jitter + mark) > size:
        raise ValueError(f'make_corner_task: size {size} is too small for two marks of {mark} px with margin '
                         f'{margin} and jitter {jitter} (needs >= {2 * (margin + jitter + mark)}).')
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g) * noise
    y = torch.randint(0, 2, (n,), generator=g)
    c1 = torch.randint(0, colours, (n,), generator=g)
    other = (c1 + torch.randint(1, colours, (n,), generator=g)) % colours  # uniform over the other colours
    c2 = torch.where(y.bool(), c1, other)
    off = torch.randint(margin, margin + jitter, (n, 4), generator=g)
    for k in range(n):
        r, c = int(off[k, 0]), int(off[k, 1])
        x[k, :, r:r + mark, c:c + mark] += PALETTE[c1[k], :, None, None]
        r, c = size - mark - int(off[k, 2]), size - mark - int(off[k, 3])
        x[k, :, r:r + mark, c:c + mark] += PALETTE[c2[k], :, None, None]
    return x, y


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyNet(nn.Module):
    """A tiny CNN of three stages, optionally with GMamba blocks at the end of stages.

    Stem: 3x3 conv, stride 2. Stage 1: a 3x3 conv. Stage 2: a 3x3 conv with stride 2 and a 3x3 conv. Stage 3: a 3x3
    conv with stride 2. Each conv has BatchNorm and ReLU; ``blocks[i]`` GMamba blocks follow stage i. Head: global
    average pool and a linear layer. Receptive field of the convs: 27 px; output stride 8.

    Args:
        widths: Channels of the three stages (the stem has ``widths[0]``).
        blocks: GMamba blocks appended to each stage (0 for none).
        num_classes: Output classes.
        block_kwargs: Passed to :class:`~gmamba_zoo.layers.GMambaBlock` (layer_scale_init_value, frequency_path, ...).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 48), blocks: Sequence[int] = (0, 0, 0), num_classes: int = 2,
                 **block_kwargs):
        super().__init__()
        if len(widths) != 3 or len(blocks) != 3:
            raise ValueError(f'TinyNet: three widths and three block counts expected, got {tuple(widths)} and '
                             f'{tuple(blocks)}.')
        w1, w2, w3 = widths
        self.stem = _conv(3, w1, 2)
        convs = [[_conv(w1, w1, 1)], [_conv(w1, w2, 2), _conv(w2, w2, 1)], [_conv(w2, w3, 2)]]
        self.stages = nn.Sequential(*[
            nn.Sequential(*layers, *[GMambaBlock(w, **block_kwargs) for _ in range(nb)])
            for layers, w, nb in zip(convs, widths, blocks)])
        self.head = nn.Linear(w3, num_classes)
        self.pool = True  # global average pool before the head (False: the head takes the whole map)

    def forward_features(self, x: Tensor) -> Tensor:
        """[B, 3, S, S] -> [B, C, S/8, S/8]."""
        return self.stages(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, S, S] -> logits [B, num_classes]."""
        x = self.forward_features(x)
        return self.head(x.mean((2, 3)) if self.pool else x)


def build_model(variant: str, seed: int = 0, layer_scale: float = 1.0, widths: Sequence[int] = (16, 32, 48),
                gmamba_blocks: Sequence[int] = (0, 1, 1), size: int = 48) -> TinyNet:
    """One of the benchmark's models, with the CNN trunk initialised identically for every variant.

    Args:
        variant: 'cnn', 'gmamba', 'scan-only', or 'cnn-mlp-head' (the control: the CNN with its head replaced by
            flatten -> Linear(64) -> GELU -> Linear, a head that sees every position, so global by its head).
        seed: Weight seed; the trunk's weights depend on it alone, the blocks' and the control head's on ``seed + 1``.
        layer_scale: Layer-scale init of the GMamba blocks.
        widths: Channels of the three stages.
        gmamba_blocks: GMamba blocks per stage for the two GMamba variants.
        size: Image side (the control head's input size depends on it).
    """
    if variant not in VARIANTS:
        raise ValueError(f'build_model: variant must be one of {VARIANTS}, got {variant!r}.')
    torch.manual_seed(seed)
    trunk = TinyNet(widths)
    if variant == 'cnn':
        return trunk
    if variant == 'cnn-mlp-head':
        with torch.no_grad():
            n = trunk.eval().forward_features(torch.zeros(1, 3, size, size)).numel()
        torch.manual_seed(seed + 1)
        trunk.head = nn.Sequential(nn.Flatten(), nn.Linear(n, 64), nn.GELU(), nn.Linear(64, 2))
        trunk.pool = False
        return trunk.train()
    torch.manual_seed(seed + 1)
    model = TinyNet(widths, gmamba_blocks, layer_scale_init_value=layer_scale, frequency_path=(variant == 'gmamba'))
    block_keys = {k for k in model.state_dict() if k not in trunk.state_dict()}
    missing, unexpected = model.load_state_dict(trunk.state_dict(), strict=False)
    if unexpected or set(missing) != block_keys:  # the GMamba blocks are appended, so trunk keys must be unchanged
        raise RuntimeError(f'build_model: trunk keys differ between variants: {unexpected or missing}')
    return model


def receptive_field(model: nn.Module) -> int:
    """Theoretical receptive field (pixels, one axis) of the output of ``model``'s convolutions, GMamba blocks aside.

    Counts every ``nn.Conv2d`` in module order (a plain chain, as in :class:`TinyNet`).
    """
    rf, jump = 1, 1
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            rf += (m.kernel_size[0] - 1) * m.dilation[0] * jump
            jump *= m.stride[0]
    return rf


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int = 256) -> float:
    model.eval()
    hits = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return hits / len(x)


def train_and_evaluate(model: nn.Module, train: Callable[[int], Tuple[Tensor, Tensor]], test: Tuple[Tensor, Tensor],
                       epochs: int, batch_size: int = 64, lr: float = 2e-3, weight_decay: float = 0.05, seed: int = 0,
                       log: Optional[Callable[[dict], None]] = None) -> List[dict]:
    """Train with AdamW (linear warm-up over 10% of the steps, then cosine) and test after every epoch.

    Args:
        model: The model; trained in place.
        train: ``train(epoch)`` -> (images [N, 3, S, S], labels [N]) for epoch 1, 2, ...; a fresh sample each epoch
            keeps a small model from memorising the noise of a fixed set.
        test: (images, labels) of the test set.
        epochs, batch_size, lr, weight_decay: The optimisation.
        seed: Seed of the batch order.
        log: Called with each epoch's row.

    Returns:
        One dict per epoch: epoch, train_loss, train_acc (running, on the batches seen), test_acc, seconds.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    history, sched = [], None
    for epoch in range(1, epochs + 1):
        x, y = train(epoch)
        if sched is None:
            steps = max(epochs * ((len(x) + batch_size - 1) // batch_size), 1)
            warm = max(steps // 10, 1)  # linear warm-up over the first 10% of steps, then cosine to 0
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min((t + 1) / warm, 1.0) * 0.5 * (
                1 + math.cos(math.pi * min(t / steps, 1.0))))
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(x), generator=g)
        loss_sum, hits = 0.0, 0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            hits += int((logits.argmax(1) == yb).sum())
        row = dict(epoch=epoch, train_loss=loss_sum / len(order), train_acc=hits / len(order),
                   test_acc=_accuracy(model, *test), seconds=time.perf_counter() - t0)
        history.append(row)
        if log:
            log(row)
    return history


def run_benchmark(args: argparse.Namespace, log: Optional[Progress] = None) -> dict:
    """Generate the data, train every variant for every seed, return all numbers (and the reach check).

    ``log`` counts the steps (per variant: the criterion, then every epoch of every seed) and prints a line per step
    on stdout; default: the lines only.
    """
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run_benchmark(args, log or Progress('longrange', quiet=True))
    finally:
        torch.set_num_threads(threads)


def _run_benchmark(args: argparse.Namespace, log: Progress) -> dict:
    from .perception import gradient_criterion
    task = dict(size=args.size, mark=args.mark, jitter=args.jitter, margin=1, colours=args.colours, noise=args.noise)
    test = make_corner_task(args.test, seed=args.data_seed, **task)

    def train(epoch: int) -> Tuple[Tensor, Tensor]:  # a fresh sample per epoch, the same for every model and seed
        return make_corner_task(args.train, seed=args.data_seed + epoch, **task)

    gap = args.size - 2 * (1 + args.jitter + args.mark) + 4  # pixels (per axis) a feature must span to touch both
    results = {'task': task, 'train': args.train, 'test': args.test, 'data_seed': args.data_seed, 'seeds': args.seeds,
               'epochs': args.epochs, 'batch_size': args.batch_size, 'lr': args.lr, 'layer_scale': args.layer_scale,
               'blocks': list(args.blocks),
               'min_span_px': gap, 'models': {}}
    log.add(len(args.variants) * (1 + len(args.seeds) * args.epochs))
    for variant in args.variants:
        log.stage(f'{variant}: gradient criterion')
        model = build_model(variant, 0, args.layer_scale, gmamba_blocks=args.blocks, size=args.size)
        crit = gradient_criterion(model, (3, args.size, args.size), positions=[(0, 0)], forward='forward_features',
                                  chunk_size=64)
        info = dict(params=sum(p.numel() for p in model.parameters()), conv_rf_px=receptive_field(model),
                    criterion_tau=crit.tau, criterion_holds=crit.holds, runs={})
        log.print(f'{variant}: {info["params"]} params, conv receptive field {info["conv_rf_px"]} px; gradient '
                  f'criterion at the first output position: tau={crit.tau:.2e} ({"holds" if crit.holds else "fails"})')
        log.done()
        for seed in args.seeds:
            log.stage(f'{variant} seed {seed}: training')
            model = build_model(variant, seed, args.layer_scale, gmamba_blocks=args.blocks, size=args.size)

            def epoch_done(r: dict, v: str = variant, s: int = seed) -> None:
                log.print(f"  {v} seed {s} epoch {r['epoch']}: loss {r['train_loss']:.4f} train acc "
                          f"{r['train_acc']:.3f} test acc {r['test_acc']:.3f} ({r['seconds']:.1f} s)")
                log.done()

            info['runs'][seed] = train_and_evaluate(model, train, test, args.epochs, args.batch_size, args.lr,
                                                    seed=seed, log=epoch_done)
        results['models'][variant] = info
    return results


def _command_line(args: argparse.Namespace) -> str:
    parts = ['python scripts/longrange.py']
    parts.append('--blocks ' + ' '.join(map(str, args.blocks)))
    for k in ('epochs', 'train', 'test', 'batch_size', 'lr', 'layer_scale', 'size', 'mark', 'jitter', 'colours',
              'noise', 'data_seed', 'threads'):
        v = getattr(args, k)
        if v is not None:
            parts.append(f'--{k.replace("_", "-")} {v}')
    parts.append('--seeds ' + ' '.join(map(str, args.seeds)))
    if tuple(args.variants) != VARIANTS:
        parts.append('--variants ' + ' '.join(args.variants))
    if args.out:
        parts.append(f'--out {args.out}')
    return ' '.join(parts)


def _plot(results: dict, path: Path) -> None:
    from .perception import require_matplotlib
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    colours = {'cnn': 'tab:gray', 'gmamba': 'tab:red', 'scan-only': 'tab:blue', 'cnn-mlp-head': 'tab:green'}
    for variant, info in results['models'].items():
        for k, (seed, hist) in enumerate(info['runs'].items()):
            ax.plot([r['epoch'] for r in hist], [r['test_acc'] for r in hist], marker='o', ms=3,
                    color=colours.get(variant), alpha=0.9 if k == 0 else 0.45,
                    label=f'{variant} ({info["params"] / 1e3:.0f}k params)' if k == 0 else None)
    ax.axhline(0.5, color='k', lw=0.6, ls=':', label='chance')
    if results['task']['colours'] == 2:
        ax.axhline(0.75, color='k', lw=0.6, ls='--', label='best additive rule (75%)')
    ax.set_xlabel('epoch')
    ax.set_ylabel('test accuracy')
    ax.set_ylim(0.4, 1.02)
    ax.set_title(f"Corner-colour task, {results['task']['size']}x{results['task']['size']}, "
                 f"seeds {results['seeds']} (one line per seed)", fontsize=9)
    ax.legend(fontsize=8, loc='upper left')
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)


def _markdown(results: dict, command_line: str, plot_name: Optional[str], mach: dict) -> str:
    t = results['task']
    variants = list(results['models'])
    epochs = results['epochs']
    lines = [
        '# Long-range benchmark: do two marks in opposite corners share a colour?', '',
        f"Generated by `{command_line}` (also `gmamba-zoo longrange ...`).", '',
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['threads']} torch threads; torch {mach['torch']}; "
        f"{mach['date']}; total {mach['minutes']:.1f} min; 1-minute load average {mach['load']} (a load above the "
        f"thread count means other work shared the cores, which stretches the times but not the accuracies).", '',
        f"Task: {t['size']}x{t['size']} images, Gaussian pixel noise (std {t['noise']}); a {t['mark']}x{t['mark']} "
        f"mark near the top-left and one near the bottom-right corner (each placed uniformly within {t['jitter']} px "
        f"of its corner), each in one of {t['colours']} colours; label: same colour (50%). "
        f"{results['test']} test images (data seed {results['data_seed']}); each epoch trains on {results['train']} "
        f"freshly generated images (data seed {results['data_seed']} + epoch, the same for every model). A feature "
        f"must span at least {results['min_span_px']} px per axis to touch both marks.", '',
        f"Training from scratch: AdamW, lr {results['lr']} (10% linear warm-up, then cosine), weight decay 0.05, batch "
        f"{results['batch_size']}, {epochs} epochs; weight and batch-order seeds {results['seeds']} (the CNN trunk is "
        f"identical across variants for a seed). GMamba blocks after stages 1, 2, 3: "
        f"{results['blocks']}, layer scale initialised to {results['layer_scale']} (a GMamba block at layer scale 0 "
        f"is the identity). The CNN's receptive field is {results['models'].get('cnn', {}).get('conv_rf_px', 27)} px "
        f"(computed, and confirmed by the gradient criterion: its features do not depend on the whole image).", '',
        '| model | params | conv receptive field | gradient criterion on the feature map (tau) | '
        + ' | '.join(f'ep {e}' for e in range(1, epochs + 1)) + ' | final test acc per seed |',
        '| --- | --- | --- | --- | ' + ' | '.join('---' for _ in range(epochs)) + ' | --- |',
    ]
    for v in variants:
        info = results['models'][v]
        runs = list(info['runs'].values())
        mean = [sum(r[e]['test_acc'] for r in runs) / len(runs) for e in range(epochs)]
        crit = f"{'holds' if info['criterion_holds'] else 'fails'} ({info['criterion_tau']:.1e})"
        lines.append(f"| {v} | {info['params'] / 1e3:.1f}k | {info['conv_rf_px']} px | {crit} | "
                     + ' | '.join(f'{a:.3f}' for a in mean) + ' | '
                     + ', '.join(f"{r[-1]['test_acc']:.3f}" for r in runs) + ' |')
    lines += ['', 'Reading it: a model that only adds up what each mark looks like on its own (any CNN here whose '
              'features do not reach across, followed by pooling and a linear layer) scores a(c1) + b(c2). '
              + ('With two colours the label is an XOR, so the best such rule gets 75% (3 of the 4 colour pairs) and '
                 'cross-entropy training of it stays at chance; only accuracy above 75% shows the two marks being '
                 'related. ' if t['colours'] == 2 else 'Equality is not such a rule, but rules like "same iff both '
                 'colours are in a set S" beat chance, so look for accuracy well above 65%. ')
              + '`cnn-mlp-head` is the control: the same CNN with a head that sees the whole map, proving the task '
              'solvable from these features in this budget.', '',
              'Per-epoch columns: test accuracy, mean over seeds. The gradient criterion is taken on the '
              'untrained feature map before the head, at its first output position (float64, exact; '
              '`gmamba_zoo.analysis`); the control\'s head is global however its feature map scores.', '']
    if plot_name:
        lines += [f'![test accuracy per epoch]({plot_name})', '']
    secs = {v: sum(r['seconds'] for run in info['runs'].values() for r in run) for v, info in results['models'].items()}
    lines += ['Training time (all seeds): ' + ', '.join(f'{v} {s:.0f} s' for v, s in secs.items()) + '.', '']
    return '\n'.join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The defaults are the run docs/longrange.md reports: `gmamba-zoo longrange --out docs/longrange.md` repeats it
    # (that report also set --threads 2, the machine's core count).
    parser.add_argument('--epochs', type=int, default=3, help='training epochs')
    parser.add_argument('--train', type=int, default=2048, help='training images per epoch (fresh each epoch)')
    parser.add_argument('--test', type=int, default=1024, help='test images')
    parser.add_argument('--batch-size', type=int, default=64, help='batch size')
    parser.add_argument('--lr', type=float, default=3e-3, help='peak AdamW learning rate (warm-up, then cosine)')
    parser.add_argument('--layer-scale', type=float, default=1.0, help='layer-scale init of the GMamba blocks')
    parser.add_argument('--blocks', type=int, nargs=3, default=[0, 1, 1], metavar='N',
                        help='GMamba blocks after stages 1, 2, 3')
    parser.add_argument('--size', type=int, default=48, help='image side')
    parser.add_argument('--mark', type=int, default=6, help='mark side')
    parser.add_argument('--jitter', type=int, default=3, help='placement range of each mark from its corner')
    parser.add_argument('--colours', type=int, default=2, help='number of colours (2..6)')
    parser.add_argument('--noise', type=float, default=0.2, help='pixel noise std')
    parser.add_argument('--data-seed', type=int, default=0,
                        help='seed of the test set; epoch e trains on images drawn with seed data-seed + e')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0], help='weight / batch-order seeds, one run each')
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS, help='models to train')
    parser.add_argument('--threads', type=int, default=None, help="torch CPU threads (None: torch's own choice)")
    parser.add_argument('--out', type=Path, default=None,
                        help='Markdown report path; the PNG plot and JSON go beside it (same stem); None: print the '
                             'report')
    parser.add_argument('--no-plot', action='store_true', help='skip the PNG (no matplotlib needed)')
    add_quiet_argument(parser)


def _load() -> str:
    try:
        return '%.1f' % os.getloadavg()[0]
    except (AttributeError, OSError):
        return 'n/a'


def run(args: argparse.Namespace) -> int:
    if args.out and not args.no_plot:
        from .perception import require_matplotlib
        require_matplotlib('gmamba-zoo longrange (its plot; --no-plot needs none)', command=True)  # before training
    from ..bench.machine import machine
    t0, load0 = time.perf_counter(), _load()
    with Progress('longrange', unit='step', quiet=args.quiet) as progress:
        results = run_benchmark(args, progress)
    mach = machine()
    mach.update(threads=args.threads or torch.get_num_threads(), minutes=(time.perf_counter() - t0) / 60,
                load=f'{load0} at the start, {_load()} at the end')
    results['machine'] = mach
    results['command'] = _command_line(args)
    plot_name = None
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if not args.no_plot:
            png = args.out.with_suffix('.png')
            _plot(results, png)
            plot_name = png.name
        args.out.write_text(_markdown(results, results['command'], plot_name, mach))
        args.out.with_suffix('.json').write_text(json.dumps(results, indent=2))
        print(f'wrote {args.out}' + (f', {plot_name}' if plot_name else '') + ' and the JSON beside it')
    else:
        print(_markdown(results, results['command'], None, mach))
    return 0
