"""Sizing a national deployment from measured unit costs (issue 18 item 7): a pure model.

The inputs are what ``binfoon bench cluster`` measures on a farm (CPU seconds per call of Asterisk
and of the application, database transactions per call, the call's length) and the country's figures
(BINs, households); the carrier's caps are an assumption the operator states. The model answers:
how many channels, calls per second, nodes and database transactions a second it takes to reach
95 % of every BIN within the deadline when every BIN is warned at once (the worst day), and which
part runs out first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class UnitCosts:
    """What one member call costs, as measured."""

    #: Seconds a member call holds a channel from the first ring to hang-up (ringing included).
    call_s: float
    #: CPU seconds per call: one Asterisk's, one ``binfoon serve``'s.
    asterisk_cpu_s: float
    app_cpu_s: float
    #: Database transactions per call (commits and rollbacks, every node together).
    db_tx_per_call: float


@dataclass(frozen=True)
class Country:
    """The day to plan for."""

    bins: int = 1557
    households: int = 180_000
    #: Share of every BIN that must have confirmed within the deadline.
    reach: float = 0.95
    deadline_s: float = 900.0
    #: Calls per confirmation: unanswered first calls are dialled again (retries, second numbers).
    calls_per_confirmation: float = 1.35


@dataclass(frozen=True)
class Plant:
    """What a node and the database can carry (the operator's hardware), and the carrier's caps."""

    #: CPU cores per node, and the share of them the service may use (headroom for peaks).
    cores_per_node: int = 8
    usable_cpu: float = 0.7
    #: Transactions a second the PostgreSQL server sustains for this workload (measured or rated).
    db_tx_per_s: float = 5000.0
    #: The carrier's caps for the whole farm.
    carrier_channels: int = 2000
    carrier_cps: float = 100.0


def size(units: UnitCosts, country: Country = Country(), plant: Plant = Plant()) -> dict[str, object]:
    """The national day: what it needs, what the carrier allows, and the first limit it meets."""
    confirmations = math.ceil(country.households * country.reach)
    calls = confirmations * country.calls_per_confirmation
    # Every BIN warned at once: the whole country's calls must fit in the deadline.
    cps_needed = calls / country.deadline_s
    channels_needed = math.ceil(cps_needed * units.call_s)
    cpu_per_call = units.asterisk_cpu_s + units.app_cpu_s
    node_cps = plant.cores_per_node * plant.usable_cpu / cpu_per_call if cpu_per_call > 0 else math.inf
    nodes_needed = max(2, math.ceil(cps_needed / node_cps) + 1)  # +1: a node may fail on the day
    db_tx_per_s = cps_needed * units.db_tx_per_call
    # With the carrier's caps: how long the day really takes.
    cps_possible = min(plant.carrier_cps, plant.carrier_channels / units.call_s,
                       plant.db_tx_per_s / units.db_tx_per_call if units.db_tx_per_call else math.inf)
    limits = {
        "carrier_cps": plant.carrier_cps,
        "carrier_channels": plant.carrier_channels / units.call_s,
        "database": plant.db_tx_per_s / units.db_tx_per_call if units.db_tx_per_call else math.inf,
    }
    first_limit = min(limits, key=lambda k: limits[k])
    return {
        "inputs": {"units": asdict(units), "country": asdict(country), "plant": asdict(plant)},
        "confirmations_needed": confirmations,
        "calls_needed": round(calls),
        "cps_needed": round(cps_needed, 1),
        "channels_needed": channels_needed,
        "nodes_needed": nodes_needed,
        "node_cps_capacity": round(node_cps, 1),
        "db_tx_per_s_needed": round(db_tx_per_s),
        "cps_possible_with_plant": round(cps_possible, 1),
        "first_limit": first_limit,
        "day_s_with_plant": round(calls / cps_possible) if cps_possible > 0 else None,
        "meets_deadline": calls / cps_possible <= country.deadline_s if cps_possible > 0 else False,
        # Where PostgreSQL becomes the limit: the calls a second at which it is saturated.
        "db_limit_cps": round(plant.db_tx_per_s / units.db_tx_per_call, 1) if units.db_tx_per_call else None,
    }
