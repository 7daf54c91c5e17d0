-- depends: 0019_functions_fix_search_path
--
-- A port that has prices keeps its code.
--
-- prices name their ports by code, with no foreign key (a file may name a code before it
-- is added, and is then rejected; rows from before ingestion may name any). So
-- `UPDATE ports SET code = 'NEW' WHERE code = 'OLD'` left every price of OLD under OLD:
-- the totals followed the edit (0018) and the port's whole history silently dropped out
-- of every answer, for it and every region above it, until a port OLD came back. Now the
-- edit is refused with the way to do it, each step its own statement: add the port under
-- the new code, move its prices (two UPDATEs of prices, orig_code and dest_code), then
-- delete the old port. A port with no prices may change its code as before.
--
-- The probe is 0018's (milliseconds through lane_totals' key); BEFORE UPDATE OF code, so
-- no other edit of ports pays it.

CREATE FUNCTION rates_ports_keep_code() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = public, pg_temp
AS $$
BEGIN
    IF rates_ports_have_lanes(ARRAY[OLD.code]) THEN
        RAISE EXCEPTION 'port % has prices, which name it by its code: changed to %, they would count nowhere', OLD.code, NEW.code
            USING ERRCODE = 'restrict_violation',
                  HINT = 'Add the port under the new code, move its prices (UPDATE prices SET orig_code = ... and '
                         'SET dest_code = ...), then delete the old port, each in a statement of its own.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ports_keep_code BEFORE UPDATE OF code ON ports
    FOR EACH ROW WHEN (OLD.code IS DISTINCT FROM NEW.code) EXECUTE FUNCTION rates_ports_keep_code();
