"""Fine-tune a zoo model for image classification on an ImageFolder data set, in one process or with DDP.

Single process::

    gmamba-zoo train /data/flowers --model resnet50_gmamba --pretrained --epochs 10 --output runs/flowers

Several processes (one per GPU, NCCL; on CPU, gloo), with the same arguments::

    torchrun --nproc_per_node=4 scripts/train.py /data/flowers --model resnet50_gmamba --pretrained ...

The data set is a folder per class (``ROOT/<split>/<class>/*.jpg``, or ``ROOT/<class>/*.jpg`` when there is no
``<split>`` folder), read with timm's ``create_dataset`` and transformed with timm's ``create_transform`` from the
model's data config (so the mean/std/interpolation match the pretrained weights). The optimizer and learning-rate
schedule come from timm's factories (``create_optimizer_v2``, ``create_scheduler_v2``, stepped per update); weight
decay skips the model's ``no_weight_decay()`` set (for GMamba: A_log, D, layer scales, scalar gates).

Checkpoints (rank 0 writes them; every rank reads them on resume), in ``OUTPUT/checkpoint/``:
    ``model.safetensors``   the unwrapped model's state dict (no ``module.`` prefix), with the step in its metadata;
    ``training_state.pt``  optimizer and scheduler state, step, epoch and the run's arguments: tensors and plain
                           containers only, loadable with ``torch.load(weights_only=True)``.
Each file is written under a temporary name and moved into place, so an interrupted save leaves the previous
checkpoint whole. ``--resume OUTPUT/checkpoint`` restores model, optimizer, scheduler and step and continues with
the batch after the saved step (the per-epoch shuffle is seeded, so the order is the one the first run would have
used with the same world size and batch size). A checkpoint of another model (or another ``num_classes``) is
refused with :class:`~gmamba_zoo.hub.CheckpointMismatchError` naming the missing and unexpected keys.

Progress: a tqdm bar on rank 0 when stderr is a terminal (:class:`gmamba_zoo.bench.progress.Progress`; ``--quiet``
turns it off), and one JSON line per logged step in ``OUTPUT/log.jsonl``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from ..bench.progress import Progress, add_quiet_argument
from ..hub.checkpoint import (
    CheckpointMismatchError, CheckpointReadError, load_checkpoint_into, load_torch_file, read_checkpoint,
    safetensors_metadata, save_safetensors,
)


__all__ = ['add_arguments', 'train', 'run', 'save_checkpoint', 'load_checkpoint', 'CHECKPOINT_DIR']

CHECKPOINT_DIR = 'checkpoint'
MODEL_FILE = 'model.safetensors'
STATE_FILE = 'training_state.pt'


# ----------------------------------------------------------------------------------------------------------------------
# distributed set-up

class Dist:
    """This process's place in the run: rank, world size, device; set up from torchrun's environment variables."""

    def __init__(self, device: Optional[str] = None):
        self.world_size = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        self.local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        if device is None:
            device = f'cuda:{self.local_rank}' if torch.cuda.is_available() else 'cpu'
        self.device = torch.device(device)
        if self.device.type == 'cuda':
            torch.cuda.set_device(self.device)
        self.distributed = self.world_size > 1
        if self.distributed and not dist.is_initialized():
            backend = 'nccl' if self.device.type == 'cuda' else 'gloo'
            dist.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_sum(self, values: List[float]) -> List[float]:
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def sync_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running stats) to every rank.

        DDP broadcasts buffers at the start of each forward, so after the last forward each rank holds the statistics
        of its own last batch; this makes every replica equal to the checkpoint rank 0 writes.
        """
        if self.distributed:
            for buf in model.buffers():
                dist.broadcast(buf, src=0)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


