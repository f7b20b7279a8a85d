-- Letters (other than an extension marker), empty input and numbers of no
-- known shape give null, never an error.
do $$
declare
  v_case record;
  v_got  text;
begin
  for v_case in
    select * from (values
      (null, null::text),
      ('', null),
      ('   ', null),
      ('+', null),
      ('--', null),
      ('hello', null),
      ('tel 010-1234-5678', null),
      ('010-abcd-5678', null),
      ('019-abc-defg', null),
      ('010-12', null),
      ('1234', null),
      ('010-1234-5678-9999', null),
      ('012-123-4567', null),
      ('0501-123-4567', null),
      ('1700-1234', null),
      ('000-0000-0000', null),
      ('10-1234-5678', null),
      ('+12', null)
    ) c(input, want)
  loop
    v_got := pgchain.normalize_phone(v_case.input);
    assert v_got is not distinct from v_case.want,
      format('normalize_phone(%L): expected null, found %s', v_case.input, v_got);
  end loop;
end $$;
