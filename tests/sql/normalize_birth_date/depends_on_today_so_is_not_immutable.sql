-- normalize_birth_date reads current_date (future dates, two-digit years),
-- so it is declared stable: an index or generated column cannot freeze it.
do $$
begin
  assert (select provolatile from pg_proc where oid = 'pgchain.normalize_birth_date(text)'::regprocedure) = 's',
    'expected normalize_birth_date to be stable';
end $$;
