-- Landlines, proxy 050x, internet 070, toll-free 080 and the 8-digit
-- representative numbers 15xx/16xx/18xx become E.164 too.
do $$
declare
  v_case record;
  v_got  text;
begin
  for v_case in
    select * from (values
      ('1588-1234', '+8215881234'),
      ('15881234', '+8215881234'),
      ('1544 1234', '+8215441234'),
      ('1644-0000', '+8216440000'),
      ('1800-1234', '+8218001234'),
      ('+82 1588 1234', '+8215881234'),
      ('0082 1588 1234', '+8215881234'),
      ('02-123-4567', '+8221234567'),
      ('02-1234-5678', '+82212345678'),
      ('031-123-4567', '+82311234567'),
      ('064-712-3456', '+82647123456'),
      ('0505-123-4567', '+825051234567'),
      ('0504-1234-5678', '+8250412345678'),
      ('070-1234-5678', '+827012345678'),
      ('080-123-4567', '+82801234567'),
      ('080-1234-5678', '+828012345678')
    ) c(input, want)
  loop
    v_got := pgchain.normalize_phone(v_case.input);
    assert v_got is not distinct from v_case.want,
      format('normalize_phone(%L): expected %s, found %s', v_case.input, v_case.want, coalesce(v_got, 'null'));
  end loop;
end $$;
