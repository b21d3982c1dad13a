"""pytorch-grad-cam's image helpers (`pytorch_grad_cam.utils.image`) with the same semantics,
written with numpy and torch, so that they work without OpenCV, SciPy or matplotlib:

- `preprocess_image(img, mean, std)`: torchvision's ToTensor then Normalize, a batch of one;
- `show_cam_on_image(img, mask, use_rgb, colormap, image_weight)`: the CAM as OpenCV's JET
  heatmap (the same 256 colours) blended onto the image, uint8;
- `scale_cam_image(cam, target_size)`: each map min-max normalized and, with target_size
  (width, height), resized bilinearly as OpenCV's `cv2.resize` (half-pixel centres).

A colormap other than JET is drawn by OpenCV (`cv2.applyColorMap`) and needs it installed;
`scale_cam_image` of 3-D maps uses SciPy's `zoom`, as pytorch-grad-cam does.
"""

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["COLORMAP_JET", "preprocess_image", "scale_cam_image", "show_cam_on_image"]

#: OpenCV's cv2.COLORMAP_JET, show_cam_on_image's default colormap.
COLORMAP_JET = 2


def _jet_bgr():
    """OpenCV's JET lookup table, (256, 3) uint8 in BGR order: each channel is the piecewise-
    linear jet of Octave, clip(1.5 - |4x - k|, 0, 1) at x = i / 255 (k = 1 blue, 2 green, 3 red),
    scaled to 255 and rounded. OpenCV computes its table by interpolating 64 knots in floating
    point, which lands one entry, blue at 159 (1.5 exactly), on 1 instead of 2; the test suite
    compares all 256 entries with cv2.applyColorMap."""
    i = np.arange(256, dtype=np.float64)
    table = np.stack([np.rint(np.clip(382.5 - np.abs(4 * i - 255.0 * k), 0, 255)) for k in (1, 2, 3)], axis=1)
    table[159, 0] = 1
    return table.astype(np.uint8)


_JET_BGR = _jet_bgr()


def _apply_colormap(u8, colormap):
    """cv2.applyColorMap(u8, colormap): BGR uint8."""
    if colormap == COLORMAP_JET and u8.ndim == 2:
        return _JET_BGR[u8]
    try:
        import cv2
    except ImportError:
        raise ValueError(
            f"colormap {colormap} on a {u8.ndim}-D mask needs OpenCV (pip install opencv-python); "
            "without it show_cam_on_image draws 2-D masks with COLORMAP_JET"
        ) from None
    return cv2.applyColorMap(u8, colormap)


def preprocess_image(img: np.ndarray, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]) -> torch.Tensor:  # noqa: B006
    """torchvision's Compose([ToTensor(), Normalize(mean, std)]) on a copy of img (H, W, C) or
    (H, W), as a batch of one (1, C, H, W). A uint8 image is divided by 255; a float image is
    taken as it is (in [0, 1] by convention), and keeps its dtype."""
    pic = img.copy()
    if pic.ndim == 2:
        pic = pic[:, :, None]
    t = torch.from_numpy(pic.transpose((2, 0, 1))).contiguous()
    if t.dtype == torch.uint8:
        t = t.to(dtype=torch.get_default_dtype()).div(255)
    if not t.is_floating_point():
        raise TypeError(f"Input tensor should be a float tensor. Got {t.dtype}.")
    m = torch.as_tensor(mean, dtype=t.dtype)
    s = torch.as_tensor(std, dtype=t.dtype)
    if (s == 0).any():
        raise ValueError(f"std evaluated to zero after conversion to {t.dtype}, leading to division by zero.")
    if m.ndim == 1:
        m = m.view(-1, 1, 1)
    if s.ndim == 1:
        s = s.view(-1, 1, 1)
    return t.sub(m).div_(s).unsqueeze(0)


def show_cam_on_image(
    img: np.ndarray,
    mask: np.ndarray,
    use_rgb: bool = False,
    colormap: int = COLORMAP_JET,
    image_weight: float = 0.5,
) -> np.ndarray:
    """The CAM `mask` (H, W) in [0, 1] as a heatmap blended onto `img` (H, W, 3) float in [0, 1]:
    (1 - image_weight) * heatmap + image_weight * img, divided by its maximum, as uint8. The
    heatmap is BGR unless use_rgb (set it when img is RGB)."""
    heatmap = _apply_colormap(np.uint8(255 * mask), colormap)
    if use_rgb:
        heatmap = np.ascontiguousarray(heatmap[..., ::-1])
    heatmap = np.float32(heatmap) / 255

    if np.max(img) > 1:
        raise ValueError("The input image should np.float32 in the range [0, 1]")
    if image_weight < 0 or image_weight > 1:
        raise ValueError(f"image_weight should be in the range [0, 1]. Got: {image_weight}")

    cam = (1 - image_weight) * heatmap + image_weight * img
    cam = cam / np.max(cam)
    return np.uint8(255 * cam)


def _resize_bilinear(img: np.ndarray, target_size) -> np.ndarray:
    """cv2.resize(img, (width, height)) of a float32 (h, w) map with INTER_LINEAR: bilinear with
    half-pixel centres, no antialiasing, the same as PyTorch's align_corners=False."""
    width, height = (int(v) for v in target_size)
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def scale_cam_image(cam, target_size=None):
    """Each map of `cam` (N, ...) shifted to a minimum of 0 and divided by (1e-7 + its maximum);
    with target_size (width, height) of a 2-D map, resized bilinearly. float32 (N, ...)."""
    result = []
    for img in cam:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if target_size is not None:
            if len(img.shape) > 2:
                try:
                    from scipy.ndimage import zoom
                except ImportError:
                    raise ValueError("scale_cam_image of 3-D maps needs SciPy (pip install scipy)") from None
                img = zoom(np.float32(img), [(t_s / i_s) for i_s, t_s in zip(img.shape, target_size[::-1])])
            else:
                img = _resize_bilinear(np.float32(img), target_size)
        result.append(img)
    return np.float32(result)
