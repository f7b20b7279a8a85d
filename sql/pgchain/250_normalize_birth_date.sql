-- A date of birth from the common ways of writing one: 1985-03-12,
-- 1985.3.12, 1985/03/12, 19850312, 850312 (19xx or 20xx), 1985년 3월 12일.
-- Impossible dates and dates in the future are null.
create or replace function pgchain.normalize_birth_date(p text) returns date
language plpgsql stable as $$
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
