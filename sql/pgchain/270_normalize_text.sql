-- Free text trimmed, spaces collapsed, in Unicode NFC; null when blank.
create or replace function pgchain.normalize_text(p text) returns text
language sql immutable as $$
  select nullif(btrim(regexp_replace(normalize(coalesce(p, ''), NFC), '\s+', ' ', 'g')), '')
$$;

-- A postcode as it is compared: letters upper-cased, spaces, hyphens and
-- other punctuation gone (SW1A 1AA → SW1A1AA, 06236 stays 06236); null
-- when nothing is left.
create or replace function pgchain.normalize_postcode(p text) returns text
language sql immutable as $$
  select nullif(upper(regexp_replace(normalize(coalesce(p, ''), NFKC), '[^[:alnum:]]', '', 'g')), '')
$$;

-- Only the digits of a value (a national id, a customer number written
-- with separators); null when it has none.
create or replace function pgchain.normalize_digits(p text) returns text
language sql immutable as $$
  select nullif(regexp_replace(normalize(coalesce(p, ''), NFKC), '[^0-9]', '', 'g'), '')
$$;
