"""The paper's zoo in PyTorch, written the way a user would: eager, NCHW, ``torch.optim.Adam``.

The baseline of ``zoo.py``: the same architectures and parameter counts as
:mod:`coordjax.models` (``zoo.py`` asserts the counts are equal), the same losses, the paper's L2
on conv kernels added to the loss, Adam β (0.9, 0.99), ε 1e-8. Only imported when torch is
installed (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CANVAS = 64


def coord_maps(batch: int, size: int = CANVAS, device=None) -> torch.Tensor:
    """``(B, 2, H, W)``: the column (xx) and row (yy) coordinates in [-1, 1] (on ``device``)."""
    line = torch.linspace(-1.0, 1.0, size, device=device)
    yy, xx = torch.meshgrid(line, line, indexing="ij")
    return torch.stack([xx, yy]).expand(batch, 2, size, size)


class DeconvPainter(nn.Module):
    """Six stride-2 'SAME' transposed convs 2 -> 64c, 64c, 64c, 32c, 32c, 1 with BN + ReLU."""

    def __init__(self, filter_size: int, channel_mult: int):
        super().__init__()
        c, fs = channel_mult, filter_size
        # TF 'SAME' for stride 2 doubles the size: padding p and output_padding 2 + 2p - fs.
        pad = (fs - 1) // 2
        widths = (64 * c, 64 * c, 64 * c, 32 * c, 32 * c, 1)
        layers: list[nn.Module] = []
        c_in = 2
        for i, width in enumerate(widths):
            layers.append(
                nn.ConvTranspose2d(c_in, width, fs, 2, pad, output_padding=2 + 2 * pad - fs)
            )
            if i < len(widths) - 1:
                layers += [nn.BatchNorm2d(width, eps=1e-5, momentum=0.1), nn.ReLU()]
            c_in = width
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(x.shape[0], 2, 1, 1))


def _pointwise_stack(layer, channel_mult: int) -> nn.Sequential:
    """The classifier's per-pixel layers: 4 -> 32c, 32c, 64c, 64c (ReLU after each) -> 1, each
    made by ``layer(c_in, c_out)``."""
    c = channel_mult
    layers: list[nn.Module] = []
    c_in = 4
    for width in (32 * c, 32 * c, 64 * c, 64 * c):
        layers += [layer(c_in, width), nn.ReLU()]
        c_in = width
    layers.append(layer(c_in, 1))
    return nn.Sequential(*layers)


class CoordConvClassifier(nn.Module):
    """Tile (x, y) over 64x64, add coordinate channels, 1x1 convs 32c, 32c, 64c, 64c, 1."""

    def __init__(self, channel_mult: int = 1):
        super().__init__()
        self.net = _pointwise_stack(lambda c_in, c_out: nn.Conv2d(c_in, c_out, 1), channel_mult)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        tiled = x.view(b, 2, 1, 1).expand(b, 2, CANVAS, CANVAS)
        return self.net(torch.cat([tiled, coord_maps(b, device=x.device)], dim=1))


class CoordConvClassifierLinear(nn.Module):
    """The CoordConv classifier as a torch user may write its 1x1 convolutions: ``nn.Linear``
    over channels-last pixels (same parameters as :class:`CoordConvClassifier`)."""

    def __init__(self, channel_mult: int = 1):
        super().__init__()
        self.net = _pointwise_stack(nn.Linear, channel_mult)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        tiled = x.view(b, 1, 1, 2).expand(b, CANVAS, CANVAS, 2)
        coords = coord_maps(b, device=x.device).permute(0, 2, 3, 1)
        return self.net(torch.cat([tiled, coords], dim=-1))  # (B, H, W, 1)

    def l2_kernels(self) -> list[torch.Tensor]:
        return [m.weight for m in self.modules() if isinstance(m, nn.Linear)]


class CoordConvRenderer(nn.Module):
    """Classifier (c=1) -> softmax over 4096 -> 'SAME' fs x fs convs 8m, 8m, 16m, 16m, 1."""

    def __init__(self, filter_size: int = 1, channel_mult: int = 2):
        super().__init__()
        self.coordconv = CoordConvClassifier(1)
        m = channel_mult
        layers: list[nn.Module] = []
        c_in = 1
        for width in (8 * m, 8 * m, 16 * m, 16 * m):
            layers += [nn.Conv2d(c_in, width, filter_size, padding="same"), nn.ReLU()]
            c_in = width
        layers.append(nn.Conv2d(c_in, 1, filter_size, padding="same"))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = self.coordconv(x)
        b = centre.shape[0]
        return self.net(torch.softmax(centre.view(b, -1), dim=-1).view(centre.shape))


class ConvRegressorUniform(nn.Module):
    """Four 3x3 convs (16m) with ReLU, max pools after the first three, Dense 64, Dense 2."""

    def __init__(self, channel_mult: int = 1):
        super().__init__()
        c = 16 * channel_mult
        layers: list[nn.Module] = []
        c_in = 1
        for i in range(4):
            layers += [nn.Conv2d(c_in, c, 3, padding="same"), nn.ReLU()]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(8 * 8 * c, 64), nn.ReLU(), nn.Linear(64, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def l2_kernels(self) -> list[torch.Tensor]:
        return [m.weight for m in self.features if isinstance(m, nn.Conv2d)]


def _same_strided(c_in: int, c_out: int, k: int) -> nn.Sequential:
    """TF 'SAME' stride-2 conv on an even input: pad (k - 2) // 2 before, the rest after."""
    total = k - 2
    before = total // 2
    return nn.Sequential(nn.ZeroPad2d((before, total - before, before, total - before)),
                         nn.Conv2d(c_in, c_out, k, stride=2))  # fmt: skip


