-- A name trimmed, spaces collapsed, in Unicode NFC; with strip_honorifics,
-- titles (Mr, Mrs, Ms, Dr) and Korean honorific suffixes (님, 씨, 고객님) go.
create or replace function pgchain.normalize_name(p text, strip_honorifics boolean default false)
returns text language sql immutable as $$
  select nullif(
    case when strip_honorifics then
      btrim(regexp_replace(regexp_replace(n, '(?i)^(mr|mrs|ms|miss|dr)\.?\s+', ''), '\s*(고객님|님|씨)$', ''))
    else n end, '')
  from (select btrim(regexp_replace(normalize(coalesce(p, ''), NFC), '\s+', ' ', 'g')) as n) x
$$;
