-- With a building id (e.g. a road-name building management number) the key
-- is bld:<id>, trimmed; a blank or null id falls back to the folded address.
do $$
declare
  v_case record;
  v_got  text;
begin
  for v_case in
    select * from (values
      ('1168010100101230000000001', 'bld:1168010100101230000000001'),
      (' 1168010100101230000000001 ', 'bld:1168010100101230000000001'),
      ('B-1', 'bld:B-1'),
      ('0', 'bld:0'),
      ('', '서울 강남구 테헤란로 123'),
      ('   ', '서울 강남구 테헤란로 123'),
      (null, '서울 강남구 테헤란로 123')
    ) c(building_id, want)
  loop
    v_got := pgchain.normalize_address('서울 강남구  테헤란로 123', v_case.building_id);
    assert v_got is not distinct from v_case.want,
      format('normalize_address(..., %L): expected %s, found %s', v_case.building_id, v_case.want, coalesce(v_got, 'null'));
  end loop;
  assert pgchain.normalize_address(null, '42') = 'bld:42',
    format('no address, building id 42: expected bld:42, found %s', pgchain.normalize_address(null, '42'));
end $$;
