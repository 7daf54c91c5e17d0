-- Base tables, laid out as in the original ratestask database.
-- Everything is created only where it is missing, so that a database that already
-- holds the original tables and rows keeps them.

CREATE TABLE IF NOT EXISTS regions (
    slug        text NOT NULL,
    name        text NOT NULL,
    parent_slug text
);

CREATE TABLE IF NOT EXISTS ports (
    code        text NOT NULL,
    name        text NOT NULL,
    parent_slug text NOT NULL
);

CREATE TABLE IF NOT EXISTS prices (
    orig_code text    NOT NULL,
    dest_code text    NOT NULL,
    day       date    NOT NULL,
    price     integer NOT NULL
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'regions'::regclass AND contype = 'p') THEN
        ALTER TABLE regions ADD CONSTRAINT regions_pkey PRIMARY KEY (slug);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'ports'::regclass AND contype = 'p') THEN
        ALTER TABLE ports ADD CONSTRAINT ports_pkey PRIMARY KEY (code);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'regions'::regclass AND contype = 'f' AND confrelid = 'regions'::regclass) THEN
        ALTER TABLE regions ADD CONSTRAINT regions_parent_slug_fkey
            FOREIGN KEY (parent_slug) REFERENCES regions (slug);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'ports'::regclass AND contype = 'f' AND confrelid = 'regions'::regclass) THEN
        ALTER TABLE ports ADD CONSTRAINT ports_parent_slug_fkey
            FOREIGN KEY (parent_slug) REFERENCES regions (slug);
    END IF;
END
$$;

-- Per-row foreign-key checks from prices to ports make bulk COPY several times slower.
-- Port codes are validated by every write path before it writes, and the derived
-- totals (next migration) stay exact for codes that no port has, so the checks go.
ALTER TABLE prices DROP CONSTRAINT IF EXISTS prices_orig_code_fkey;
ALTER TABLE prices DROP CONSTRAINT IF EXISTS prices_dest_code_fkey;

-- The region tree is walked downwards (children of a slug) on every query.
CREATE INDEX IF NOT EXISTS regions_parent_slug_idx ON regions (parent_slug);
CREATE INDEX IF NOT EXISTS ports_parent_slug_idx ON ports (parent_slug);
