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
