-- Regions form a tree: a region cannot be put under itself or under one of its own
-- descendants, and a name the API cannot be asked for cannot be given.
-- depends: 0012_reassert_component_rights
--
-- The foreign key on parent_slug let a cycle in. The API's recursive walk down from a
-- region stops quietly at one, so an answer for every ancestor of the moved region lost
-- the ports of the cycle, and the two regions in it each covered the other's: a change of
-- meaning with no error anywhere.

-- A cycle made before this migration is refused too: the API's answers are wrong while it
-- is there, and the trigger below would only notice once one of its rows is edited.
DO $$
DECLARE
    looped text;
BEGIN
    WITH RECURSIVE up (start, above, path) AS (
        SELECT slug, parent_slug, ARRAY[slug] FROM regions WHERE parent_slug IS NOT NULL
        UNION ALL
        SELECT up.start, r.parent_slug, up.path || up.above
        FROM up JOIN regions r ON r.slug = up.above
        WHERE r.parent_slug IS NOT NULL AND NOT up.above = ANY (up.path)
    )
    SELECT string_agg(DISTINCT start, ', ') INTO looped FROM up WHERE above = start;
    IF looped IS NOT NULL THEN
        RAISE EXCEPTION 'the regions % are each below themselves (a cycle of parent_slug)', looped
            USING ERRCODE = 'check_violation',
                  HINT = 'give one region of each cycle a parent outside it, then migrate again';
    END IF;
END
$$;

CREATE FUNCTION rates_regions_refuse_cycle() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = public, pg_temp
AS $$
DECLARE
    above text := NEW.parent_slug;
    levels integer := 0;
BEGIN
    -- Each region above is locked (FOR SHARE) as it is read: a move of one of them in a
    -- transaction beside this one waits for it, then sees it, or deadlocks with it, so two
    -- moves that each close half of a cycle cannot both commit.
    WHILE above IS NOT NULL LOOP
        IF above = NEW.slug THEN
            RAISE EXCEPTION 'region % cannot be put under %: that is % itself or one of its descendants',
                NEW.slug, NEW.parent_slug, NEW.slug
                USING ERRCODE = 'check_violation', HINT = 'move the descendant elsewhere first';
        END IF;
        levels := levels + 1;
        IF levels > 100000 THEN  -- a cycle already there, above the region (from before this migration)
            RAISE EXCEPTION 'the regions above % do not lead to a root: they form a cycle already', NEW.slug
                USING ERRCODE = 'check_violation';
        END IF;
        SELECT parent_slug INTO above FROM regions WHERE slug = above FOR SHARE;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER regions_refuse_cycle AFTER INSERT OR UPDATE OF slug, parent_slug ON regions
    FOR EACH ROW WHEN (NEW.parent_slug IS NOT NULL) EXECUTE FUNCTION rates_regions_refuse_cycle();

-- The names the API takes (rates_api.params): at most 128 characters, no control
-- characters. NOT VALID: rows from before are not checked, only new names.
ALTER TABLE regions ADD CONSTRAINT regions_slug_askable
    CHECK (length(slug) BETWEEN 1 AND 128 AND slug !~ '[\x01-\x1f\x7f-\x9f]') NOT VALID;
ALTER TABLE ports ADD CONSTRAINT ports_code_askable
    CHECK (length(code) BETWEEN 1 AND 128 AND code !~ '[\x01-\x1f\x7f-\x9f]') NOT VALID;
