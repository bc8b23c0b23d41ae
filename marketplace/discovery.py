"""Hardware discovery: catalogue values from the documents machines and traces really give.

Two sources, each a pure function of the document's content plus a thin reader of its file:

- ``nvidia-smi -q -x`` (the driver's XML inventory of a machine's GPUs) becomes one
  :class:`~marketplace.catalog.Accelerator`: how many, which model, memory, power limit, link.
- The node list of the Alibaba GPU cluster trace 2023 ("openb": ``sn, cpu_milli, memory_mib,
  gpu, model``) becomes a :class:`~marketplace.catalog.Listing` (one SKU per distinct node
  shape) and an :class:`~marketplace.inventory.Inventory` (one host per node, at one site).

Problems raise :class:`~marketplace.errors.InvalidInput` naming the file, the element or line and
the value, like every other input of hwmarket.

    >>> gpu = accelerator_from_nvidia_smi("nvidia-smi-q.xml")        # doctest: +SKIP
    >>> listing, inventory = skus_from_alibaba_nodes("openb_node_list_all_node.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path

from marketplace.catalog import Accelerator, AcceleratorKind, Cpu, Listing, Sku
from marketplace.errors import InvalidInput, Problem
from marketplace.inventory import Host, Inventory, Metro, Region, Site

# -- nvidia-smi -q -x --------------------------------------------------------------------------

#: Where the power limit is, newest layout first: drivers >= 535 write ``gpu_power_readings``,
#: older ones ``power_readings``. The default limit is the board's TDP; max and the enforced
#: limit are fallbacks for boards that report no default.
_POWER_CONTAINERS = ("gpu_power_readings", "power_readings")
_POWER_LIMITS = (
    "default_power_limit",
    "max_power_limit",
    "enforced_power_limit",
    "current_power_limit",
    "power_limit",
)
_NOT_AVAILABLE = {"", "n/a", "[n/a]", "not supported", "[not supported]", "unknown", "none"}
_QUANTITY = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[A-Za-z]*)\s*$")


def accelerator_from_nvidia_smi(document: str | Path, *, source: str | None = None) -> Accelerator:
    """The GPUs described by an ``nvidia-smi -q -x`` document, as one accelerator spec.

    ``document`` is the XML text (a string starting with ``<``) or the path of a file holding
    it. count is the number of ``<gpu>`` elements (which must agree with ``attached_gpus``: a
    document made with ``-i`` describes only some GPUs); model from ``product_name`` (all GPUs
    must be the same model); memory from ``fb_memory_usage/total`` (MiB, the smallest when
    boards differ); tdp_watts from the default power limit (else the max or enforced one;
    ``None`` when the driver reports none); interconnect "NVLink (NVSwitch fabric)" when the
    GPU reports a fabric state, else the PCIe generation and width of its link.
    """
    if isinstance(document, str) and document.lstrip("\ufeff \t\r\n").startswith("<"):
        return accelerator_from_nvidia_smi_text(document, source or "<nvidia-smi -q -x>")
    path = Path(document)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            [Problem("", f"cannot read the nvidia-smi document: {exc}", str(path), str(path))]
        ) from None
    return accelerator_from_nvidia_smi_text(text, source or str(path))


def accelerator_from_nvidia_smi_text(text: str, source: str = "<nvidia-smi -q -x>") -> Accelerator:
    """Pure core of :func:`accelerator_from_nvidia_smi`: parse the XML ``text``."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else None
        raise InvalidInput(
            [Problem("", f"not well-formed XML ({exc})", text[:40], source, line)]
        ) from None
    problems: list[Problem] = []

    def bad(path: str, message: str, value: object = None) -> None:
        problems.append(Problem(path, message, value, source))

    if root.tag != "nvidia_smi_log":
        bad(root.tag, "expected an nvidia_smi_log document, as `nvidia-smi -q -x` writes", root.tag)
        raise InvalidInput(problems, source)
    gpus = root.findall("gpu")
    if not gpus:
        bad("nvidia_smi_log/gpu", "no <gpu> element")
        raise InvalidInput(problems, source)
    attached = _text(root, "attached_gpus")
    if attached is not None and attached.isdigit() and int(attached) != len(gpus):
        bad(
            "nvidia_smi_log/attached_gpus",
            f"the document describes {len(gpus)} of the attached GPUs (made with `-i`?); "
            "run `nvidia-smi -q -x` without -i to describe them all",
            attached,
        )
    models: list[str] = []
    memories: list[int] = []
    limits: list[int] = []
    for i, gpu in enumerate(gpus):
        at = f"nvidia_smi_log/gpu[{i}]"
        model = _text(gpu, "product_name")
        if model is None:
            bad(f"{at}/product_name", "missing or N/A")
        else:
            models.append(model)
        if _text(gpu, "fb_memory_usage/total") is None:
            bad(f"{at}/fb_memory_usage/total", "missing or N/A (expected e.g. '81559 MiB')")
        memory = _quantity(gpu, "fb_memory_usage/total", {"mib": 2**20}, at, source, problems)
        if memory is not None:
            memories.append(memory)
        watts = _power_limit(gpu, at, source, problems)
        if watts is not None:
            limits.append(watts)
    if len(set(models)) > 1:
        bad(
            "nvidia_smi_log/gpu/product_name",
            "GPUs of different models; an accelerator spec describes one model",
            sorted(set(models)),
        )
    if problems:
        raise InvalidInput(problems, source)
    try:
        return Accelerator(
            count=len(gpus),
            kind=AcceleratorKind.GPU,
            vendor="nvidia",
            model=models[0],
            memory=min(memories),
            tdp_watts=max(limits) if limits else None,
            interconnect=_interconnect(gpus[0]),
        )
    except ValueError as exc:  # pydantic's ValidationError: a value out of the catalogue's range
        raise InvalidInput([Problem("nvidia_smi_log/gpu", str(exc), None, source)]) from None


