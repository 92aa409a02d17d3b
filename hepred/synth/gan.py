"""pix2pix-style repainting: a U-Net generator from the conditioning plus a noise map, and a
PatchGAN discriminator (MONAI), trained with least-squares adversarial + region L1 losses."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator, UNet

from hepred.synth.repaint import CONDITION_CHANNELS, conditioning, masked_mean
from hepred.training import autocast


class GanRepainter:
    def __init__(self, settings: dict, device: torch.device):
        net_cfg = settings["gan"]
        self.settings = settings
        self.device = device
        channels = tuple(net_cfg["channels"])
        # The noise map makes versions with the same target differ, as the seed asks.
        self.generator = UNet(spatial_dims=2, in_channels=CONDITION_CHANNELS + 1, out_channels=1, channels=channels,
                              strides=(2,) * (len(channels) - 1), num_res_units=net_cfg["num_res_units"]).to(device)
        self.discriminator = PatchDiscriminator(spatial_dims=2, channels=net_cfg["disc_channels"],
                                                in_channels=CONDITION_CHANNELS + 1, out_channels=1,
                                                num_layers_d=net_cfg["disc_layers"]).to(device)
        betas = (0.5, 0.999)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=net_cfg["lr"], betas=betas)
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), lr=net_cfg["lr"], betas=betas)

    def _generate(self, condition: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        with autocast(self.device):
            return self.generator(torch.cat([condition, noise], dim=1)).float()

    def _judge(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        with autocast(self.device):
            return self.discriminator(torch.cat([condition, image], dim=1))[-1].float()

    def train_batch(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, float]:
        self.generator.train()
        self.discriminator.train()
        known, region = batch["known"], batch["region"]
        condition = conditioning(batch)
        noise = torch.randn(known.shape, generator=generator).to(self.device)
        raw = self._generate(condition, noise)
        fake = region * raw + (1.0 - region) * known

        real_score = self._judge(condition, known)
        fake_score = self._judge(condition, fake.detach())
        loss_d = 0.5 * (F.mse_loss(real_score, torch.ones_like(real_score))
                        + F.mse_loss(fake_score, torch.zeros_like(fake_score)))
        self.optimizer_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.optimizer_d.step()

        fake_score = self._judge(condition, fake)
        loss_adversarial = F.mse_loss(fake_score, torch.ones_like(fake_score))
        loss_l1 = masked_mean((raw - known).abs(), region)
        loss_g = loss_adversarial + self.settings["gan"]["l1_weight"] * loss_l1
        self.optimizer_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.optimizer_g.step()
        return {"loss": float(loss_g.detach()), "loss_l1": float(loss_l1.detach()),
                "loss_d": float(loss_d.detach())}

    def training_state(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
                "optimizer_g": self.optimizer_g.state_dict(), "optimizer_d": self.optimizer_d.state_dict()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])

    def weights(self) -> dict[str, torch.Tensor]:
        """Only the generator: synthesis never needs the discriminator."""
        return self.generator.state_dict()

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.generator.load_state_dict(state_dict)

    @torch.no_grad()
    def repaint(self, batch: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        self.generator.eval()
        clip = self.settings["hu_clip"]
        raw = self._generate(conditioning(batch), noise).clamp(-clip, clip)
        return batch["region"] * raw + (1.0 - batch["region"]) * batch["known"]