class _SkipSampler(Sampler):
    """The indices of ``sampler`` after the first ``skip`` (to resume in the middle of an epoch)."""

    def __init__(self, sampler: Sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints

def save_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, step: int,
                    epoch: int, args: Dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``training_state.pt`` into ``folder``, each atomically; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    state = dict(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict() if scheduler else None,
                 step=step, epoch=epoch, args=args)
    tmp = folder / (STATE_FILE + '.tmp')
    torch.save(state, tmp)
    os.replace(tmp, folder / STATE_FILE)
    save_safetensors(model, folder / MODEL_FILE, metadata={'step': str(step), 'model': str(args.get('model'))})
    return folder


def load_checkpoint(path: Path, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    scheduler: Any = None) -> Dict[str, Any]:
    """Restore a checkpoint folder (or its ``model.safetensors``) into the unwrapped model, optimizer and scheduler.

    Returns:
        The training state (``step``, ``epoch``, ``args``).

    Raises:
        FileNotFoundError: The folder lacks one of the two files.
        CheckpointReadError: A file does not read (named; ``CheckpointRefusedError`` when it holds pickled objects).
        CheckpointMismatchError: The weights are another model's (keys named).
        ValueError: The two files are from different saves.
    """
    path = Path(path)
    folder = path.parent if path.name == MODEL_FILE else path
    for name in (MODEL_FILE, STATE_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f'--resume {path}: {folder / name} not found; expected a checkpoint folder '
                                    f'written by gmamba-zoo train ({MODEL_FILE} + {STATE_FILE}).')
    load_checkpoint_into(model, read_checkpoint(folder / MODEL_FILE), source=f'checkpoint {folder / MODEL_FILE}')
    state = load_torch_file(folder / STATE_FILE)
    if not isinstance(state, dict) or 'step' not in state:
        raise CheckpointReadError(f'--resume {path}: {folder / STATE_FILE} is not a training state written by '
                                  f'gmamba-zoo train (expected a dict with "step", "optimizer", "scheduler").')
    weights_step = safetensors_metadata(folder / MODEL_FILE).get('step')
    if weights_step is not None and int(weights_step) != state['step']:
        raise ValueError(f'{folder}: {MODEL_FILE} is from step {weights_step} but {STATE_FILE} from step '
                         f'{state["step"]} (an interrupted save?); cannot resume consistently.')
    if optimizer is not None:
        optimizer.load_state_dict(state['optimizer'])
    if scheduler is not None and state.get('scheduler') is not None:
        scheduler.load_state_dict(state['scheduler'])
    return state


# ----------------------------------------------------------------------------------------------------------------------
# data

def _split_dir(root: Path, split: str) -> Path:
    d = root / split
    if d.is_dir():
        return d
    if split == 'train' and root.is_dir():
        return root  # a plain class-per-folder root
    raise FileNotFoundError(f'data: no "{split}" folder in {root} (expected {root}/{split}/<class>/<images>).')


def _dataset(folder: Path, transform: Any, class_map: Optional[Dict[str, int]] = None):
    from timm.data import create_dataset
    ds = create_dataset('', root=str(folder), is_training=transform is not None, class_map=class_map)
    ds.transform = transform
    if len(ds) == 0:
        raise ValueError(f'data: no images found in {folder}.')
    return ds


# ----------------------------------------------------------------------------------------------------------------------
# training

def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a('data_dir', type=Path, help='ImageFolder root: ROOT/train/<class>/* (or ROOT/<class>/*) and optionally ROOT/val')
    a('--model', default='resnet18_gmamba', help='a zoo model name (default: resnet18_gmamba)')
    a('--pretrained', action='store_true', help="start from the registry's pretrained weights")
    a('--initial-checkpoint', type=Path, help='start from these weights (.safetensors / .pth); keys must match')
    a('--model-args', type=json.loads, default={},
      help='JSON dict for timm.create_model, e.g. \'{"drop_path_rate": 0.1}\'')
    a('--num-classes', type=int, help='default: the number of class folders')
    a('--train-split', default='train')
    a('--val-split', default=None, help='evaluate top-1 on ROOT/<val-split> after each epoch')
    a('--img-size', type=int, help="default: the model's pretrained input size")
    a('--batch-size', type=int, default=32, help='per process')
    a('--epochs', type=int, default=10)
    a('--max-steps', type=int, default=0, help='stop after this many optimizer steps in total (0: no limit)')
    a('--workers', type=int, default=4)
    a('--opt', default='adamw', help="timm optimizer name (default adamw)")
    a('--lr', type=float, default=1e-3)
    a('--weight-decay', type=float, default=0.05)
    a('--momentum', type=float, default=0.9)
    a('--sched', default='cosine', help="timm scheduler name (default cosine, stepped every update)")
    a('--warmup-epochs', type=float, default=0)
    a('--min-lr', type=float, default=0.0)
    a('--label-smoothing', type=float, default=0.1)
    a('--grad-clip', type=float, default=0.0, help='clip the gradient norm (0: off)')
    a('--amp', choices=['none', 'bf16', 'fp16'], default='none', help='autocast dtype (fp16: CUDA only)')
    a('--device', default=None, help='default: cuda:LOCAL_RANK if CUDA is available, else cpu')
    a('--seed', type=int, default=0)
    a('--output', type=Path, default=Path('runs/train'))
    a('--save-every', type=int, default=0, help='also checkpoint every N steps (0: at epoch ends and at the end)')
    a('--resume', type=Path, help='a checkpoint folder (OUTPUT/checkpoint) to continue from')
    a('--log-every', type=int, default=10)
    a('--no-progress', action='store_true', help='no progress bar (the same as --quiet)')
    add_quiet_argument(parser)
    a('--save-replicas', action='store_true',
      help='at the end, every rank writes its own weights to OUTPUT/replica-rank<r>.safetensors (to check that '
           'DDP kept the replicas identical)')


def _json_args(args: argparse.Namespace) -> Dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            if k not in ('handler',) and isinstance(v, (str, int, float, bool, dict, list, Path, type(None)))}


