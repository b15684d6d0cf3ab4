"""ResNet-50 (He et al. 2016) as a ``place`` extractor: the 2048 pooled activations before the classifier,
the same kind of feature as MovieScenes' ``place``.

The network is defined here with torchvision's parameter names, so ImageNet weights saved by
torchvision (a state_dict) and the Places365 checkpoints (``{"state_dict": {"module.conv1.weight":
...}}``) both load. Nothing is downloaded: the user gives the weights file, which is read with
``torch.load(weights_only=True)`` (no code in it can run); the classifier's weights are ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)  # stride here (v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + skip)


class ResNet50(nn.Module):
    """The convolutional trunk of ResNet-50; ``forward`` returns the pooled features [B, 2048]."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes, layers = 64, []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = [Bottleneck(inplanes, planes, stride)] + [Bottleneck(planes * 4, planes) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stage))
            inplanes = planes * 4
        self.layer1, self.layer2, self.layer3, self.layer4 = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, 2048]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


def load_resnet50(path: Path) -> ResNet50:
    """The network with the weights of ``path``, in eval mode; a missing or unsuitable file is one ValueError."""
    path = Path(path)
    what = "a ResNet-50 weights file (torchvision ImageNet state_dict or a Places365 checkpoint)"
    if not path.is_file():
        raise ValueError(f"{path}: expected {what} (data.video.weights / --weights), found nothing there")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not a weights file we can read safely"
        raise ValueError(f"{path}: expected {what} readable with torch.load(weights_only=True), found a file that is "
                         f"not ({type(e).__name__}); it was not loaded") from None
    if isinstance(doc, dict) and isinstance(doc.get("state_dict"), dict):
        doc = doc["state_dict"]
    if not isinstance(doc, dict) or not all(isinstance(v, torch.Tensor) for v in doc.values()):
        raise ValueError(f"{path}: expected {what}: a mapping of parameter names to tensors, found {type(doc).__name__}")
    state = {k.removeprefix("module."): v for k, v in doc.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the classifier is not used
    net = ResNet50()
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or wrong:
        parts = [f"{len(missing)} parameters missing (e.g. {missing[0]})" if missing else "",
                 f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[0]}: {list(state[wrong[0]].shape)}, "
                 f"expected {list(own[wrong[0]].shape)})" if wrong else ""]
        raise ValueError(f"{path}: expected ResNet-50 weights, found {'; '.join(p for p in parts if p)}")
    net.load_state_dict(state)
    return net.eval()


def embed(net: ResNet50, frames_bgr: list[np.ndarray]) -> np.ndarray:
    """[K, 2048] float32 pooled features of K BGR uint8 frames (ImageNet normalisation, frames as decoded)."""
    x = torch.from_numpy(np.stack(frames_bgr)[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255.0  # [K, 3, H, W] RGB
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        return net((x - mean) / std).numpy().astype(np.float32)
