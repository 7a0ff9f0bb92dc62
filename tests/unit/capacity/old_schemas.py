"""Tables as earlier ledger schema versions created them, to test the migrations from them."""

from __future__ import annotations

#: The quota table as schema versions 1 to 3 created it (whole GPUs only).
V1_QUOTAS = """
CREATE TABLE capacity_quotas (
    team VARCHAR(128) NOT NULL, pool VARCHAR(128) NOT NULL REFERENCES capacity_pools (name),
    nominal INTEGER NOT NULL, borrowing_limit INTEGER, lending_limit INTEGER, updated_at DATETIME NOT NULL,
    PRIMARY KEY (team, pool))
"""
