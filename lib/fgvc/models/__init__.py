from fgvc.models.backbones import BACKBONES, Backbone, build_backbone

__all__ = ["BACKBONES", "Backbone", "build_backbone"]
