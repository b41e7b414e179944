"""torch.hub entry points: one per gmamba_zoo model, ``<name>(pretrained=False, **kwargs)``, and nothing else.

    torch.hub.list('<owner>/gmamba_zoo')          # exactly gmamba_zoo.list_models()
    model = torch.hub.load('<owner>/gmamba_zoo', 'convnext_s_gmamba', pretrained=True)
    backbone = torch.hub.load('/path/to/checkout', 'resnet50_gmamba', source='local', features_only=True)

Each entry is ``timm.create_model(name, pretrained=pretrained, **kwargs)``: ``features_only``, ``out_indices``,
``num_classes``, ``pretrained_cfg_overlay`` and the models' own options pass straight through. The entries are made
from the package's registry when this file is imported, so they cannot drift from it; helpers are private (leading
underscore) because ``torch.hub.list`` shows every public callable here.
"""
dependencies = ['torch', 'timm', 'huggingface_hub', 'safetensors']

import gmamba_zoo as _gmamba_zoo  # noqa: E402  (registers the models with timm)


def _entry(name: str):
    """The torch.hub entry for the registered model ``name``, with a docstring from its registry entry."""
    import timm

    def entry(pretrained: bool = False, **kwargs):
        return timm.create_model(name, pretrained=pretrained, **kwargs)

    summary = (timm.models.model_entrypoint(name).__doc__ or name).strip().split('\n')[0]
    cfg = timm.models.get_pretrained_cfg(name)
    weights = (cfg.description or ' '.join(cfg.notes or ())) if cfg is not None else ''
    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = (
        f'{summary}\n\n'
        f'Args:\n'
        f'    pretrained: Load the default pretrained weights of {name}'
        + (f': {weights}' if weights else ' (the registry has none for it).') + '\n'
        f'    **kwargs: Passed to timm.create_model (features_only, out_indices, num_classes, '
        f'pretrained_cfg_overlay, ...).\n\n'
        f'Returns:\n'
        f'    The timm model (a feature extractor with features_only=True).\n')
    return entry


for _name in _gmamba_zoo.list_models():
    globals()[_name] = _entry(_name)
del _name
