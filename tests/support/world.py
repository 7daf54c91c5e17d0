"""A small hand-built region tree and ports that tests add prices to.

    world
    ├── europe
    │   ├── north_europe ── scandinavia ── (NOOSL, SEGOT)
    │   │   └── (DEHAM, NLRTM)
    │   └── (FRLEH)
    └── asia
        └── china ── (CNSHA, CNNGB)
        └── (HKHKG)
"""

REGIONS = [
    ("world", "World", None),
    ("europe", "Europe", "world"),
    ("north_europe", "North Europe", "europe"),
    ("scandinavia", "Scandinavia", "north_europe"),
    ("asia", "Asia", "world"),
    ("china", "China", "asia"),
]

PORTS = [
    ("NOOSL", "Oslo", "scandinavia"),
    ("SEGOT", "Gothenburg", "scandinavia"),
    ("DEHAM", "Hamburg", "north_europe"),
    ("NLRTM", "Rotterdam", "north_europe"),
    ("FRLEH", "Le Havre", "europe"),
    ("CNSHA", "Shanghai", "china"),
    ("CNNGB", "Ningbo", "china"),
    ("HKHKG", "Hong Kong", "asia"),
]


def insert_world(conn) -> None:
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO regions (slug, name, parent_slug) VALUES (%s, %s, %s)", REGIONS)
        cur.executemany("INSERT INTO ports (code, name, parent_slug) VALUES (%s, %s, %s)", PORTS)


def insert_prices(conn, rows) -> None:
    """rows: (orig_code, dest_code, 'YYYY-MM-DD', price)."""
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO prices (orig_code, dest_code, day, price) VALUES (%s, %s, %s, %s)",
                        list(rows))
