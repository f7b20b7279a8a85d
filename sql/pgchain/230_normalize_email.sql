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
