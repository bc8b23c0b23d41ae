"""hwmarket's marketplace: the SKU catalogue, sites and hosts, reservations and capacity.

The public face of the package. Everything a user needs is importable from here::

    from marketplace import Store, SkuQuery

    store = Store()                                   # sqlite:///hwmarket.db, or $HWMARKET_DB
    store.import_listings(["examples/listings/acme-jpu.yaml"])
    gpus = store.skus(SkuQuery(accelerator_kind="gpu", min_accelerators=8))
    gpus.to_frame()                                   # a pandas DataFrame

Other modules are importable but not promised.
"""

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
from marketplace.query import SkuList, SkuQuery
from marketplace.store import ImportReport, PlacedSite, Store

__all__ = [
    "Accelerator",
    "AcceleratorKind",
    "Arch",
    "BmcEndpoint",
    "BookingConflict",
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
    "PlacedSite",
    "PowerEnvelope",
    "Pricing",
    "Problem",
    "Region",
    "Site",
    "SitePrice",
    "Sku",
    "SkuList",
    "SkuQuery",
    "Store",
    "StoreError",
    "json_schema",
    "load_inventory",
    "load_listing",
]
