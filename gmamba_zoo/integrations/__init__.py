"""Adapters that make zoo models backbones of other frameworks' detectors and segmenters.

Each module imports its framework at import time and fails with an ImportError saying how to install it; import
only the one you use:

* :mod:`gmamba_zoo.integrations.openmmlab`: registers ``GMambaZooBackbone`` in MMEngine's root ``MODELS`` registry,
  so MMDetection, MMSegmentation and MMPretrain configs can use ``type='GMambaZooBackbone'``.
* :mod:`gmamba_zoo.integrations.detectron2`: a detectron2 ``Backbone`` and two ``BACKBONE_REGISTRY`` builders (plain
  and with detectron2's FPN).

torchvision and segmentation_models_pytorch need no adapter: see :mod:`gmamba_zoo.integrations.detection` and ``smp.Unet('tu-<name>')``.
Recipes: docs/integrations.md.
"""
