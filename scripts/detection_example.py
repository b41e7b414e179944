#!/usr/bin/env python
"""Faster R-CNN and Mask R-CNN (torchvision) on zoo backbones: build, one training step, one inference.

    python scripts/detection_example.py                                    # resnet50_gmamba and swin_t_gmamba
    python scripts/detection_example.py --models resnet18_gmamba --size 128   # a quick run on a laptop CPU

The images and targets are generated (a few rectangles with box and mask annotations), so this shows the wiring,
not accuracy; train on a real data set (e.g. torchvision's COCO references) with the same ``build_detector`` call.
"""
import argparse
import time

import torch

from gmamba_zoo.integrations.detection import build_detector


def synthetic_batch(n: int, size: int, num_classes: int, seed: int = 0):
    """n images [3, size, size] with one bright rectangle per object, and torchvision targets (boxes, labels, masks)."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(n):
        img = torch.rand(3, size, size, generator=g) * 0.2
        boxes, labels, masks = [], [], []
        for _ in range(2):
            x0, y0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
            w, h = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
            cls = int(torch.randint(1, num_classes, (1,), generator=g))
            img[cls % 3, y0:y0 + h, x0:x0 + w] = 1.0
            mask = torch.zeros(size, size, dtype=torch.uint8)
            mask[y0:y0 + h, x0:x0 + w] = 1
            boxes.append([x0, y0, x0 + w, y0 + h])
            labels.append(cls)
            masks.append(mask)
        images.append(img)
        targets.append(dict(boxes=torch.tensor(boxes, dtype=torch.float32), labels=torch.tensor(labels),
                            masks=torch.stack(masks)))
    return images, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=['resnet50_gmamba', 'swin_t_gmamba'])
    parser.add_argument('--archs', nargs='+', default=['faster_rcnn', 'mask_rcnn'], choices=['faster_rcnn', 'mask_rcnn'])
    parser.add_argument('--size', type=int, default=256, help='min_size = max_size of the detector transform')
    parser.add_argument('--num-classes', type=int, default=4, help='including background')
    parser.add_argument('--pretrained', action='store_true', help="the backbone's ImageNet weights (Hub download)")
    args = parser.parse_args()

    images, targets = synthetic_batch(2, args.size, args.num_classes)
    for name in args.models:
        for arch in args.archs:
            t0 = time.perf_counter()
            model = build_detector(arch, name, args.num_classes, pretrained_backbone=args.pretrained,
                                   min_size=args.size, max_size=args.size)
            opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
            model.train()
            losses = model(images, targets if arch == 'mask_rcnn' else
                           [{k: v for k, v in t.items() if k != 'masks'} for t in targets])
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.eval()
            with torch.no_grad():
                det = model(images[:1])[0]
            print(f'{arch} on {name}: backbone out_channels={model.backbone.out_channels}, FPN strides '
                  f'{model.backbone.strides}; train loss {loss.item():.3f} '
                  f'({", ".join(f"{k}={v.item():.3f}" for k, v in losses.items())}); '
                  f'{len(det["boxes"])} detections, outputs {sorted(det)}; {time.perf_counter() - t0:.1f} s')


if __name__ == '__main__':
    main()
