-- Comparisons of scored identity rules (identity_link's `scored`), beside
-- fuzzystrmatch's levenshtein and pg_trgm's similarity.

-- Jaro-Winkler similarity of two strings, 0 (nothing alike) to 1 (equal):
-- the Jaro similarity (characters in common within half the longer
-- length, and their transpositions) raised for a common prefix of up to
-- four characters, by 0.1 each. Null when either is null.
create or replace function pgchain.jaro_winkler(a text, b text) returns float8
language plpgsql immutable strict parallel safe as $$
declare
  ca text[] := regexp_split_to_array(a, '');
  cb text[] := regexp_split_to_array(b, '');
  la int := char_length(a);
  lb int := char_length(b);
  win int;
  ma boolean[];
  mb boolean[];
  m int := 0;
  t int := 0;
  i int;
  j int;
  k int := 1;
  p int := 0;
  jaro float8;
begin
  if a = b then
    return 1;
  end if;
  if la = 0 or lb = 0 then
    return 0;
  end if;
  win := greatest(greatest(la, lb) / 2 - 1, 0);
  ma := array_fill(false, array[la]);
  mb := array_fill(false, array[lb]);
  for i in 1 .. la loop
    for j in greatest(1, i - win) .. least(lb, i + win) loop
      if not mb[j] and ca[i] = cb[j] then
        ma[i] := true;
        mb[j] := true;
        m := m + 1;
        exit;
      end if;
    end loop;
  end loop;
  if m = 0 then
    return 0;
  end if;
  for i in 1 .. la loop
    if ma[i] then
      while not mb[k] loop
        k := k + 1;
      end loop;
      if ca[i] <> cb[k] then
        t := t + 1;
      end if;
      k := k + 1;
    end if;
  end loop;
  jaro := (m::float8 / la + m::float8 / lb + (m - t / 2.0) / m) / 3;
  while p < least(4, la, lb) and ca[p + 1] = cb[p + 1] loop
    p := p + 1;
  end loop;
  return jaro + p * 0.1 * (1 - jaro);
end $$;

-- True when b is a with two neighbouring characters swapped (a date's
-- digits typed in the wrong order: 19850312 and 19853012).
create or replace function pgchain.transposed(a text, b text) returns boolean
language plpgsql immutable strict parallel safe as $$
declare
  n int := char_length(a);
  i int;
begin
  if n <> char_length(b) or a = b then
    return false;
  end if;
  for i in 1 .. n - 1 loop
    if substr(a, i, 1) <> substr(b, i, 1) then
      return substr(a, i, 1) = substr(b, i + 1, 1) and substr(a, i + 1, 1) = substr(b, i, 1)
         and substr(a, i + 2) = substr(b, i + 2);
    end if;
  end loop;
  return false;
end $$;

-- The date with day and month swapped (2 March for 3 February); null when
-- the day is past 12.
create or replace function pgchain.swap_day_month(d date) returns date
language sql immutable strict parallel safe as $$
  select case when extract(day from d) <= 12
              then make_date(extract(year from d)::int, extract(day from d)::int, extract(month from d)::int) end
$$;
