"""The targets gradcam.torch understands, the same classes as pytorch-grad-cam's
`pytorch_grad_cam.utils.model_targets` (which gradcam.torch accepts too), importable without
pytorch-grad-cam installed. Each is also a callable on the model's output, as in pytorch-grad-cam,
so these objects work with pytorch-grad-cam's classes as well.

- `ClassifierOutputTarget(category)`: the class's logit (the engine's score "logit");
- `ClassifierOutputSoftmaxTarget(category)`: its softmax probability (score "softmax").
"""

import torch

__all__ = ["ClassifierOutputSoftmaxTarget", "ClassifierOutputTarget"]


class ClassifierOutputTarget:
    """The logit of class `category`."""

    def __init__(self, category):
        self.category = category

    def __call__(self, model_output):
        if len(model_output.shape) == 1:
            return model_output[self.category]
        return model_output[:, self.category]

    def __repr__(self):
        return f"ClassifierOutputTarget({self.category!r})"


class ClassifierOutputSoftmaxTarget:
    """The softmax probability of class `category`."""

    def __init__(self, category):
        self.category = category

    def __call__(self, model_output):
        if len(model_output.shape) == 1:
            return torch.softmax(model_output, dim=-1)[self.category]
        return torch.softmax(model_output, dim=-1)[:, self.category]

    def __repr__(self):
        return f"ClassifierOutputSoftmaxTarget({self.category!r})"
