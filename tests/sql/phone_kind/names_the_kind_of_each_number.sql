-- phone_kind says mobile, landline, proxy, representative, internet,
-- toll_free or international for a number written any readable way; null if unreadable.
do $$
declare
  v_case record;
  v_got  text;
begin
  for v_case in
    select * from (values
      ('010-1234-5678', 'mobile'),
      ('016-123-4567', 'mobile'),
      ('018-123-4567', 'mobile'),
      ('+82 10 9999 0000', 'mobile'),
      ('+821012345678', 'mobile'),
      ('02-123-4567', 'landline'),
      ('051-123-4567', 'landline'),
      ('82-2-123-4567', 'landline'),
      ('0505-123-4567', 'proxy'),
      ('0507-1234-5678', 'proxy'),
      ('1588-1234', 'representative'),
      ('1600-1234', 'representative'),
      ('1899-1234', 'representative'),
      ('070-1234-5678', 'internet'),
      ('080-123-4567', 'toll_free'),
      ('+44 20 7946 0958', 'international'),
      ('+1 415 555 2671', 'international'),
      ('garbage', null),
      ('', null),
      (null, null),
      ('02-12', null)
    ) c(input, want)
  loop
    v_got := pgchain.phone_kind(v_case.input);
    assert v_got is not distinct from v_case.want,
      format('phone_kind(%L): expected %s, found %s', v_case.input, coalesce(v_case.want, 'null'), coalesce(v_got, 'null'));
  end loop;
end $$;