def _text(element: ET.Element, path: str) -> str | None:
    found = element.find(path)
    if found is None or found.text is None:
        return None
    value = found.text.strip()
    return None if value.lower() in _NOT_AVAILABLE else value


def _quantity(
    element: ET.Element,
    path: str,
    units: Mapping[str, int],
    at: str,
    source: str,
    problems: list[Problem],
) -> int | None:
    """An integer in the base unit from ``'81559 MiB'`` / ``'700.00 W'``; None when N/A."""
    value = _text(element, path)
    if value is None:
        return None
    m = _QUANTITY.match(value)
    factor = units.get(m.group("unit").lower()) if m else None
    if m is None or factor is None:
        accepted = " or ".join(f"'NUMBER {u}'" for u in units)
        problems.append(Problem(f"{at}/{path}", f"expected {accepted}", value, source))
        return None
    try:
        return int((Decimal(m.group("num")) * factor).to_integral_value())
    except InvalidOperation:  # the regex admits only digits; kept for a clear message anyway
        problems.append(Problem(f"{at}/{path}", "not a number", value, source))
        return None


def _power_limit(gpu: ET.Element, at: str, source: str, problems: list[Problem]) -> int | None:
    for container in _POWER_CONTAINERS:
        for name in _POWER_LIMITS:
            watts = _quantity(gpu, f"{container}/{name}", {"w": 1}, at, source, problems)
            if watts:
                return watts
    return None


def _interconnect(gpu: ET.Element) -> str | None:
    # The fabric block is filled only on NVSwitch systems (HGX/DGX, fabric manager running);
    # on a PCIe board, or an SXM board without NVSwitch, every field is N/A.
    if _text(gpu, "fabric/state") is not None:
        return "NVLink (NVSwitch fabric)"
    gen = _text(gpu, "pci/pci_gpu_link_info/pcie_gen/max_link_gen")
    width = _text(gpu, "pci/pci_gpu_link_info/link_widths/max_link_width")
    if gen is None and width is None:
        return None
    parts = ["PCIe"]
    if gen is not None:
        parts.append(f"Gen{gen}")
    if width is not None:
        parts.append(width if width.startswith("x") else f"x{width.rstrip('x')}")
    return " ".join(parts)


