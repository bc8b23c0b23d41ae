"""hwmarket's marketplace: the SKU catalogue, sites and hosts, reservations and capacity.

The public face of the package. Everything a user needs is importable from here::

    from marketplace import Store, SkuQuery

    store = Store()                                   # sqlite:///hwmarket.db, or $HWMARKET_DB
    store.import_listings(["examples/listings/acme-jpu.yaml"])
    gpus = store.skus(SkuQuery(accelerator_kind="gpu", min_accelerators=8))
    gpus.to_frame()                                   # a pandas DataFrame
    r = reserve(store, {"customer": "acme", "count": 2, "sku": "c3.small.x86",
                        "start": start, "end": end})  # atomic; NoCapacity says what was short

Other modules are importable but not promised.
"""

from marketplace.booking import available, quote, reserve
from marketplace.capacity import CapacityView, capacity, holdings
from marketplace.catalog import (
    Accelerator,
    AcceleratorKind,
    Arch,
    Cpu,
    Drive,
    Listing,
    Nic,
    PowerEnvelope,
    Pricing,
    SitePrice,
    Sku,
)
from marketplace.discovery import accelerator_from_nvidia_smi, skus_from_alibaba_nodes
from marketplace.documents import json_schema, load_inventory, load_listing
from marketplace.errors import (
    BookingConflict,
    HwmarketError,
    InvalidInput,
    InvalidState,
    NoCapacity,
    NotFound,
    Problem,
    StoreError,
)
from marketplace.inventory import BmcEndpoint, Host, HostState, Inventory, Metro, Region, Site
from marketplace.lifecycle import (
    cancel,
    extend,
    fail_host,
    get_reservation,
    list_reservations,
    release,
    reservation_events,
    schedule_maintenance,
)
from marketplace.query import SkuList, SkuQuery
from marketplace.reservations import (
    CapacityLevel,
    Offer,
    Request,
    Reservation,
    ReservationEvent,
    ReservationState,
)
from marketplace.store import ImportReport, PlacedSite, Store

__all__ = [
    "Accelerator",
    "AcceleratorKind",
    "Arch",
    "BmcEndpoint",
    "BookingConflict",
    "CapacityLevel",
    "CapacityView",
    "Cpu",
    "Drive",
    "Host",
    "HostState",
    "HwmarketError",
    "ImportReport",
    "InvalidInput",
    "InvalidState",
    "Inventory",
    "Listing",
    "Metro",
    "Nic",
    "NoCapacity",
    "NotFound",
    "Offer",
    "PlacedSite",
    "PowerEnvelope",
    "Pricing",
    "Problem",
    "Region",
    "Request",
    "Reservation",
    "ReservationEvent",
    "ReservationState",
    "Site",
    "SitePrice",
    "Sku",
    "SkuList",
    "SkuQuery",
    "Store",
    "StoreError",
    "accelerator_from_nvidia_smi",
    "available",
    "cancel",
    "capacity",
    "extend",
    "fail_host",
    "get_reservation",
    "holdings",
    "json_schema",
    "list_reservations",
    "load_inventory",
    "load_listing",
    "quote",
    "release",
    "reservation_events",
    "reserve",
    "schedule_maintenance",
    "skus_from_alibaba_nodes",
]
