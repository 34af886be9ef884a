"""Model: the frozen backbone (tokenizer, dimensions, precision), the embedded model, tiny test models, K/V layouts."""
from lopt_core.model.backbone import PRECISIONS, Backbone, load_backbone
from lopt_core.model.embedded import cache_root, embedded_cache_dir, prepare_embedded
from lopt_core.model.tiny import TINY, TINY_SPECS

__all__ = ["Backbone", "PRECISIONS", "TINY", "TINY_SPECS", "cache_root", "embedded_cache_dir", "load_backbone",
           "prepare_embedded"]
