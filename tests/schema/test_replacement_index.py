"""Replacing a file finds its rows by prices.source_id without reading the table, also
after months of re-uploads: the delete runs inside the totals' lock that every load waits for."""

import json

ROWS_PER_FILE = 1500
FILES = 120


def _load_files(cur, first: int, count: int) -> None:
    """``count`` files of ROWS_PER_FILE prices each, from file id ``first`` on."""
    cur.execute("""INSERT INTO ingest_files (id, bucket, key, version, rows, bytes)
                   SELECT f, 'b', 'k' || f, 'v' || f, %(rows)s, 0 FROM generate_series(%(first)s, %(last)s) f""",
                {"rows": ROWS_PER_FILE, "first": first, "last": first + count - 1})
    cur.execute("""INSERT INTO prices (orig_code, dest_code, day, price, source_id)
                   SELECT 'CNSHA', 'NLRTM', DATE '2016-01-01' + (n %% 30), 100 + n %% 50, f
                   FROM generate_series(%(first)s, %(last)s) f, generate_series(1, %(rows)s) n""",
                {"rows": ROWS_PER_FILE, "first": first, "last": first + count - 1})


def _pages_read(cur, file_id: int) -> tuple[int, int]:
    """(pages the delete of a file's rows reads, pages of the table), rolled back."""
    cur.execute("BEGIN")
    cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) DELETE FROM prices WHERE source_id = %s", (file_id,))
    [plan] = cur.fetchone()[0]
    cur.execute("ROLLBACK")
    [scan] = plan["Plan"]["Plans"]
    cur.execute("SELECT relpages FROM pg_class WHERE relname = 'prices'")
    return scan["Shared Hit Blocks"] + scan["Shared Read Blocks"], cur.fetchone()[0]


def test_a_replaced_files_rows_are_found_without_reading_the_table_after_many_replacements(world):
    with world.cursor() as cur:
        _load_files(cur, 1, FILES)
        newest = FILES
        for _ in range(3):  # re-uploads: each round replaces every other current file
            cur.execute("SELECT id FROM ingest_files WHERE replaced_at IS NULL AND id % 2 = 0")
            replaced = [row[0] for row in cur.fetchall()]
            cur.execute("UPDATE ingest_files SET replaced_at = now() WHERE id = ANY(%s)", (replaced,))
            cur.execute("DELETE FROM prices WHERE source_id = ANY(%s)", (replaced,))
            cur.execute("VACUUM ANALYZE prices")  # the new files' rows go into the freed space
            _load_files(cur, newest + 1, len(replaced))
            newest += len(replaced)
            cur.execute("VACUUM ANALYZE prices")

        # A file of the second round, as the next re-upload of its key would replace it.
        cur.execute("SELECT min(id) FROM ingest_files WHERE replaced_at IS NULL AND id > %s", (FILES + FILES // 2,))
        read, table = _pages_read(cur, cur.fetchone()[0])

    assert table > 1000
    # Its rows lie on about 15 pages (fewer than a tenth of a range of a BRIN index).
    assert read < table / 20, json.dumps({"read": read, "table": table})
