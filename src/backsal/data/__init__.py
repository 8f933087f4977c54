"""Datasets of the paper and the offline benchmark: VOC07, COCO14, ImageNet val, cluttered digits.

Each loader lives in its own module (``backsal.data.voc``, ``.coco``, ``.imagenet``,
``.synthetic``); what they share for image files is public here: the error a user catches for a
missing, corrupt or truncated image, and the decoder that raises it.
"""

from ._image import ImageLoadError, read_rgb

__all__ = ["ImageLoadError", "read_rgb"]
