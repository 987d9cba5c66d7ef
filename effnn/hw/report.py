"""Per-layer and whole-network reports of the systolic model, as JSON-ready dicts or a rich table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from rich.table import Table

from effnn.hw.layers import Layer
from effnn.hw.systolic import LayerCost, SystolicArray

_COUNTS = ("macs", "compute_cycles", "stall_cycles", "total_cycles", "prefetch_cycles", "total_cycles_incl_prefetch",
           "sram_reads_ifmap",
           "sram_reads_filter", "sram_writes_ofmap", "dram_reads_ifmap", "dram_reads_filter",
           "dram_writes_ofmap")


def total_cost(costs: Sequence[LayerCost], array: SystolicArray) -> dict[str, Any]:
    """Whole-workload totals in the per-layer JSON shape.

    Counts, cycles, energy and latency add up; ``overall_util`` is over the summed cycles, and
    ``mapping_efficiency``/``compute_util`` are averaged over layers weighted by their compute cycles.
    """
    sums = {key: sum(getattr(c, key) for c in costs) for key in _COUNTS}
    busy = sum(c.compute_cycles for c in costs) or 1
    energy = sum(c.energy for c in costs)
    latency_s = sum(c.latency_s for c in costs)
    total = LayerCost(
        name="total", **sums,
        overall_util=100.0 * sums["macs"] / (max(sums["total_cycles"], 1) * array.num_pes),
        mapping_efficiency=sum(c.mapping_efficiency * c.compute_cycles for c in costs) / busy,
        compute_util=sum(c.compute_util * c.compute_cycles for c in costs) / busy,
        energy=energy,
        energy_breakdown={lvl: sum(c.energy_breakdown[lvl] for c in costs)
                          for lvl in costs[0].energy_breakdown},
        latency_s=latency_s,
    ).as_dict()
    total["latency_ms"] = latency_s * 1e3
    total["edp"] = energy * latency_s * 1e3  # energy x latency_ms, like the cost models' ``edp``
    return total


def hardware_dict(array: SystolicArray) -> dict[str, Any]:
    """The array's config as plain data (energy table inlined), for reports."""
    data = asdict(array)
    data["dram_bandwidth"] = list(array.dram_bandwidth) if array.dram_bandwidth is not None else "CALC"
    return data


def workload_report(array: SystolicArray, layers: Sequence[Layer], extra_total: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """``{"hardware": ..., "layers": [...], "total": {...}}``: what ``tools/hwcost.py --json`` prints."""
    costs = array.simulate(layers)
    total = total_cost(costs, array)
    total.update(extra_total or {})
    return {"hardware": hardware_dict(array), "energy_unit": array.energy_table.unit,
            "layers": [c.as_dict() for c in costs], "total": total}


def report_table(report: dict[str, Any], title: str = "") -> Table:
    """A readable rich table of a :func:`workload_report` (one row per layer plus the total)."""
    unit = report.get("energy_unit", "")
    table = Table(title=title or None, show_lines=False)
    columns = [("layer", "left"), ("MACs", "right"), ("compute cyc", "right"), ("stall", "right"),
               ("util %", "right"), ("map eff %", "right"), ("SRAM rd if/f", "right"),
               ("SRAM wr of", "right"),
               ("DRAM rd if/f", "right"), ("DRAM wr of", "right"), (f"energy [{unit}]", "right"),
               ("latency us", "right")]
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=name != "layer", overflow="fold")
    rows = [*report["layers"], report["total"]]
    for i, row in enumerate(rows):
        table.add_row(
            row["name"], f"{row['macs']:,}", f"{row['compute_cycles']:,}", f"{row['stall_cycles']:,}",
            f"{row['overall_util']:.1f}", f"{row['mapping_efficiency']:.1f}",
            f"{row['sram_reads']['ifmap']:,}/{row['sram_reads']['filter']:,}",
            f"{row['sram_writes']['ofmap']:,}",
            f"{row['dram_reads']['ifmap']:,}/{row['dram_reads']['filter']:,}",
            f"{row['dram_writes']['ofmap']:,}",
            f"{row['energy']:.4g}", f"{row['latency_s'] * 1e6:.2f}",
            end_section=i == len(rows) - 2,
        )
    return table