class ConvRegressorQuadrant(nn.Module):
    """The fully convolutional regressor (Table S1, ``big_conv2``), global average pool."""

    def __init__(self, channel_mult: int = 1):
        super().__init__()
        c = 16 * channel_mult
        self.net = nn.Sequential(
            _same_strided(1, c, 5), nn.ReLU(),
            nn.Conv2d(c, c, 1), nn.ReLU(),
            nn.BatchNorm2d(c, eps=1e-5, momentum=0.1),
            nn.Conv2d(c, c, 3, padding="same"), nn.ReLU(),
            _same_strided(c, c, 3), nn.ReLU(),
            _same_strided(c, c, 3),
            nn.BatchNorm2d(c, eps=1e-5, momentum=0.1), nn.ReLU(),
            _same_strided(c, c, 3), nn.ReLU(),
            nn.Conv2d(c, c, 1), nn.ReLU(),
            _same_strided(c, c, 3), nn.ReLU(),
            nn.Conv2d(c, 2, 3, padding="same"), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(2, 3))


class CoordConvRegressor(nn.Module):
    """AddCoords, 1x1 convs 8, 8, 8, 3x3 8, 3x3 2, global max pool; no activation."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1),
            nn.Conv2d(8, 8, 3, padding="same"), nn.Conv2d(8, 2, 3, padding="same"),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, coord_maps(x.shape[0], x.shape[-1], x.device)], dim=1)
        return self.net(h).amax(dim=(2, 3))


BUILDERS = {
    "deconv_painter": DeconvPainter,
    "coordconv_classifier": CoordConvClassifier,
    "coordconv_renderer": CoordConvRenderer,
    "conv_regressor_uniform": ConvRegressorUniform,
    "conv_regressor_quadrant": ConvRegressorQuadrant,
    "coordconv_regressor": CoordConvRegressor,
}


VARIANTS = {"coordconv_classifier": {"linear": CoordConvClassifierLinear}}
"""Other natural torch formulations of a model, by name (same parameters, same maths)."""


def variants(name: str) -> tuple[str | None, ...]:
    """``None`` (the twin of our layers) and the names of the model's other formulations."""
    return (None, *VARIANTS.get(name, {}))


def build(name: str, variant: str | None = None, **shape_kwargs: int) -> nn.Module:
    """The torch twin of ``coordjax.models.build(name, **shape_kwargs)``, or a ``variant``."""
    builder = BUILDERS[name] if variant is None else VARIANTS[name][variant]
    return builder(**shape_kwargs)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def l2_kernels(model: nn.Module) -> list[torch.Tensor]:
    """The kernels that carry the paper's L2: every conv and transposed-conv weight."""
    if hasattr(model, "l2_kernels"):
        return model.l2_kernels()
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def task_loss(task: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of coordjax's per-example task losses.

    classification: softmax cross-entropy over the 4096 pixels (targets: flat indices);
    rendering: mean pixelwise sigmoid cross-entropy; regression: mean squared error.
    """
    if task == "classification":
        return F.cross_entropy(outputs.reshape(outputs.shape[0], -1), targets)
    if task == "rendering":
        return F.binary_cross_entropy_with_logits(outputs, targets)
    return F.mse_loss(outputs, targets)


def make_step(model: nn.Module, task: str, lr: float, l2: float):
    """``step(x, y) -> loss``: one eager Adam step with the L2 penalty added to the loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-8)
    kernels = l2_kernels(model)
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = task_loss(task, model(x), y) + l2 * sum((w * w).sum() for w in kernels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step
