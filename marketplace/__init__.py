"""hwmarket's marketplace: the SKU catalogue, sites and hosts, reservations and capacity."""