# -- the Alibaba openb node list -------------------------------------------------------------

#: GPU models the trace names that are public parts: vendor and memory per board. G1, G2 and G3
#: are Alibaba's undisclosed internal codes: their vendor and memory are not known.
PUBLIC_GPUS: dict[str, tuple[str, str]] = {
    "T4": ("nvidia", "16GiB"),
    "P100": ("nvidia", "16GiB"),
    "V100M16": ("nvidia", "16GiB"),
    "V100M32": ("nvidia", "32GiB"),
    "A10": ("nvidia", "24GiB"),
}
UNDISCLOSED_VENDOR = "undisclosed"
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
NodeShape = tuple[int, int, int, str]  # (cpu_milli, memory_mib, gpu count, gpu model)


def skus_from_alibaba_nodes(
    csv_path: str | Path,
    *,
    vendor: str = "alibaba-openb",
    site: str = "openb1",
    slug_prefix: str = "openb",
) -> tuple[Listing, Inventory]:
    """SKUs and hosts from the Alibaba openb node list (``openb_node_list_all_node.csv``).

    Reads the file and calls :func:`skus_from_node_rows`; see there for what is built.
    """
    path = Path(csv_path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in NODE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InvalidInput(
                    [
                        Problem(
                            "header",
                            f"missing columns {missing}; expected {', '.join(NODE_COLUMNS)}",
                            reader.fieldnames,
                            str(path),
                            1,
                        )
                    ]
                )
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(
            [Problem("", f"cannot read the node list: {exc}", str(path), str(path))]
        ) from None
    return skus_from_node_rows(
        rows, source=str(path), vendor=vendor, site=site, slug_prefix=slug_prefix
    )


def skus_from_node_rows(
    rows: Iterable[Mapping[str, str | None]],
    *,
    source: str = "<node list>",
    vendor: str = "alibaba-openb",
    site: str = "openb1",
    slug_prefix: str = "openb",
) -> tuple[Listing, Inventory]:
    """Pure core of :func:`skus_from_alibaba_nodes`: node rows (``sn, cpu_milli, memory_mib, gpu,
    model`` as text, the header being line 1) to a listing and an inventory.

    One SKU per distinct (cpu_milli, memory_mib, gpu, model), slug
    ``{slug_prefix}.c{cores}.m{GiB}g[.{gpu}x-{model}]`` (e.g. ``openb.c64.m256g.8x-v100m16``;
    memory that is not whole GiB is written ``m{MiB}m``). The trace discloses neither CPU model
    nor architecture: one socket of ``cpu_milli / 1000`` cores, model "unknown (Alibaba openb)",
    arch x86_64 (Alibaba's GPU servers of that era). No prices: the trace has none. The inventory
    holds one region ("alibaba"), metro ("alibaba-openb") and ``site`` (country CN, time zone
    Asia/Shanghai: assumptions, the trace names no place) and one host per node, id = ``sn``,
    without a BMC.
    """
    problems: list[Problem] = []
    shapes: dict[NodeShape, list[str]] = {}
    for i, row in enumerate(rows):
        shape = _node_shape(row, i + 2, source, problems)
        if shape is not None:
            shapes.setdefault(shape, []).append(str(row.get("sn") or "").strip())
    if problems:
        raise InvalidInput(problems, source)
    if not shapes:
        raise InvalidInput([Problem("", "no nodes in the node list", None, source)])
    skus: list[Sku] = []
    hosts: list[Host] = []
    try:
        for shape in sorted(shapes):
            sku = _sku_of_shape(shape, len(shapes[shape]), slug_prefix)
            skus.append(sku)
            hosts += [Host(id=sn, sku=sku.slug, site=site) for sn in shapes[shape]]
        listing = Listing(vendor=vendor, skus=skus)
        place = Site(
            code=site,
            name=f"Alibaba openb cluster ({site})",
            country="CN",
            timezone="Asia/Shanghai",
        )
        region = Region(
            code="alibaba",
            name="Alibaba (trace; location undisclosed)",
            metros=[Metro(code="alibaba-openb", name="Alibaba openb cluster", sites=[place])],
        )
        inventory = Inventory(regions=[region], hosts=hosts)
    except ValueError as exc:  # pydantic: a host id, slug prefix or site code the catalogue refuses
        raise InvalidInput([Problem("", str(exc), None, source)], source) from None
    return listing, inventory


def _node_shape(
    row: Mapping[str, str | None], line: int, source: str, problems: list[Problem]
) -> NodeShape | None:
    numbers: dict[str, int] = {}
    for column in ("cpu_milli", "memory_mib", "gpu"):
        raw = (row.get(column) or "").strip()
        if not raw.isdigit():
            problems.append(
                Problem(column, "expected a non-negative whole number", raw, source, line)
            )
        else:
            numbers[column] = int(raw)
    model = (row.get("model") or "").strip()
    if not (row.get("sn") or "").strip():
        problems.append(Problem("sn", "missing node serial", row.get("sn"), source, line))
    if len(numbers) < 3:
        return None
    cpu_milli, memory_mib, gpus = numbers["cpu_milli"], numbers["memory_mib"], numbers["gpu"]
    if cpu_milli == 0 or cpu_milli % 1000:
        problems.append(
            Problem(
                "cpu_milli",
                "expected whole cores (a positive multiple of 1000)",
                cpu_milli,
                source,
                line,
            )
        )
    if memory_mib == 0:
        problems.append(Problem("memory_mib", "a node has memory", memory_mib, source, line))
    if gpus and not model:
        problems.append(Problem("model", f"{gpus} GPUs but no model", model, source, line))
    if not gpus and model:
        problems.append(Problem("gpu", f"0 GPUs but model {model!r}", gpus, source, line))
    return cpu_milli, memory_mib, gpus, model


def _sku_of_shape(shape: NodeShape, nodes: int, slug_prefix: str) -> Sku:
    cpu_milli, memory_mib, gpus, model = shape
    cores = cpu_milli // 1000
    memory = f"{memory_mib // 1024}g" if memory_mib % 1024 == 0 else f"{memory_mib}m"
    memory_text = f"{memory_mib // 1024} GiB" if memory_mib % 1024 == 0 else f"{memory_mib} MiB"
    slug = f"{slug_prefix}.c{cores}.m{memory}"
    name = f"Alibaba openb {cores}-core, {memory_text}"
    accelerators = []
    if gpus:
        slug += f".{gpus}x-{_slug_part(model)}"
        name += f", {gpus}x {model}"
        gpu_vendor, gpu_memory = PUBLIC_GPUS.get(model, (UNDISCLOSED_VENDOR, None))
        accelerators.append(
            Accelerator(
                count=gpus,
                kind=AcceleratorKind.GPU,
                vendor=gpu_vendor,
                model=model,
                memory=gpu_memory,
            )
        )
    return Sku(
        slug=slug,
        name=name,
        description=(
            "A node shape of the Alibaba GPU cluster trace 2023 (openb; Weng et al., USENIX ATC "
            f"2023): {nodes} node{'s' if nodes != 1 else ''}. The trace discloses no CPU model; "
            "cores = cpu_milli / 1000."
        ),
        arch="x86_64",
        cpus=[Cpu(model="unknown (Alibaba openb)", sockets=1, cores=cores)],
        memory=memory_mib * 2**20,
        accelerators=accelerators,
    )


def _slug_part(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unnamed"


__all__ = [
    "PUBLIC_GPUS",
    "accelerator_from_nvidia_smi",
    "accelerator_from_nvidia_smi_text",
    "skus_from_alibaba_nodes",
    "skus_from_node_rows",
]
