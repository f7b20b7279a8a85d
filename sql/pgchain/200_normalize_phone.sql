-- Normalisers for the cleansed (L1) layer, usable on their own in any step.
-- Every one returns null for what it cannot read: a bad value never stops a chain.

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
  elsif (v_digits ~ '^82(1[016789]|[2-6]|70|80|50)' and length(v_digits) between 10 and 13)
        or v_digits ~ '^821[568]\d{6}$' then
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
