"""The scenarios of `bench load`: one module each, registered here in one table.

Each module defines `SCENARIO`, a `bench.load.scenario.Scenario` with its letter; a new
scenario is a new module and one line below. They run, and are reported, in this order.
"""

from __future__ import annotations

from importlib import import_module

from bench.load.scenario import Scenario

MODULES = (
    "a_small_hits",
    "b_large_hits",
    "c_herd",
    "d_mixed",
    "e_miss_cost",
    "f_revalidate",
    "g_range",
    "h_tls_hits",
    "i_h2_hits",
    "j_handshakes",
    "k_compressed_hits",
    "l_identity_page_hits",
    "m_shop_page",
    "n_shop_css",
    "o_shop_photo",
    "p_shop_photo_head_range",
    "q_shop_photo_mid_range",
    "r_shop_revalidate",
    "s_shop_page_load",
    "t_image_variant_hits",
    "u_shop_script_hits",
)


def _load(name: str) -> Scenario:
    scenario = import_module(f"{__name__}.{name}").SCENARIO
    assert isinstance(scenario, Scenario), name
    return scenario


REGISTRY: dict[str, Scenario] = {s.letter: s for s in map(_load, MODULES)}
