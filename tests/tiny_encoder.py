"""A deliberately tiny custom encoder, to show (and test) that the encoder can be swapped."""

import torch


class TinyEncoder(torch.nn.Module):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(8)
        self.fc = torch.nn.Linear(3 * 8 * 8, latent_dim)

    def forward(self, images):
        return self.fc(self.pool(images).flatten(1))


class WrongShapeEncoder(TinyEncoder):
    def forward(self, images):
        return super().forward(images)[:, :-1]
