-- Comparing source log positions, for the stale-event guard of the built-in
-- templates. Positions come as text: LSNs and SCNs as digits, GoldenGate trail
-- positions as zero-padded digits, MySQL binlog positions as `file:pos`.

-- True when position a is at or after position b (null when either is unknown).
create or replace function pgchain.position_at_or_after(a text, b text)
returns boolean language sql immutable as $$
  select case
    when a is null or b is null then null
    when a ~ '^\d+$' and b ~ '^\d+$' then a::numeric >= b::numeric
    when a ~ '^.+:\d+$' and b ~ '^.+:\d+$' then
      (split_part(a, ':', 1), split_part(a, ':', 2)::numeric)
        >= (split_part(b, ':', 1), split_part(b, ':', 2)::numeric)
    else a >= b
  end
$$;
