"""The multi-node tests of the shared tier, the purge bus and cross-node collapsing, run
again on a Sentinel set and on a Redis Cluster (their own modules run them on one Redis).
Each test is the one of its module, unchanged: only `redis_url` differs. (test_store_redis.py
and test_purge_nodes.py run on the three modes themselves.)"""

from __future__ import annotations

import pytest

from tests.edge.test_proxy import (
    test_collapsing_across_three_nodes,
    test_purge_reaches_every_node,
    test_two_nodes_share_the_redis_tier,
)
from tests.edge.test_purge import (
    cluster,
    test_a_fill_that_raced_a_purge_is_not_stored,
    test_hard_purges_reach_every_node,
    test_soft_purges_revalidate_on_every_node,
    test_unsafe_methods_invalidate_on_every_node_and_metrics,
)
from tests.edge.test_slices import test_another_node_serves_the_slices_from_redis
from tests.redis_modes import mode_url, slot_errors_fixture

pytestmark = pytest.mark.redis

no_slot_errors = slot_errors_fixture()

__all__ = [
    "cluster",
    "test_a_fill_that_raced_a_purge_is_not_stored",
    "test_another_node_serves_the_slices_from_redis",
    "test_collapsing_across_three_nodes",
    "test_hard_purges_reach_every_node",
    "test_purge_reaches_every_node",
    "test_soft_purges_revalidate_on_every_node",
    "test_two_nodes_share_the_redis_tier",
    "test_unsafe_methods_invalidate_on_every_node_and_metrics",
]


@pytest.fixture(params=["sentinel", "cluster"])
def redis_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    return mode_url(str(request.param), redis_url)
