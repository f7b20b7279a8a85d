-- Impossible dates (Feb 30, month 13, day 0), years before 1900, dates in the
-- future and forms not listed give null, never an error.
do $$
declare
  v_case record;
  v_got  date;
begin
  for v_case in
    select * from (values
      ('2023-02-30'), ('2023-02-29'), ('1985-13-01'), ('1985-00-10'), ('1985-01-00'), ('1985-04-31'),
      ('1899-12-31'), ('18991231'), ('2999-01-01'), (to_char(current_date + 1, 'YYYY-MM-DD')),
      ('12/03/1985'), ('hello'), (''), ('19851'), ('1985-03'), (null)
    ) c(input)
  loop
    v_got := pgchain.normalize_birth_date(v_case.input);
    assert v_got is null, format('normalize_birth_date(%L): expected null, found %s', v_case.input, v_got);
  end loop;
end $$;
