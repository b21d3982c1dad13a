"""PyTorch definitions that the Rust engine mirrors, and helpers shared by the scripts.

SeedCNN is the reference definition of the `seed-cnn` architecture: the small CIFAR-10 CNN of
the article this project grew from, with padding 2 so that it runs on 32x32 input. The narrow
VGG/ResNet builders reuse torchvision's own blocks and forward code at a fraction of the width,
so that fixtures stay small while exercising exactly torchvision's module layout.
"""

import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.vgg import VGG, make_layers


class SeedCNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(3)
        self.conv2 = nn.Conv2d(64, 32, 5, padding=2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(3)
        self.conv3 = nn.Conv2d(32, 16, 5, padding=2)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.MaxPool2d(3)
        self.fc1 = nn.Linear(16, 2000)
        self.relu4 = nn.ReLU()
        self.fc2 = nn.Linear(2000, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.pool3(self.relu3(self.conv3(x)))
        x = torch.flatten(x, 1)
        return self.fc2(self.relu4(self.fc1(x)))


def narrow_vgg(cfg, batch_norm, divisor=16, hidden=64, num_classes=10):
    """torchvision's VGG with every width divided by `divisor` and a small classifier."""
    cfg = [v if v == "M" else v // divisor for v in cfg]
    model = VGG(make_layers(cfg, batch_norm=batch_norm), num_classes=num_classes)
    c = cfg[-2]
    model.classifier[0] = nn.Linear(c * 49, hidden)
    model.classifier[3] = nn.Linear(hidden, hidden)
    model.classifier[6] = nn.Linear(hidden, num_classes)
    return model


class NarrowResNet(ResNet):
    """torchvision's ResNet (its blocks, _make_layer and forward) with base width `base`."""

    def __init__(self, block, layers, base=8, num_classes=10):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = base, 1, 1, 64
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, base, layers[0])
        self.layer2 = self._make_layer(block, base * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, base * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, base * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(base * 8 * block.expansion, num_classes)


def _basic_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


def _bottleneck_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + identity)


# torchvision's blocks add the identity in place (`out += identity`), which overwrites the
# output of bn2/bn3 that a forward hook saved: pytorch-grad-cam would then see bn2 + identity as
# "the output of bn2". The engine defines a layer's activation as its own output, as with
# inplace=False, so the references are computed with the same blocks, out of place.
BasicBlock.forward = _basic_forward
Bottleneck.forward = _bottleneck_forward


def prepare(model, seed):
    """Eval mode, non-inplace ReLUs (the activation of a layer is its own output, as with
    inplace=False), and BatchNorm statistics that are not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()


def torchvision_model(arch, num_classes=1000):
    return prepare(getattr(torchvision.models, arch)(weights=None, num_classes=num_classes), 0)


def round_to(model, dtype):
    """Rounds every float tensor of the state dict to `dtype` (kept as f32 in the model), so
    that the reference outputs are those of the weights as saved."""
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.to(dtype).float())
    return model


def save_weights(model, path, dtype=torch.float32):
    from safetensors.torch import save_file

    sd = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()
    }
    save_file(sd, str(path))


def reference_cams(model, x, layer, cls):
    """pytorch-grad-cam's GradCAM: cams [N, H, W] and the classes it explained."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    target = model.get_submodule(layer)
    with torch.no_grad():
        logits = model(x)
    classes = [cls] * len(x) if cls is not None else logits.argmax(1).tolist()
    with GradCAM(model=model, target_layers=[target]) as cam:
        cams = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])
    return torch.from_numpy(cams), classes


# ---------------------------------------------------------------------------------------------
# Helpers for scripts/make_family_fixtures.py (torchvision CNN families). Nothing above depends
# on them, and nothing here runs at import time: the forward patches are opt-in.


