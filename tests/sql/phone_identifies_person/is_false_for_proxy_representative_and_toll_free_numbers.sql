-- Proxy (050x), representative (15xx/16xx/18xx) and toll-free (080) numbers
-- never identify one person; mobile, landline, internet and foreign ones may.
do $$
declare
  v_case record;
  v_got  boolean;
begin
  for v_case in
    select * from (values
      ('0505-123-4567', false),
      ('0503-123-4567', false),
      ('1588-1234', false),
      ('1577-1234', false),
      ('1666-1234', false),
      ('1800-1234', false),
      ('080-123-4567', false),
      ('080-1234-5678', false),
      ('010-1234-5678', true),
      ('+82 10 1234 5678', true),
      ('02-123-4567', true),
      ('031-123-4567', true),
      ('070-1234-5678', true),
      ('+44 20 7946 0958', true),
      ('nothing', null),
      ('', null),
      (null, null)
    ) c(input, want)
  loop
    v_got := pgchain.phone_identifies_person(v_case.input);
    assert v_got is not distinct from v_case.want,
      format('phone_identifies_person(%L): expected %s, found %s', v_case.input, coalesce(v_case.want::text, 'null'), coalesce(v_got::text, 'null'));
  end loop;
end $$;
