-- An address folded for matching: lower case, punctuation to spaces, spaces
-- collapsed. With a building id (e.g. a Korean road-name building management
-- number), that id is the address key instead.
create or replace function pgchain.normalize_address(p text, building_id text default null)
returns text language sql immutable as $$
  select coalesce(
    nullif('bld:' || nullif(btrim(building_id), ''), 'bld:'),
    nullif(btrim(regexp_replace(regexp_replace(lower(normalize(coalesce(p, ''), NFC)), '[[:punct:]]', ' ', 'g'), '\s+', ' ', 'g')), '')
  )
$$;
