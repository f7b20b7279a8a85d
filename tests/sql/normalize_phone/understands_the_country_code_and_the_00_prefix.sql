-- Numbers written with a country code (+82, 82-, the international prefix
-- 00) are understood; a trunk 0 written after +82 is dropped.
do $$
declare
  v_case record;
  v_got  text;
begin
  for v_case in
    select * from (values
      ('+82 10-1234-5678', '+821012345678'),
      ('+82-10-1234-5678', '+821012345678'),
      ('+821012345678', '+821012345678'),
      ('+82 010 1234 5678', '+821012345678'),
      ('+82 (0)10 1234 5678', '+821012345678'),
      ('82-10-1234-5678', '+821012345678'),
      ('821012345678', '+821012345678'),
      ('0082 10 1234 5678', '+821012345678'),
      ('0082-010-1234-5678', '+821012345678'),
      ('+82 2 123 4567', '+8221234567'),
      ('0082 2 1234 5678', '+82212345678'),
      ('+44 20 7946 0958', '+442079460958'),
      ('0044 20 7946 0958', '+442079460958'),
      ('+1 (415) 555-2671', '+14155552671'),
      ('001-415-555-2671', '+14155552671')
    ) c(input, want)
  loop
    v_got := pgchain.normalize_phone(v_case.input);
    assert v_got is not distinct from v_case.want,
      format('normalize_phone(%L): expected %s, found %s', v_case.input, v_case.want, coalesce(v_got, 'null'));
  end loop;
end $$;
