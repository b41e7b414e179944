"""Zoo models as backbones of other frameworks: torchvision detection, segmentation_models_pytorch, OpenMMLab,
detectron2. Tiny inputs (64-96 px, batch 1-2) on CPU.

The smp test runs Unet (forward+backward) on one model per family and FPN on two; every model with both decoders
runs with ``GMAMBA_ZOO_SLOW_TESTS=1``. OpenMMLab is tested through MMEngine's registry (MMDetection itself does not
import here: it needs mmcv, which has no wheel for this torch and fails to build from source); detectron2 is not on
PyPI, so its test skips unless it is installed.
"""
import os
from collections import OrderedDict

import pytest
import timm
import torch

import gmamba_zoo
from gmamba_zoo.integrations.detection import build_detector, detection_backbone

SLOW = pytest.mark.skipif(not os.environ.get('GMAMBA_ZOO_SLOW_TESTS'), reason='set GMAMBA_ZOO_SLOW_TESTS=1')
FAMILY_REPS = ['resnet18_gmamba', 'convnext_t_gmamba', 'swin_t_gmamba', 'vgamba_b']


pytestmark = pytest.mark.usefixtures('one_thread')


# ---------------------------------------------------------------- torchvision detection

def _boxes_batch(size: int):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g) * 0.2 for _ in range(2)]
    boxes = [torch.tensor([[8., 8., 40., 56.], [36., 28., 88., 80.]]), torch.tensor([[4., 20., 70., 90.]])]
    labels = [torch.tensor([1, 2]), torch.tensor([2])]
    for img, bs, ls in zip(images, boxes, labels):
        for (x0, y0, x1, y1), c in zip(bs.int().tolist(), ls.tolist()):
            img[c, y0:y1, x0:x1] = 1.0  # a bright rectangle of the class's colour under each box
    return images, [dict(boxes=b, labels=l) for b, l in zip(boxes, labels)]


