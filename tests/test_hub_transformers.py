"""Hub folders in the layout Hugging Face transformers' ``TimmWrapper`` reads, and in the layout written before.

A fine-tuned ``resnet18_gmamba`` (3 classes with names, its GMamba depths changed from the table's, every parameter
perturbed) is saved as a checkpoint and written by ``gmamba-zoo push-to-hub``. Its config.json must hold the changed
depths in ``model_args`` and nothing that equals the entrypoint's defaults (never ``num_classes``: transformers passes
it itself), and the folder must load through transformers' ``AutoModelForImageClassification``, ``AutoModel``,
``AutoImageProcessor`` and ``pipeline('image-classification')`` from the local path with timm's ``local-dir:``
outputs. ``HF_HUB_OFFLINE=1`` (conftest.py): nothing reaches the network.

transformers leaves the weights where safetensors put them, at addresses that are not 64-byte aligned, and the CPU
convolution and matrix kernels sum in another order there: outputs then agree to float32 rounding, and exactly once
the weights are copied to fresh (aligned) memory, which is what the tests check.
"""
import json
import shutil

import numpy as np
import pytest
import torch
import timm
from PIL import Image
from safetensors.torch import save_file

import gmamba_zoo  # noqa: F401  (registers the models: transformers' TimmWrapper builds them by name through timm)
from gmamba_zoo import hub
from gmamba_zoo.cli import main as cli_main

NAME = 'resnet18_gmamba'
LABELS = ['cat', 'dog', 'bird']
DEPTHS = [1, 1, 1, 0]  # the table's are (2, 2, 2, 1): a config.json without them builds another model
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))

pytestmark = [pytest.mark.skipif(NAME not in gmamba_zoo.list_models(), reason=f'{NAME} is not registered'),
              pytest.mark.usefixtures('one_thread')]


def _image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (72, 64, 3), dtype=np.uint8))


def _realigned(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every parameter and buffer copied to fresh memory (aligned, as timm's own loads leave it)."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            t.data = t.data.clone()
    return model


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    """A push-to-hub folder of a perturbed 3-class checkpoint with label names and changed GMamba depths."""
    tmp = tmp_path_factory.mktemp('transformers')
    model = timm.create_model(NAME, num_classes=len(LABELS), gmamba_depths=DEPTHS)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    save_file(model.state_dict(), str(tmp / 'ft.safetensors'))
    (tmp / 'labels.txt').write_text('\n'.join(LABELS) + '\n')
    out = tmp / 'hub'
    assert cli_main(['push-to-hub', NAME, '--checkpoint', str(tmp / 'ft.safetensors'), '--num-classes', '3',
                     '--model-args', json.dumps({'gmamba_depths': DEPTHS}), '--label-names', str(tmp / 'labels.txt'),
                     '--no-flops', '--out', str(out)]) == 0
    return out


@pytest.fixture(scope='module')
def timm_model(folder):
    return timm.create_model(f'local-dir:{folder}', pretrained=True).eval()


def test_config_json_holds_only_the_args_that_differ(folder, timm_model, tmp_path):
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == NAME and config['num_classes'] == 3 and config['label_names'] == LABELS
    assert config['num_features'] == timm_model.num_features and config['global_pool'] == 'avg'
    assert config['model_args'] == {'gmamba_depths': DEPTHS}
    assert timm_model.num_classes == 3 and timm_model.pretrained_cfg['label_names'] == LABELS

    # at the defaults there is nothing to record
    default = hub.export_for_hub(timm.create_model(NAME), tmp_path / 'default', hub.WeightsSource('init'))
    assert 'model_args' not in json.loads((default / 'config.json').read_text())
    # a pooling other than the default is a build argument too
    pooled = timm.create_model(NAME, global_pool='max', num_classes=4).eval()
    config = json.loads((hub.export_for_hub(pooled, tmp_path / 'max', hub.WeightsSource('init')) / 'config.json')
                        .read_text())
    assert config['model_args'] == {'global_pool': 'max'} and config['num_classes'] == 4
    hub.verify_export(tmp_path / 'max', pooled)


def test_label_names_must_name_every_class(tmp_path):
    with pytest.raises(ValueError, match=r'one label name per class \(1000\), got 2'):
        hub.export_for_hub(timm.create_model(NAME), tmp_path / 'x', hub.WeightsSource('init'), label_names=['a', 'b'])


def test_folders_in_the_earlier_layout_still_load_in_timm(folder, timm_model, tmp_path):
    """Earlier exports put in_chans, num_classes and global_pool in model_args beside the changed args."""
    old = tmp_path / 'old'
    shutil.copytree(folder, old)
    config = json.loads((old / 'config.json').read_text())
    config['model_args'] = {'gmamba_depths': DEPTHS, 'in_chans': 3, 'num_classes': 3, 'global_pool': 'avg'}
    (old / 'config.json').write_text(json.dumps(config, indent=2))
    loaded = timm.create_model(f'local-dir:{old}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(loaded(X), timm_model(X))


def test_transformers_loads_the_folder_with_timms_outputs(folder, timm_model):
    transformers = pytest.importorskip('transformers')
    with torch.no_grad():
        logits = timm_model(X)
        features = timm_model.forward_features(X)
        pooled = timm_model.forward_head(features, pre_logits=True)

    classifier = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
    assert type(classifier).__name__ == 'TimmWrapperForImageClassification'
    assert classifier.config.id2label == dict(enumerate(LABELS))
    backbone = transformers.AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(classifier(X).logits, logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(backbone(X).pooler_output, pooled, rtol=1e-5, atol=1e-6)
        assert torch.equal(_realigned(classifier)(X).logits, logits)
        out = _realigned(backbone)(X)
    assert torch.equal(out.pooler_output, pooled) and torch.equal(out.last_hidden_state, features)

    # preprocessing: the image processor is timm's eval transform of the folder's pretrained_cfg
    image = _image()
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    pixels = processor(image, return_tensors='pt')['pixel_values']
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=timm_model), is_training=False)
    want = transform(image).unsqueeze(0)
    assert pixels.shape == want.shape and torch.equal(pixels, want)

    pipe = transformers.pipeline('image-classification', model=str(folder))
    with torch.no_grad():
        probs = timm_model(want).softmax(-1)[0]
    results = pipe(image, top_k=len(LABELS))
    assert [r['label'] for r in results] == [LABELS[i] for i in probs.argsort(descending=True)]
    assert [r['score'] for r in results] == pytest.approx(sorted(probs.tolist(), reverse=True), abs=1e-6)
