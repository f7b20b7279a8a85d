-- In the six-digit form, a two-digit year this century has already reached is
-- 20xx and any later one is 19xx.
do $$
declare
  v_yy   int := extract(year from current_date)::int % 100;
  v_next text := lpad(((v_yy + 1) % 100)::text, 2, '0');
begin
  assert pgchain.normalize_birth_date('000101') = date '2000-01-01',
    format('000101: expected 2000-01-01, found %s', pgchain.normalize_birth_date('000101'));
  assert pgchain.normalize_birth_date('991231') = date '1999-12-31',
    format('991231: expected 1999-12-31, found %s', pgchain.normalize_birth_date('991231'));
  assert pgchain.normalize_birth_date('850312') = date '1985-03-12',
    format('850312: expected 1985-03-12, found %s', pgchain.normalize_birth_date('850312'));
  -- Next year's two digits: not yet reached this century, so last century
  -- (meaningless in a year ending in 99, when next year's digits are 00).
  assert v_yy = 99 or pgchain.normalize_birth_date(v_next || '0101') = make_date(1900 + (v_yy + 1) % 100, 1, 1),
    format('%s: expected %s, found %s', v_next || '0101', make_date(1900 + (v_yy + 1) % 100, 1, 1),
           pgchain.normalize_birth_date(v_next || '0101'));
end $$;
