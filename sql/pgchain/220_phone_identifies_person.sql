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