class NarrowGroupedResNet(ResNet):
    """torchvision's ResNet (its Bottleneck, _make_layer and forward) with base width `base` and
    torchvision's own `groups` / `width_per_group` knobs, for narrow ResNeXt and Wide ResNet:
    a stage of `planes` has bottleneck width int(planes * width_per_group / 64) * groups."""

    def __init__(self, block, layers, base=16, groups=1, width_per_group=64, num_classes=10):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = base, 1, groups, width_per_group
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, base, layers[0])
        self.layer2 = self._make_layer(block, base * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, base * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, base * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(base * 8 * block.expansion, num_classes)


def narrow_channels(model, div, fixed=None, keep=(3, 10)):
    """Narrows a torchvision model in place by replacing each Conv2d / BatchNorm2d / Linear with
    a fresh one whose channel counts are divided by `div` (counts in `keep`, the image channels
    and num_classes, stay; `fixed` maps a count to an explicit one). Module names, kinds,
    kernels, strides, paddings, eps and forward code stay torchvision's; depthwise convs stay
    depthwise, other grouped convs keep their group count. Used where the constructor has no
    width knob (alexnet, squeezenet, googlenet, inception_v3)."""
    fixed = fixed or {}

    def n(c):
        if c in fixed:
            return fixed[c]
        if c in keep:
            return c
        if c % div:
            raise ValueError(f"{c} channels are not divisible by {div}")
        return c // div

    slots = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()]
    for parent, name, m in slots:
        if type(m) is nn.Conv2d:
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            new = nn.Conv2d(
                n(m.in_channels),
                n(m.out_channels),
                m.kernel_size,
                m.stride,
                m.padding,
                m.dilation,
                n(m.groups) if depthwise else m.groups,
                m.bias is not None,
                m.padding_mode,
                device="cpu",
            )
        elif type(m) is nn.BatchNorm2d:
            new = nn.BatchNorm2d(n(m.num_features), eps=m.eps, momentum=m.momentum, device="cpu")
        elif type(m) is nn.Linear:
            new = nn.Linear(n(m.in_features), n(m.out_features), m.bias is not None, device="cpu")
        else:
            continue
        setattr(parent, name, new)
    return model


def not_inplace(model):
    """inplace=False on every module that has the flag (ReLU, ReLU6, SiLU, Hardswish,
    Hardsigmoid, Dropout...): torchvision builds most activations with inplace=True, which
    overwrites the output of the preceding conv / BatchNorm that a forward hook recorded."""
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model


def _cnblock_forward(self, input):
    result = self.layer_scale * self.block(input)
    result = self.stochastic_depth(result)
    return result + input


def _mbconv_forward(self, input):
    result = self.block(input)
    if self.use_res_connect:
        result = self.stochastic_depth(result)
        result = result + input
    return result


def _mobilenet_v3_block_forward(self, input):
    result = self.block(input)
    if self.use_res_connect:
        result = result + input
    return result


def _basic_conv2d_forward(self, x):
    return torch.nn.functional.relu(self.bn(self.conv(x)))


def _densenet_forward(self, x):
    features = self.features(x)
    out = torch.nn.functional.relu(features)
    out = torch.nn.functional.adaptive_avg_pool2d(out, (1, 1))
    out = torch.flatten(out, 1)
    return self.classifier(out)


def use_out_of_place_forwards():
    """Replaces torchvision forward code that modifies a hooked module output in place with the
    same computation out of place (as the Basic/Bottleneck patch above does for ResNet):
      convnext.CNBlock, efficientnet.MBConv / FusedMBConv, mobilenetv3.InvertedResidual:
        `result += input` overwrites the output of `block` (and of its last module);
      googlenet / inception BasicConv2d: `F.relu(x, inplace=True)` overwrites the output of `bn`;
      DenseNet.forward: `F.relu(features, inplace=True)` overwrites the output of `features`
        (= features.norm5), the default Grad-CAM target layer.
    Values are unchanged; only what a forward hook sees is."""
    import importlib

    convnext, densenet, efficientnet, googlenet, inception, mobilenetv3 = (
        importlib.import_module(f"torchvision.models.{m}")  # the modules, not the builder functions
        for m in ("convnext", "densenet", "efficientnet", "googlenet", "inception", "mobilenetv3")
    )
    convnext.CNBlock.forward = _cnblock_forward
    efficientnet.MBConv.forward = _mbconv_forward
    efficientnet.FusedMBConv.forward = _mbconv_forward
    mobilenetv3.InvertedResidual.forward = _mobilenet_v3_block_forward
    googlenet.BasicConv2d.forward = _basic_conv2d_forward
    inception.BasicConv2d.forward = _basic_conv2d_forward
    densenet.DenseNet.forward = _densenet_forward
