-- LSNs and SCNs (digits) and zero-padded GoldenGate trail positions compare
-- as numbers, not as text.
do $$
declare
  v_case record;
  v_got  boolean;
begin
  for v_case in
    select * from (values
      ('100', '99', true),
      ('99', '100', false),
      ('24023128', '24023128', true),
      ('0', '0', true),
      ('18446744073709551615', '18446744073709551614', true),
      ('00000000030000002217', '00000000030000001532', true),
      ('00000000030000001532', '00000000030000002217', false),
      ('00000000040000000001', '00000000039999999999', true),
      ('0000000100', '99', true),
      ('099', '100', false)
    ) c(a, b, want)
  loop
    v_got := pgchain.position_at_or_after(v_case.a, v_case.b);
    assert v_got is not distinct from v_case.want,
      format('position_at_or_after(%L, %L): expected %s, found %s', v_case.a, v_case.b, v_case.want, v_got);
  end loop;
end $$;
