"""Pools, team quotas and the nodes of a pool, as the ledger stores them.

Each write locks the pool row first, so changing a pool or a quota serialises with the
acquires that read them.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, and_, select, update

from nuro_ml.capacity import schema
from nuro_ml.capacity.ledger_rows import quota_columns, quota_from_row
from nuro_ml.capacity.ledger_store import LedgerStore, chunks, lock_pool, upsert
from nuro_ml.capacity.placement import NodeSpec, NodeState, Share, node_states
from nuro_ml.capacity.records import LeaseState, Pool, Quota, gpu_quantity
from nuro_ml.exceptions import CapacityError


class PoolRegistry:
    """Pools, quotas and nodes of one ledger database."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    def upsert_pool(self, name: str, *, capacity: int, gpu_type: str | None = None) -> Pool:
        if not name:
            raise CapacityError("pool name must not be empty")
        if int(capacity) < 0:
            raise CapacityError(f"pool {name!r}: capacity must be >= 0, got {capacity}")
        pool = Pool(name=name, capacity=int(capacity), gpu_type=gpu_type)
        with self.store.write() as conn:
            lock_pool(conn, name)
            now = self.store.now()
            upsert(
                conn,
                schema.pools,
                {"name": name, "capacity": pool.capacity, "gpu_type": gpu_type, "updated_at": now},
                ["name"],
            )
        return pool

    def upsert_quota(
        self,
        team: str,
        pool: str,
        *,
        nominal: float | str,
        borrowing_limit: float | str | None = None,
        lending_limit: float | str | None = None,
    ) -> Quota:
        """Create or change a team's quota; amounts in GPUs (``2.5``) or milli-GPUs (``"2500m"``)."""
        if not team:
            raise CapacityError("team name must not be empty")
        where = f"quota {team!r}/{pool!r}"
        quota = Quota(
            team=team,
            pool=pool,
            nominal=gpu_quantity(nominal, what=f"{where}: nominal"),
            borrowing_limit=None
            if borrowing_limit is None
            else gpu_quantity(borrowing_limit, what=f"{where}: borrowing_limit"),
            lending_limit=None
            if lending_limit is None
            else gpu_quantity(lending_limit, what=f"{where}: lending_limit"),
        )
        with self.store.write() as conn:
            if lock_pool(conn, pool) is None:
                raise CapacityError(
                    f"cannot set quota of team {team!r}: pool {pool!r} is not registered in ledger "
                    f"{self.store.safe_url} (register it with upsert_pool or `nuro-ml quota set-pool`)"
                )
            upsert(
                conn,
                schema.quotas,
                {"team": team, "pool": pool, **quota_columns(quota, self.store.now())},
                ["team", "pool"],
            )
        return quota

    def remove_quota(self, team: str, pool: str) -> bool:
        with self.store.write() as conn:
            lock_pool(conn, pool)
            result = conn.execute(
                schema.quotas.delete().where(and_(schema.quotas.c.team == team, schema.quotas.c.pool == pool))
            )
        return bool(result.rowcount)

    def pools(self) -> list[Pool]:
        with self.store.read() as conn:
            rows = conn.execute(select(schema.pools).order_by(schema.pools.c.name)).all()
        return [Pool(name=r.name, capacity=r.capacity, gpu_type=r.gpu_type) for r in rows]

    def quotas(self, pool: str | None = None) -> list[Quota]:
        query = select(schema.quotas).order_by(schema.quotas.c.pool, schema.quotas.c.team)
        if pool is not None:
            query = query.where(schema.quotas.c.pool == pool)
        with self.store.read() as conn:
            rows = conn.execute(query).all()
        return [quota_from_row(r) for r in rows]

    def set_nodes(self, pool: str, nodes: Sequence[NodeSpec]) -> Pool:
        names = [n.name for n in nodes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise CapacityError(f"pool {pool!r}: nodes {duplicates} are declared more than once")
        now = self.store.now()
        with self.store.write() as conn:
            row = lock_pool(conn, pool)
            if row is None:
                raise CapacityError(
                    f"cannot declare nodes of pool {pool!r}: it is not registered in ledger "
                    f"{self.store.safe_url}"
                )
            conn.execute(schema.nodes.delete().where(schema.nodes.c.pool == pool))
            if nodes:
                conn.execute(
                    schema.nodes.insert(),
                    [
                        {
                            "pool": pool,
                            "name": n.name,
                            "gpus": n.gpus,
                            "gpu_model": n.gpu_model,
                            "cpu_milli": n.cpu_milli,
                            "memory_mib": n.memory_mib,
                            "updated_at": now,
                        }
                        for n in nodes
                    ],
                )
            capacity = sum(n.gpus for n in nodes)
            conn.execute(
                update(schema.pools)
                .where(schema.pools.c.name == pool)
                .values(capacity=capacity, updated_at=now)
            )
        return Pool(name=pool, capacity=capacity, gpu_type=row.gpu_type)

    def nodes(self, pool: str) -> list[NodeSpec]:
        with self.store.read() as conn:
            return pool_nodes(conn, pool)

    def node_usage(self, pool: str) -> list[NodeState]:
        now = self.store.now()
        with self.store.read() as conn:
            specs = pool_nodes(conn, pool)
            live = conn.execute(
                select(schema.leases.c.lease_id).where(
                    and_(
                        schema.leases.c.pool == pool,
                        schema.leases.c.state == LeaseState.ACTIVE.value,
                        schema.leases.c.expires_at > now,
                    )
                )
            ).scalars()
            return node_states(specs, held_shares(conn, list(live)))


def pool_nodes(conn: Connection, pool: str) -> list[NodeSpec]:
    """The nodes declared for ``pool``, by name."""
    rows = conn.execute(
        select(schema.nodes).where(schema.nodes.c.pool == pool).order_by(schema.nodes.c.name)
    ).all()
    return [NodeSpec(r.name, r.gpus, r.gpu_model, r.cpu_milli, r.memory_mib) for r in rows]


def held_shares(conn: Connection, lease_ids: Sequence[str]) -> dict[str, list[Share]]:
    """The GPU shares the leases ``lease_ids`` hold, by node."""
    held: dict[str, list[Share]] = {}
    for chunk in chunks(list(lease_ids)):
        for row in conn.execute(
            select(schema.lease_shares).where(schema.lease_shares.c.lease_id.in_(chunk))
        ).all():
            held.setdefault(row.node, []).append(Share(row.node, row.gpu, row.milli))
    return held
