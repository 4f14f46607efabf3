"""Run by torchrun in test_train.py: trains a tiny config on 2 processes; each rank saves the weights it ends
with, so that the test can compare them."""

import sys

import torch
import torch.distributed as dist

from sdfsrn_fast.study.train import preset_config, train

out = sys.argv[1]
cfg = preset_config("quick", out=out, num_shapes=6, epochs=8, rays=12, samples=12, hidden=32, latent=16,
                    eval_samples=16, fit_sphere_steps=30, eval_every=0, figures=False, batch_size=4,
                    eikonal_points=64, encoder="tiny_encoder:TinyEncoder")
result = train(cfg, progress=False)
state = {**{f"enc.{k}": v for k, v in result.encoder.state_dict().items()},
         **{f"dec.{k}": v for k, v in result.decoder.state_dict().items()}}
torch.save(state, f"{out}/rank{dist.get_rank()}.pt")
dist.destroy_process_group()
