"""Checkpoint files that hold pickled code, fed to every entry point that reads a file: nothing runs, and the error
says ``refused`` and names the file, whatever torch's wording; a truncated file is named too, never called refused.

Each payload is real: unpickling it would call ``os.system`` to create a marker file, and every test asserts that the
marker never appears.
"""
import json
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from PIL import Image

import gmamba_zoo  # noqa: F401  (registers the models)
from gmamba_zoo.cli import main as cli_main
from gmamba_zoo.hub import CheckpointReadError, CheckpointRefusedError, read_checkpoint
from gmamba_zoo.train import finetune

pytestmark = pytest.mark.usefixtures('one_thread')

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(gmamba_depths=(1, 0, 0, 0), num_classes=10)
REFUSED = 'refused: it holds pickled Python objects, e.g. posix.system; load only files you trust, or convert to ' \
          'safetensors'


class Payload:
    """Unpickled, it runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {shlex.quote(str(self.marker))}',)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / 'MARKER'
    yield path
    assert not path.exists(), 'a pickled payload ran'


def _hostile(path: Path, marker: Path, how: str = 'zip') -> Path:
    """A checkpoint-looking file whose unpickling would create ``marker``: ``torch.save`` (zip or legacy format) of
    a state dict with the payload beside it, or a plain pickle of protocol 2 or 4."""
    obj = {'state_dict': timm.create_model('resnet18_gmamba', **SMALL).state_dict(), 'args': Payload(marker)}
    if how == 'zip':
        torch.save(obj, path)
    elif how == 'legacy':
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, 'wb') as f:
            pickle.dump({'args': Payload(marker)}, f, protocol=int(how[-1]))
    return path


def _assert_refused(error: BaseException, path: Path) -> None:
    msg = str(error)
    assert isinstance(error, CheckpointRefusedError) and str(path) in msg and REFUSED in msg, msg
    assert 'truncated' not in msg and 'weights_only=False' not in msg
    assert error.__cause__ is None and error.__suppress_context__  # torch's advice to unpickle it is not shown


@pytest.mark.parametrize('how', ['zip', 'legacy', 'protocol2', 'protocol4'])
def test_reader_refuses_every_format(tmp_path, marker, how):
    path = _hostile(tmp_path / 'hostile.pth', marker, how)
    with pytest.raises(CheckpointRefusedError) as err:
        read_checkpoint(path)
    _assert_refused(err.value, path)


@pytest.mark.parametrize('wording', [
    'Weights only load failed.\nUnsupported global: GLOBAL posix.system was not an allowed global by default.',
    'Weights only load failed.\n\nTrying to load unsupported GLOBAL posix.system whose module posix is blocked.\n',
])
def test_every_torch_wording_is_a_refusal(tmp_path, monkeypatch, wording):
    """torch < 2.6 and torch >= 2.6 word the refusal differently; both read as one (the file itself is clean, so
    only the wording can say so)."""
    path = tmp_path / 'clean.pth'
    torch.save({'w': torch.zeros(2)}, path)

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError(wording)

    monkeypatch.setattr(torch, 'load', refuse)
    with pytest.raises(CheckpointRefusedError) as err:
        read_checkpoint(path)
    _assert_refused(err.value, path)


def test_a_refusal_without_the_global_in_the_wording_is_found_in_the_pickle(tmp_path, monkeypatch, marker):
    path = _hostile(tmp_path / 'hostile.pth', marker)

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError('Weights only load failed.\nUnsupported operand 149')

    monkeypatch.setattr(torch, 'load', refuse)
    with pytest.raises(CheckpointRefusedError) as err:
        read_checkpoint(path)
    _assert_refused(err.value, path)


def test_truncated_file_is_not_called_refused(tmp_path):
    path = tmp_path / 'weights.pth'
    torch.save({'w': torch.zeros(64)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointReadError) as err:
        read_checkpoint(path)
    assert not isinstance(err.value, CheckpointRefusedError) and 'refused' not in str(err.value)
    assert str(path) in str(err.value) and 'truncated or corrupt' in str(err.value)


def test_timm_routes(tmp_path, marker):
    """checkpoint_path, pretrained_cfg_overlay (also features_only) and local-dir:."""
    path = _hostile(tmp_path / 'hostile.pth', marker)
    calls = {
        'checkpoint_path': lambda: timm.create_model('resnet18_gmamba', checkpoint_path=str(path), **SMALL),
        'overlay': lambda: timm.create_model('resnet18_gmamba', pretrained=True,
                                             pretrained_cfg_overlay=dict(file=str(path)), **SMALL),
        'overlay features_only': lambda: timm.create_model(
            'resnet18_gmamba', pretrained=True, features_only=True, pretrained_cfg_overlay=dict(file=str(path)),
            gmamba_depths=(1, 0, 0, 0)),
    }
    for name, call in calls.items():
        with pytest.raises(CheckpointRefusedError) as err:
            call()
        _assert_refused(err.value, path)

    folder = tmp_path / 'local'
    folder.mkdir()
    (folder / 'config.json').write_text(json.dumps(dict(
        architecture='resnet18_gmamba', num_classes=10, model_args=dict(gmamba_depths=[1, 0, 0, 0]),
        pretrained_cfg=dict(num_classes=10))))
    local = _hostile(folder / 'pytorch_model.bin', marker)
    with pytest.raises(CheckpointRefusedError) as err:
        timm.create_model(f'local-dir:{folder}', pretrained=True)
    _assert_refused(err.value, local)



def test_openmmlab_backbone(tmp_path, marker):
    pytest.importorskip('mmengine')
    from gmamba_zoo.integrations.openmmlab import GMambaZooBackbone
    path = _hostile(tmp_path / 'hostile.pth', marker)
    with pytest.raises(CheckpointRefusedError) as err:
        GMambaZooBackbone('resnet18_gmamba', checkpoint=str(path), model_kwargs=dict(gmamba_depths=(1, 0, 0, 0)))
    _assert_refused(err.value, path)


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('imagefolder')
    for cls in ('a', 'b'):
        (root / 'train' / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(root / 'train' / cls / f'{i}.png')
    return root


def _cli_error(argv) -> str:
    """The one line a CLI command exits with (SystemExit), checked to carry no chained exception."""
    with pytest.raises(SystemExit) as err:
        cli_main([str(a) for a in argv])
    assert err.value.__cause__ is None and err.value.__suppress_context__
    message = str(err.value.code)
    assert '\n' not in message and 'Traceback' not in message
    return message


def test_train_entry_points(tmp_path, marker, image_folder):
    """train --initial-checkpoint, and train --resume with a hostile or a truncated training_state.pt."""
    common = ['train', image_folder, '--model', 'resnet18_gmamba', '--model-args', '{"gmamba_depths": [1, 0, 0, 0]}',
              '--img-size', '32', '--batch-size', '2', '--workers', '0', '--max-steps', '1', '--no-progress',
              '--device', 'cpu', '--output', tmp_path / 'out']
    path = _hostile(tmp_path / 'hostile.pth', marker)
    message = _cli_error([*common, '--initial-checkpoint', path])
    assert message.startswith('train: ') and str(path) in message and REFUSED in message

    model = timm.create_model('resnet18_gmamba', gmamba_depths=(1, 0, 0, 0), num_classes=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    folder = finetune.save_checkpoint(tmp_path / 'ckpt', model, opt, None, step=1, epoch=0, args={})
    state = folder / finetune.STATE_FILE
    good = state.read_bytes()
    _hostile(state, marker)
    message = _cli_error([*common, '--resume', folder])
    assert str(state) in message and REFUSED in message
    state.write_bytes(good[: len(good) // 2])
    message = _cli_error([*common, '--resume', folder])
    assert str(state) in message and 'truncated or corrupt' in message and 'refused' not in message


def test_export_names_the_file_in_one_line(tmp_path, marker):
    path = _hostile(tmp_path / 'hostile.pth', marker)
    message = _cli_error(['export', 'resnet18_gmamba', '--out', tmp_path / 'm.onnx', '--checkpoint', path,
                          '--model-args', '{"gmamba_depths": [1, 0, 0, 0], "num_classes": 10}'])
    assert message.startswith('export: ') and str(path) in message and REFUSED in message


@pytest.mark.slow
def test_export_command_prints_one_line(tmp_path, marker):
    """Through the command's own process: stderr is the one line, no traceback."""
    path = _hostile(tmp_path / 'hostile.pth', marker)
    res = subprocess.run([sys.executable, '-m', 'gmamba_zoo.cli', 'export', 'resnet18_gmamba', '--out',
                          str(tmp_path / 'm.onnx'), '--checkpoint', str(path)], capture_output=True, text=True,
                         cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS='ignore'), timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 1 and len(lines) == 1 and REFUSED in lines[0], res.stderr


def test_torch_floor_excludes_releases_whose_weights_only_loading_is_bypassable():
    """Every safety claim above rests on ``torch.load(weights_only=True)``: the floor must exclude the releases where
    a crafted file runs code through it (CVE-2025-32434, before 2.6; CVE-2026-24747, before 2.10)."""
    import re
    tomllib = pytest.importorskip('tomllib')
    from packaging.version import Version
    deps = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['dependencies']
    floor = next(re.search(r'>=\s*([\d.]+)', d).group(1) for d in deps if re.match(r'torch\b', d))
    assert Version(floor) >= Version('2.10')
    assert Version(torch.__version__.split('+')[0]) >= Version(floor)