def _build_model(args: argparse.Namespace, num_classes: int) -> nn.Module:
    import timm
    from ..models import list_models
    if args.model not in list_models():
        raise ValueError(f'--model {args.model!r} is not a zoo model; `gmamba-zoo list` shows them.')
    if args.pretrained and args.initial_checkpoint:
        raise ValueError('give --pretrained or --initial-checkpoint, not both.')
    model = timm.create_model(args.model, pretrained=args.pretrained, num_classes=num_classes, **args.model_args)
    if args.initial_checkpoint:
        load_checkpoint_into(model, read_checkpoint(args.initial_checkpoint),
                             source=f'--initial-checkpoint {args.initial_checkpoint}')
    return model


def train(args: argparse.Namespace) -> Dict[str, Any]:
    """Run the fine-tuning described by ``args`` (see :func:`add_arguments`); returns a summary dict.

    Returns:
        ``step`` (optimizer steps done in total), ``epoch``, ``start_step`` (where this run began), ``loss`` (the
        last logged mean loss), ``val_top1`` (if evaluated), ``checkpoint`` (folder).
    """
    from timm.data import create_transform, resolve_data_config
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    env = Dist(args.device)
    try:
        torch.manual_seed(args.seed)
        if args.amp == 'fp16' and env.device.type != 'cuda':
            raise ValueError('--amp fp16 needs CUDA; on CPU use --amp bf16.')
        amp_dtype = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[args.amp]

        train_dir = _split_dir(args.data_dir, args.train_split)
        probe = _dataset(train_dir, None)
        class_to_idx = dict(probe.reader.class_to_idx)
        num_classes = args.num_classes or len(class_to_idx)

        model = _build_model(args, num_classes)
        data_cfg = resolve_data_config(
            {'input_size': (3, args.img_size, args.img_size)} if args.img_size else {}, model=model)
        train_ds = _dataset(train_dir, create_transform(**data_cfg, is_training=True), class_to_idx)
        model.to(env.device)

        optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                        momentum=args.momentum)
        sampler = DistributedSampler(train_ds, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                     seed=args.seed, drop_last=True)
        steps_per_epoch = len(sampler) // args.batch_size
        if steps_per_epoch == 0:
            raise ValueError(f'data: {len(train_ds)} training images give no full batch of {args.batch_size} per '
                             f'process with {env.world_size} processes; lower --batch-size.')
        scheduler, _ = create_scheduler_v2(optimizer, sched=args.sched, num_epochs=args.epochs,
                                           warmup_epochs=args.warmup_epochs, min_lr=args.min_lr,
                                           step_on_epochs=False, updates_per_epoch=steps_per_epoch)
        total_steps = args.epochs * steps_per_epoch
        if args.max_steps:
            total_steps = min(total_steps, args.max_steps)

        start_step = 0
        if args.resume:
            state = load_checkpoint(args.resume, model, optimizer, scheduler)
            start_step = int(state['step'])
            if env.is_main:
                print(f'resumed from {args.resume} at step {start_step} (epoch {start_step // steps_per_epoch})',
                      flush=True)

        ddp_model = model
        if env.distributed:
            ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[env.device.index] if env.device.type == 'cuda' else None)
        criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
        scaler = torch.amp.GradScaler('cuda') if amp_dtype is torch.float16 else None
        autocast = (lambda: torch.autocast(env.device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext

        val_loader = None
        if args.val_split:
            val_ds = _dataset(_split_dir(args.data_dir, args.val_split),
                              create_transform(**data_cfg, is_training=False), class_to_idx)
            val_loader = DataLoader(val_ds, batch_size=args.batch_size, num_workers=args.workers,
                                    sampler=DistributedSampler(val_ds, env.world_size, env.rank, shuffle=False))

        args.output.mkdir(parents=True, exist_ok=True)
        log_file = (args.output / 'log.jsonl').open('a') if env.is_main else None
        run_args = _json_args(args)
        ckpt_dir = args.output / CHECKPOINT_DIR
        step, last_loss, val_top1 = start_step, math.nan, None
        epoch = step // steps_per_epoch
        quiet = not env.is_main or args.no_progress or getattr(args, 'quiet', False)
        bar = Progress('train', total_steps, 'step', quiet=quiet, initial=step)
        loss_sum, loss_n = 0.0, 0

        def checkpoint() -> None:
            env.sync_buffers(model)
            if env.is_main:
                save_checkpoint(ckpt_dir, model, optimizer, scheduler, step, step // steps_per_epoch, run_args)
            env.barrier()

        while step < total_steps:
            epoch = step // steps_per_epoch
            sampler.set_epoch(epoch)
            # augmentation randomness (timm's crops draw from Python's `random`): seeded, and no replay on resume
            random.seed(args.seed + 1000 * env.rank + step)
            torch.manual_seed(args.seed + 1000 * env.rank + step)
            loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=_SkipSampler(
                sampler, (step % steps_per_epoch) * args.batch_size), num_workers=args.workers, drop_last=True,
                pin_memory=env.device.type == 'cuda')
            ddp_model.train()
            for images, targets in loader:
                images, targets = images.to(env.device, non_blocking=True), targets.to(env.device, non_blocking=True)
                with autocast():
                    loss = criterion(ddp_model(images), targets)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if args.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                step += 1
                scheduler.step_update(num_updates=step)
                loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
                bar.done()
                if step % args.log_every == 0 or step == total_steps or step % steps_per_epoch == 0:
                    mean = env.all_sum([loss_sum, loss_n])
                    last_loss = mean[0] / max(mean[1], 1)
                    loss_sum, loss_n = 0.0, 0
                    lr = optimizer.param_groups[0]['lr']
                    bar.stage(f'epoch={epoch}, loss={last_loss:.4f}, lr={lr:.2e}')
                    if log_file:
                        log_file.write(json.dumps(dict(step=step, epoch=epoch, loss=last_loss, lr=lr,
                                                       time=time.time())) + '\n')
                        log_file.flush()
                if args.save_every and step % args.save_every == 0:
                    checkpoint()
                if step >= total_steps or step % steps_per_epoch == 0:
                    break
            if step % steps_per_epoch == 0:
                scheduler.step(epoch + 1)
                if val_loader is not None:
                    val_top1 = evaluate(ddp_model, val_loader, env, autocast)
                    if env.is_main:
                        bar.print(f'epoch {epoch}: val top-1 {val_top1:.2f}%')
                        if log_file:
                            log_file.write(json.dumps(dict(step=step, epoch=epoch, val_top1=val_top1)) + '\n')
            checkpoint()
        bar.close()
        if log_file:
            log_file.close()
        if args.save_replicas:
            save_safetensors(model, args.output / f'replica-rank{env.rank}.safetensors')
            env.barrier()
        return dict(step=step, epoch=step // steps_per_epoch, start_step=start_step, loss=last_loss,
                    val_top1=val_top1, checkpoint=str(ckpt_dir))
    finally:
        env.close()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, env: Dist, autocast: Any) -> float:
    """Top-1 accuracy in percent over the loader, summed over every rank."""
    model.eval()
    correct, total = 0.0, 0.0
    for images, targets in loader:
        images, targets = images.to(env.device), targets.to(env.device)
        with autocast():
            pred = model(images).argmax(-1)
        correct += float((pred == targets).sum())
        total += targets.numel()
    correct, total = env.all_sum([correct, total])
    return 100.0 * correct / max(total, 1)


def run(args: argparse.Namespace) -> int:
    try:
        summary = train(args)
    except (CheckpointReadError, CheckpointMismatchError, FileNotFoundError) as e:  # a file given: one clear line
        raise SystemExit(f'train: {e}') from None
    if int(os.environ.get('RANK', '0')) == 0:
        print(json.dumps(summary), flush=True)
    return 0
