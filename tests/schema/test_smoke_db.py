def test_template_database_has_schema(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT version FROM data_version")
        assert cur.fetchone()[0] >= 1
