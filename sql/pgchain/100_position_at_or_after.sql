-- Comparing source log positions, for the stale-event guard of the built-in
-- templates. Positions come as text: LSNs and SCNs as digits, GoldenGate trail
-- positions as zero-padded digits, MySQL binlog positions as `file:pos`.

-- True when position a is at or after position b (null when either is unknown).
create or replace function pgchain.position_at_or_after(a text, b text)
returns boolean language sql immutable as $$
  select case
    when a is null or b is null then null
    when a ~ '^\d+$' and b ~ '^\d+$' then a::numeric >= b::numeric
    -- `file:pos`: by file name (its trailing number as a number, so
    -- mysql-bin.999999 < mysql-bin.1000000), then position; a file name may
    -- hold colons of its own.
    when a ~ '^.+:\d+$' and b ~ '^.+:\d+$' then
      (regexp_replace(a, '\d*:\d+$', ''), coalesce(substring(a from '(\d+):\d+$')::numeric, -1),
       substring(a from ':(\d+)$')::numeric)
        >= (regexp_replace(b, '\d*:\d+$', ''), coalesce(substring(b from '(\d+):\d+$')::numeric, -1),
            substring(b from ':(\d+)$')::numeric)
    else a >= b
  end
$$;
