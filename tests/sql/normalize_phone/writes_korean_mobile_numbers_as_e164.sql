-- Korean mobile numbers in their usual written variants (dashes, dots,
-- spaces, brackets, an extension) become E.164: +82 and no trunk 0.
do $$
declare
  v_case record;
  v_got  text;
begin
  for v_case in
    select * from (values
      ('010-1234-5678', '+821012345678'),
      ('01012345678', '+821012345678'),
      ('010.1234.5678', '+821012345678'),
      (' 010 1234 5678 ', '+821012345678'),
      ('(010) 1234-5678', '+821012345678'),
      ('010-1234-5678 ext. 12', '+821012345678'),
      ('010-1234-5678 x12', '+821012345678'),
      ('011-123-4567', '+82111234567'),
      ('016-123-4567', '+82161234567'),
      ('017-123-4567', '+82171234567'),
      ('018-1234-5678', '+821812345678'),
      ('019-1234-5678', '+821912345678')
    ) c(input, want)
  loop
    v_got := pgchain.normalize_phone(v_case.input);
    assert v_got is not distinct from v_case.want,
      format('normalize_phone(%L): expected %s, found %s', v_case.input, v_case.want, coalesce(v_got, 'null'));
  end loop;
end $$;
