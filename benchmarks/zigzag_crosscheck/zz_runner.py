"""Runs inside ZigZag's own venv (/tmp/zz): every workload YAML in a folder on its accelerator and mapping,
prints one JSON object {layer: {"energy_pj", "latency_cycles", "mac_energy_pj", "mem_energy_pj"}}.

Usage: /tmp/zz/bin/python zz_runner.py INPUT_DIR OPT LPF_LIMIT   (OPT: energy, latency or EDP; LPF_LIMIT: LOMA's
loop-prime-factor limit; written by crosscheck.py)
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

from zigzag.api import get_hardware_performance_zigzag


def main(folder: str, opt: str, lpf_limit: int) -> int:
    root = Path(folder)
    out = {}
    for arch in sorted(root.glob("arch_*.yaml")):
        tag = arch.stem[len("arch_"):]
        for workload in sorted(root.glob("layer_*.yaml")):
            name = workload.stem[len("layer_"):]
            mapping = root / f"mapping_{name}.yaml"
            with tempfile.TemporaryDirectory() as dump:
                energy, latency, cmes = get_hardware_performance_zigzag(
                    str(workload), str(arch), str(mapping), opt=opt, dump_folder=dump,
                    pickle_filename=f"{dump}/cmes.pickle", lpf_limit=lpf_limit, loma_show_progress_bar=False)
            cme = cmes[0][0]
            out[f"{tag}/{name}"] = {"energy_pj": float(energy), "latency_cycles": float(latency),
                                    "mac_energy_pj": float(cme.mac_energy), "mem_energy_pj": float(cme.mem_energy)}
            print(f"{tag}/{name}: {energy:.4g} pJ, {latency:.4g} cycles", file=sys.stderr, flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
