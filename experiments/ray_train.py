"""The Ray Train path: ``TorchTrainer`` runs experiments.ddp_train's loop on N workers, with
our comm hook registered on the module ``ray.train.torch.prepare_model`` returns -- the way a
Ray Train user adds any DDP hook. ``distopt train --backend ray-train``; local Ray by default.
"""
from __future__ import annotations

import argparse
import os


def _loop(config: dict) -> None:
    import ray.train
    import ray.train.torch as rt
    import torch.distributed as dist

    from experiments.ddp_train import train

    args = argparse.Namespace(**config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()

    def wrap(module):
        model = rt.prepare_model(module)
        if not hasattr(model, "register_comm_hook"):  # world size 1: prepare_model returns the module
            raise ValueError("the Ray Train path needs >= 2 workers (DDP is only set up for several)")
        return model

    every = max(1, args.rounds // 10)  # ray.train.report costs ~1 s: about ten reports per run

    def report(row):  # every worker reports at the same steps: ray.train.report synchronises them
        if row["round"] % every == 0 or row["round"] == args.rounds:
            ray.train.report({k: float(v) for k, v in row.items()})

    train(args, rank, world, report=report, wrap=wrap)
    if dist.is_initialized():
        dist.barrier()


def fit(args, num_workers: int, address: str | None = None, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0):
    """Run ``args`` (experiments.ddp_train flags) on ``num_workers`` Ray Train workers."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from workers.cluster import connect

    connect(address, need_cpus=num_workers * cpus_per_worker)
    trainer = TorchTrainer(
        _loop,
        train_loop_config={**vars(args), "out": os.path.abspath(args.out) if args.out else None},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker={"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}),
        run_config=RunConfig(storage_path=os.path.abspath(os.path.join(args.out or "runs", "ray_train"))),
    )
    return trainer.fit()
