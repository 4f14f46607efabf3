"""The networks: a DeepSDF-style decoder shared by all shapes, and a small CNN image encoder.

The decoder's layer layout is part of the render contract (docs/contract.md): fast backends read its weights
directly, so the layout below is fixed. The encoder is only a default; any module mapping images to latents
of the decoder's ``latent_dim`` can replace it.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SDFDecoder", "Encoder", "ACTIVATIONS", "activation", "activation_grad"]

# The decoder's activations; every backend implements each (the triton kernels number them in this order).
ACTIVATIONS = ("relu", "softplus", "smoothrelu")


def activation(x: torch.Tensor, name: str, beta: float) -> torch.Tensor:
    """ReLU; softplus(x, beta) (torch's, linear above beta x = 20); or smoothrelu: ReLU with its kink replaced by
    the parabola ``(x + k)^2 / (4 k)`` on ``|x| < k = 2 / beta`` (continuous slope, the same curvature at 0 as the
    softplus of that beta), which costs a clamp and two multiplies where softplus costs an exp and a log."""
    if name == "relu":
        return F.relu(x)
    if name == "softplus":
        return F.softplus(x, beta=beta)
    k = 2.0 / beta
    c = (x + k).clamp(0.0, 2 * k)
    return torch.addcmul(F.relu(x - k), c, c, value=0.25 / k)  # one eager op for c * c * q + relu(x - k)


def activation_grad(x: torch.Tensor, name: str, beta: float) -> torch.Tensor:
    """The derivative of :func:`activation` at x: ReLU 1[x > 0] (no gradient of its own); softplus sigmoid(beta x);
    smoothrelu clamp((x + k) / (2 k), 0, 1)."""
    if name == "relu":
        return (x > 0).to(x.dtype)
    if name == "softplus":
        return torch.sigmoid(beta * x)
    k = 2.0 / beta
    return ((x + k) * (0.5 / k)).clamp(0.0, 1.0)


class SDFDecoder(nn.Module):
    """Five-layer MLP giving a signed distance for (latent, xyz), with a DeepSDF skip connection.

    Layout (``L = latent_dim``, ``H = hidden_dim``), input ``x = [z, p]``::

        h = act(layers[0](x))                 # (L+3) -> H
        h = act(layers[1](h))                 # H -> H
        h = act(layers[2](cat([h, x])))       # (H+L+3) -> H, the skip
        h = act(layers[3](h))                 # H -> H
        sdf = layers[4](h)                    # H -> 1

    The latent enters only through ``layers[0].weight[:, :L]`` and ``layers[2].weight[:, H:H+L]``.

    Args:
        latent_dim: size L of the latent code.
        hidden_dim: width H of the four hidden layers.
        activation: one of :data:`ACTIVATIONS` (see :func:`activation`).
        softplus_beta: the sharpness beta of the smooth activations (ignored for ReLU): softplus's beta; smoothrelu's
            parabola spans ``|x| < 2 / beta``. At 100 both are ReLU but for a hundredth around 0.
        geometric_init: initialise so that the untrained decoder is close to the SDF of a sphere of radius
            ``init_radius`` for every latent (SAL / IDR geometric initialisation; the latent columns start
            near zero so that all shapes start from that sphere).
        init_radius: radius of that sphere.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        hidden_dim: int = 256,
        activation: str = "relu",
        softplus_beta: float = 100.0,
        geometric_init: bool = True,
        init_radius: float = 0.5,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {ACTIVATIONS}, got {activation!r}")
        if latent_dim < 1 or hidden_dim < 1:
            raise ValueError(f"`latent_dim` and `hidden_dim` must be positive, got {latent_dim}, {hidden_dim}")
        if softplus_beta <= 0:
            raise ValueError(f"`softplus_beta` must be positive, got {softplus_beta}")
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.activation = activation
        self.softplus_beta = float(softplus_beta)
        d_in = latent_dim + 3
        self.layers = nn.ModuleList(
            [
                nn.Linear(d_in, hidden_dim),
                nn.Linear(hidden_dim, hidden_dim),
                nn.Linear(hidden_dim + d_in, hidden_dim),
                nn.Linear(hidden_dim, hidden_dim),
                nn.Linear(hidden_dim, 1),
            ]
        )
        if geometric_init:
            self._geometric_init(init_radius)

    @torch.no_grad()
    def _geometric_init(self, radius: float) -> None:
        L, H = self.latent_dim, self.hidden_dim
        for layer in self.layers[:4]:
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0) / math.sqrt(layer.out_features))
            nn.init.zeros_(layer.bias)
        # The skip layer sees [h, x]: scaling it by 1/sqrt(2) keeps the slope of the radial profile near 1
        # (IDR divides the concatenation by sqrt(2) instead; the layout here is fixed by the contract).
        self.layers[2].weight.mul_(1.0 / math.sqrt(2.0))
        # Latent columns start tiny (not zero, so that the encoder gets a gradient from the first step).
        nn.init.normal_(self.layers[0].weight[:, :L], 0.0, 1e-4)
        nn.init.normal_(self.layers[2].weight[:, H : H + L], 0.0, 1e-4)
        last = self.layers[4]
        nn.init.normal_(last.weight, math.sqrt(math.pi) / math.sqrt(H), 1e-4)
        nn.init.constant_(last.bias, -radius)

    def fit_sphere(self, radius: float = 0.5, steps: int = 200, num_points: int = 2048, lr: float = 1e-3,
                   seed: int = 0) -> float:
        """Fits the decoder (at latent 0) to the SDF of a sphere of ``radius`` by a few Adam steps on random
        points in the unit ball, a tighter start than the geometric initialisation alone.

        Returns:
            the final mean absolute SDF error on the last batch.
        """
        p0 = self.layers[0].weight
        g = torch.Generator(device="cpu").manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        z = torch.zeros(1, self.latent_dim, dtype=p0.dtype, device=p0.device)
        for _ in range(steps):
            pts = torch.randn(num_points, 3, generator=g, dtype=p0.dtype)
            radii = torch.rand(num_points, 1, generator=g, dtype=p0.dtype) ** (1 / 3)  # uniform in the ball
            pts = pts / pts.norm(dim=-1, keepdim=True) * radii
            pts = (pts * 1.1).to(p0.device)[None]
            err = (self(z, pts) - (pts.norm(dim=-1) - radius)).abs().mean()
            opt.zero_grad(set_to_none=True)
            err.backward()
            opt.step()
        return float(err.detach())

    def act(self, x: torch.Tensor) -> torch.Tensor:
        return activation(x, self.activation, self.softplus_beta)

    def act_grad(self, x: torch.Tensor) -> torch.Tensor:
        """The activation's derivative at x (:func:`activation_grad`)."""
        return activation_grad(x, self.activation, self.softplus_beta)

    def sdf_and_gradient(self, z: torch.Tensor, points: torch.Tensor, shape: torch.Tensor):
        """Signed distances [n] and their gradients with respect to xyz [n, 3] at ``points`` [n, 3] of shapes
        ``shape`` [n] (indices into ``z`` [B, L]).

        The gradient is the backward pass written out as tensor ops (``g_3 = w_4 act'(a_3)``, ``g_l = (g_{l+1}
        W_{l+1}) act'(a_l)``, then the xyz columns of layers 1 and 3), so it is differentiable once more by ordinary
        autograd, with respect to z, every weight and the points, and runs inside ``torch.compile(fullgraph=True)``,
        where ``torch.autograd.grad`` does not. The latent's share of layers 1 and 3 is computed once per shape."""
        L, H = self.latent_dim, self.hidden_dim
        (W0, b0), (W1, b1), (W2, b2), (W3, b3), (W4, b4) = ((m.weight, m.bias) for m in self.layers)
        c0 = F.linear(z, W0[:, :L], b0)[shape]
        c2 = F.linear(z, W2[:, H : H + L], b2)[shape]
        a0 = c0 + points @ W0[:, L:].t()
        a1 = F.linear(self.act(a0), W1, b1)
        a2 = self.act(a1) @ W2[:, :H].t() + c2 + points @ W2[:, H + L :].t()
        a3 = F.linear(self.act(a2), W3, b3)
        sdf = F.linear(self.act(a3), W4, b4).squeeze(-1)
        g = W4 * self.act_grad(a3)  # d sdf / d a3, [n, H]
        g2 = (g @ W3) * self.act_grad(a2)
        g0 = ((g2 @ W2[:, :H]) * self.act_grad(a1) @ W1) * self.act_grad(a0)
        return sdf, g0 @ W0[:, L:] + g2 @ W2[:, H + L :]

    def forward(self, z: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Signed distances.

        Args:
            z: latents [B, L].
            points: [B, N, 3].

        Returns:
            sdf [B, N].
        """
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"`z` must be [B, {self.latent_dim}], got {tuple(z.shape)}")
        if points.dim() != 3 or points.shape[-1] != 3 or points.shape[0] != z.shape[0]:
            raise ValueError(f"`points` must be [B={z.shape[0]}, N, 3], got {tuple(points.shape)}")
        # The layers on [z, p] and [h, z, p] as in the layout above, with the latent's share of layers 0 and 2
        # computed once per shape instead of once per point (40% of the decoder's multiply-adds at L = H).
        L, H = self.latent_dim, self.hidden_dim
        (W0, b0), (W2, b2) = ((m.weight, m.bias) for m in (self.layers[0], self.layers[2]))
        h = self.act(F.linear(z, W0[:, :L], b0)[:, None] + F.linear(points, W0[:, L:]))
        h = self.act(self.layers[1](h))
        h = F.linear(h, W2[:, :H]) + F.linear(z, W2[:, H : H + L], b2)[:, None] + F.linear(points, W2[:, H + L :])
        h = self.act(self.layers[3](self.act(h)))
        return self.layers[4](h).squeeze(-1)


class Encoder(nn.Module):
    """CNN image encoder: four stride-2 convolutions (3->32->64->128->256) and two fully connected layers.

    Args:
        latent_dim: size of the latent it returns.
        resolution: input image side (64 in the study); must be divisible by 16.

    Call: ``encoder(images[B, 3, resolution, resolution]) -> z[B, latent_dim]``.
    """

    def __init__(self, latent_dim: int = 128, resolution: int = 64, fc_dim: int = 512):
        super().__init__()
        if resolution % 16:
            raise ValueError(f"`resolution` must be divisible by 16, got {resolution}")
        self.latent_dim = latent_dim
        self.resolution = resolution
        chans = [3, 32, 64, 128, 256]
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1) for cin, cout in zip(chans[:-1], chans[1:])
        )
        side = resolution // 16
        self.fc1 = nn.Linear(256 * side * side, fc_dim)
        self.fc2 = nn.Linear(fc_dim, latent_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = (3, self.resolution, self.resolution)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"`images` must be [B, {', '.join(map(str, expected))}], got {tuple(images.shape)}")
        h = images
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
        h = F.leaky_relu(self.fc1(h.flatten(1)), 0.2)
        return self.fc2(h)
