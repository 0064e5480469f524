"""A user's own CIFAR-10 model for ``task=cifar10``: ``task.model=smallnets.SmallNet`` or
``task.model={_target_: smallnets.SmallNet, channels: 8}``."""

from torch import Tensor, nn


class SmallNet(nn.Module):
    """Conv3×3 stride 4 (3 → channels) → ReLU → global average pool → Linear(channels, 10)."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, stride=4, padding=1)
        self.fc = nn.Linear(channels, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x).relu().mean((2, 3)))

