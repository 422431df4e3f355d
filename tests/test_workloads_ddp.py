"""One workload of each zoo family trained in real DDP (2 gloo processes) with our hook."""
import math

import pytest
import torch.multiprocessing as mp

from experiments.workloads import FAMILIES
from tests import ddp_procs as P

# one per family; pvrnn also exercises worker-local parameters kept outside DDP
CHOICES = {"sequence": "pvrnn", "generative": "rddm"}


@pytest.mark.parametrize("family", sorted(CHOICES))
def test_one_workload_per_family_trains_in_ddp(family, tmp_path):
    wid = CHOICES[family]
    if wid not in FAMILIES[family]:
        pytest.skip(f"{wid} is not registered yet")
    mp.start_processes(P.run_workload_ddp, args=(2, P.free_port(), str(tmp_path), wid, 4), nprocs=2, join=True,
                       start_method="fork")
    from simulator.history import History

    rows = History.read(tmp_path)
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["bits_up"] > 0
