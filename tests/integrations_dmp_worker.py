"""One rank of the DistributedModelParallel check (tests/test_integrations_torchrec.py): a DLRM sharded
table-wise over two gloo processes on CPU, `unshard` into a plain copy on rank 0, and a comparison of
the two forwards, the refused attach and the unsharded copy's view, written as JSON by rank 0.

Usage: python integrations_dmp_worker.py RANK WORLD_SIZE PORT OUT_JSON"""

from __future__ import annotations

import json
import os
import sys
import warnings

warnings.simplefilter("ignore")


def main(rank: int, world: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.distributed.types import ShardingType
    from torchrec.models.dlrm import DLRM

    from ctrlens.integrations.torchrec import attach, unshard
    from ctrlens.models.interface import InterfaceError

    tables = [EmbeddingBagConfig(name="item", embedding_dim=4, num_embeddings=20, feature_names=["item_id", "hist_item_id"]),
              EmbeddingBagConfig(name="user", embedding_dim=4, num_embeddings=30, feature_names=["user_id"])]  # fmt: skip

    def build(device):
        torch.manual_seed(0)
        ebc = EmbeddingBagCollection(tables=tables, device=torch.device(device))
        return DLRM(ebc, dense_in_features=2, dense_arch_layer_sizes=[6, 4], over_arch_layer_sizes=[5, 1],
                    dense_device=torch.device("cpu"))  # fmt: skip

    cons = {t.name: ParameterConstraints(sharding_types=[ShardingType.TABLE_WISE.value]) for t in tables}
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=world, compute_device="cpu"), constraints=cons)
    model = build("meta")
    plan = planner.collective_plan(model, [EmbeddingBagCollectionSharder()], dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(model, device=torch.device("cpu"), plan=plan)
    g = torch.Generator().manual_seed(rank)
    B = 6
    lengths = torch.cat([torch.ones(B, dtype=torch.long), torch.randint(0, 4, (B,), generator=g), torch.ones(B, dtype=torch.long)])
    values = torch.randint(0, 20, (int(lengths.sum()),), generator=g)
    values[-B:] = torch.randint(0, 30, (B,), generator=g)
    kjt = KeyedJaggedTensor(keys=["item_id", "hist_item_id", "user_id"], values=values, lengths=lengths)
    dense = torch.randn(B, 2, generator=g)
    with torch.no_grad():
        y_sharded = dmp(dense, kjt).reshape(-1)
    plain = unshard(dmp, build("cpu"))
    res: dict = {"sharding": {t: str(p.sharding_type) for t, p in plan.plan["sparse_arch.embedding_bag_collection"].items()}}
    if rank == 0:
        with torch.no_grad():
            y_plain = plain(dense, kjt).reshape(-1)
        res["max_abs_diff"] = float((y_plain - y_sharded).abs().max())
        try:
            attach(dmp, forward=lambda m, b: {})
            res["refused"] = None
        except InterfaceError as e:
            res["refused"] = str(e)
        v = attach(plain, forward=lambda m, b: {})
        res["tables"] = sorted(v.tables)
        res["fields"] = sorted(v.fields)
        with open(out, "w") as f:
            json.dump(res, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
