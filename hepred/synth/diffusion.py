"""Mask- and label-conditioned DDPM that repaints the hematoma region of a patch (MONAI generative nets)."""
from __future__ import annotations

from typing import Any

import torch
from monai.inferers import DiffusionInferer
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from hepred.synth.repaint import CONDITION_CHANNELS, conditioning, masked_mean
from hepred.training import autocast


class DiffusionRepainter:
    """Predicts the noise of [noisy patch | conditioning]; only the removed region counts in the loss,
    the rest of the patch is known and kept at its forward-noised value while sampling (RePaint)."""

    def __init__(self, settings: dict, device: torch.device):
        net_cfg = settings["diffusion"]
        self.settings = settings
        self.device = device
        self.net = DiffusionModelUNet(
            spatial_dims=2, in_channels=1 + CONDITION_CHANNELS, out_channels=1,
            channels=tuple(net_cfg["channels"]), attention_levels=tuple(net_cfg["attention_levels"]),
            num_res_blocks=net_cfg["num_res_blocks"], norm_num_groups=net_cfg["norm_num_groups"],
            num_head_channels=net_cfg["num_head_channels"],
        ).to(device)
        self.scheduler = DDPMScheduler(num_train_timesteps=net_cfg["num_train_timesteps"],
                                       schedule=net_cfg["schedule"])
        self.inferer = DiffusionInferer(self.scheduler)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=net_cfg["lr"])

    def train_batch(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, float]:
        self.net.train()
        known = batch["known"]
        noise = torch.randn(known.shape, generator=generator).to(self.device)
        timesteps = torch.randint(0, self.scheduler.num_train_timesteps, (known.shape[0],),
                                  generator=generator).to(self.device)
        with autocast(self.device):
            predicted = self.inferer(inputs=known, diffusion_model=self.net, noise=noise, timesteps=timesteps,
                                     condition=conditioning(batch), mode="concat")
        loss = masked_mean((predicted.float() - noise) ** 2, batch["region"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach())}

    def training_state(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])

    def weights(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state_dict)

    @torch.no_grad()
    def repaint(self, batch: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM (eta 0) from ``noise``; returns the normalised patch, repainted in the region."""
        self.net.eval()
        net_cfg = self.settings["diffusion"]
        clip = self.settings["hu_clip"]
        scheduler = DDIMScheduler(num_train_timesteps=net_cfg["num_train_timesteps"], schedule=net_cfg["schedule"],
                                  clip_sample=True, clip_sample_min=-clip, clip_sample_max=clip)
        scheduler.set_timesteps(net_cfg["ddim_steps"], device=self.device)
        known, region = batch["known"], batch["region"]
        condition = conditioning(batch)
        alphas_cumprod = scheduler.alphas_cumprod.to(self.device)
        stride = scheduler.num_train_timesteps // scheduler.num_inference_steps
        sample = noise
        for t in scheduler.timesteps:
            with autocast(self.device):
                predicted = self.net(torch.cat([sample, condition], dim=1),
                                     timesteps=t.expand(sample.shape[0]).to(self.device))
            sample, _ = scheduler.step(predicted.float(), int(t), sample)
            previous = int(t) - stride
            alpha = alphas_cumprod[previous] if previous >= 0 else torch.tensor(1.0, device=self.device)
            # Outside the region the patch is known: put it back at the noise level of the next step.
            known_noisy = alpha.sqrt() * known + (1.0 - alpha).sqrt() * noise
            sample = region * sample + (1.0 - region) * known_noisy
        return sample
