"""A checkpoint file that does not read, or does not fit, is an error that names the file, the first missing and
unexpected keys, and which model the file looks like, by every route a file reaches a zoo model:
``timm.create_model(name, checkpoint_path=...)``, ``pretrained=True`` (a file, or the Hugging Face cache) and
:mod:`gmamba_zoo.hub`."""
import copy
import gzip
import json
import pickle
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import timm
import torch

import gmamba_zoo
from gmamba_zoo.hub import CheckpointMismatchError, CheckpointReadError, read_checkpoint
from gmamba_zoo.models._checkpoint import closest_models, describe_keys

from hub_cache import put_in_hub_cache

pytestmark = pytest.mark.usefixtures('one_thread')

DATA = Path(__file__).parent / 'data'
SMALL = dict(gmamba_depths=(1, 0, 0, 0), num_classes=10)
VG_TINY = dict(widths=(8, 16, 32, 64), layers=(1, 1, 1, 1), d_state=8, num_classes=10)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """A good resnet18_gmamba file, a truncated copy, bytes that are no checkpoint, and a tiny vGamba's file."""
    folder = tmp_path_factory.mktemp('ckpt')
    torch.manual_seed(0)
    good = folder / 'resnet18_gmamba.safetensors'
    model = timm.create_model('resnet18_gmamba', **SMALL)
    safetensors.torch.save_file(model.state_dict(), str(good))
    truncated = folder / 'truncated.safetensors'
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = folder / 'garbage.pth'
    garbage.write_bytes(b'not a zip archive, not a pickle' * 10)
    other = folder / 'vgamba_tiny.safetensors'
    safetensors.torch.save_file(timm.create_model('vgamba_b', **VG_TINY).state_dict(), str(other))
    return dict(model=model, good=good, truncated=truncated, garbage=garbage, other=other, folder=folder)


def test_checkpoint_path_loads_as_before(files):
    model = timm.create_model('resnet18_gmamba', checkpoint_path=str(files['good']), **SMALL)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), files['model'].state_dict().values()))


@pytest.mark.parametrize('which, kind', [('truncated', 'safetensors'), ('garbage', 'torch.save')])
def test_unreadable_checkpoint_path_names_the_file(files, which, kind):
    path = files[which]
    with pytest.raises(CheckpointReadError) as err:
        timm.create_model('resnet18_gmamba', checkpoint_path=str(path), **SMALL)
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and msg.startswith('resnet18_gmamba: ')
    assert str(path) in msg and f'not a readable {kind} file' in msg and 'truncated or corrupt' in msg
    assert err.value.__cause__ is not None  # the library's own error stays attached


def test_missing_checkpoint_path_names_the_file(files):
    with pytest.raises(FileNotFoundError, match='no_such.safetensors'):
        timm.create_model('resnet18_gmamba', checkpoint_path=str(files['folder'] / 'no_such.safetensors'), **SMALL)


@pytest.mark.slow
def test_other_architecture_names_keys_and_the_model_it_belongs_to(files):
    with pytest.raises(CheckpointMismatchError) as err:
        timm.create_model('resnet18_gmamba', checkpoint_path=str(files['other']), **SMALL)
    msg = str(err.value)
    assert str(files['other']) in msg and 'does not fit resnet18_gmamba' in msg
    assert 'Missing keys (' in msg and 'layer1.1.conv1.weight' in msg
    assert 'Unexpected keys (' in msg and 'layer1.0.conv3.weight' in msg
    assert 'it looks like a checkpoint of vgamba_b built with other arguments' in msg
    # and the other way round, through vGamba's own checks
    with pytest.raises(CheckpointMismatchError, match=r'looks like .*resnet18_gmamba'):
        timm.create_model('vgamba_b', checkpoint_path=str(files['good']), **VG_TINY)


def test_features_only_model_names_the_file_too(files):
    with pytest.raises(CheckpointReadError, match='truncated.safetensors'):
        timm.create_model('resnet18_gmamba', features_only=True, checkpoint_path=str(files['truncated']), **SMALL)


def test_other_timm_models_keep_timm_errors(files):
    """The route only changes zoo models: a plain timm model still gets the library's own error."""
    with pytest.raises(safetensors.SafetensorError):
        timm.create_model('resnet18', checkpoint_path=str(files['truncated']))


def test_models_still_pickle_and_copy(files):
    for features_only in (False, True):
        model = timm.create_model('resnet18_gmamba', features_only=features_only, gmamba_depths=(1, 0, 0, 0))
        for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert clone.explain_checkpoint_error is model.explain_checkpoint_error
            clone.set_grad_checkpointing(True)
            assert not features_only or clone.grad_checkpointing and not model.grad_checkpointing


def test_pretrained_file_that_does_not_read(files):
    with pytest.raises(CheckpointReadError) as err:
        timm.create_model('resnet18_gmamba', pretrained=True, pretrained_cfg_overlay=dict(file=str(files['truncated'])))
    assert str(files['truncated']) in str(err.value) and 'Hugging Face cache' not in str(err.value)


def test_corrupt_file_in_the_hub_cache(files):
    hub_id = 'gmamba-zoo-tests/corrupt-resnet18'
    snapshot = put_in_hub_cache(hub_id, {'model.safetensors': files['truncated']})
    with pytest.raises(CheckpointReadError) as err:
        timm.create_model('resnet18_gmamba', pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=hub_id))
    msg = str(err.value)
    assert str(snapshot / 'model.safetensors') in msg and 'Hugging Face cache' in msg and 'delete it' in msg
    vg_id = 'gmamba-zoo-tests/corrupt-resnet50'
    put_in_hub_cache(vg_id, {'model.safetensors': files['truncated']})
    with pytest.raises(CheckpointReadError, match='corrupt-resnet50'):
        timm.create_model('vgamba_b', pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=vg_id), **VG_TINY)


def test_pretrained_checkpoint_of_another_model_says_which(files):
    with pytest.raises(CheckpointMismatchError) as err:
        timm.create_model('resnet18_gmamba', pretrained=True, pretrained_cfg_overlay=dict(file=str(files['other'])))
    assert str(files['other']) in str(err.value) and 'vgamba_b' in str(err.value)


def test_hub_reader_names_the_file(files):
    for which in ('truncated', 'garbage'):
        with pytest.raises(CheckpointReadError, match=str(files[which].name)):
            read_checkpoint(files[which])


def test_every_registered_model_is_recognised_from_its_keys():
    """The library builds its own key sets (meta device); each registered model's keys, as saved in the fixture
    written by earlier code, are recognised as that model, and a plain timm base as that base."""
    with gzip.open(DATA / 'compat_model_state_dicts.json.gz', 'rt') as f:
        fixture = json.load(f)
    assert sorted(fixture) == gmamba_zoo.list_models()
    for name, shapes in fixture.items():
        assert closest_models(shapes, top=1)[0][0] == name, name
        assert describe_keys(shapes).startswith(f'Its keys are exactly those of {name} '), name
    with torch.device('meta'):
        plain = timm.create_model('resnet50').state_dict()
    assert describe_keys({k: v.shape for k, v in plain.items()}).startswith('Its keys are exactly those of resnet50 ')
    assert 'match none' in describe_keys({'encoder.proj.weight': (4, 4)})
