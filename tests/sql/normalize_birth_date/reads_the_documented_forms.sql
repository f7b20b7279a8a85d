-- A birth date written as 1985-03-12, 1985.3.12, 1985/03/12, 19850312,
-- 850312 or 1985년 3월 12일 (spaces, a time part allowed) is read as that date.
do $$
declare
  v_case record;
  v_got  date;
begin
  for v_case in
    select * from (values
      ('1985-03-12', date '1985-03-12'),
      ('1985.03.12', date '1985-03-12'),
      ('1985.3.12', date '1985-03-12'),
      ('1985-3-12', date '1985-03-12'),
      ('1985/03/12', date '1985-03-12'),
      ('19850312', date '1985-03-12'),
      ('850312', date '1985-03-12'),
      ('1985년 3월 12일', date '1985-03-12'),
      ('1985년3월12일', date '1985-03-12'),
      (' 1985-03-12 ', date '1985-03-12'),
      ('1985-03-12T10:00:00', date '1985-03-12'),
      ('1985-03-12 10:00', date '1985-03-12'),
      ('2000-02-29', date '2000-02-29'),
      ('1900-01-01', date '1900-01-01')
    ) c(input, want)
  loop
    v_got := pgchain.normalize_birth_date(v_case.input);
    assert v_got is not distinct from v_case.want,
      format('normalize_birth_date(%L): expected %s, found %s', v_case.input, v_case.want, coalesce(v_got::text, 'null'));
  end loop;
end $$;
