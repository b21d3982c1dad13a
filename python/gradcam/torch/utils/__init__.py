"""pytorch-grad-cam's `utils` that gradcam.torch offers: `model_targets` (the targets it
understands) and `image` (preprocess_image, show_cam_on_image, scale_cam_image)."""

from . import image, model_targets
from .image import preprocess_image, scale_cam_image, show_cam_on_image

__all__ = ["image", "model_targets", "preprocess_image", "scale_cam_image", "show_cam_on_image"]
