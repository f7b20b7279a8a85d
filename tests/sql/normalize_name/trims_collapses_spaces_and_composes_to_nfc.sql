-- A name is trimmed, its runs of white space become one space, and it is
-- composed to Unicode NFC; titles and suffixes stay unless asked otherwise.
do $$
declare
  v_case record;
  v_got  text;
begin
  for v_case in
    select * from (values
      ('Kim Minjun', 'Kim Minjun'),
      ('  Kim   Minjun  ', 'Kim Minjun'),
      (E'Kim\tMinjun', 'Kim Minjun'),
      (' 김 민준 ', '김 민준'),
      (U&'\1100\1175\11B7\1106\1175\11AB\110C\116E\11AB', '김민준'),
      (U&'Jose\0301', U&'Jos\00E9'),
      ('O''Brien', 'O''Brien'),
      ('Mr. Kim', 'Mr. Kim'),
      ('김민준님', '김민준님'),
      ('', null),
      ('   ', null),
      (E'\n', null),
      (null, null)
    ) c(input, want)
  loop
    v_got := pgchain.normalize_name(v_case.input);
    assert v_got is not distinct from v_case.want,
      format('normalize_name(%L): expected %s, found %s', v_case.input, coalesce(v_case.want, 'null'), coalesce(v_got, 'null'));
  end loop;
end $$;
