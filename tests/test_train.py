"""``gmamba-zoo train`` / scripts/train.py: DDP with two gloo processes on CPU, identical replicas, resume.

A generated ImageFolder of 16 + 4 tiny images; resnet18_gmamba at 32 px, batch 2 per process, 2 steps under
``torchrun --nproc_per_node=2``, then one more step resumed in this process.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from gmamba_zoo.train import finetune as train_mod
from gmamba_zoo.hub import CheckpointMismatchError

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('imagefolder')
    rng = np.random.default_rng(0)
    for split, n in (('train', 8), ('val', 2)):
        for cls, colour in (('red', 0), ('green', 1)):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8)
                img[..., colour] = 200
                Image.fromarray(img).save(folder / f'{i}.png')
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _args(*argv: str):
    import argparse
    parser = argparse.ArgumentParser()
    train_mod.add_arguments(parser)
    return parser.parse_args(list(argv))


COMMON = ['--model', 'resnet18_gmamba', '--img-size', '32', '--batch-size', '2', '--workers', '0', '--log-every', '1',
          '--no-progress', '--opt', 'sgd', '--lr', '0.05']


@pytest.mark.slow
def test_ddp_two_gloo_processes_identical_replicas_then_resume(image_folder, tmp_path):
    out = tmp_path / 'run'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    env.pop('CUDA_VISIBLE_DEVICES', None)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_addr=127.0.0.1',
           f'--master_port={_free_port()}', str(ROOT / 'scripts' / 'train.py'), str(image_folder), *COMMON,
           '--max-steps', '2', '--output', str(out), '--save-replicas', '--device', 'cpu']
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads([line for line in res.stdout.splitlines() if line.startswith('{')][-1])
    assert summary['step'] == 2 and summary['start_step'] == 0

    # both ranks hold identical weights (parameters and BatchNorm buffers), equal to rank 0's checkpoint
    r0 = safetensors.torch.load_file(str(out / 'replica-rank0.safetensors'))
    r1 = safetensors.torch.load_file(str(out / 'replica-rank1.safetensors'))
    saved = safetensors.torch.load_file(str(out / 'checkpoint' / 'model.safetensors'))
    assert r0.keys() == r1.keys() == saved.keys() and not any(k.startswith('module.') for k in saved)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
        assert torch.equal(r0[k], saved[k]), k
    state = torch.load(out / 'checkpoint' / 'training_state.pt', weights_only=True)
    assert state['step'] == 2 and state['optimizer']['state']  # momentum buffers were saved

    # resume in one process: continues from step 2 with the saved optimizer state, and writes step 3
    summary = train_mod.train(_args(str(image_folder), *COMMON, '--max-steps', '3', '--output', str(out),
                                    '--resume', str(out / 'checkpoint'), '--device', 'cpu'))
    assert summary['start_step'] == 2 and summary['step'] == 3
    state = torch.load(out / 'checkpoint' / 'training_state.pt', weights_only=True)
    resumed = safetensors.torch.load_file(str(out / 'checkpoint' / 'model.safetensors'))
    assert state['step'] == 3 and not torch.equal(resumed['fc.weight'], saved['fc.weight'])
    steps = [json.loads(line)['step'] for line in (out / 'log.jsonl').read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_resume_from_another_models_checkpoint_is_refused(image_folder, tmp_path):
    import timm
    other = timm.create_model('resnet18_gmamba', gmamba_depths=(1, 0, 0, 0), num_classes=2)
    opt = torch.optim.SGD(other.parameters(), lr=0.1)
    ckpt = train_mod.save_checkpoint(tmp_path / 'ckpt', other, opt, None, step=1, epoch=0,
                                     args={'model': 'resnet18_gmamba'})
    with pytest.raises(CheckpointMismatchError, match=r'does not fit resnet18_gmamba.*Missing keys \(252\)'):
        train_mod.train(_args(str(image_folder), *COMMON, '--max-steps', '1', '--output', str(tmp_path / 'o'),
                              '--resume', str(ckpt), '--device', 'cpu'))
    with pytest.raises(FileNotFoundError, match='training_state.pt'):
        (ckpt / 'training_state.pt').unlink()
        train_mod.load_checkpoint(ckpt, other)


def test_cli_has_train():
    from gmamba_zoo.cli import build_parser
    args = build_parser(['train']).parse_args(['train', 'data', '--max-steps', '1'])
    assert args.command == 'train' and args.max_steps == 1
