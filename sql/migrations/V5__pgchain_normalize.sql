-- Normalisation functions for the cleansed (L1) layer, usable on their own.
-- Every one of them returns null for what it cannot read: a bad value never
-- stops a chain.

-- The digits of a phone number, with its country code, as E.164 (`+8210…`).
-- Korean numbers (mobile 01x, landlines 02 and 0xx, proxy 050x, internet
-- 070, toll-free 080, representative 15xx/16xx/18xx) and numbers written
-- with a country code (`+44 20 …`, `0082 10 …`, `82-10-…`) are understood.
create or replace function pgchain.normalize_phone(p text) returns text
language plpgsql immutable as $$
declare
  v_raw    text := btrim(coalesce(p, ''));
  v_digits text := regexp_replace(v_raw, '\D', '', 'g');
begin
  -- GUARD: letters (other than an extension marker) mean this is not a number.
  if v_digits = '' or v_raw ~ '[A-Za-z]' and v_raw !~* '^[^A-Za-z]*(ext|x)\.?\s*\d+$' then
    return null;
  end if;
  v_digits := regexp_replace(regexp_replace(v_raw, '(?i)\s*(ext|x)\.?\s*\d+$', ''), '\D', '', 'g');
  if v_raw ~ '^\s*\+' then
    null;                                             -- already has a country code
  elsif v_digits ~ '^00[1-9]' then
    v_digits := substr(v_digits, 3);                  -- international prefix 00
  elsif v_digits ~ '^82(1[016789]|[2-6]|70|80|50)' and length(v_digits) between 10 and 13 then
    null;                                             -- 82-10-…: Korean, written with its code
  elsif v_digits ~ '^0' then
    v_digits := '82' || substr(v_digits, 2);          -- domestic Korean
  elsif v_digits ~ '^1[568]\d{6}$' then
    v_digits := '82' || v_digits;                     -- 15xx-xxxx representative numbers
  else
    return null;
  end if;
  -- A trunk 0 written after the country code (+82 010 …) is dropped.
  if v_digits ~ '^820' then
    v_digits := '82' || substr(v_digits, 4);
  end if;
  -- GUARD: Korean numbers have known shapes; elsewhere E.164 allows 8 to 15 digits.
  if v_digits like '82%' and v_digits !~ '^82(1[016789]\d{7,8}|2\d{7,8}|[3-6][1-5]\d{7,8}|70\d{8}|80\d{7,8}|50[2-8]\d{7,8}|1[568]\d{6})$' then
    return null;
  end if;
  if length(v_digits) not between 8 and 15 then
    return null;
  end if;
  return '+' || v_digits;
end $$;

-- What kind of number an E.164 (or raw) phone is: mobile, landline, proxy,
-- representative, internet, toll_free or international; null if unreadable.
create or replace function pgchain.phone_kind(p text) returns text
language sql immutable as $$
  select case
    when n is null then null
    when n ~ '^\+821[568]\d{6}$' then 'representative'
    when n ~ '^\+821[016789]' then 'mobile'
    when n ~ '^\+8250' then 'proxy'
    when n ~ '^\+8270' then 'internet'
    when n ~ '^\+8280' then 'toll_free'
    when n ~ '^\+82' then 'landline'
    else 'international'
  end
  from (select pgchain.normalize_phone(p) as n) x
$$;

-- False for numbers that never identify one person: proxy (050x),
-- representative (15xx/16xx/18xx) and toll-free numbers.
create or replace function pgchain.phone_identifies_person(p text) returns boolean
language sql immutable as $$
  select case
    when k is null then null
    when k in ('proxy', 'representative', 'toll_free') then false
    else true
  end
  from (select pgchain.phone_kind(p) as k) x
$$;

-- An e-mail address trimmed and lower-cased, or null if it is not one.
create or replace function pgchain.normalize_email(p text) returns text
language sql immutable as $$
  select case
    when e ~ '^[a-z0-9.!#$%&''*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.[a-z]{2,}$'
         and e !~ '\.\.' and e !~ '^\.' and e !~ '\.@'
      then e
  end
  from (select lower(regexp_replace(p, '^\s+|\s+$', '', 'g')) as e) x
$$;

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

-- A date of birth from the common ways of writing one: 1985-03-12,
-- 1985.3.12, 1985/03/12, 19850312, 850312 (19xx or 20xx), 1985년 3월 12일.
-- Impossible dates and dates in the future are null.
create or replace function pgchain.normalize_birth_date(p text) returns date
language plpgsql immutable as $$
declare
  v text := btrim(coalesce(p, ''));
  y int; m int; d int;
  parts text[];
begin
  if v ~ '^\d{8}$' then
    y := substr(v, 1, 4)::int; m := substr(v, 5, 2)::int; d := substr(v, 7, 2)::int;
  elsif v ~ '^\d{6}$' then
    y := substr(v, 1, 2)::int; m := substr(v, 3, 2)::int; d := substr(v, 5, 2)::int;
    -- Two-digit years: those not yet reached this century are 19xx.
    y := y + case when y <= extract(year from current_date)::int % 100 then 2000 else 1900 end;
  else
    parts := regexp_match(v, '^(\d{4})\s*[-./년]\s*(\d{1,2})\s*[-./월]\s*(\d{1,2})\s*일?(?:[ T].*)?$');
    if parts is null then
      return null;
    end if;
    y := parts[1]::int; m := parts[2]::int; d := parts[3]::int;
  end if;
  if y < 1900 or m not between 1 and 12 or d not between 1 and 31 then
    return null;
  end if;
  begin
    return case when make_date(y, m, d) <= current_date then make_date(y, m, d) end;
  exception when datetime_field_overflow or invalid_datetime_format then
    return null;
  end;
end $$;

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
