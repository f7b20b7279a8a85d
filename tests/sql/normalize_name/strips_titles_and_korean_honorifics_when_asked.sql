-- With strip_honorifics, a leading title (Mr, Mrs, Ms, Miss, Dr, with or
-- without a dot) and a trailing 님, 씨 or 고객님 go; names merely starting so stay.
do $$
declare
  v_case record;
  v_got  text;
begin
  for v_case in
    select * from (values
      ('Mr. Kim', 'Kim'),
      ('mrs Lee', 'Lee'),
      ('Dr Park', 'Park'),
      ('Ms. Choi', 'Choi'),
      ('MISS Jung', 'Jung'),
      ('  Mr.   Kim  ', 'Kim'),
      ('김민준님', '김민준'),
      ('김민준 님', '김민준'),
      ('이서연씨', '이서연'),
      ('박지호 고객님', '박지호'),
      ('박지호고객님', '박지호'),
      ('Dr. 김민준님', '김민준'),
      ('Kim Minjun', 'Kim Minjun'),
      ('Mrsmith', 'Mrsmith'),
      ('Drake', 'Drake'),
      ('씨앗', '씨앗'),
      ('님', null),
      ('', null)
    ) c(input, want)
  loop
    v_got := pgchain.normalize_name(v_case.input, true);
    assert v_got is not distinct from v_case.want,
      format('normalize_name(%L, true): expected %s, found %s', v_case.input, coalesce(v_case.want, 'null'), coalesce(v_got, 'null'));
  end loop;
end $$;