@pytest.mark.parametrize('name', ['resnet18_gmamba', 'swin_t_gmamba'])
def test_detection_backbone_is_an_fpn_with_out_channels(name):
    backbone = detection_backbone(name, fpn_channels=32).eval()
    assert backbone.out_channels == 32 and backbone.strides == [4, 8, 16, 32, 64]
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 96))
    assert isinstance(out, OrderedDict) and list(out) == ['0', '1', '2', '3', 'pool']
    for (key, f), s in zip(out.items(), backbone.strides):
        assert f.shape == (1, 32, -(-64 // s), -(-96 // s)), (key, tuple(f.shape))


def test_detection_backbone_from_a_built_model_and_input_checks():
    model = timm.create_model('resnet18_gmamba')
    backbone = detection_backbone(model, out_indices=(2, 3, 4), fpn_channels=16, use_pool_level=False)
    assert backbone.strides == [8, 16, 32]
    with pytest.raises(ValueError, match=r'in_chans=3'):
        backbone(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='pretrained and model kwargs'):
        detection_backbone(model, drop_path_rate=0.1)
    with pytest.raises(TypeError, match='model name or an nn.Module'):
        detection_backbone(3)


def test_faster_rcnn_loss_falls_on_generated_boxes():
    """Faster R-CNN on resnet18_gmamba (active GMamba blocks), 96 px, 8 SGD steps on one fixed batch."""
    torch.manual_seed(0)
    model = build_detector(
        'faster_rcnn', 'resnet18_gmamba', num_classes=3, fpn_channels=64, min_size=96, max_size=96,
        backbone_kwargs=dict(gmamba_kwargs=dict(layer_scale_init_value=0.1)),
        rpn_batch_size_per_image=64, box_batch_size_per_image=64)
    images, targets = _boxes_batch(96)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    losses = []
    for _ in range(8):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.85 * losses[0], losses
    model.eval()
    with torch.no_grad():
        det = model(images[:1])[0]
    assert set(det) == {'boxes', 'labels', 'scores'}


def test_mask_rcnn_on_swin_trains_a_step_and_predicts_masks():
    model = build_detector('mask_rcnn', 'swin_t_gmamba', num_classes=3, fpn_channels=32, min_size=64, max_size=64,
                           rpn_batch_size_per_image=32, box_batch_size_per_image=32, box_detections_per_img=5)
    images, targets = _boxes_batch(96)
    for t in targets:
        masks = torch.zeros(len(t['boxes']), 96, 96, dtype=torch.uint8)
        for m, (x0, y0, x1, y1) in zip(masks, t['boxes'].int().tolist()):
            m[y0:y1, x0:x1] = 1
        t['masks'] = masks
    model.train()
    losses = model(images, targets)
    assert 'loss_mask' in losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.backbone.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        det = model(images[:1])[0]
    assert det['masks'].shape[1:] == (1, 96, 96)


# ---------------------------------------------------------------- segmentation_models_pytorch

def _smp_forward_backward(arch: str, name: str) -> None:
    smp = pytest.importorskip('segmentation_models_pytorch')
    model = getattr(smp, arch)(f'tu-{name}', encoder_weights=None, classes=2)
    x = torch.randn(1, 3, 64, 64)
    y = model(x)
    assert y.shape == (1, 2, 64, 64)
    y.square().mean().backward()
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize('name', FAMILY_REPS)
def test_smp_unet_forward_backward(name):
    _smp_forward_backward('Unet', name)


@pytest.mark.parametrize('name', ['resnet18_gmamba', 'swin_t_gmamba'])
def test_smp_fpn_forward_backward(name):
    _smp_forward_backward('FPN', name)


@SLOW
@pytest.mark.parametrize('arch', ['Unet', 'FPN'])
@pytest.mark.parametrize('name', gmamba_zoo.list_models())
def test_smp_every_model(arch, name):
    _smp_forward_backward(arch, name)


# ---------------------------------------------------------------- OpenMMLab (MMEngine registry), detectron2

def test_openmmlab_backbone_builds_from_a_config_dict(tmp_path):
    pytest.importorskip('mmengine', reason='mmengine is not installed')
    from mmengine.registry import MODELS
    import gmamba_zoo.integrations.openmmlab as mm  # registers GMambaZooBackbone

    cfg = dict(type='GMambaZooBackbone', model_name='resnet18_gmamba', out_indices=(1, 2, 3, 4), norm_eval=True)
    backbone = MODELS.build(cfg)
    assert isinstance(backbone, mm.GMambaZooBackbone)
    assert backbone.out_channels == mm.GMambaZooBackbone.feature_channels('resnet18_gmamba') == [64, 128, 256, 512]
    backbone.train()
    assert not backbone.model.bn1.training  # norm_eval keeps BatchNorm statistics frozen
    outs = backbone(torch.randn(1, 3, 64, 64))
    assert isinstance(outs, tuple) and [o.shape[-1] for o in outs] == [16, 8, 4, 2]

    # a checkpoint of another model is refused with the keys named
    import safetensors.torch
    other = tmp_path / 'other.safetensors'
    safetensors.torch.save_file({'fc.weight': torch.zeros(2, 8), 'blocks.0.weight': torch.zeros(3)}, str(other))
    with pytest.raises(RuntimeError, match='Missing keys'):
        MODELS.build(dict(cfg, checkpoint=str(other)))


def test_openmmlab_registration_reaches_mmdet_registry():
    try:
        from mmdet.registry import MODELS as MMDET_MODELS
    except Exception as e:  # ImportError, or mmdet's own mmcv version assertion
        pytest.skip(f'mmdet does not import here ({type(e).__name__}: {e}); mmcv has no wheel for this torch')
    import gmamba_zoo.integrations.openmmlab  # noqa: F401
    assert MMDET_MODELS.get('GMambaZooBackbone') is not None


def test_detectron2_backbone():
    pytest.importorskip('detectron2', reason='detectron2 is not on PyPI and is not installed here')
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_backbone
    from gmamba_zoo.integrations.detectron2 import add_gmamba_zoo_config

    cfg = get_cfg()
    add_gmamba_zoo_config(cfg)
    cfg.MODEL.GMAMBA_ZOO.NAME = 'resnet18_gmamba'
    cfg.MODEL.BACKBONE.NAME = 'build_gmamba_zoo_fpn_backbone'
    cfg.MODEL.FPN.IN_FEATURES = ['res2', 'res3', 'res4', 'res5']
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    out = backbone(torch.randn(1, 3, 64, 64))
    assert sorted(out) == ['p2', 'p3', 'p4', 'p5', 'p6']
