"""Azure ML (``DEPLOY_AZURE``): what is built so far - the instance type of a deployment.

The original deployed to Azure Container Instances, sized by ``cpu_cores`` and
``allocated_ram`` (GB). Managed online endpoints (``azure-ai-ml``, SDK v2) run on VM
sizes instead: a deployment gets the smallest size of ``INSTANCE_TYPES`` (fewest cores,
then least memory) with at least the cores and the memory asked for. Sizes are those
Azure lists for managed online endpoints; Azure reserves part of each VM for itself, so
the model gets somewhat less than the size's total.
"""

from __future__ import annotations

from shared.errors import InvalidPayload

# (VM size, vCPUs, memory GiB), smallest first.
INSTANCE_TYPES: tuple[tuple[str, int, float], ...] = (
    ("Standard_DS1_v2", 1, 3.5),
    ("Standard_F2s_v2", 2, 4.0),
    ("Standard_DS2_v2", 2, 7.0),
    ("Standard_E2s_v3", 2, 16.0),
    ("Standard_F4s_v2", 4, 8.0),
    ("Standard_DS3_v2", 4, 14.0),
    ("Standard_E4s_v3", 4, 32.0),
    ("Standard_F8s_v2", 8, 16.0),
    ("Standard_DS4_v2", 8, 28.0),
    ("Standard_E8s_v3", 8, 64.0),
    ("Standard_F16s_v2", 16, 32.0),
    ("Standard_DS5_v2", 16, 56.0),
    ("Standard_E16s_v3", 16, 128.0),
    ("Standard_F32s_v2", 32, 64.0),
    ("Standard_E32s_v3", 32, 256.0),
    ("Standard_F48s_v2", 48, 96.0),
    ("Standard_F64s_v2", 64, 128.0),
    ("Standard_E64s_v3", 64, 432.0),
    ("Standard_F72s_v2", 72, 144.0),
)


def instance_type_for(cpu_cores: float, allocated_ram: float) -> str:
    """The smallest VM size with at least ``cpu_cores`` vCPUs and ``allocated_ram`` GiB."""
    for name, cores, memory in INSTANCE_TYPES:
        if cores >= cpu_cores and memory >= allocated_ram:
            return name
    largest = max(c for _, c, _ in INSTANCE_TYPES), max(m for _, _, m in INSTANCE_TYPES)
    raise InvalidPayload(
        f"no managed online endpoint VM size has {cpu_cores:g} cores and {allocated_ram:g} GiB "
        f"(at most {largest[0]} cores, {largest[1]:g} GiB)",
        field="cpu_cores" if cpu_cores > largest[0] else "allocated_ram",
    )
